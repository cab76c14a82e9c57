"""The legacy HTTP shim: a WSGI app serving gRPC handlers at the old JSON URLs.

    app.wsgi_app = Shim(services=[Inventory(store)], fallback=app.wsgi_app)

One request, in order (the first failure wins, as in a typical Flask view):

1. route it (:class:`~rpckit.http._mapping._routes.Router`): no route -> the fallback app (or
   404), and so is a path value the legacy rule's converter refuses (``<int:id>``
   and ``abc``); another method -> 405 with ``Allow`` (merged with the fallback's, or
   the fallback's own answer under the Flask dialect); ``OPTIONS`` -> ``Allow``; a
   slash policy redirect -> 308;
2. pick the side that answers (rollout percentage) and whether to shadow;
3. the auth policy (``ShimConfig.auth`` or the server's: 401/403), then the
   route's guard on the allowlisted headers;
4. the deadline (``X-Request-Timeout``, ``grpc-timeout``, or the route's);
5. for a route with a body: content type (415), size (413), UTF-8 and JSON
   syntax, then (strict profiles) object, unknown fields, types (400);
6. the query string and path variables into the request message (400);
7. the call, through the invoker (in process, via a server's admission
   queue, or over a channel), metadata back to headers through an allowlist;
8. the answer: the route's success status and headers and the response JSON in
   the route's profile -- or the gRPC status mapped to HTTP and the error body
   from the pluggable renderer. Never a traceback.

Steps 3-8 run inside the Flask fallback's request context and ``ShimConfig.call_context``
when set, and the answer goes through the app's ``after_request`` hooks; the
:class:`~rpckit.http._dialect.Dialect` says which (:mod:`rpckit.http._flask`).

Unmatched requests go to the fallback untouched (streamed, not buffered).
Every answer is counted for the legacy-traffic report.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import grpc
from google.protobuf import descriptor, descriptor_pool
from google.protobuf.message import Message

from rpckit.core._auth import (
    PEER_CERT_ENVIRON_KEY,
    AuthCode,
    AuthPolicy,
    Caller,
    Deny,
    bearer_token,
    identity_from_peercert,
)
from rpckit.core._descriptors import fields_on_path
from rpckit.core._wire import PUSHBACK_METADATA_KEY
from rpckit.http._dialect import (
    FLASK_DIALECT,
    RPCKIT_DIALECT,
    TIMEOUT_HEADERS,
    Dialect,
    flask_app_of,
    status_line,
)
from rpckit.http._errors import (
    FieldViolation,
    HttpError,
    error_object_schema,
    gateway_error_schema,
    http_status_for,
    reason_phrase,
    render_error_object,
    render_gateway_error,
)
from rpckit.http._flask import FlaskHooks
from rpckit.http._invoke import (
    CallOutcome,
    ChannelInvoker,
    Invoker,
    LocalInvoker,
)
from rpckit.http._mapping._converters import converter_accepts, converter_for_field
from rpckit.http._mapping._jsonmap import LegacyProfile, dumps, field_to_obj, message_to_obj
from rpckit.http._mapping._routes import (
    Match,
    MethodNotAllowed,
    NotFound,
    RedirectSlash,
    RequestError,
    Route,
    Router,
    build_request,
    routes_for_service,
)
from rpckit.http._options import (
    GuardedCall,
    RouteOptions,
    RouteSettings,
    ShimConfig,
    check_option_keys,
    identity_set,
    resolve_settings,
    route_key,
)
from rpckit.http._request import (
    check_body_types,
    check_query_types,
    check_required,
    deadline_from_headers,
    decode_body,
    is_json_content_type,
    parse_query,
    raw_request_path,
    request_url_part,
)
from rpckit.http._server._turns import (
    OUTSIDE_TURN_ENVIRON_KEY,
    RECEIVED_AT_ENVIRON_KEY,
    OutsideTurn,
    QuickCalls,
)
from rpckit.http._shadow import (
    CapturedResponse,
    ShadowReport,
    Side,
    choose_primary,
    compare_responses,
)
from rpckit.http._traffic import FALLBACK_ROUTE, TrafficCounters, caller_of
from rpckit.server._auth_gate import RefusalLog
from rpckit.server._errors import INTERNAL_MESSAGE, StatusError, to_grpc_status
from rpckit.server._handlers import wrap_method_handlers
from rpckit.server._servicers import bind

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["LocalDispatchSource", "Shim"]

_log = logging.getLogger("rpckit.http")
_shadow_log = logging.getLogger("rpckit.http.shadow")

JSON_CONTENT_TYPE = "application/json"
#: Body read size per chunk for requests without Content-Length (chunked).
_CHUNK = 64 * 1024

#: webargs' ``DEFAULT_VALIDATION_STATUS``: what its parsers answered for field errors.
_WEBARGS_VALIDATION_STATUS = 422

_PATH_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"

#: Error-body schemas of the built-in renderers, for the OpenAPI document.
_RENDERER_SCHEMAS: dict[Any, Callable[[], dict[str, Any]]] = {
    render_gateway_error: gateway_error_schema,
    render_error_object: error_object_schema,
}


class LocalDispatchSource(Protocol):
    """What the shim needs from an rpckit server to run calls through its admission queue."""

    def local_dispatch(self) -> Any: ...


class _Answer:
    """A response the shim built: status, headers, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def send(self, start_response: StartResponse, *, head: bool, dialect: Dialect) -> list[bytes]:
        headers = list(self.headers)
        if dialect.content_length_on_no_content or self.status not in (204, 304):
            headers.append(("Content-Length", str(len(self.body))))
        start_response(status_line(self.status, dialect, reason_phrase(self.status)), headers)
        return [] if head else [self.body]

    def captured(self) -> CapturedResponse:
        return CapturedResponse(self.status, tuple(self.headers), self.body)


#: An answer (None: the fallback answers, streamed) and its (route, served_by) labels.
_Served = tuple[_Answer | None, tuple[str, str]]


class Shim:
    """A WSGI app serving gRPC methods at the URLs of their ``google.api.http`` rules.

    Exactly one source of calls:

    * ``services=[servicer, ...]``: grpcio servicer instances, called in process
      in the WSGI thread, through rpckit's handler wrapper;
    * ``server=rpckit_server``: the server's servicers, called through its
      admission queue and handler threads (``rpckit serve --http``);
    * ``channel=grpc_channel`` with ``services=["pkg.Service", ...]`` (names or
      ``ServiceDescriptor``): proxy mode, a gRPC call per request over any
      ``grpc.Channel`` (a balanced channel included).

    ``services=[]`` with only a ``fallback`` serves nothing itself: every request
    goes to the fallback (a first step that only counts traffic).

    Args:
        fallback: the WSGI app for requests no migrated route matches (the old
            Flask app); without one, such requests get 404.
        config: shim-wide behaviour (:class:`ShimConfig`).
        routes: Python :class:`RouteOptions` by service, method or binding key.
        rng: decides rollouts (seed it in tests); clock: monotonic seconds.
        on_shadow: told of every shadow comparison (also logged and counted).
    """

    #: Handlers, guards and the fallback run outside the embedded server's turn
    #: (:mod:`rpckit.http._server._turns`), so ``rpckit serve --http`` serves it with turns.
    yields_turns = True

    def __init__(
        self,
        services: Sequence[object] = (),
        *,
        channel: grpc.Channel | None = None,
        server: LocalDispatchSource | None = None,
        fallback: WSGIApplication | None = None,
        config: ShimConfig | None = None,
        routes: Mapping[str, RouteOptions] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_shadow: Callable[[ShadowReport], None] | None = None,
    ) -> None:
        if isinstance(services, (str, bytes)):
            raise TypeError("services is a sequence of servicers or service names, not a str")
        self.config = config or ShimConfig()
        self.fallback = fallback
        flask_app = flask_app_of(fallback) if fallback is not None else None
        #: The legacy habits reproduced (``ShimConfig.dialect``, else by the fallback's kind).
        self.dialect = self.config.dialect or (
            FLASK_DIALECT if flask_app is not None else RPCKIT_DIALECT
        )
        self._flask = FlaskHooks(flask_app) if flask_app is not None else None
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - rollout draws, not secrets
        self._on_shadow = on_shadow
        #: Who may call the routes; refusals counted with the server's (when built on one).
        self.auth: AuthPolicy | None = self.config.auth
        self._on_auth_denied: Callable[[str, AuthCode], None] | None = None
        self._auth_refusals = RefusalLog(_log, clock=clock)
        descriptors, self._invoker = self._source(list(services), channel, server)
        self.services: tuple[descriptor.ServiceDescriptor, ...] = tuple(descriptors)
        methods: dict[str, descriptor.MethodDescriptor] = {}
        all_routes: list[Route] = []
        for service in descriptors:
            for route in routes_for_service(service):
                if route.client_streaming or route.server_streaming:
                    raise ValueError(
                        f"{route}: streaming methods are not served over the legacy HTTP shim; "
                        "remove the google.api.http rule or serve the method over gRPC only"
                    )
                all_routes.append(route)
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
        options = dict(routes or {})
        check_option_keys(options, all_routes)
        self.router = Router(all_routes, strict_slashes=self.config.strict_slashes)
        self._settings: dict[str, RouteSettings] = {
            route_key(r): resolve_settings(r, methods[r.grpc_method], self.config, options)
            for r in all_routes
        }
        self._converters = {
            route_key(r): self._converters_of(r, self._settings[route_key(r)]) for r in all_routes
        }
        self._default_profile = LegacyProfile()
        self.traffic = TrafficCounters(max_callers=self.config.max_callers)
        self._guard_times = QuickCalls(clock=clock)  # guard run times, by route
        self._fallback_times = QuickCalls(clock=clock)  # fallback run times, by path prefix
        #: (metadata key, environ key) of each forwarded header.
        self._forwarded = tuple(
            (name, "CONTENT_TYPE" if name == "content-type" else _environ_key(name))
            for name in self.config.forward_headers
        )

    def _source(
        self,
        services: list[object],
        channel: grpc.Channel | None,
        server: LocalDispatchSource | None,
    ) -> tuple[list[descriptor.ServiceDescriptor], Invoker | None]:
        if channel is not None and server is not None:
            raise TypeError("give a channel (proxy mode) or a server, not both")
        if server is not None:
            if services:
                raise TypeError("with server=, the services are the server's; drop services=")
            dispatch = server.local_dispatch()
            if self.auth is None:
                self.auth = getattr(dispatch, "auth", None)
            self._on_auth_denied = getattr(dispatch, "on_auth_denied", None)
            invoker = LocalInvoker(
                dispatch.handlers,
                submit=dispatch.submit,
                run_now=getattr(dispatch, "run_now", None),
                clock=self._clock,
            )
            return list(dispatch.services), invoker
        if channel is not None:
            found = [_service_descriptor(s) for s in services]
            if not found:
                raise TypeError("proxy mode needs services=['pkg.Service', ...] to route")
            return found, ChannelInvoker(channel, clock=self._clock)
        if not services:
            return [], None
        handlers = {}
        found = []
        for servicer in services:
            if isinstance(servicer, (str, descriptor.ServiceDescriptor)):
                raise TypeError(
                    f"{servicer!r} names a service: give servicer instances, or a channel "
                    "to proxy to (Shim(services=[...], channel=...))"
                )
            binding = bind(servicer)
            found.append(binding.service)
            wrapped = wrap_method_handlers(binding.name, binding.method_handlers, load=None)
            handlers.update({f"/{binding.name}/{n}": h for n, h in wrapped.items()})
        names = [s.full_name for s in found]
        if len(set(names)) != len(names):
            raise ValueError(f"the same service is given twice: {sorted(names)}")
        return found, LocalInvoker(handlers, submit=None, clock=self._clock)

    def _converters_of(
        self, route: Route, settings: RouteSettings
    ) -> tuple[tuple[str, str, descriptor.FieldDescriptor], ...]:
        """(variable, converter, field) for each path variable a converter checks."""
        checks = []
        for field_path in route.template.field_paths:
            field = fields_on_path(route.request_descriptor, field_path)[-1]
            name = settings.path_converters.get(field_path)
            if name is None and self.dialect.path_converters:
                name = converter_for_field(field)
            if name is not None and name != "string":
                checks.append((field_path, name, field))
        return tuple(checks)

    def _converters_accept(self, match: Match) -> bool:
        """Whether the legacy rule's converters would have matched these path values."""
        return all(
            converter_accepts(name, match.path_params[variable], field)
            for variable, name, field in self._converters[route_key(match.route)]
        )

    # ---------------------------------------------------------------- public helpers

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route served, most specific first."""
        return self.router.routes

    def settings_for(self, route: Route) -> RouteSettings:
        """The resolved settings of one of :attr:`routes`."""
        return self._settings[route_key(route)]

    def traffic_report(self) -> dict[str, Any]:
        """Legacy-traffic counts as JSON-ready data (see :mod:`rpckit.http._traffic`)."""
        return self.traffic.report()

    def metrics_registry(self) -> Any:
        """A prometheus_client registry of the traffic counters (never the global one)."""
        return self.traffic.registry()

    def openapi(self, *, title: str = "Legacy HTTP API", version: str = "1.0.0") -> dict[str, Any]:
        """The OpenAPI 3 document of the contract as served (routes, profiles, errors)."""
        from rpckit.http._mapping._openapi import OpenApiRoute, openapi_document

        schema = _RENDERER_SCHEMAS.get(self.config.error_renderer)
        return openapi_document(
            [OpenApiRoute(route=r, settings=self.settings_for(r)) for r in self.routes],
            title=title,
            version=version,
            error_schema=schema() if schema is not None else {"type": "object"},
        )

    # ---------------------------------------------------------------- WSGI

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        head = method == "HEAD"
        caller = caller_of(environ, self.config.caller_header)
        try:
            answer, counted = self._serve(environ, method, caller)
        except Exception:  # noqa: BLE001 - never a traceback on the wire; it goes to the log
            _log.exception("the HTTP shim failed on %s %s", method, environ.get("PATH_INFO"))
            answer, counted = self._internal_error(), ("(error)", "rpckit")
        if answer is None:  # the fallback answers, streamed
            return self._pass_through(environ, start_response, method, caller, counted[0])
        self.traffic.record(
            route=counted[0], method=method, status=answer.status, caller=caller,
            served_by=counted[1],
        )  # fmt: skip
        return answer.send(start_response, head=head, dialect=self.dialect)

    def _pass_through(
        self, environ: WSGIEnvironment, start_response: StartResponse, method: str, caller: str,
        route: str,
    ) -> Iterable[bytes]:  # fmt: skip
        assert self.fallback is not None

        def counting_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0]) if status[:3].isdigit() else 0
            self.traffic.record(
                route=route, method=method, status=code, caller=caller, served_by="fallback"
            )
            return start_response(status, headers, exc_info)

        with self._fallback_times.run(_fallback_key(environ), _outside(environ)):
            return self.fallback(environ, counting_start)

    def _serve(self, environ: WSGIEnvironment, method: str, caller: str) -> _Served:
        """The answer (None: pass to the fallback) and the (route, served_by) labels."""
        path = raw_request_path(environ)
        if method == "OPTIONS":
            return self._options(environ, path)
        if path == self.config.traffic_report_path and method in ("GET", "HEAD"):
            body = json.dumps(self.traffic_report(), sort_keys=True).encode() + b"\n"
            return _Answer(200, [("Content-Type", JSON_CONTENT_TYPE)], body), (path, "rpckit")
        resolution = self.router.resolve(method, path)
        if isinstance(resolution, Match) and not self._converters_accept(resolution):
            resolution = NotFound()  # the legacy rule's converter refuses the value
        if not isinstance(resolution, Match):
            return self._unmatched(environ, resolution)
        return self._matched(environ, resolution, method, path)

    def _matched(
        self, environ: WSGIEnvironment, resolution: Match, method: str, path: str
    ) -> _Served:
        route = resolution.route
        settings = self._settings[route_key(route)]
        label = route.template.text
        if self.fallback is None:
            return self._handle(environ, resolution, settings, body=None), (label, "rpckit")
        primary = choose_primary(settings.rollout_percent, self._rng)
        if settings.shadow:
            answer = self._shadow(
                environ, resolution, settings=settings, primary=primary, method=method, path=path
            )
            return answer, (label, primary)
        if primary == "fallback":
            return None, (label, "fallback")
        return self._handle(environ, resolution, settings, body=None), (label, "rpckit")

    def _unmatched(
        self, environ: WSGIEnvironment, resolution: NotFound | MethodNotAllowed | RedirectSlash
    ) -> _Served:
        if isinstance(resolution, MethodNotAllowed):
            return self._method_not_allowed(environ, resolution.allowed), ("(none)", "rpckit")
        if isinstance(resolution, RedirectSlash):
            query = environ.get("QUERY_STRING")
            location = resolution.location + (f"?{query}" if query else "")
            return _Answer(308, [("Location", location)], b""), ("(redirect)", "rpckit")
        if self.fallback is not None:
            return None, (FALLBACK_ROUTE, "fallback")
        error = HttpError(404, reason_phrase(404), reason="not_found")
        return self._error(error, self._default_profile), ("(none)", "rpckit")

    # ---------------------------------------------------------------- routing answers

    def _options(self, environ: WSGIEnvironment, path: str) -> _Served:
        allowed = self.router.allowed_methods(path)
        if not allowed:
            if self.fallback is not None:
                return None, (FALLBACK_ROUTE, "fallback")
            error = HttpError(404, reason_phrase(404), reason="not_found")
            return self._error(error, self._default_profile), ("(none)", "rpckit")
        if self.fallback is not None:
            theirs = _capture(self.fallback, environ)
            if theirs.status < 400 and self.dialect.fallback_answers_untouched:
                return _untouched(theirs), ("(options)", "fallback")
            if theirs.status < 400:
                merged = _merge_allow(allowed, _header(theirs.headers, "Allow"))
                return _with_allow(theirs, merged), ("(options)", "fallback")
        answer = _Answer(200, [("Allow", ", ".join(allowed))], b"")
        return answer, ("(options)", "rpckit")

    def _method_not_allowed(self, environ: WSGIEnvironment, allowed: Sequence[str]) -> _Answer:
        if self.fallback is not None:
            theirs = _capture(self.fallback, environ)
            if theirs.status != 404 and self.dialect.fallback_answers_untouched:
                return _untouched(theirs)
            if theirs.status == 405:
                merged = _merge_allow(allowed, _header(theirs.headers, "Allow"))
                return _with_allow(theirs, merged)
            if theirs.status != 404:  # the fallback still serves this method here
                return _Answer(theirs.status, list(theirs.headers), theirs.body)
        error = HttpError(
            405,
            reason_phrase(405),
            reason="method_not_allowed",
            headers=[("Allow", ", ".join(allowed))],
        )
        return self._error(error, self._default_profile)

    # ---------------------------------------------------------------- shadow

    def _shadow(
        self,
        environ: WSGIEnvironment,
        match: Match,
        *,
        settings: RouteSettings,
        primary: Side,
        method: str,
        path: str,
    ) -> _Answer:
        assert self.fallback is not None
        try:
            body = _read_body(environ, settings.max_body_bytes)
        except HttpError:
            body = None  # over the limit: only the primary answers (its own 413)
        if body is None:
            if primary == "fallback":
                theirs = _capture(self.fallback, environ)
                return _Answer(theirs.status, list(theirs.headers), theirs.body)
            return self._handle(environ, match, settings, body=None)
        ours = self._handle(_with_body(environ, body), match, settings, body=body).captured()
        try:
            theirs = _capture(self.fallback, _with_body(environ, body))
        except Exception:
            if primary == "fallback":
                raise
            _shadow_log.exception("shadow call to the fallback failed on %s %s", method, path)
            return _Answer(ours.status, list(ours.headers), ours.body)
        first, second = (ours, theirs) if primary == "rpckit" else (theirs, ours)
        differences, count = compare_responses(first, second)
        report = ShadowReport(
            route=route_key(match.route),
            method=method,
            path=path,
            primary=primary,
            primary_status=first.status,
            shadow_status=second.status,
            differences=differences,
            difference_count=count,
        )
        self.traffic.record_shadow(route=match.route.template.text, matched=report.matched)
        if report.matched:
            _shadow_log.debug(
                "shadow match on %s", report.route, extra={"shadow": report.as_dict()}
            )
        else:
            _shadow_log.warning(
                "shadow mismatch on %s: %s",
                report.route,
                json.dumps(report.as_dict(), sort_keys=True, default=str),
                extra={"shadow": report.as_dict()},
            )
        if self._on_shadow is not None:
            self._on_shadow(report)
        return _Answer(first.status, list(first.headers), first.body)

    # ---------------------------------------------------------------- the call

    def _handle(
        self,
        environ: WSGIEnvironment,
        match: Match,
        settings: RouteSettings,
        *,
        body: bytes | None,
    ) -> _Answer:
        """The answer of a migrated route, inside the legacy app's request context and the
        per-call hook if any, after the app's response hooks (``Dialect``)."""
        with contextlib.ExitStack() as contexts:
            hooks = self._flask
            flask_context = None
            if hooks is not None and self.dialect.flask_request_context:
                flask_context = contexts.enter_context(hooks.request_context(environ))
            if self.config.call_context is not None:
                contexts.enter_context(self.config.call_context(environ))
            answer = self._answer(environ, match, settings, body=body)
            if hooks is not None and self.dialect.flask_response_hooks:
                if flask_context is None:
                    flask_context = contexts.enter_context(hooks.request_context(environ))
                status, headers, data = hooks.process_response(
                    flask_context, answer.status, answer.headers, answer.body
                )
                answer = _Answer(status, headers, data)
            return answer

    def _answer(
        self,
        environ: WSGIEnvironment,
        match: Match,
        settings: RouteSettings,
        *,
        body: bytes | None,
    ) -> _Answer:
        route = match.route
        profile = settings.json
        identity: object = None
        try:
            metadata = self._metadata(environ)
            if self.auth is not None:
                identity = self._authenticate(self.auth, environ, route, metadata)
            if settings.guard is not None:
                with self._guard_times.run(route_key(route), _outside(environ)):
                    identity = self._run_guard(settings, route, metadata)
            read = self.dialect.timeout_headers
            timeout = deadline_from_headers(
                _text(environ.get("HTTP_X_REQUEST_TIMEOUT"))
                if TIMEOUT_HEADERS[0] in read
                else None,
                _text(environ.get("HTTP_GRPC_TIMEOUT")) if TIMEOUT_HEADERS[1] in read else None,
            )
            if timeout is None:
                timeout = settings.timeout_s
            deadline = None if timeout is None else self._received_at(environ) + timeout
            request = self._request(environ, match, settings, body)
        except HttpError as error:
            error.route = route_key(route)
            return self._error(error, profile)
        assert self._invoker is not None  # routes exist only with a source of calls
        with identity_set(identity):
            outcome = self._invoke(route, request, metadata, deadline, environ)
        headers = self._headers_from_metadata(outcome)
        if not outcome.ok:
            failed = HttpError(
                self._status_of_failed(outcome),
                outcome.message,
                reason="call_failed",
                grpc_code=outcome.code,
                headers=headers,
                details=outcome.details(),
                route=route_key(route),
            )
            return self._error(failed, profile)
        assert outcome.response is not None
        return self._success(environ, route, settings, outcome.response, headers)

    def _invoke(
        self,
        route: Route,
        request: Message,
        metadata: tuple[tuple[str, str], ...],
        deadline: float | None,
        environ: WSGIEnvironment,
    ) -> CallOutcome:
        assert self._invoker is not None
        return self._invoker.call(
            route,
            request,
            metadata=metadata,
            deadline=deadline,
            peer=_peer(environ),
            outside_turn=_outside(environ),
        )

    def _status_of_failed(self, outcome: CallOutcome) -> int:
        """The HTTP status of a failed call: ``overload_status`` for admission control's
        refusals (RESOURCE_EXHAUSTED with a pushback), else the code's from the table."""
        overload = self.config.overload_status
        if (
            overload is not None
            and outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            and any(key == PUSHBACK_METADATA_KEY for key, _ in outcome.metadata)
        ):
            return overload
        return http_status_for(outcome.code, self.config.status_for_code)

    def _authenticate(
        self,
        policy: AuthPolicy,
        environ: WSGIEnvironment,
        route: Route,
        metadata: tuple[tuple[str, str], ...],
    ) -> object:
        """The auth policy's identity for the call; an :class:`HttpError` (401/403) if refused."""
        subject, sans = identity_from_peercert(environ.get(PEER_CERT_ENVIRON_KEY))
        authorization = _text(environ.get("HTTP_AUTHORIZATION"))
        caller = Caller(
            method=route.grpc_method,
            transport="http",
            peer=_peer(environ),
            token=bearer_token([("authorization", authorization)]),
            cert_subject=subject,
            cert_sans=sans,
            metadata=metadata,
        )
        result = policy.decide(caller)
        deny = result.decision
        if not isinstance(deny, Deny):
            return deny.identity
        self._auth_refusals(route_key(route), caller.peer, deny, result.error)
        if self._on_auth_denied is not None:
            self._on_auth_denied(route.grpc_method, deny.code)
        challenge = policy.challenge
        if deny.code is AuthCode.UNAUTHENTICATED and caller.token is not None:
            challenge += ', error="invalid_token"'
        return_headers = (
            [("WWW-Authenticate", challenge)] if deny.code is AuthCode.UNAUTHENTICATED else []
        )
        raise HttpError(
            deny.code.http_status,
            deny.message,
            reason="call_failed",
            grpc_code=grpc.StatusCode[deny.code.value],
            headers=return_headers,
        )

    def _run_guard(
        self, settings: RouteSettings, route: Route, metadata: tuple[tuple[str, str], ...]
    ) -> object:
        """The guard's identity for the handler; an :class:`HttpError` if it refuses."""
        assert settings.guard is not None
        try:
            return settings.guard(GuardedCall(route=route, metadata=metadata))
        except StatusError as refused:
            status = to_grpc_status(refused)
            outcome = CallOutcome(
                None, refused.code, refused.message, tuple(status.trailing_metadata or ())
            )
            raise HttpError(
                http_status_for(refused.code, self.config.status_for_code),
                refused.message,
                reason="call_failed",
                grpc_code=refused.code,
                headers=self._headers_from_metadata(outcome),
                details=outcome.details(),
            ) from None

    def _request(
        self, environ: WSGIEnvironment, match: Match, settings: RouteSettings, body: bytes | None
    ) -> Message:
        route = match.route
        strict = settings.strict_types
        webargs = settings.body_mode == "webargs"
        # webargs reports every field at fault together; json, the first one.
        found: list[FieldViolation] | None = [] if webargs else None
        decoded: Any = None
        if route.body:
            content_type = _text(environ.get("CONTENT_TYPE"))
            if settings.content_types is not None and content_type not in settings.content_types:
                raise HttpError(
                    415,
                    "expected Content-Type: " + " or ".join(settings.content_types),
                    reason="unsupported_media_type",
                    location="header",
                    field="Content-Type",
                )
            is_json = is_json_content_type(content_type)
            if not is_json and not webargs and self.config.require_json_content_type:
                raise HttpError(
                    415,
                    "expected Content-Type: application/json",
                    reason="unsupported_media_type",
                    location="header",
                    field="Content-Type",
                )
            raw = body if body is not None else _read_body(environ, settings.max_body_bytes)
            if len(raw) > settings.max_body_bytes:
                raise HttpError(413, reason_phrase(413), reason="body_too_large")
            if webargs and (not is_json or not raw.strip()):
                decoded = {}  # webargs' json location: no JSON body reads as an empty object
            else:
                decoded = decode_body(raw, strict=strict)
            if strict:
                decoded = check_body_types(decoded, route, settings.json, found=found)
            if found is not None and settings.required_fields:
                check_required(decoded, settings.required_fields, settings.json, found)
        query = parse_query(str(environ.get("QUERY_STRING", "")))
        if strict:
            query = check_query_types(
                route, query, python_ints=settings.query_ints == "python", found=found
            )
        if found:
            raise HttpError.for_violations(found, status=_WEBARGS_VALIDATION_STATUS)
        try:
            return build_request(route, match.path_params, query, decoded, profile=settings.json)
        except RequestError as exc:
            described = exc.message
            raise HttpError(
                400,
                str(exc),
                reason="bad_parameter",
                field=exc.field,
                fields=exc.fields,
                description=described,
                location=exc.location,
            ) from None

    def _success(
        self,
        environ: WSGIEnvironment,
        route: Route,
        settings: RouteSettings,
        response: Message,
        headers: list[tuple[str, str]],
    ) -> _Answer:
        profile = settings.json
        for name, template in settings.response_headers:
            headers.append((name, _fill(template, response, environ)))
        if settings.success_status == 204:
            return _Answer(204, headers, b"")
        if route.response_body:
            obj = field_to_obj(response, route.response_body, profile)
        else:
            obj = message_to_obj(response, profile)
        return _Answer(
            settings.success_status,
            [("Content-Type", JSON_CONTENT_TYPE), *headers],
            dumps(obj, profile),
        )

    def _internal_error(self) -> _Answer:
        """500 through the renderer; a fixed body if the renderer itself fails."""
        error = HttpError(500, INTERNAL_MESSAGE, reason="internal")
        try:
            return self._error(error, self._default_profile)
        except Exception:  # noqa: BLE001 - the renderer is user code; the answer must still go out
            _log.exception("the error renderer failed")
            fixed = dumps({"code": error.grpc_code.value[0], "message": INTERNAL_MESSAGE})
            return _Answer(500, [("Content-Type", JSON_CONTENT_TYPE)], fixed)

    def _error(self, error: HttpError, profile: LegacyProfile) -> _Answer:
        obj = self.config.error_renderer(error)
        headers = [("Content-Type", JSON_CONTENT_TYPE), *error.headers]
        return _Answer(error.status, headers, dumps(obj, profile))

    # ---------------------------------------------------------------- metadata

    def _received_at(self, environ: WSGIEnvironment) -> float:
        """When the client's wait began: the HTTP server's stamp (rpckit's own server, on
        the monotonic clock) if there is one, else now. The deadline counts from here,
        so time spent queued for a thread or a turn comes out of the route's timeout."""
        now = self._clock()
        received = environ.get(RECEIVED_AT_ENVIRON_KEY)
        if self._clock is time.monotonic and isinstance(received, float) and received <= now:
            return received
        return now

    def _metadata(self, environ: WSGIEnvironment) -> tuple[tuple[str, str], ...]:
        pairs = []
        for name, key in self._forwarded:
            value = environ.get(key)
            if isinstance(value, str) and value.isascii() and value.isprintable():
                pairs.append((name, value))
        return tuple(pairs)

    def _headers_from_metadata(self, outcome: CallOutcome) -> list[tuple[str, str]]:
        wanted = self.config.response_headers
        headers = []
        for key, value in outcome.metadata:
            name = wanted.get(key)
            if name is not None and isinstance(value, str) and value.isprintable():
                headers.append((name, value))
            if key == PUSHBACK_METADATA_KEY and self.config.retry_after_from_pushback:
                with contextlib.suppress(ValueError, TypeError):
                    seconds = max(1, math.ceil(int(value) / 1000))
                    headers.append(("Retry-After", str(seconds)))
        return headers


# ---------------------------------------------------------------- helpers


def _service_descriptor(service: object) -> descriptor.ServiceDescriptor:
    if isinstance(service, descriptor.ServiceDescriptor):
        return service
    if isinstance(service, str):
        try:
            found: descriptor.ServiceDescriptor = descriptor_pool.Default().FindServiceByName(
                service
            )
        except KeyError:
            raise ValueError(
                f"no service {service!r} in the descriptor pool: import its generated _pb2 module"
            ) from None
        return found
    return bind(service).service


def _environ_key(header: str) -> str:
    """Where WSGI puts a request header: ``x-request-id`` -> ``HTTP_X_REQUEST_ID``."""
    return "HTTP_" + header.upper().replace("-", "_")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _peer(environ: WSGIEnvironment) -> str:
    address = environ.get("REMOTE_ADDR") or "unknown"
    port = environ.get("REMOTE_PORT") or "0"
    family = "ipv6" if ":" in str(address) else "ipv4"
    return f"{family}:{address}:{port}"


def _read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body; 413 :class:`HttpError` beyond (without reading it)."""
    stream = environ.get("wsgi.input")
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise HttpError(400, "malformed Content-Length", reason="bad_parameter") from None
        if length > limit:
            raise HttpError(413, reason_phrase(413), reason="body_too_large")
        return stream.read(length) if (length > 0 and stream is not None) else b""
    chunked = str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower() == "chunked"
    if stream is None or not (chunked or environ.get("wsgi.input_terminated")):
        return b""
    data = bytearray()
    for _ in range(limit // _CHUNK + 2):  # bounded: at most limit + one chunk
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise HttpError(413, reason_phrase(413), reason="body_too_large")
    return bytes(data)


def _with_body(environ: WSGIEnvironment, body: bytes) -> WSGIEnvironment:
    copy = dict(environ)
    copy["wsgi.input"] = io.BytesIO(body)
    copy["CONTENT_LENGTH"] = str(len(body))
    copy.pop("HTTP_TRANSFER_ENCODING", None)
    return copy


def _outside(environ: WSGIEnvironment) -> OutsideTurn | None:
    """The HTTP server's way out of the request's turn, if it gave one
    (:mod:`rpckit.http._server._turns`).

    Taken around what may block -- the fallback app always; handlers, proxied
    calls and guards unless they have been quick lately -- so a request
    waiting on I/O does not hold up the others.
    """
    outside: OutsideTurn | None = environ.get(OUTSIDE_TURN_ENVIRON_KEY)
    return outside


def _fallback_key(environ: WSGIEnvironment) -> str:
    """What kind of fallback request this is, for its run time: method and first segment."""
    path = str(environ.get("PATH_INFO") or "/")
    return f"{environ.get('REQUEST_METHOD')} /{path[1:].split('/', 1)[0][:64]}"


def _outside_turn(environ: WSGIEnvironment) -> contextlib.AbstractContextManager[Any]:
    """``with _outside_turn(environ):`` runs without the request's turn (if any)."""
    outside = _outside(environ)
    return contextlib.nullcontext() if outside is None else outside()


def _capture(app: WSGIApplication, environ: WSGIEnvironment) -> CapturedResponse:
    """Call a WSGI app and hold its whole answer in memory."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], Any]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, list(headers)]
        return written.append

    with _outside_turn(environ):
        result = app(environ, start_response)
        try:
            chunks = [*written, *result]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    if not started:
        raise RuntimeError("the fallback app returned without calling start_response")
    status = int(str(started[0]).split(" ", 1)[0])
    return CapturedResponse(
        status, tuple((str(k), str(v)) for k, v in started[1]), b"".join(chunks)
    )


def _header(headers: Iterable[tuple[str, str]], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers if k.lower() == wanted), "")


def _merge_allow(ours: Sequence[str], theirs: str) -> str:
    methods = {m.strip().upper() for m in theirs.split(",") if m.strip()} | set(ours)
    return ", ".join(sorted(methods))


def _untouched(captured: CapturedResponse) -> _Answer:
    """The fallback's answer as it gave it (its ``Content-Length`` is sent again by ``send``)."""
    headers = [(k, v) for k, v in captured.headers if k.lower() != "content-length"]
    return _Answer(captured.status, headers, captured.body)


def _with_allow(captured: CapturedResponse, allow: str) -> _Answer:
    headers = [(k, v) for k, v in captured.headers if k.lower() not in ("allow", "content-length")]
    return _Answer(captured.status, [*headers, ("Allow", allow)], captured.body)


def _fill(template: str, response: Message, environ: WSGIEnvironment) -> str:
    """``/items/{sku}`` with ``{sku}`` from the response, percent-encoded as a path segment;
    ``{$scheme}``, ``{$host}``, ``{$script_root}`` and ``{$url_root}`` from the request."""

    def value(path: str) -> str:
        if path.startswith("$"):
            return request_url_part(environ, path)
        current: Any = response
        for name in path.split("."):
            current = getattr(current, name)
        return quote(str(current), safe=_PATH_SEGMENT_SAFE)

    out = []
    rest = template
    while "{" in rest and "}" in rest:  # bounded: each turn consumes one placeholder
        before, _, tail = rest.partition("{")
        path, _, rest = tail.partition("}")
        out.append(before)
        out.append(value(path))
    out.append(rest)
    return "".join(out)

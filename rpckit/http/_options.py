"""How each route of the legacy HTTP shim behaves: options, where they come from, and merging.

A route's settings are layered, later layers winning field by field:

1. :class:`ShimConfig`'s shim-wide defaults (body limit, deadline);
2. the service's ``(rpckit.v1.http_defaults)`` proto option;
3. the method's ``(rpckit.v1.http)`` proto option;
4. Python :class:`RouteOptions` keyed by the service (``"inventory.v1.Inventory"``),
   then by the method (``"inventory.v1.Inventory.CreateItem"``), then by one HTTP
   binding (``"GET /items/{sku}/tags"``).

Proto options carry the contract (JSON dialect, success status, headers) next
to the ``google.api.http`` rule; Python options add what only code can say
(guards) and what operations change (shadowing, rollout). The result for each
route is one frozen :class:`RouteSettings`. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import grpc
from google.protobuf import descriptor

from rpckit.core._auth import AuthPolicy
from rpckit.core._descriptors import FieldPathError, fields_on_path
from rpckit.core._validate import check_fields, check_int
from rpckit.core._wire import CRITICALITY_METADATA_KEY
from rpckit.http._dialect import Dialect
from rpckit.http._errors import ErrorRenderer, render_gateway_error
from rpckit.http._mapping._converters import CONVERTERS, ConverterName
from rpckit.http._mapping._jsonmap import LegacyProfile
from rpckit.http._mapping._routes import Route
from rpckit.v1 import http_pb2

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_FORWARD_HEADERS",
    "DEFAULT_RESPONSE_HEADERS",
    "SUCCESS_STATUSES",
    "BodyMode",
    "CallContext",
    "Guard",
    "GuardedCall",
    "QueryInts",
    "RouteOptions",
    "RouteSettings",
    "ShimConfig",
    "check_option_keys",
    "guard_identity",
    "method_key",
    "resolve_settings",
    "route_key",
]

#: Success statuses a route may declare (the ones a JSON view returns with a body or none).
SUCCESS_STATUSES = frozenset({200, 201, 202, 204})

#: Request headers that reach handlers as metadata unless configured otherwise:
#: credentials (handlers authorise), request ids and trace context (logs, tracing),
#: and rpckit's own criticality (admission sheds sheddable traffic first).
DEFAULT_FORWARD_HEADERS = (
    "authorization", "x-request-id", "traceparent", "tracestate", CRITICALITY_METADATA_KEY,
)  # fmt: skip

#: Response metadata keys that become HTTP headers, and the header names:
#: an auth challenge and a request id a handler may set.
DEFAULT_RESPONSE_HEADERS: Mapping[str, str] = {
    "www-authenticate": "WWW-Authenticate",
    "x-request-id": "X-Request-Id",
}

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")

#: Placeholders a response header template may use for the request's own URL:
#: ``{$scheme}://{$host}{$script_root}/pets/{id}`` is Flask's ``url_for(..., _external=True)``.
REQUEST_PLACEHOLDERS = frozenset({"$scheme", "$host", "$script_root", "$url_root"})
_REQUEST_PLACEHOLDER = re.compile(r"\{(\$[A-Za-z_]+)\}")


@dataclasses.dataclass(frozen=True)
class GuardedCall:
    """What a guard sees: the route and the request metadata (allowlisted headers)."""

    route: Route
    metadata: tuple[tuple[str, str], ...]

    def header(self, key: str) -> str | None:
        """The first metadata value under ``key`` (lower case), or None."""
        return next((v for k, v in self.metadata if k == key), None)


#: Runs after routing and before the body is read; raise ``rpckit.StatusError`` to refuse.
#: For checks a legacy app made first (a bearer token), so a request that fails two
#: checks gets the same error as before the migration. What it returns (the caller's
#: identity, say its user record) is the handler's :func:`guard_identity` for that call.
Guard = Callable[[GuardedCall], object]

#: A per-call hook: given the WSGI environ, a context manager the guard, the handler
#: and the answer run inside (e.g. a legacy app's ``app.app_context()``).
CallContext = Callable[[dict[str, Any]], contextlib.AbstractContextManager[Any]]  # (WSGI environ)

#: How a route reads its body. ``"json"``: as the JSON it is (the content type must
#: be JSON, an empty body is no body, the first wrong field fails). ``"webargs"``: as
#: webargs' ``json`` location did: a body that is not JSON by its content type, or is
#: empty, reads as ``{}``, and every wrong field is reported together.
BodyMode = Literal["json", "webargs"]

#: How strict query integers are read (``RouteOptions.query_ints``).
QueryInts = Literal["strict", "python"]

_IDENTITY: contextvars.ContextVar[object] = contextvars.ContextVar("rpckit_http_identity")


def guard_identity() -> object:
    """What the route's guard returned for the request being handled (None: no guard,
    or it returned nothing). For handlers called by the shim; None elsewhere."""
    return _IDENTITY.get(None)


@contextlib.contextmanager
def identity_set(identity: object) -> Iterator[None]:
    """Makes ``identity`` the :func:`guard_identity` inside the block."""
    token = _IDENTITY.set(identity)
    try:
        yield
    finally:
        _IDENTITY.reset(token)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouteOptions:
    """Python options for a service, a method or one HTTP binding; ``None`` inherits.

    Attributes:
        json: the whole JSON dialect (replaces the inherited profile).
        strict_types: check request JSON types as a hand-written view did (see
            ``rpckit/v1/http.proto``, ``LegacyJson.strict_types``).
        success_status: 200, 201, 202 or 204.
        response_headers: ``(name, template)`` pairs added to successful responses;
            ``{field.path}`` in a template is filled from the response message.
        timeout_s: the deadline when the request sets none.
        max_body_bytes: largest request body (413 beyond).
        guard: run before the body is read (auth); raises ``StatusError`` to refuse.
        shadow: also call the fallback app (or rpckit, when the fallback is the
            primary), compare status and JSON, log the difference.
        rollout_percent: share of requests whose answer comes from rpckit, 0-100;
            the rest are answered by the fallback app.
        shadow_side_effects: allow ``shadow`` on a method not marked
            ``idempotency_level = NO_SIDE_EFFECTS`` (both sides would run a write).
        path_converters: Werkzeug converter per path variable (``{"pet_id": "int"}``;
            ``string``, ``int``, ``signed_int``, ``float``, ``uuid``, ``path``): a
            value the converter refuses does not match the route, so the fallback
            (or a 404) answers, as the Flask rule did. The Flask dialect infers
            them from the field types (integers ``int``, floats ``float``).
        content_types: the exact ``Content-Type`` values a body may come with
            (``["application/json"]``); anything else, a missing header
            included, is 415, as a view comparing ``request.content_type`` did.
        body_mode: ``"json"`` or ``"webargs"`` (:data:`BodyMode`).
        query_ints: how strict query integers are read: ``"strict"``
            (``-?[0-9]+``, a view's regex) or ``"python"`` (what Python's ``int()``
            reads: ``+1``, `` 1`` -- a ``+`` in a query is a space --, ``1_0``), as
            ``request.args.get("page", type=int)`` and marshmallow's ``Int()`` did.
        required_fields: body keys that must be present and not null, checked
            with the types in ``"webargs"`` mode (marshmallow's ``required=True``):
            each absent one is a ``missing`` violation.
    """

    json: LegacyProfile | None = None
    strict_types: bool | None = None
    success_status: int | None = None
    response_headers: Sequence[tuple[str, str]] | None = None
    timeout_s: float | None = None
    max_body_bytes: int | None = None
    guard: Guard | None = None
    shadow: bool | None = None
    rollout_percent: float | None = None
    shadow_side_effects: bool | None = None
    path_converters: Mapping[str, ConverterName] | None = None
    content_types: Sequence[str] | None = None
    body_mode: BodyMode | None = None
    required_fields: Sequence[str] | None = None
    query_ints: QueryInts | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        self._check_legacy_input()
        if self.success_status is not None:
            _check_success_status(self.success_status, "RouteOptions.success_status")
        if self.response_headers is not None:
            object.__setattr__(self, "response_headers", tuple(self.response_headers))
            for name, value in self.response_headers:
                _check_header(name, value)
        if self.timeout_s is not None and not (
            self.timeout_s > 0 and math.isfinite(self.timeout_s)
        ):
            raise ValueError(f"RouteOptions.timeout_s must be > 0, got {self.timeout_s!r}")
        if self.rollout_percent is not None and not 0 <= self.rollout_percent <= 100:
            raise ValueError(
                f"RouteOptions.rollout_percent must be from 0 to 100, got {self.rollout_percent!r}"
            )
        if self.guard is not None and not callable(self.guard):
            raise TypeError(f"RouteOptions.guard must be callable, not {self.guard!r}")

    def _check_legacy_input(self) -> None:
        """Validate (and freeze) the options for reading legacy input."""
        if self.required_fields is not None:
            if isinstance(self.required_fields, str):
                raise TypeError("RouteOptions.required_fields is a sequence of keys, not a str")
            object.__setattr__(self, "required_fields", tuple(self.required_fields))
        if self.path_converters is not None:
            object.__setattr__(self, "path_converters", dict(self.path_converters))
            for variable, name in self.path_converters.items():
                if name not in CONVERTERS:
                    raise ValueError(
                        f"RouteOptions.path_converters[{variable!r}]: unknown converter "
                        f"{name!r}; use one of {sorted(CONVERTERS)}"
                    )
        if self.content_types is not None:
            if isinstance(self.content_types, str):
                raise TypeError("RouteOptions.content_types is a sequence of values, not a str")
            object.__setattr__(self, "content_types", tuple(self.content_types))
        if self.query_ints is not None and self.query_ints not in ("strict", "python"):
            raise ValueError(
                f"RouteOptions.query_ints must be 'strict' or 'python', not {self.query_ints!r}"
            )
        if self.body_mode is not None and self.body_mode not in ("json", "webargs"):
            raise ValueError(
                f"RouteOptions.body_mode must be 'json' or 'webargs', not {self.body_mode!r}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouteSettings:
    """Everything one route needs at request time, every field resolved."""

    json: LegacyProfile
    strict_types: bool
    success_status: int
    response_headers: tuple[tuple[str, str], ...]
    timeout_s: float | None
    max_body_bytes: int
    guard: Guard | None
    shadow: bool
    rollout_percent: float
    path_converters: Mapping[str, ConverterName]
    content_types: tuple[str, ...] | None
    body_mode: BodyMode
    required_fields: tuple[str, ...]
    query_ints: QueryInts


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShimConfig:
    """Shim-wide behaviour; per-route behaviour is in proto options and :class:`RouteOptions`.

    Attributes:
        strict_slashes: Flask's default (True): a route declared ``/items/``
            redirects ``/items`` (308), and ``/items`` does not match ``/items/``.
        max_body_bytes: default request body limit. 4 MiB: grpcio's default
            largest message, so nothing the gRPC port refuses gets in this way.
        default_timeout_s: deadline when neither the request nor the route sets
            one; None (default) means none, as for a gRPC call without a deadline.
        forward_headers: request headers passed to handlers as metadata (lower
            case); everything else stays out. Auth headers must be listed to reach
            handlers (``authorization`` is by default).
        response_headers: response metadata key -> HTTP header name; initial and
            trailing metadata of the call (success or error) become these headers.
        status_for_code: overrides of the gRPC code -> HTTP status table
            (grpc-gateway's by default).
        error_renderer: turns an :class:`~rpckit.http._errors.HttpError` into the
            error body's JSON value; grpc-gateway's body by default
            (``rpckit.http.render_error_object`` gives ``{"error": {"code", "message"}}``).
        require_json_content_type: answer 415 when a route with a body gets
            something other than ``application/json`` (or ``application/*+json``).
        retry_after_from_pushback: turn ``grpc-retry-pushback-ms`` (admission
            control's hint) into ``Retry-After`` (whole seconds, rounded up).
        overload_status: the HTTP status of a call admission control refused for
            overload (RESOURCE_EXHAUSTED with a pushback): 503 Service Unavailable,
            which HTTP clients and proxies retry after ``Retry-After``; None keeps
            the code's status from the table (429 for RESOURCE_EXHAUSTED).
        caller_header: the request header naming the caller in the traffic
            counters; None (default) uses the User-Agent's first product token.
        max_callers: distinct callers counted before the rest count as ``(other)``
            (bounds the label cardinality of the Prometheus counters).
        traffic_report_path: if set, ``GET`` on this path answers the traffic
            report as JSON (e.g. ``/_rpckit/traffic``); None serves none.
        dialect: the legacy habits around the JSON (:class:`~rpckit.http.Dialect`):
            reason phrases, 204 headers, the fallback's answers, path converters,
            deadline headers, Flask's hooks and request context. None (default):
            ``FLASK_DIALECT`` when the fallback is a Flask app (or its
            ``wsgi_app``), else ``RPCKIT_DIALECT``.
        call_context: a per-call hook (:data:`CallContext`): the guard, the
            handler and the answer of each migrated request run inside
            ``call_context(environ)``, after the Flask request context if any.
        auth: who may call the migrated routes (:class:`~rpckit.core._auth.AuthPolicy`,
            the gRPC port's type): asked after routing, before the route's guard and
            before the body is read; a refusal is 401 with ``WWW-Authenticate: Bearer``
            or 403. What the hook's ``Allow`` carries is :func:`guard_identity` (unless
            the route has a guard of its own: what that returns replaces it). None
            (default): the server's policy when the shim is built on one
            (``Shim(server=...)``), else none. Routes the fallback app answers are
            left to it.
    """

    strict_slashes: bool = True
    max_body_bytes: int = 4 * 1024 * 1024
    default_timeout_s: float | None = None
    forward_headers: Sequence[str] = DEFAULT_FORWARD_HEADERS
    response_headers: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RESPONSE_HEADERS)
    )
    status_for_code: Mapping[grpc.StatusCode | str, int] = dataclasses.field(default_factory=dict)
    error_renderer: ErrorRenderer = render_gateway_error
    require_json_content_type: bool = True
    retry_after_from_pushback: bool = True
    overload_status: int | None = 503
    caller_header: str | None = None
    max_callers: int = 100
    traffic_report_path: str | None = None
    dialect: Dialect | None = None
    call_context: CallContext | None = None
    auth: AuthPolicy | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.dialect is not None and not isinstance(self.dialect, Dialect):
            raise TypeError(f"ShimConfig.dialect must be a Dialect, not {self.dialect!r}")
        if self.call_context is not None and not callable(self.call_context):
            raise TypeError(f"ShimConfig.call_context must be callable, not {self.call_context!r}")
        if self.default_timeout_s is not None and not (
            self.default_timeout_s > 0 and math.isfinite(self.default_timeout_s)
        ):
            raise ValueError(
                f"ShimConfig.default_timeout_s must be > 0, got {self.default_timeout_s!r}"
            )
        object.__setattr__(self, "forward_headers", _forward_headers(self.forward_headers))
        object.__setattr__(self, "response_headers", _response_headers(self.response_headers))
        object.__setattr__(self, "status_for_code", _status_table(self.status_for_code))
        if not callable(self.error_renderer):
            raise TypeError(
                f"ShimConfig.error_renderer must be callable, not {self.error_renderer!r}"
            )
        check_int("ShimConfig", "max_callers", self.max_callers, low=1)
        if self.caller_header is not None and not _HEADER_NAME.fullmatch(self.caller_header):
            raise ValueError(f"ShimConfig.caller_header: {self.caller_header!r} is not a header")
        if self.traffic_report_path is not None and not self.traffic_report_path.startswith("/"):
            raise ValueError("ShimConfig.traffic_report_path must start with '/'")
        if self.overload_status is not None:
            check_int("ShimConfig", "overload_status", self.overload_status, low=400, high=599)


def _forward_headers(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError("ShimConfig.forward_headers is a sequence of header names, not a str")
    forward = tuple(h.lower() for h in names)
    for name in forward:
        if not _HEADER_NAME.fullmatch(name) or name.endswith("-bin"):
            raise ValueError(f"ShimConfig.forward_headers: {name!r} is not a text header name")
    return forward


def _response_headers(table: Mapping[str, str]) -> dict[str, str]:
    response = {k.lower(): v for k, v in table.items()}
    for key, name in response.items():
        if not _HEADER_NAME.fullmatch(key) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"ShimConfig.response_headers: bad entry {key!r}: {name!r}")
    return response


def _status_table(table: Mapping[grpc.StatusCode | str, int]) -> dict[str, int]:
    codes = {c.name for c in grpc.StatusCode}
    by_name: dict[str, int] = {}
    for code, status in table.items():
        name = code.name if isinstance(code, grpc.StatusCode) else code
        if name not in codes:
            raise ValueError(f"ShimConfig.status_for_code: {code!r} is not a gRPC code")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"ShimConfig.status_for_code: {status!r} is not an HTTP status")
        by_name[name] = status
    return by_name


def route_key(route: Route) -> str:
    """The key naming one HTTP binding in ``routes=``: ``"GET /items/{sku}/tags"``."""
    return f"{route.http_method} {route.template.text}"


def method_key(route: Route) -> tuple[str, str]:
    """``("inventory.v1.Inventory", "inventory.v1.Inventory.CreateItem")`` for a route."""
    service, _, method = route.grpc_method[1:].partition("/")
    return service, f"{service}.{method}"


def resolve_settings(
    route: Route,
    method: descriptor.MethodDescriptor,
    config: ShimConfig,
    options: Mapping[str, RouteOptions],
) -> RouteSettings:
    """The route's settings from every layer (module docstring); ValueError names the route."""
    settings = RouteSettings(
        json=LegacyProfile(),
        strict_types=False,
        success_status=200,
        response_headers=(),
        timeout_s=config.default_timeout_s,
        max_body_bytes=config.max_body_bytes,
        guard=None,
        shadow=False,
        rollout_percent=100.0,
        path_converters={},
        content_types=None,
        body_mode="json",
        required_fields=(),
        query_ints="strict",
    )
    service_options = method.containing_service.GetOptions()
    if service_options.HasExtension(http_pb2.http_defaults):
        settings = _apply_proto(settings, service_options.Extensions[http_pb2.http_defaults], route)
    method_options = method.GetOptions()
    if method_options.HasExtension(http_pb2.http):
        settings = _apply_proto(settings, method_options.Extensions[http_pb2.http], route)
    service_name, method_name = method_key(route)
    shadow_side_effects = False
    for key in (service_name, method_name, route_key(route)):
        layer = options.get(key)
        if layer is not None:
            settings = _apply_python(settings, layer)
            if layer.shadow_side_effects is not None:
                shadow_side_effects = layer.shadow_side_effects
    if settings.shadow and not shadow_side_effects:
        level = method_options.idempotency_level
        if level != method_options.NO_SIDE_EFFECTS:
            raise ValueError(
                f"{route}: shadow mode runs the call twice, but the method is not marked "
                "idempotency_level = NO_SIDE_EFFECTS; set RouteOptions(shadow_side_effects=True) "
                "if both sides may run it"
            )
    if route.response_body and settings.success_status == 204:
        raise ValueError(f"{route}: success_status 204 sends no body, but response_body is set")
    for _, template in settings.response_headers:
        for field_path in _PLACEHOLDER.findall(template):
            _check_response_path(route, field_path)
    _check_legacy_settings(route, settings)
    return settings


def _check_legacy_settings(route: Route, settings: RouteSettings) -> None:
    """ValueError naming the route for request placeholders, required fields and
    converters that cannot work."""
    for _, template in settings.response_headers:
        for name in _REQUEST_PLACEHOLDER.findall(template):
            if name not in REQUEST_PLACEHOLDERS:
                raise ValueError(
                    f"{route}: response header placeholder {{{name}}}: use one of "
                    f"{sorted(REQUEST_PLACEHOLDERS)}"
                )
    if settings.required_fields and settings.body_mode != "webargs":
        raise ValueError(f"{route}: required_fields is checked only with body_mode='webargs'")
    variables = set(route.template.field_paths)
    unknown = sorted(set(settings.path_converters) - variables)
    if unknown:
        raise ValueError(
            f"{route}: path_converters names no path variable: {unknown}; "
            f"the variables are {sorted(variables)}"
        )


def _apply_proto(
    settings: RouteSettings, options: http_pb2.HttpOptions, route: Route
) -> RouteSettings:
    changes: dict[str, object] = {}
    if options.HasField("json"):
        changes["json"] = _profile_from_proto(settings.json, options.json)
        if options.json.HasField("strict_types"):
            changes["strict_types"] = options.json.strict_types
    if options.success_status:
        try:
            _check_success_status(options.success_status, "success_status")
        except ValueError as exc:
            raise ValueError(f"{route}: (rpckit.v1.http) {exc}") from None
        changes["success_status"] = options.success_status
    if options.response_headers:
        headers = [(h.name, h.value) for h in options.response_headers]
        for name, value in headers:
            try:
                _check_header(name, value)
            except ValueError as exc:
                raise ValueError(f"{route}: (rpckit.v1.http) {exc}") from None
        changes["response_headers"] = (*settings.response_headers, *headers)
    if options.timeout_ms:
        changes["timeout_s"] = options.timeout_ms / 1000
    if options.max_body_bytes:
        changes["max_body_bytes"] = options.max_body_bytes
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def _profile_from_proto(base: LegacyProfile, json: http_pb2.LegacyJson) -> LegacyProfile:
    changes: dict[str, object] = {}
    if json.field_names:
        changes["field_names"] = "proto" if json.field_names == json.PROTO_NAMES else "json"
    if json.HasField("int64_as_number"):
        changes["int64_as_number"] = json.int64_as_number
    if json.HasField("emit_defaults"):
        changes["emit_defaults"] = json.emit_defaults
    if json.enum_style:
        changes["enum_style"] = "name" if json.enum_style == json.ENUM_NAMES else "number"
    if json.unknown_fields:
        reject = json.unknown_fields == json.REJECT_UNKNOWN
        changes["unknown_fields"] = "reject" if reject else "ignore"
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _apply_python(settings: RouteSettings, options: RouteOptions) -> RouteSettings:
    changes = {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(RouteSettings)
        if getattr(options, field.name, None) is not None
    }
    if "response_headers" in changes:
        changes["response_headers"] = tuple(options.response_headers or ())
    return dataclasses.replace(settings, **changes)


def _check_success_status(status: int, what: str) -> None:
    if status not in SUCCESS_STATUSES:
        raise ValueError(f"{what} must be one of {sorted(SUCCESS_STATUSES)}, got {status!r}")


def _check_header(name: str, value: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"response header {name!r} is not a header name")
    if any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise ValueError(f"response header {name}: {value!r} must be printable ASCII")


def _check_response_path(route: Route, field_path: str) -> None:
    try:
        leaf = fields_on_path(route.response_descriptor, field_path)[-1]
    except FieldPathError as exc:
        broken = (
            f"{exc.owner} has no field {exc.name!r}"
            if exc.missing
            else f"{exc.name!r} is not a singular message field"
        )
        raise ValueError(
            f"{route}: response header placeholder {{{field_path}}}: {broken}"
        ) from None
    if leaf.is_repeated or leaf.message_type is not None:
        raise ValueError(
            f"{route}: response header placeholder {{{field_path}}} must name a scalar field"
        )


def check_option_keys(options: Mapping[str, RouteOptions], routes: Sequence[Route]) -> None:
    """ValueError naming any ``routes=`` key that names no service, method or binding."""
    known: set[str] = set()
    for route in routes:
        service, method = method_key(route)
        known.update((service, method, route_key(route)))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"routes= keys name nothing served: {unknown}; use a service "
            "('pkg.Service'), a method ('pkg.Service.Method') or a binding "
            "('GET /path/{var}'), one of: " + ", ".join(sorted(known))
        )
    for key, value in options.items():
        if not isinstance(value, RouteOptions):
            raise TypeError(f"routes[{key!r}] must be a RouteOptions, not {type(value).__name__}")

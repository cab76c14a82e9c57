"""How one call runs: the wrapper rpckit puts around every generated method handler.

For each call the wrapper

1. answers at once if the auth gate refused the call (``rpckit.server._auth_gate``,
   only when it could not end the call itself) or admission control rejected it (the executor's
   verdict): RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED, ``grpc-retry-pushback-ms``;
   or if the request did not parse (:mod:`rpckit.server._bad_input`: the
   wrapper's deserializer never raises): INVALID_ARGUMENT naming the method and
   the parse error, counted and logged once per interval, the handler not run;
2. opens a :class:`~rpckit.core._deadline.CallScope` (deadline, cancellation flag set
   by ``context.add_callback``) so handler code and outbound calls see them;
3. maps errors: :class:`~rpckit.StatusError` becomes its status with rich
   details; ``context.abort`` passes through; any other exception becomes
   INTERNAL with a generic message while the traceback goes to the log;
4. adds the load report trailer to every response, success or failure
   (unless the context says ``wants_load_report = False``: the HTTP shim's,
   whose callers never see trailers).

Handlers stay plain grpcio servicers and never see any of this.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, cast

import grpc

from rpckit.core._deadline import _SCOPE, CallScope, deadline_from_remaining
from rpckit.core._wire import PUSHBACK_METADATA_KEY
from rpckit.server._admission import Rejection
from rpckit.server._auth_gate import take_denial
from rpckit.server._bad_input import ParseGuard, Unparsed, malformed_message
from rpckit.server._errors import INTERNAL_MESSAGE, StatusError, to_grpc_status
from rpckit.server._executor import current_verdict, rejection_status

__all__ = ["wrap_method_handlers"]

_log = logging.getLogger("rpckit.server")

#: Gives the encoded ``rpckit-load-bin`` trailer pair (key, serialized report).
LoadSource = Callable[[], tuple[str, bytes]]
#: Told of every finished call: (method, status code name, seconds in the handler).
CallObserver = Callable[[str, str, float], None]
#: Told of every request that did not parse: (method, the parse error in words).
MalformedObserver = Callable[[str, str], None]
#: Wraps a servicer method (method, behaviour, streaming=) -- e.g. in a tracing span.
BehaviorWrapper = Callable[..., Callable[..., Any]]

_BEHAVIOR_FIELDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def wrap_method_handlers(
    service: str,
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
    *,
    load: LoadSource | None,
    thread_pool: concurrent.futures.ThreadPoolExecutor | None = None,
    observer: CallObserver | None = None,
    malformed: MalformedObserver | None = None,
    wrap: BehaviorWrapper | None = None,
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Wrap every behaviour of a service's method handlers (see the module docstring).

    ``thread_pool`` routes the service's calls to that pool instead of the
    server's executor (grpcio's ``experimental_thread_pool``; used for health).
    ``wrap`` wraps each servicer method first (tracing, ``rpckit.server._tracing``).
    """
    wrapped = {}
    for name, handler in handlers.items():
        method = f"/{service}/{name}"
        replaced: dict[str, object] = {}
        for field in _BEHAVIOR_FIELDS:
            behavior = getattr(handler, field)
            if behavior is not None:
                if wrap is not None:
                    inner = behavior
                    behavior = wrap(method, inner, streaming=handler.response_streaming)
                    if getattr(inner, "experimental_non_blocking", False):
                        behavior.experimental_non_blocking = True  # type: ignore[attr-defined]
                replaced[field] = _Behavior(
                    method,
                    behavior,
                    streaming=handler.response_streaming,
                    request_streaming=handler.request_streaming,
                    load=load,
                    thread_pool=thread_pool,
                    observer=observer,
                    malformed=malformed,
                )
        if handler.request_deserializer is not None:
            replaced["request_deserializer"] = ParseGuard(handler.request_deserializer)
        wrapped[name] = handler._replace(**replaced)  # type: ignore[attr-defined]
    return wrapped


class _Behavior:
    """A callable grpcio runs in place of the servicer method."""

    def __init__(
        self,
        method: str,
        behavior: Callable[..., Any],
        *,
        streaming: bool,
        request_streaming: bool,
        load: LoadSource | None,
        thread_pool: concurrent.futures.ThreadPoolExecutor | None,
        observer: CallObserver | None,
        malformed: MalformedObserver | None,
    ) -> None:
        self._method = method
        self.rpckit_method = method  # read by the executor to attribute the call
        self._behavior = behavior
        self._streaming = streaming
        self._load = load
        self._observer = observer
        self._malformed = malformed
        self._request_streaming = request_streaming
        if thread_pool is not None:
            self.experimental_thread_pool = thread_pool
        if getattr(behavior, "experimental_non_blocking", False):
            self.experimental_non_blocking = True

    def __call__(self, request: Any, context: grpc.ServicerContext, *rest: Any) -> Any:
        verdict = current_verdict()
        if verdict is not None:
            self._reject(context, verdict)
        denial = take_denial()  # the auth gate's refusal, when grpcio's shapes differ
        if denial is not None:
            context.abort(grpc.StatusCode[denial.code.value], denial.message)
        if type(request) is Unparsed:
            self._refuse_unparsed(context, request)
        if self._request_streaming:
            request = self._parsed(request)
        now = time.monotonic()
        scope = CallScope(
            method=self._method,
            deadline=deadline_from_remaining(context.time_remaining(), now),
            context=context,
        )
        if self._streaming and not rest:
            return self._stream(request, context, scope)
        token = _SCOPE.set(scope)
        try:
            response = self._behavior(request, context, *rest)
        except Exception as exc:  # noqa: BLE001 - every handler error is mapped in _fail
            self._observe(_code_of(context, exc), now)
            self._fail(context, exc)
        finally:
            _SCOPE.reset(token)
        self._add_load(context)
        self._observe("OK", now)
        return response

    def _stream(
        self, request: Any, context: grpc.ServicerContext, scope: CallScope
    ) -> Iterator[Any]:
        # grpcio runs each call in a fresh contextvars.Context and iterates the
        # responses on this same thread; set (not reset) the scope, because a
        # generator abandoned by a cancelled call is finalised elsewhere.
        _SCOPE.set(scope)
        started = time.monotonic()
        try:
            yield from self._behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - every handler error is mapped in _fail
            self._observe(_code_of(context, exc), started)
            self._fail(context, exc)
        self._add_load(context)
        self._observe("OK", started)

    def _refuse_unparsed(self, context: grpc.ServicerContext, request: Unparsed) -> NoReturn:
        self._report_unparsed(request)
        self._observe(grpc.StatusCode.INVALID_ARGUMENT.name, time.monotonic())
        self._add_load(context)
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, malformed_message(self._method, request.error)
        )
        raise AssertionError("unreachable: context.abort raises")

    def _parsed(self, requests: Iterator[Any]) -> Iterator[Any]:
        """A request stream that ends the call INVALID_ARGUMENT at a message that did not parse."""
        for request in requests:
            if type(request) is Unparsed:
                self._report_unparsed(request)
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    malformed_message(self._method, request.error),
                )
            yield request

    def _report_unparsed(self, request: Unparsed) -> None:
        if self._malformed is not None:
            self._malformed(self._method, request.error)

    def _observe(self, code: str, started: float) -> None:
        if self._observer is not None:
            self._observer(self._method, code, time.monotonic() - started)

    def _fail(self, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
        if isinstance(exc, StatusError):
            status = to_grpc_status(exc)
            context.abort_with_status(_StatusWithLoad(status, self._load_pair(context)))
        if cast(Any, context).code() not in (None, grpc.StatusCode.OK):
            # The handler called context.abort(): keep its status, add the load report.
            self._add_load(context)
            raise exc
        _log.error("handler %s failed", self._method, exc_info=exc)
        self._add_load(context)
        context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        raise AssertionError("unreachable: context.abort raises")

    def _reject(self, context: grpc.ServicerContext, rejection: Rejection[Any]) -> None:
        trailers: list[tuple[str, str | bytes]] = [
            (PUSHBACK_METADATA_KEY, str(rejection.pushback_ms))
        ]
        trailers.extend(self._load_pair(context))
        context.set_trailing_metadata(tuple(trailers))
        code, details = rejection_status(rejection)
        context.abort(code, details)

    def _load_pair(self, context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
        if self._load is None or not getattr(context, "wants_load_report", True):
            return []
        return [self._load()]

    def _add_load(self, context: grpc.ServicerContext) -> None:
        pair = self._load_pair(context)
        if pair:
            existing = tuple(cast(Any, context).trailing_metadata() or ())
            context.set_trailing_metadata((*existing, *pair))


def _code_of(context: grpc.ServicerContext, exc: Exception) -> str:
    """The status a failed handler ends with (see _Behavior._fail)."""
    if isinstance(exc, StatusError):
        return exc.code.name
    code = cast(Any, context).code()
    if code not in (None, grpc.StatusCode.OK):
        return str(code.name)
    return grpc.StatusCode.INTERNAL.name


class _StatusWithLoad(grpc.Status):
    def __init__(self, status: grpc.Status, extra: list[tuple[str, str | bytes]]) -> None:
        self.code = status.code
        self.details = status.details
        self.trailing_metadata = (*(status.trailing_metadata or ()), *extra)

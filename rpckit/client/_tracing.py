"""Balanced-channel attempt spans: one CLIENT span per attempt, not one per logical call.

Each attempt of a call (see ``rpckit.client._balancer``) gets its own span,
child of the span current when the call began (kept on the call's plan, so
retries made from grpc's callback threads join it), with the backend P2C
picked, the retry number and, when the server refused with one, its pushback.
The attempt's span travels to the backend in the call's metadata
(``traceparent``, replacing any the caller forwarded), so the next hop's server
span is its child. The channel's health checks and watches never come here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc

from rpckit.core._wire import pushback_from_trailers
from rpckit.observe._tracing import Tracing, rpc_names

__all__ = ["AttemptTracer"]

_PROPAGATION_KEYS = frozenset({"traceparent", "tracestate"})


class AttemptTracer:
    """Wraps each attempt's grpc multicallable in a span."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def current_context(self) -> Any:
        from opentelemetry import context

        return context.get_current()

    def wrap(
        self, inner: Any, *, method: str, backend: str, attempt: int, parent: Any
    ) -> _TracedAttempt:
        """``inner`` for attempt number ``attempt`` (1 = first) on ``backend``."""
        return _TracedAttempt(
            self, inner, method=method, backend=backend, attempt=attempt, parent=parent
        )


class _TracedAttempt:
    """A grpc multicallable whose calls run inside an attempt span."""

    def __init__(
        self,
        tracer: AttemptTracer,
        inner: Any,
        *,
        method: str,
        backend: str,
        attempt: int,
        parent: Any,
    ) -> None:
        self._tracer = tracer
        self._inner = inner
        self._method = method
        self._backend = backend
        self._attempt = attempt
        self._parent = parent

    def _start(self, kwargs: dict[str, Any]) -> Any:
        from opentelemetry import trace

        service, name = rpc_names(self._method)
        host, _, port = self._backend.rpartition(":")
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "server.address": host.strip("[]") or self._backend,
            "rpckit.backend": self._backend,
            "rpckit.attempt": self._attempt,
            "rpckit.retry": self._attempt - 1,
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        span = self._tracer.tracing.tracer.start_span(
            f"{service}/{name}",
            context=self._parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        carrier = self._tracer.tracing.inject(trace.set_span_in_context(span, self._parent))
        metadata = [
            (k, v) for k, v in kwargs.get("metadata") or () if k.lower() not in _PROPAGATION_KEYS
        ]
        metadata.extend(carrier.items())
        kwargs["metadata"] = tuple(metadata)
        return span

    def with_call(self, request: Any, **kwargs: Any) -> tuple[Any, Any]:
        span = self._start(kwargs)
        try:
            response, call = self._inner.with_call(request, **kwargs)
        except grpc.RpcError as error:
            _end(span, error)
            raise
        except BaseException:
            _end(span, None)
            raise
        _end(span, call)
        return response, call

    def future(self, request: Any, **kwargs: Any) -> Any:
        return self._started(self._inner.future, request, kwargs)

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        return self._started(self._inner, request, kwargs)

    def _started(self, start: Callable[..., Any], request: Any, kwargs: dict[str, Any]) -> Any:
        span = self._start(kwargs)
        try:
            call = start(request, **kwargs)
        except BaseException:
            _end(span, None)
            raise
        call.add_done_callback(lambda done: _end(span, done))
        return call


def _end(span: Any, call: Any) -> None:
    """End an attempt's span with the call's status (None: it never got one)."""
    from opentelemetry.trace import Status, StatusCode

    code = None
    trailers: Iterable[tuple[str, Any]] = ()
    if call is not None:
        try:
            code = call.code()
            trailers = call.trailing_metadata() or ()
        except Exception:  # noqa: BLE001 - a call object without a status: report none
            code = None
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
    pushback = pushback_from_trailers(trailers)
    if pushback is not None:
        span.set_attribute("rpckit.pushback_ms", pushback)
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name if code is not None else "no status"))
    span.end()

"""Server-call spans: one SERVER span per call, with what admission control decided.

An admitted call's span starts when the call was queued (its queue wait is part
of it, and an attribute and event of its own) and ends when the handler
returns; it is the current span while the handler runs, so calls the handler
makes to the next hop join the trace. A call admission refused never reaches
a handler: its span is made and ended at the refusal, with the reason and the
pushback. The parent comes from the call's metadata (``traceparent``, which the
shim and rpckit's balanced channel send), see ``rpckit.observe._tracing``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import grpc

from rpckit.observe._tracing import Tracing, metadata_carrier, rpc_names
from rpckit.server._errors import StatusError

__all__ = ["ServerTracer", "note_admitted", "status_of"]

_admitted = threading.local()  # the handler thread's current call: its queue wait


def note_admitted(waited_s: float) -> None:
    """On a handler thread, just before grpcio runs the call: how long it was queued."""
    _admitted.waited_s = waited_s


def _take_waited() -> float | None:
    waited: float | None = getattr(_admitted, "waited_s", None)
    _admitted.waited_s = None
    return waited


class ServerTracer:
    """Makes the spans of one server's calls."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def wrap(
        self, method: str, behavior: Callable[..., Any], *, streaming: bool
    ) -> Callable[..., Any]:
        """``behavior`` (a servicer method) with a span around each call."""

        def traced(request: Any, context: grpc.ServicerContext, *rest: Any) -> Any:
            if rest:  # grpcio's non-blocking form (health Watch): nothing to time
                return behavior(request, context, *rest)
            if streaming:
                return self._traced_stream(method, behavior, request, context)
            return self._traced_unary(method, behavior, request, context)

        return traced

    def _start(self, method: str, context: grpc.ServicerContext) -> Any:
        from opentelemetry import trace

        waited = _take_waited()
        service, name = rpc_names(method)
        parent = self.tracing.extract(metadata_carrier(context.invocation_metadata()))
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "rpckit.admission": "admitted",
        }
        peer = context.peer()
        if peer:
            attributes["network.peer.address"] = peer
        now_ns = time.time_ns()
        if waited is not None:
            attributes["rpckit.queue_wait_ms"] = round(waited * 1000, 3)
        span = self.tracing.tracer.start_span(
            f"{service}/{name}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            start_time=now_ns - int((waited or 0.0) * 1e9),
        )
        if waited is not None:
            span.add_event("admitted", {"rpckit.queue_wait_ms": attributes["rpckit.queue_wait_ms"]})
        return span

    def _traced_unary(
        self, method: str, behavior: Callable[..., Any], request: Any, context: Any
    ) -> Any:
        from opentelemetry import trace

        span = self._start(method, context)
        with trace.use_span(span, end_on_exit=False, record_exception=False):
            try:
                response = behavior(request, context)
            except BaseException as exc:
                _end(span, context, exc)
                raise
        _end(span, context, None)
        return response

    def _traced_stream(
        self, method: str, behavior: Callable[..., Any], request: Any, context: Any
    ) -> Iterator[Any]:
        # Not made current: a generator may be finalised on another thread.
        span = self._start(method, context)
        try:
            yield from behavior(request, context)
        except BaseException as exc:
            _end(span, context, exc)
            raise
        _end(span, context, None)

    def rejected(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        *,
        code: grpc.StatusCode,
        reason: str,
        pushback_ms: int,
    ) -> None:
        """A span for a call admission control refused. ``metadata`` None: an in-process
        call (the shim's), whose parent is the current span."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        service, name = rpc_names(method)
        parent = None if metadata is None else self.tracing.extract(metadata_carrier(metadata))
        span = self.tracing.tracer.start_span(
            f"{service}/{name}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "rpc.grpc.status_code": code.value[0],
                "rpckit.admission": "rejected",
                "rpckit.admission.reason": reason,
                "rpckit.pushback_ms": pushback_ms,
            },
        )
        span.set_status(Status(StatusCode.ERROR, f"admission: {reason}"))
        span.end()


def _end(span: Any, context: Any, exc: BaseException | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    code = status_of(context, exc)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
        if (
            exc is not None
            and not isinstance(exc, StatusError)
            and code is grpc.StatusCode.INTERNAL
        ):
            span.record_exception(exc)
    span.end()


def status_of(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    """The status the call ends with (as ``rpckit.server._handlers`` maps errors)."""
    if isinstance(exc, StatusError):
        return exc.code
    code = cast(Any, context).code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return code
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.INTERNAL

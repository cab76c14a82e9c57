"""The call log (opt-in: ``ServerConfig(call_log=True)``): one INFO record per call.

Records go to the ``rpckit.server.calls`` logger with the call's facts as
record attributes -- ``method``, ``status`` (the gRPC code's name), ``peer``,
``duration_ms`` in the handler -- and, when a span is current (tracing on),
``trace_id`` and ``span_id``, stamped when the record is made so a handler
that formats later (a queue, another thread) still joins the trace. Rendered
by :class:`rpckit.observe.JsonFormatter` as one JSON object a line; a plain
formatter shows the message, ``call /pkg.Service/Method OK 1.2ms``. Health
checks and watches are not logged (background traffic).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from rpckit.observe._logs import current_trace_ids
from rpckit.server._tracing import status_of

__all__ = ["CALL_LOGGER", "CallLog"]

CALL_LOGGER = "rpckit.server.calls"


class CallLog:
    """Wraps servicer methods so each call writes one record (module docstring)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(CALL_LOGGER)

    def wrap(
        self, method: str, behavior: Callable[..., Any], *, streaming: bool
    ) -> Callable[..., Any]:
        def logged(request: Any, context: Any, *rest: Any) -> Any:
            if rest or not self._log.isEnabledFor(logging.INFO):
                return behavior(request, context, *rest)
            if streaming:
                return self._stream(method, behavior, request, context)
            started = time.monotonic()
            try:
                response = behavior(request, context)
            except BaseException as exc:
                self._record(method, context, exc, started)
                raise
            self._record(method, context, None, started)
            return response

        return logged

    def _stream(
        self, method: str, behavior: Callable[..., Any], request: Any, context: Any
    ) -> Iterator[Any]:
        started = time.monotonic()
        try:
            yield from behavior(request, context)
        except BaseException as exc:
            self._record(method, context, exc, started)
            raise
        self._record(method, context, None, started)

    def _record(self, method: str, context: Any, exc: BaseException | None, started: float) -> None:
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        status = status_of(context, exc).name
        trace_id, span_id = current_trace_ids()
        self._log.info(
            "call %s %s %.1fms",
            method,
            status,
            duration_ms,
            extra={
                "method": method,
                "status": status,
                "peer": context.peer(),
                "duration_ms": duration_ms,
                "trace_id": trace_id,
                "span_id": span_id,
            },
        )

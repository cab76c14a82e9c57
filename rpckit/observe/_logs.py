"""JSON log lines that join the trace: :class:`JsonFormatter` for any logging handler.

    handler = logging.StreamHandler()
    handler.setFormatter(rpckit.observe.JsonFormatter())
    logging.getLogger().addHandler(handler)

Each record becomes one JSON object on one line::

    {"ts": "2026-12-06T04:30:00.123Z", "level": "INFO", "logger": "rpckit.server.calls",
     "message": "call", "trace_id": "4bf9...", "span_id": "00f0...",
     "method": "/inventory.v1.Inventory/GetItem", "status": "OK",
     "peer": "ipv4:127.0.0.1:50412", "duration_ms": 1.2}

``trace_id``/``span_id`` are those of the span current when the record was made
(empty when none, or when OpenTelemetry was never loaded: it is not imported
here). The call fields come from rpckit's call log (``ServerConfig(call_log=True)``)
or from any record's ``extra``.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

__all__ = ["CALL_FIELDS", "JsonFormatter", "current_trace_ids", "utc_timestamp"]

#: Record attributes copied into the JSON object when present (``extra=``).
CALL_FIELDS = ("method", "status", "peer", "duration_ms", "route", "http_status")


def current_trace_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as hex, or ("", "") without one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return "", ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def utc_timestamp(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-12-06T04:30:00.123Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the current trace and span ids (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_trace_ids()
        line: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", trace_id),
            "span_id": getattr(record, "span_id", span_id),
        }
        for field in CALL_FIELDS:
            if hasattr(record, field):
                line[field] = getattr(record, field)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)

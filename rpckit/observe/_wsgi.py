"""The shim's request span and access log, as WSGI middleware around any app.

    app = RequestObserver(Shim(server=server), tracing=Tracing(), access_log=True)

With ``tracing``, each request gets a SERVER span (HTTP semantic conventions:
``http.request.method``, ``url.path``, ``url.scheme``, ``client.address``,
``user_agent.original``, ``http.response.status_code``), child of the request's
W3C ``traceparent``/``tracestate``. The span is current while the app runs, and
the request's ``traceparent``/``tracestate`` headers are replaced by the span's
own, so the shim forwards it (``ShimConfig.forward_headers``) and the handler's
server span is its child, in process or across a channel.

With ``access_log``, each request is one line on the ``rpckit.http.access``
logger (INFO), a JSON object a log pipeline parses as is::

    {"ts": "2026-12-06T04:30:00.123Z", "remote": "127.0.0.1", "method": "GET",
     "path": "/items/NUT-M8", "query": "", "status": 200, "bytes": 87,
     "duration_ms": 1.9, "user_agent": "curl/8.5", "trace_id": "4bf9...", "span_id": "00f0..."}

Trace and span ids are present when the request was traced (by this middleware
or an outer one). Neither imports OpenTelemetry unless ``tracing`` is given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rpckit.observe._logs import current_trace_ids, utc_timestamp
from rpckit.observe._tracing import Tracing

__all__ = ["ACCESS_LOGGER", "RequestObserver"]

#: The logger access lines go to (INFO).
ACCESS_LOGGER = "rpckit.http.access"

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_PROPAGATION = (("traceparent", "HTTP_TRACEPARENT"), ("tracestate", "HTTP_TRACESTATE"))
_OPTIONAL_ATTRIBUTES = (
    ("REMOTE_ADDR", "client.address"),
    ("HTTP_USER_AGENT", "user_agent.original"),
)


class RequestObserver:
    """WSGI middleware: a span and/or an access-log line per request (module docstring)."""

    def __init__(
        self, app: _WsgiApp, *, tracing: Tracing | None = None, access_log: bool = False
    ) -> None:
        self.app = app
        self.tracing = tracing
        self.access_log = logging.getLogger(ACCESS_LOGGER) if access_log else None

    def __getattr__(self, name: str) -> Any:
        """The wrapped app's attributes (``Shim.traffic``, ``openapi``...) stay reachable."""
        if name == "app":  # not set yet: no recursion through this method
            raise AttributeError(name)
        return getattr(self.app, name)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.tracing is None and self.access_log is None:
            return self.app(environ, start_response)
        started = time.monotonic()
        status: list[int] = [0]

        def observed_start(status_line: str, headers: Any, *exc_info: Any) -> Any:
            head = status_line.split(" ", 1)[0]
            status[0] = int(head) if head.isdigit() else 0
            return start_response(status_line, headers, *exc_info)

        if self.tracing is None:
            body = self.app(environ, observed_start)
            return _Body(body, lambda sent: self._log(environ, status[0], sent, started, None))
        return self._traced(environ, observed_start, status, started)

    def _traced(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        status: list[int],
        started: float,
    ) -> Iterable[bytes]:
        from opentelemetry import context, trace

        assert self.tracing is not None
        tracing = self.tracing
        carrier = {k: environ[e] for k, e in _PROPAGATION if isinstance(environ.get(e), str)}
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": str(environ.get("PATH_INFO", "")),
            "url.scheme": str(environ.get("wsgi.url_scheme", "http")),
        }
        for key, name in (
            ("REMOTE_ADDR", "client.address"),
            ("HTTP_USER_AGENT", "user_agent.original"),
        ):
            if environ.get(key):
                attributes[name] = str(environ[key])
        span = tracing.tracer.start_span(
            method,
            context=tracing.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            # The shim forwards these headers: from here on they name this span.
            environ = dict(environ)
            injected = tracing.inject()
            for header, environ_key in _PROPAGATION:
                environ.pop(environ_key, None)
                if header in injected:
                    environ[environ_key] = injected[header]
            try:
                body = self.app(environ, start_response)
            except BaseException as exc:
                span.record_exception(exc)
                _finish_span(span, 500)
                raise
        finally:
            context.detach(token)
        ids = _span_ids(span)

        def finished(sent: int) -> None:
            _finish_span(span, status[0])
            self._log(environ, status[0], sent, started, ids)

        return _Body(body, finished)

    def _log(
        self,
        environ: dict[str, Any],
        status: int,
        sent: int,
        started: float,
        ids: tuple[str, str] | None,
    ) -> None:
        if self.access_log is None or not self.access_log.isEnabledFor(logging.INFO):
            return
        trace_id, span_id = ids if ids is not None else current_trace_ids()
        line = {
            "ts": utc_timestamp(time.time()),
            "remote": environ.get("REMOTE_ADDR", ""),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "status": status,
            "bytes": sent,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        self.access_log.info(json.dumps(line, separators=(",", ":")))


class _Body:
    """The app's response body, passed through; ``done(bytes sent)`` once, when it is closed."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]) -> None:
        self._body = body
        self._done: Callable[[int], None] | None = done
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done(self._sent)


def _finish_span(span: Any, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500 or not status:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _span_ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"

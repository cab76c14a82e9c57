"""``rpckit migrate record``: sample a legacy WSGI app's traffic into JSON lines, bounded, redacted.

Mount it in front of the old app (any WSGI server, any worker count)::

    from rpckit.migrate import Recorder, RecordConfig

    app = create_app()
    app.wsgi_app = Recorder(app.wsgi_app, "samples-{pid}.jsonl", config=RecordConfig())

or let ``rpckit migrate record MODULE:APP --http HOST:PORT`` serve it.

Policy (pure, takes ``now`` and ``rng``): a request is recorded when a draw
falls under ``sample_rate`` and a token bucket (``max_per_second``, ``burst``)
has a token; the file stops growing at ``max_file_bytes``; a body over
``max_body_bytes`` is not recorded (the request still reaches the app whole,
the response still reaches the client whole -- nothing is buffered past the
bound). Secrets never reach the file: listed headers (``Authorization`` keeps
its scheme, cookies their names), query parameters and JSON or form fields
(at any depth) read ``[redacted]``.

The recorder never changes an answer and never fails a request: a recording
error is logged and the exchange is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus

from rpckit.core._validate import check_fields, check_int
from rpckit.migrate._samples import REDACTED, Exchange, dump_exchange

if TYPE_CHECKING:
    from _typeshed.wsgi import InputStream, StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "DEFAULT_REDACT_FIELDS",
    "DEFAULT_REDACT_HEADERS",
    "JsonlSink",
    "RecordConfig",
    "Recorder",
    "SamplingPolicy",
    "redact_body",
    "redact_headers",
    "redact_query",
]

_log = logging.getLogger("rpckit.migrate.record")

#: Request and response headers whose values are secrets (lower case).
DEFAULT_REDACT_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
)
#: JSON/form fields and query parameters redacted wherever they appear (lower case).
DEFAULT_REDACT_FIELDS = (
    "password",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "client_secret",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordConfig:
    """What is recorded, how much and how often.

    Attributes:
        sample_rate: share of requests considered (0-1); 1 records every one the
            rate bound lets through.
        max_per_second, burst: token bucket over recorded exchanges: ``burst``
            at once, ``max_per_second`` sustained (10/s, 20: a day of samples
            stays in the tens of MiB).
        max_body_bytes: a request or response body larger than this is not
            recorded (64 KiB: well above a JSON API's bodies, below a download).
        max_file_bytes: the file stops growing here (100 MiB).
        redact_headers, redact_fields: added to the defaults
            (:data:`DEFAULT_REDACT_HEADERS`, :data:`DEFAULT_REDACT_FIELDS`);
            names are matched without regard to case.
    """

    sample_rate: float = 1.0
    max_per_second: float = 10.0
    burst: int = 20
    max_body_bytes: int = 64 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    redact_headers: Sequence[str] = ()
    redact_fields: Sequence[str] = ()

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0 <= self.sample_rate <= 1:
            raise ValueError(
                f"RecordConfig.sample_rate must be from 0 to 1, got {self.sample_rate}"
            )
        if not (self.max_per_second > 0 and math.isfinite(self.max_per_second)):
            raise ValueError(f"RecordConfig.max_per_second must be > 0, got {self.max_per_second}")
        for name in ("burst", "max_body_bytes", "max_file_bytes"):
            value = getattr(self, name)
            check_int("RecordConfig", name, value, low=1)
        for name in ("redact_headers", "redact_fields"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"RecordConfig.{name} is a sequence of names, not a str")
            object.__setattr__(self, name, tuple(v.lower() for v in value))

    @property
    def headers_to_redact(self) -> frozenset[str]:
        return frozenset((*DEFAULT_REDACT_HEADERS, *self.redact_headers))

    @property
    def fields_to_redact(self) -> frozenset[str]:
        return frozenset((*DEFAULT_REDACT_FIELDS, *self.redact_fields))


class SamplingPolicy:
    """Which requests get recorded: a ``sample_rate`` draw, then a token bucket. Pure."""

    def __init__(self, config: RecordConfig) -> None:
        self._rate = config.sample_rate
        self._per_second = config.max_per_second
        self._burst = float(config.burst)
        self._tokens = float(config.burst)
        self._last: float | None = None

    def decide(self, now: float, rng: random.Random) -> bool:
        """Record the request arriving at ``now`` (seconds, monotonic)?"""
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        if self._last is None or now > self._last:
            self._last = now
        if self._rate < 1 and rng.random() >= self._rate:
            return False
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


# ---------------------------------------------------------------- redaction (pure)


def redact_headers(
    headers: Iterable[tuple[str, str]], names: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """Headers with secret values replaced; the auth scheme and cookie names stay readable."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower not in names:
            out.append((name, value))
        elif lower in ("authorization", "proxy-authorization") and " " in value.strip():
            out.append((name, f"{value.strip().split(' ', 1)[0]} {REDACTED}"))
        elif lower == "cookie":
            cookies = [c.strip() for c in value.split(";") if c.strip()]
            out.append((name, "; ".join(f"{c.split('=', 1)[0]}={REDACTED}" for c in cookies)))
        elif lower == "set-cookie":
            first, _, attributes = value.partition(";")
            cookie = f"{first.split('=', 1)[0].strip()}={REDACTED}"
            out.append((name, cookie + (f";{attributes}" if attributes else "")))
        else:
            out.append((name, REDACTED))
    return tuple(out)


def redact_query(query: str, fields: frozenset[str]) -> str:
    """The raw query string with listed parameters' values replaced (others kept as sent)."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        key = part.split("=", 1)[0]
        if _unquote_key(key).lower() in fields:
            parts.append(f"{key}={quote_plus(REDACTED)}")
        else:
            parts.append(part)
    return "&".join(parts)


def _unquote_key(key: str) -> str:
    pairs = parse_qsl(f"{key}=", keep_blank_values=True)
    return pairs[0][0] if pairs else key


def redact_body(body: bytes, content_type: str | None, fields: frozenset[str]) -> bytes:
    """A JSON or form body with listed fields replaced at any depth; other bodies as they are.

    Unchanged bytes are returned as they were; a changed JSON body is re-encoded.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return body
        redacted = redact_query(text, fields)
        return body if redacted == text else redacted.encode("ascii")
    if not (media == "application/json" or media.endswith("+json")):
        return body
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body
    changed, cleaned = _redact_json(value, fields)
    return json.dumps(cleaned).encode("utf-8") if changed else body


def _redact_json(value: Any, fields: frozenset[str]) -> tuple[bool, Any]:
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, element in value.items():
            if isinstance(key, str) and key.lower() in fields:
                out[key] = REDACTED
                changed = True
            else:
                inner_changed, out[key] = _redact_json(element, fields)
                changed = changed or inner_changed
        return changed, out
    if isinstance(value, list):
        results = [_redact_json(v, fields) for v in value]
        return any(c for c, _ in results), [v for _, v in results]
    return False, value


# ---------------------------------------------------------------- the file


class JsonlSink:
    """Appends lines to a file, thread-safe, until ``max_bytes``; then drops them (logged once).

    ``{pid}`` in the path becomes the process id, so each worker of a
    pre-forking server writes its own file.
    """

    def __init__(self, path: str | Path, *, max_bytes: int) -> None:
        self.path_template = str(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pid: int | None = None
        self._written = 0
        self.dropped = 0
        self.lines = 0

    def write(self, line: str) -> bool:
        """Append ``line``; False when the file is full (the line is dropped)."""
        size = len(line.encode("utf-8"))
        with self._lock:
            stream = self._open()
            if self._written + size > self.max_bytes:
                if not self.dropped:
                    _log.warning(
                        "%s reached %d bytes: recording stops", stream.name, self.max_bytes
                    )
                self.dropped += 1
                return False
            stream.write(line)
            stream.flush()
            self._written += size
            self.lines += 1
            return True

    def _open(self) -> IO[str]:
        pid = os.getpid()
        if self._file is None or self._pid != pid:  # a fork: the child writes its own file
            path = Path(self.path_template.replace("{pid}", str(pid)))
            self._file = path.open("a", encoding="utf-8")
            self._pid = pid
            self._written = self._file.tell()
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# ---------------------------------------------------------------- the middleware


class Recorder:
    """WSGI middleware recording sampled exchanges of ``app`` (module docstring)."""

    def __init__(
        self,
        app: WSGIApplication,
        sink: JsonlSink | str | Path,
        *,
        config: RecordConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.config = config or RecordConfig()
        self.sink = (
            sink
            if isinstance(sink, JsonlSink)
            else JsonlSink(sink, max_bytes=self.config.max_file_bytes)
        )
        self._policy = SamplingPolicy(self.config)
        self._policy_lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # noqa: S311 - sampling draws, not secrets

    def close(self) -> None:
        self.sink.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._policy_lock:
            sampled = self._policy.decide(self._clock(), self._rng)
        if not sampled:
            return self.app(environ, start_response)
        try:
            request = self._capture_request(environ)
        except Exception:  # noqa: BLE001 - recording must never fail a request
            _log.exception("could not record a request; passing it through")
            return self.app(environ, start_response)
        response: dict[str, Any] = {}

        def recording_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            response["status"] = status
            response["headers"] = [(str(k), str(v)) for k, v in headers]
            return start_response(status, headers, exc_info)

        result = self.app(environ, recording_start)
        return _RecordingBody(result, self, request, response)

    def _capture_request(self, environ: WSGIEnvironment) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        stream = environ.get("wsgi.input")
        length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
        body: bytes | None = b""
        truncated = False
        if stream is not None and length_text.isdigit() and int(length_text) > 0:
            length = int(length_text)
            if length > limit:
                body, truncated = None, True  # not read: the app gets the stream untouched
            else:
                body = stream.read(length)
                environ["wsgi.input"] = io.BytesIO(body)
        elif stream is not None and environ.get("wsgi.input_terminated"):
            head = stream.read(limit + 1)
            if len(head) > limit:
                body, truncated = None, True
            else:
                body = head
            environ["wsgi.input"] = _Prefixed(head, stream)
        return {
            "method": str(environ.get("REQUEST_METHOD", "GET")).upper(),
            "path": _raw_path(environ),
            "query": str(environ.get("QUERY_STRING", "")),
            "headers": _request_headers(environ),
            "body": body,
            "truncated": truncated,
            "time": self._wall_clock(),
        }

    def finish(self, request: dict[str, Any], response: dict[str, Any], body: bytes | None) -> None:
        """Build, redact and write one exchange (called when the response is closed)."""
        if "status" not in response:
            return
        config = self.config
        fields, header_names = config.fields_to_redact, config.headers_to_redact
        status_text = str(response["status"])
        code, _, reason = status_text.partition(" ")
        request_headers = request["headers"]
        response_headers = response["headers"]
        notes = []
        request_body = request["body"]
        if request["truncated"]:
            notes.append(f"request body over {config.max_body_bytes} bytes: not recorded")
        elif request_body:
            request_body = redact_body(
                request_body, _first(request_headers, "content-type"), fields
            )
        if body is None:
            notes.append(f"response body over {config.max_body_bytes} bytes: not recorded")
        elif body:
            body = redact_body(body, _first(response_headers, "content-type"), fields)
        exchange = Exchange(
            method=request["method"],
            path=request["path"],
            query=redact_query(request["query"], fields),
            headers=redact_headers(request_headers, header_names),
            body=request_body,
            status=int(code) if code.isdigit() else 0,
            reason=reason,
            response_headers=redact_headers(response_headers, header_names),
            response_body=body,
            time=request["time"],
            body_truncated=request["truncated"],
            response_truncated=body is None,
            notes=tuple(notes),
        )
        self.sink.write(dump_exchange(exchange))


class _RecordingBody:
    """The app's response iterable, passed through chunk by chunk, its head kept for the sample."""

    def __init__(
        self,
        result: Iterable[bytes],
        recorder: Recorder,
        request: dict[str, Any],
        response: dict[str, Any],
    ) -> None:
        self._result = result
        self._recorder = recorder
        self._request = request
        self._response = response
        self._kept = bytearray()
        self._over = False
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        limit = self._recorder.config.max_body_bytes
        for chunk in self._result:
            if not self._over:
                if len(self._kept) + len(chunk) > limit:
                    self._over = True
                    self._kept.clear()
                else:
                    self._kept += chunk
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                try:
                    body = None if self._over else bytes(self._kept)
                    self._recorder.finish(self._request, self._response, body)
                except Exception:  # noqa: BLE001 - recording must never fail a request
                    _log.exception("could not record an exchange; it is dropped")


class _Prefixed(io.RawIOBase):
    """A request stream whose first bytes were already read: those, then the rest."""

    def __init__(self, head: bytes, rest: InputStream) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._head.read() if size is None or size < 0 else self._head.read(size)
        if size is None or size < 0:
            return data + self._rest.read()
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        return line + self._rest.readline(-1 if size is None or size < 0 else size - len(line))


def _first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _raw_path(environ: WSGIEnvironment) -> str:
    """The path as sent (``REQUEST_URI``/``RAW_URI`` when the server gives one)."""
    for key in ("REQUEST_URI", "RAW_URI"):
        raw = environ.get(key)
        if isinstance(raw, str) and raw.startswith("/"):
            return raw.split("?", 1)[0]
    from urllib.parse import quote

    path = str(environ.get("PATH_INFO", "/"))
    # PEP 3333: PATH_INFO is the raw bytes decoded as latin-1; they are UTF-8 when valid.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        path = path.encode("latin-1").decode("utf-8")
    return str(environ.get("SCRIPT_NAME", "")) + quote(path, safe="/:@!$&'()*+,;=-._~")


def _request_headers(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    headers = []
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    for key, value in environ.items():
        if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
    return headers

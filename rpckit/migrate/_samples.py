"""Recorded legacy exchanges: one request and its response per JSON line.

The file ``rpckit migrate record`` writes and ``scan --samples`` and ``diff``
read. One line, keys in this order::

    {"v": 1, "time": 1767225600.25, "method": "POST", "path": "/items",
     "query": "page_size=2", "headers": [["Content-Type", "application/json"]],
     "body": "{...}", "status": 201, "reason": "CREATED",
     "response_headers": [["Content-Type", "application/json"], ...],
     "response_body": "{...}", "notes": ["response body truncated at 65536 bytes"]}

``path`` is the raw path as sent (percent-encoded), ``query`` the raw query
string. Bodies are text when they are UTF-8; otherwise ``body_base64`` /
``response_body_base64`` hold them. A body that was not recorded (over the
size bound, a streamed response cut short) is ``null`` with a note saying so;
``body_truncated`` / ``response_truncated`` are true then. Redacted values read
``[redacted]``. Pure data and text: no file I/O beyond :func:`read_samples`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "REDACTED",
    "Exchange",
    "SampleError",
    "dump_exchange",
    "load_exchange",
    "read_samples",
]

FORMAT_VERSION = 1

#: What a redacted header, cookie, query or JSON value is replaced by.
REDACTED = "[redacted]"

Headers = tuple[tuple[str, str], ...]


class SampleError(ValueError):
    """A samples file line that is not a recorded exchange; the message names the line."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exchange:
    """One recorded request and response (module docstring)."""

    method: str
    path: str
    query: str = ""
    headers: Headers = ()
    body: bytes | None = None
    status: int = 0
    reason: str = ""
    response_headers: Headers = ()
    response_body: bytes | None = None
    time: float = 0.0
    body_truncated: bool = False
    response_truncated: bool = False
    notes: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first request header called ``name`` (any case)."""
        return _first(self.headers, name)

    def response_header(self, name: str) -> str | None:
        """The first response header called ``name`` (any case)."""
        return _first(self.response_headers, name)

    def request_json(self) -> tuple[bool, Any]:
        """``(True, value)`` when the request body is JSON, else ``(False, None)``."""
        return _json(self.body, self.header("Content-Type"))

    def response_json(self) -> tuple[bool, Any]:
        """``(True, value)`` when the response body is JSON, else ``(False, None)``."""
        return _json(self.response_body, self.response_header("Content-Type"))


def _first(headers: Headers, name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers if k.lower() == wanted), None)


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters aside."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _json(body: bytes | None, content_type: str | None) -> tuple[bool, Any]:
    if body is None or not body.strip() or not is_json_type(content_type):
        return False, None
    try:
        return True, json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False, None


def _encode_body(out: dict[str, Any], key: str, body: bytes | None) -> None:
    if body is None:
        out[key] = None
        return
    try:
        out[key] = body.decode("utf-8")
    except UnicodeDecodeError:
        out[key] = None
        out[f"{key}_base64"] = base64.b64encode(body).decode("ascii")


def dump_exchange(exchange: Exchange) -> str:
    """One JSON line (with its newline) for ``exchange``."""
    out: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "time": exchange.time,
        "method": exchange.method,
        "path": exchange.path,
        "query": exchange.query,
        "headers": [list(h) for h in exchange.headers],
    }
    _encode_body(out, "body", exchange.body)
    out.update(
        status=exchange.status,
        reason=exchange.reason,
        response_headers=[list(h) for h in exchange.response_headers],
    )
    _encode_body(out, "response_body", exchange.response_body)
    if exchange.body_truncated:
        out["body_truncated"] = True
    if exchange.response_truncated:
        out["response_truncated"] = True
    if exchange.notes:
        out["notes"] = list(exchange.notes)
    return json.dumps(out) + "\n"


def _decode_body(data: dict[str, Any], key: str) -> bytes | None:
    encoded = data.get(f"{key}_base64")
    if isinstance(encoded, str):
        return base64.b64decode(encoded)
    text = data.get(key)
    if text is None:
        return None
    if not isinstance(text, str):
        raise SampleError(f"{key!r} must be a string or null")
    return text.encode("utf-8")


def _headers(data: dict[str, Any], key: str) -> Headers:
    raw = data.get(key, [])
    if isinstance(raw, dict):  # {"Name": "value"} is accepted too
        raw = list(raw.items())
    if not isinstance(raw, list) or not all(
        isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, str) for x in h)
        for h in raw
    ):
        raise SampleError(f"{key!r} must be a list of [name, value] string pairs")
    return tuple((str(k), str(v)) for k, v in raw)


def load_exchange(line: str) -> Exchange:
    """Parse one line of a samples file; :class:`SampleError` says what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SampleError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SampleError("a sample is a JSON object")
    if data.get("v", FORMAT_VERSION) != FORMAT_VERSION:
        raise SampleError(f"sample format version {data.get('v')!r}; this rpckit reads 1")
    method, path = data.get("method"), data.get("path")
    if not isinstance(method, str) or not isinstance(path, str) or not path.startswith("/"):
        raise SampleError('a sample needs "method" and a "path" starting with "/"')
    status = data.get("status", 0)
    if isinstance(status, bool) or not isinstance(status, int):
        raise SampleError('"status" must be an integer')
    notes = data.get("notes", [])
    return Exchange(
        method=method.upper(),
        path=path,
        query=str(data.get("query") or ""),
        headers=_headers(data, "headers"),
        body=_decode_body(data, "body"),
        status=status,
        reason=str(data.get("reason") or ""),
        response_headers=_headers(data, "response_headers"),
        response_body=_decode_body(data, "response_body"),
        time=float(data.get("time") or 0.0),
        body_truncated=bool(data.get("body_truncated")),
        response_truncated=bool(data.get("response_truncated")),
        notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
    )


def parse_samples(lines: Iterable[str], *, source: str = "samples") -> Iterator[Exchange]:
    """Exchanges from JSON lines (blank lines skipped); errors name ``source`` and the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield load_exchange(line)
        except SampleError as exc:
            raise SampleError(f"{source}:{number}: {exc}") from None


def read_samples(paths: Sequence[Path]) -> list[Exchange]:
    """Every exchange of every file, in order. ``SampleError`` names a bad file or line."""
    exchanges: list[Exchange] = []
    for path in paths:
        try:
            with path.open(encoding="utf-8") as lines:
                exchanges.extend(parse_samples(lines, source=str(path)))
        except OSError as exc:
            raise SampleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return exchanges

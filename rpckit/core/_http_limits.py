"""Limits on what an HTTP client may send before the app sees a byte: pure checks of a request head.

The embedded server (:mod:`rpckit.http._server._cheroot`) gathers each request's
head -- request line and header fields, up to the empty line -- from whatever
the socket has, without holding a request thread while the client is slow,
and asks :func:`check_head` after every read whether the head is complete,
still arriving, or over a limit. Over a limit is answered at once, before
the rest arrives:

| over | status |
|---|---|
| request line > ``request_line_bytes`` | 414 URI Too Long |
| a header field > ``header_field_bytes`` | 431 Request Header Fields Too Large |
| more than ``header_fields`` fields | 431 |
| the whole head > ``head_bytes`` | 431 |
| head (+ gathered body) not whole ``head_timeout_s`` after its first byte | 408 Request Timeout |
| body > ``body_bytes`` (Content-Length or chunked) | 413 Content Too Large |

Defaults are gunicorn's (``limit_request_line`` 4094, ``limit_request_field_size``
8190, ``limit_request_fields`` 100) plus two it lacks: a bound on the whole head
(64 KiB: 100 fields of 8 KiB would be 800 KiB a connection) and a head timeout
(10 s, as Go's usual ``ReadHeaderTimeout``), so a client sending a byte a second
(slowloris) is cut off and, meanwhile, holds no thread. A small body announced by
``Content-Length`` (up to :data:`GATHERED_BODY_BYTES`; :func:`body_to_gather`) is
gathered the same way, within the same timeout, so a slow small body holds no thread
either; larger and chunked bodies are read by the app as they come (cheroot's
socket timeout, 10 s without a byte, bounds each wait).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from rpckit.core._validate import check_int

__all__ = [
    "GATHERED_BODY_BYTES",
    "HeadIncomplete",
    "HeadRefused",
    "HeadVerdict",
    "HttpLimits",
    "body_to_gather",
    "check_head",
    "whole_request",
]

#: Bodies up to this size, announced by Content-Length, are read before the app runs.
#: 64 KiB holds nearly every JSON request; larger ones stream to the app.
GATHERED_BODY_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """What one HTTP request may send (see the module docstring for the answers beyond).

    ``body_bytes`` 0: no limit in the server (the shim's routes keep their own).
    """

    request_line_bytes: int = 4094
    header_field_bytes: int = 8190
    header_fields: int = 100
    head_bytes: int = 64 * 1024
    head_timeout_s: float = 10.0
    body_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("request_line_bytes", "header_field_bytes", "header_fields", "head_bytes"):
            check_int("HttpLimits", name, getattr(self, name), low=1)
        check_int("HttpLimits", "body_bytes", self.body_bytes, low=0)
        if not self.head_timeout_s > 0:
            raise ValueError(f"HttpLimits.head_timeout_s must be > 0, got {self.head_timeout_s}")


@dataclasses.dataclass(frozen=True)
class HeadRefused:
    """Answer ``status`` and close: the head is over a limit (or, from the embedded server,
    the request is refused unread because its front end is short of CPU). ``retry_after_s``:
    a ``Retry-After`` header for the client, if any."""

    status: str
    reason: str
    retry_after_s: int | None = None


@dataclasses.dataclass(frozen=True)
class HeadIncomplete:
    """Wait for more bytes."""


#: ``int``: the head is complete and ends at that offset (after its empty line).
HeadVerdict = int | HeadIncomplete | HeadRefused

URI_TOO_LONG = "414 URI Too Long"
FIELDS_TOO_LARGE = "431 Request Header Fields Too Large"
INCOMPLETE = HeadIncomplete()


def check_head(data: bytes, limits: HttpLimits) -> HeadVerdict:  # noqa: PLR0911 - a verdict per limit
    """Where the head in ``data`` ends, or that more must come, or which limit it broke.

    Empty lines before the request line are skipped (RFC 9112, 2.2). Lines may
    end in CRLF or a bare LF; a line's length excludes its ending.
    """
    start = 0
    while data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        start += 2 if data[start] == 13 else 1
    newline = data.find(b"\n", start)
    line_end = len(data) if newline < 0 else newline
    if _line_length(data, start, line_end) > limits.request_line_bytes:
        return HeadRefused(URI_TOO_LONG, f"request line over {limits.request_line_bytes} bytes")
    if newline < 0:
        return INCOMPLETE
    fields = 0
    pos = newline + 1
    while True:
        if pos - start > limits.head_bytes:
            return HeadRefused(FIELDS_TOO_LARGE, f"request head over {limits.head_bytes} bytes")
        newline = data.find(b"\n", pos)
        line_end = len(data) if newline < 0 else newline
        length = _line_length(data, pos, line_end)
        if length > limits.header_field_bytes:
            return HeadRefused(
                FIELDS_TOO_LARGE, f"a header field over {limits.header_field_bytes} bytes"
            )
        if newline < 0:
            if len(data) - start > limits.head_bytes:
                return HeadRefused(FIELDS_TOO_LARGE, f"request head over {limits.head_bytes} bytes")
            return INCOMPLETE
        if length == 0:
            return newline + 1
        if data[pos] not in b" \t":  # a continuation line (obs-fold) is not a new field
            fields += 1
            if fields > limits.header_fields:
                return HeadRefused(
                    FIELDS_TOO_LARGE, f"more than {limits.header_fields} header fields"
                )
        pos = newline + 1


def _line_length(data: bytes, start: int, end: int) -> int:
    """Length of ``data[start:end]`` without a trailing CR."""
    if end > start and data[end - 1] == 13:
        return end - start - 1
    return end - start


def _fields(head: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Each header field of ``head`` after its first line: (lower-cased name, raw value)."""
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            yield name.strip().lower(), value


def _body_length(fields: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body's length by the head's ``fields`` (:func:`_fields`): its Content-Length when
    that is one plain number, 0 without one; None when the head does not tell where the body
    ends (chunked, ``Expect: 100-continue`` -- the client waits for an answer first -- or a
    length given twice or not a plain number: cheroot answers those)."""
    length: int | None = None
    for name, value in fields:
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            text = value.strip()
            if length is not None or not text.isdigit():
                return None
            length = int(text)
    return length or 0


def body_to_gather(head: bytes) -> int:
    """How many body bytes to read with ``head`` before the app runs: its Content-Length
    when that is one plain number up to :data:`GATHERED_BODY_BYTES`, else 0 (chunked,
    ``Expect: 100-continue``, malformed, or large: the app reads those as they come)."""
    length = _body_length(_fields(head))
    return 0 if length is None or length > GATHERED_BODY_BYTES else length


def whole_request(data: bytes, limits: HttpLimits) -> int | None:
    """The length of the request at the start of ``data`` if all of it is there and its
    connection may carry the next one; None otherwise.

    All of it: the head, and its body -- none, or exactly Content-Length bytes (chunked
    bodies and ``Expect: 100-continue`` do not count: their ends are not known here).
    May carry the next: HTTP/1.1 without ``Connection: close``. A server that refuses such
    a request unread may answer it and keep the connection; any other must be closed after
    its answer (the client's unread bytes would be taken for the next request).
    """
    end = check_head(data, limits)
    if not isinstance(end, int):
        return None
    head = data[:end].lstrip(b"\r\n")
    if not head.partition(b"\n")[0].rstrip(b"\r").endswith(b" HTTP/1.1"):
        return None
    fields = list(_fields(head))
    if any(name == b"connection" and b"close" in value.lower() for name, value in fields):
        return None
    length = _body_length(fields)
    if length is None:
        return None
    total = end + length
    return total if len(data) >= total else None

"""Requests that do not parse: INVALID_ARGUMENT for the caller, a count and a rate-limited log.

grpcio runs a method's ``request_deserializer`` on its dispatch thread; when
it raises, grpcio logs a traceback and answers INTERNAL ("Exception
deserializing request!"), which tells the caller the server broke and pages
whoever watches INTERNAL rates. rpckit gives grpcio a :class:`ParseGuard`
instead, which never raises: a payload that does not parse comes back as an
:class:`Unparsed` marker holding a description of the error (never the
bytes), and the handler wrapper (:mod:`rpckit.server._handlers`) answers it
INVALID_ARGUMENT without running the handler. On the hot path that costs one
Python call frame around ``FromString`` and one type check.

:class:`MalformedRequests` is what a server does with each one: count it
(metrics) and log it, at most once per :data:`LOG_INTERVAL_S` (a flood of bad
payloads is one log line a minute, saying how many there were), never with a
traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import message

__all__ = [
    "LOG_INTERVAL_S",
    "LogInterval",
    "MalformedRequests",
    "ParseGuard",
    "SharedLogInterval",
    "Unparsed",
    "describe_parse_error",
    "malformed_message",
]

#: At most one log line per this many seconds for malformed requests, per server.
LOG_INTERVAL_S = 60.0

#: Longest parse-error text passed on (a custom deserializer's message could be long).
_MAX_ERROR_CHARS = 200


class Unparsed:
    """What :class:`ParseGuard` returns for a payload that does not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class ParseGuard:
    """A request deserializer that returns :class:`Unparsed` instead of raising."""

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self._parse = parse

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bad payload
            return Unparsed(describe_parse_error(exc))


def describe_parse_error(exc: BaseException) -> str:
    """The parse error in words, without the payload.

    protobuf's ``DecodeError`` names the message type and what was wrong
    ("Error parsing message with type 'x.v1.GetRequest'"); other exceptions
    (a custom deserializer's) may quote the bytes, so only their type is given.
    """
    if isinstance(exc, message.DecodeError):
        return str(exc)[:_MAX_ERROR_CHARS] or "DecodeError"
    if isinstance(exc, RecursionError):
        return "the message is nested too deeply"
    return f"{type(exc).__name__} in the request deserializer"


def malformed_message(method: str, error: str) -> str:
    """The status message a caller of ``method`` gets for a request that did not parse."""
    return f"{method}: the request message does not parse: {error}"


class LogInterval:
    """Pure: may a log line go out now, and how many were held back since the last one?

    :meth:`admit` returns None to stay quiet, else the number of events
    suppressed since the previous line (0 for the first).
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError(f"LogInterval interval_s must be >= 0, got {interval_s!r}")
        self._interval_s = interval_s
        self._last: float | None = None
        self._held = 0

    def admit(self, now: float) -> int | None:
        if self._last is not None and now - self._last < self._interval_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


class SharedLogInterval:
    """:class:`LogInterval` for many threads, on a clock: :meth:`admit` as there, now."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = LogInterval(interval_s)
        self._clock = clock
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        with self._lock:
            return self._interval.admit(self._clock())


class MalformedRequests:
    """A server's malformed requests: counted by ``count(method)``, logged once per interval."""

    def __init__(
        self,
        *,
        log: logging.Logger,
        count: Callable[[str], None] | None = None,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._count = count
        self._interval = SharedLogInterval(interval_s, clock=clock)

    def __call__(self, method: str, error: str) -> None:
        if self._count is not None:
            self._count(method)
        held = self._interval.admit()
        if held is None:
            return
        more = f" ({held} more since the last report)" if held else ""
        self._log.warning("answered INVALID_ARGUMENT: %s%s", malformed_message(method, error), more)

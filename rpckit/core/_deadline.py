"""Deadlines and cancellation of the call being served, carried across hops.

grpcio in Python does not propagate deadlines: a handler that calls another
service starts a fresh call with no deadline, so the second service keeps
working for a caller that gave up long ago. rpckit fixes this with a
:class:`CallScope` per inbound call, held in a contextvar while the handler
runs:

* :func:`time_remaining` -- seconds left on the inbound deadline (``None``: none);
* :func:`cancelled` -- the caller left (cancelled, deadline passed, or the
  server is shutting down); long handlers poll it and stop early;
* :func:`outbound_timeout` -- the timeout an outbound call should use: the
  inbound deadline minus a margin, shortened (never lengthened) by an explicit
  timeout. rpckit's channels apply it to every call they make.

The grpc-timeout header codec (``"250m"`` <-> 0.25 s) lives here too, for the
HTTP shim, which takes deadlines from headers.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "NO_DEADLINE_S",
    "OUTBOUND_MARGIN_S",
    "CallScope",
    "call_scope",
    "cancelled",
    "current_scope",
    "decode_grpc_timeout",
    "encode_grpc_timeout",
    "outbound_timeout",
    "time_remaining",
]

#: grpcio reports ~9.2e18 s remaining when the caller set no deadline; anything
#: above this many seconds (~31 years) means "no deadline".
NO_DEADLINE_S = 1e9

#: Taken off the inbound deadline for outbound calls, so the reply (and the
#: work after it) still fits in the caller's budget. 5 ms covers a loopback or
#: same-zone hop's response path.
OUTBOUND_MARGIN_S = 0.005

_log = logging.getLogger("rpckit")

#: Guards every scope's cancellation callbacks (registered by a handler's thread, run by
#: grpcio's when the call ends): short critical sections, so one lock for all scopes.
_CALLBACKS_LOCK = threading.Lock()

_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class CallScope:
    """What a handler may know about the call it serves.

    ``deadline`` is on the :func:`time.monotonic` clock, ``None`` without one.
    :meth:`is_cancelled` says whether the caller went away or the server stopped:
    :meth:`cancel` was called, or the call's ``context`` (anything with grpcio's
    ``is_active()``/``add_callback()``) is no longer active -- asked only when
    someone asks, so a call nobody checks costs nothing. ``cancel_event`` is an
    Event made on first use, for code that wants to wait on it; :meth:`on_cancel`
    runs a function then (rpckit's outbound channels cancel the calls a handler
    has open downstream with it). The call's end, whatever its status, counts as
    its cancellation: what it still has open downstream is no longer wanted.
    """

    __slots__ = ("_callbacks", "_cancelled", "_context", "_event", "_hooked", "deadline", "method")

    def __init__(self, *, method: str, deadline: float | None, context: Any = None) -> None:
        self.method = method
        self.deadline = deadline
        self._context = context
        self._cancelled = False
        self._event: threading.Event | None = None
        self._hooked = False
        self._callbacks: dict[object, Callable[[], object]] | None = None

    def cancel(self) -> None:
        self._cancelled = True
        event = self._event
        if event is not None:
            event.set()
        with _CALLBACKS_LOCK:
            callbacks, self._callbacks = self._callbacks, {}
        for callback in (callbacks or {}).values():
            try:
                callback()
            except Exception:  # noqa: BLE001 - one failing callback must not stop the others
                _log.exception("a cancellation callback of %s failed", self.method)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback`` once the call is cancelled (now, if it already is).

        Returns a function that unregisters it, for when what it would cancel has
        ended: a handler that makes many downstream calls keeps no list of them.
        """
        key = object()
        with _CALLBACKS_LOCK:
            if self._callbacks is None:
                self._callbacks = {}
            self._callbacks[key] = callback
        self._hook()
        if self._cancelled:
            self.cancel()  # runs it now, unless a concurrent cancel() already has

        def unregister() -> None:
            with _CALLBACKS_LOCK:
                if self._callbacks is not None and self._callbacks.get(key) is callback:
                    del self._callbacks[key]

        return unregister

    def _hook(self) -> None:
        """Have the call's end (cancellation included) call :meth:`cancel`, once."""
        if self._hooked:
            return
        self._hooked = True
        hooked = self._context is not None and self._context.add_callback(self.cancel)
        if self._context is not None and not hooked:  # the call has already ended
            self.cancel()

    def is_cancelled(self) -> bool:
        if not self._cancelled and self._context is not None and not self._context.is_active():
            self.cancel()
        return self._cancelled

    @property
    def cancel_event(self) -> threading.Event:
        """An Event set once the call is cancelled (made, and hooked to the call, on first use)."""
        if self._event is None:
            event = threading.Event()
            self._event = event
            self._hook()
            if self._cancelled:
                event.set()
        return self._event

    def time_remaining(self, now: float) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - now


_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "rpckit_call_scope", default=None
)


def deadline_from_remaining(remaining_s: float | None, now: float) -> float | None:
    """A monotonic deadline from grpcio's ``time_remaining()`` (or ``None``)."""
    if remaining_s is None or remaining_s > NO_DEADLINE_S or math.isinf(remaining_s):
        return None
    return now + remaining_s


@contextlib.contextmanager
def call_scope(scope: CallScope) -> Iterator[CallScope]:
    """Make ``scope`` the current call for the duration of the block."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_scope() -> CallScope | None:
    """The inbound call being served by this thread, if any."""
    return _SCOPE.get()


def time_remaining() -> float | None:
    """Seconds left on the inbound call's deadline; ``None`` without one (or outside a call)."""
    scope = _SCOPE.get()
    if scope is None:
        return None
    return scope.time_remaining(time.monotonic())


def cancelled() -> bool:
    """True once the inbound call's client has gone (cancelled, timed out) or the server stops.

    Handlers doing long work should check this between steps and stop early.
    Outside a call it is always False.
    """
    scope = _SCOPE.get()
    if scope is None:
        return False
    if scope.is_cancelled():
        return True
    remaining = scope.time_remaining(time.monotonic())
    return remaining is not None and remaining <= 0


def outbound_timeout(
    explicit: float | None, *, now: float, margin_s: float = OUTBOUND_MARGIN_S
) -> float | None:
    """The timeout for an outbound call made while serving the current call.

    The inbound deadline minus ``margin_s`` is the ceiling; an explicit timeout
    can only shorten it. Returns ``None`` when neither exists; ``0.0`` when the
    budget is already spent (the call then fails DEADLINE_EXCEEDED at once).
    """
    scope = _SCOPE.get()
    remaining = None if scope is None else scope.time_remaining(now)
    if remaining is None:
        return explicit
    inherited = floor_to_wire_precision(max(0.0, remaining - margin_s))
    return inherited if explicit is None else min(explicit, inherited)


def floor_to_wire_precision(seconds: float) -> float:
    """Round a timeout *down* far enough that grpc core sends no more than ``seconds``.

    grpc core rounds the grpc-timeout it sends *up* to 1 ms below 1 s, 10 ms
    below 10 s, 100 ms below 100 s, then whole seconds; and the time it rounds
    is a hair above the timeout grpcio was given (measured with grpcio 1.85:
    1.5 s arrived as 1.51 s, 1.99 s as 2.00 s), so even a timeout on the grid
    goes up one step. Passed as-is, an inherited timeout could reach the next
    hop up to 1% later than the caller's own deadline. So this floors to the
    step and takes one more step off: at most two steps (2%, or 2 ms below
    1 s) of the budget, and the inherited deadline is never later.
    """
    ms = math.floor(seconds * 1000)
    steps_ms = (
        (1_000, 1), (10_000, 10), (100_000, 100),  # 'm' in 1, 10, 100 ms units
        (1_000_000, 1_000), (10_000_000, 10_000), (100_000_000, 100_000),  # 'S' units
    )  # fmt: skip
    step = next((step for limit, step in steps_ms if ms < limit), 3_600_000)  # then hours
    return max(0, ms - ms % step - step) / 1000


def encode_grpc_timeout(seconds: float) -> str:
    """Encode a timeout as the gRPC wire format (at most 8 digits and a unit)."""
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"timeout must be >= 0 seconds, got {seconds!r}")
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        value = math.ceil(seconds / scale)
        if value < 100_000_000:
            return f"{value}{unit}"
    return f"{min(math.ceil(seconds / 3600.0), 99_999_999)}H"


def decode_grpc_timeout(text: str) -> float:
    """Parse a gRPC timeout (``"250m"``, ``"1S"``); ValueError naming the value if malformed."""
    value, unit = text[:-1], text[-1:]
    if unit not in _GRPC_TIMEOUT_UNITS or not value.isdigit() or len(value) > 8:
        raise ValueError(
            f"malformed grpc-timeout {text!r}: expected 1-8 digits and a unit of H, M, S, m, u, n"
        )
    return int(value) * _GRPC_TIMEOUT_UNITS[unit]

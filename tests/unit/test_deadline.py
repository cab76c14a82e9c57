"""Deadline scope, outbound timeouts and the grpc-timeout codec."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.core._deadline import (
    CallScope,
    call_scope,
    cancelled,
    current_scope,
    deadline_from_remaining,
    decode_grpc_timeout,
    encode_grpc_timeout,
    floor_to_wire_precision,
    outbound_timeout,
    time_remaining,
)


def test_outside_a_call_nothing_is_inherited() -> None:
    assert current_scope() is None
    assert time_remaining() is None
    assert cancelled() is False
    assert outbound_timeout(None, now=100.0) is None
    assert outbound_timeout(2.5, now=100.0) == 2.5


def test_outbound_timeout_is_inbound_deadline_minus_margin() -> None:
    with call_scope(CallScope(method="/a.B/C", deadline=101.0)):
        # 0.995 s, less the wire step grpc core would round it up by (1 ms below 1 s)
        assert outbound_timeout(None, now=100.0, margin_s=0.005) == pytest.approx(0.994)


def test_explicit_timeout_can_only_shorten() -> None:
    with call_scope(CallScope(method="/a.B/C", deadline=101.0)):
        assert outbound_timeout(0.2, now=100.0, margin_s=0.0) == pytest.approx(0.2)
        # 1 s inherited, less one 10 ms wire step
        assert outbound_timeout(30.0, now=100.0, margin_s=0.0) == pytest.approx(0.99)


def test_spent_budget_gives_zero_not_negative() -> None:
    with call_scope(CallScope(method="/a.B/C", deadline=100.0)):
        assert outbound_timeout(None, now=100.002, margin_s=0.005) == 0.0


def test_scope_without_deadline_passes_explicit_through() -> None:
    with call_scope(CallScope(method="/a.B/C", deadline=None)):
        assert outbound_timeout(None, now=1.0) is None
        assert outbound_timeout(3.0, now=1.0) == 3.0


def test_cancel_and_scope_reset() -> None:
    scope = CallScope(method="/a.B/C", deadline=None)
    with call_scope(scope):
        assert cancelled() is False
        scope.cancel()
        assert cancelled() is True
    assert current_scope() is None


def test_cancel_event_is_made_on_first_use_and_follows_the_flag() -> None:
    early = CallScope(method="/a.B/C", deadline=None)
    early.cancel()
    assert early.cancel_event.is_set()  # made after the cancel: already set
    late = CallScope(method="/a.B/C", deadline=None)
    event = late.cancel_event
    assert not event.is_set()
    late.cancel()
    assert event.is_set()
    assert late.is_cancelled()


class FakeContext:
    """The two calls CallScope makes on a grpcio context."""

    def __init__(self, *, active: bool, accepts_callbacks: bool = True) -> None:
        self.active = active
        self.accepts_callbacks = accepts_callbacks
        self.callbacks: list[Callable[[], None]] = []

    def is_active(self) -> bool:
        return self.active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self.accepts_callbacks:
            self.callbacks.append(callback)
        return self.accepts_callbacks


def test_cancellation_is_asked_of_the_context_only_when_someone_asks() -> None:
    context = FakeContext(active=True)
    scope = CallScope(method="/a.B/C", deadline=None, context=context)
    assert scope.is_cancelled() is False
    assert context.callbacks == []  # nothing registered per call
    context.active = False  # the client went away
    assert scope.is_cancelled() is True


def test_cancel_event_hooks_the_context_and_follows_it() -> None:
    context = FakeContext(active=True)
    scope = CallScope(method="/a.B/C", deadline=None, context=context)
    event = scope.cancel_event
    assert len(context.callbacks) == 1
    assert not event.is_set()
    context.callbacks[0]()  # grpcio runs it when the call ends
    assert event.is_set()
    assert scope.is_cancelled()


def test_cancel_event_is_set_at_once_for_a_call_that_already_ended() -> None:
    context = FakeContext(active=False, accepts_callbacks=False)
    scope = CallScope(method="/a.B/C", deadline=None, context=context)
    assert scope.cancel_event.is_set()


def test_on_cancel_runs_each_callback_once_when_the_call_ends() -> None:
    context = FakeContext(active=True)
    scope = CallScope(method="/a.B/C", deadline=None, context=context)
    ran: list[str] = []
    scope.on_cancel(lambda: ran.append("first"))
    unregister = scope.on_cancel(lambda: ran.append("finished before"))
    scope.on_cancel(lambda: ran.append("second"))
    assert len(context.callbacks) == 1  # hooked once, whatever is registered
    unregister()  # what it would cancel ended first
    context.callbacks[0]()  # grpcio: the call ended (the client cancelled)
    assert ran == ["first", "second"]
    context.callbacks[0]()  # ending twice runs nothing twice
    assert ran == ["first", "second"]


def test_on_cancel_runs_at_once_for_a_call_already_cancelled_or_ended() -> None:
    scope = CallScope(method="/a.B/C", deadline=None)
    scope.cancel()
    ran: list[int] = []
    scope.on_cancel(lambda: ran.append(1))
    assert ran == [1]
    ended = CallScope(
        method="/a.B/C", deadline=None, context=FakeContext(active=False, accepts_callbacks=False)
    )
    ended.on_cancel(lambda: ran.append(2))
    assert ran == [1, 2]


def test_a_failing_cancellation_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scope = CallScope(method="/a.B/C", deadline=None)
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("downstream already gone")

    scope.on_cancel(broken)
    scope.on_cancel(lambda: ran.append("next"))
    scope.cancel()
    assert ran == ["next"]
    assert "a cancellation callback of /a.B/C failed" in caplog.text


def test_grpcio_no_deadline_sentinel_means_none() -> None:
    assert deadline_from_remaining(9.2e18, now=5.0) is None
    assert deadline_from_remaining(None, now=5.0) is None
    assert deadline_from_remaining(0.25, now=5.0) == pytest.approx(5.25)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250m", 0.25), ("1S", 1.0), ("2M", 120.0), ("1H", 3600.0), ("5u", 5e-6), ("7n", 7e-9)],
)
def test_decode_grpc_timeout(text: str, seconds: float) -> None:
    assert decode_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10", "1.5S", "-1S", "123456789m", "10x", "1 S"])
def test_decode_rejects_malformed_with_the_value_named(text: str) -> None:
    with pytest.raises(ValueError, match="malformed grpc-timeout"):
        decode_grpc_timeout(text)


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_encode_round_trips_never_shorter_and_within_a_unit(seconds: float) -> None:
    text = encode_grpc_timeout(seconds)
    assert 2 <= len(text) <= 9
    decoded = decode_grpc_timeout(text)
    assert decoded >= seconds - 1e-12
    # 8 digits: a coarser unit is chosen only past 1e8 finer units, so error <= 1e-5 relative
    assert decoded - seconds <= max(seconds * 1e-5, 1e-9) + 1e-12


def test_encode_rejects_negative() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        encode_grpc_timeout(-1.0)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.9999, 0.998), (1.993, 1.98), (9.9999, 9.98), (12.34, 12.2), (123.9, 122.0), (0.0, 0.0)],
)
def test_outbound_timeouts_are_floored_to_what_grpc_sends_exactly(
    seconds: float, expected: float
) -> None:
    assert floor_to_wire_precision(seconds) == pytest.approx(expected)


@settings(deadline=None)
@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_wire_flooring_never_lengthens(seconds: float) -> None:
    floored = floor_to_wire_precision(seconds)
    assert 0.0 <= floored <= seconds
    # the step below the floor goes too (see floor_to_wire_precision): at most two steps
    coarsest = 3600.0 if seconds >= 100_000 else max(0.001, seconds * 0.01)
    assert seconds - floored <= 2 * coarsest + 1e-9


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=50_000_000))
def test_floored_timeouts_survive_grpc_core_encoding_exactly(ms: int) -> None:
    """Mirror of grpc core's Timeout::FromMillis rounding (timeout_encoding.cc), applied to a
    time up to 1 ms above the floored timeout, as grpc core sees it."""

    def core_rounds_up(millis: int) -> int:
        def up(a: int, b: int) -> int:
            return -(-a // b)

        if millis < 1000:
            return millis
        if millis < 10_000 and up(millis, 10) % 100:
            return up(millis, 10) * 10
        if 10_000 <= millis < 100_000 and up(millis, 100) % 10:
            return up(millis, 100) * 100
        secs = up(millis, 1000)
        if secs < 1000 and secs % 60:
            return secs * 1000
        if 1000 <= secs < 10_000 and (up(secs, 10) * 10) % 60:
            return up(secs, 10) * 10_000
        if 10_000 <= secs < 100_000 and (up(secs, 100) * 100) % 60:
            return up(secs, 100) * 100_000
        return up(secs, 60) * 60_000  # minutes (and beyond) -- coarse, but our floor is coarser

    floored_ms = round(floor_to_wire_precision(ms / 1000) * 1000)
    assert floored_ms <= ms
    # grpc core rounds a time a hair above the timeout it was given (up to the next ms)
    assert core_rounds_up(floored_ms + 1) <= ms if floored_ms else True

"""Turns (rpckit.http._server._turns): first come, first served, one holder, a lease; QuickCalls."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from rpckit.http._server._turns import (
    REFUSED,
    QuickCalls,
    TurnHold,
    Turns,
    _Waiter,
    yields_turns,
)
from tests.turns_driver import Clock, leave_line, wait_until_waiting


def queue_up(turns: Turns, order: list[str], name: str, *, first: bool = False) -> threading.Thread:
    """A thread that waits for a turn, notes its name, and gives the turn back."""

    def take() -> None:
        token = turns.acquire(first=first)
        order.append(name)
        turns.release(token)

    waiting = len(turns._line)
    thread = threading.Thread(target=take)
    thread.start()
    wait_until_waiting(turns, waiting + 1)
    return thread


def test_an_idle_turn_is_taken_at_once_and_given_back() -> None:
    turns = Turns(lease_s=1.0, max_wait_s=60.0)
    token = turns.acquire()
    assert turns._holder is token
    turns.release(token)
    assert turns._holder is None
    turns.release(token)  # twice: nothing happens


def test_turns_are_handed_over_in_arrival_order() -> None:
    turns = Turns(lease_s=10.0, max_wait_s=60.0)
    held = turns.acquire()
    order: list[str] = []
    threads = [queue_up(turns, order, name) for name in ("a", "b", "c")]
    threads.append(queue_up(turns, order, "back again", first=True))
    turns.release(held)
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["back again", "a", "b", "c"]
    assert turns._holder is None
    assert turns.expired == 0


def test_a_holder_past_its_lease_lets_the_next_one_in_once() -> None:
    clock = Clock()
    turns = Turns(lease_s=0.05, max_wait_s=60.0, clock=clock)
    stuck = turns.acquire()
    order: list[str] = []
    first, second = queue_up(turns, order, "first"), queue_up(turns, order, "second")
    clock.now = 1.0  # the stuck holder's lease is long gone; the waiters see it on waking
    first.join(timeout=10)
    second.join(timeout=10)
    assert order == ["first", "second"]  # the line moved on without the stuck holder
    assert turns.expired == 1
    assert turns._holder is None
    late = turns.acquire()
    turns.release(stuck)  # the stuck holder finishes: it no longer holds anything
    assert turns._holder is late
    turns.release(late)


def test_a_lease_counts_from_when_the_turn_was_taken_not_from_when_one_queued() -> None:
    clock = Clock()
    turns = Turns(lease_s=0.2, max_wait_s=60.0, clock=clock)
    holder = turns.acquire()
    order: list[str] = []
    thread = queue_up(turns, order, "waiter")
    clock.now = 0.1
    turns.release(holder)  # within the lease: a hand-over, not an expiry
    thread.join(timeout=10)
    assert order == ["waiter"]
    assert turns.expired == 0


def test_a_request_that_waited_its_longest_leaves_the_line_and_goes_on_without_a_turn() -> None:
    """The worst input: a line that stands (overload). Waiting is bounded; the line
    does not become a queue in front of admission control."""
    clock = Clock()
    turns = Turns(lease_s=10.0, max_wait_s=0.005, clock=clock)
    holder = turns.acquire()
    got: list[object | None] = []
    waiter = threading.Thread(target=lambda: got.append(turns.acquire()))
    waiter.start()
    wait_until_waiting(turns, 1)
    clock.now = 0.006  # past its longest wait; it sees so within its own timed wait
    waiter.join(timeout=10)
    assert got == [None]
    assert turns.gave_up == 1
    assert len(turns._line) == 0
    assert turns._holder is holder  # the holder keeps its turn
    turns.release(None)  # going on without a turn: nothing to give back
    assert turns._holder is holder
    turns.release(holder)
    assert turns._holder is None
    assert turns.acquire() is not None  # the line recovers: an idle turn is taken at once


def test_a_stall_lets_waiters_go_on_a_standing_line_refuses_them_and_it_recovers() -> None:
    """Worst inputs: a short stall (nobody may be refused for it) and overload (the line
    never drains: refusing is what keeps the process's threads off the GIL)."""
    clock = Clock()
    turns = Turns(lease_s=60.0, max_wait_s=0.005, standing_s=0.1, clock=clock)
    holder = turns.acquire()  # a holder that keeps the turn: the line cannot move
    assert leave_line(turns, clock, 0.0) is None  # a stall: on without a turn
    assert leave_line(turns, clock, 0.05) is None  # still within standing_s of the first
    # Requests kept leaving, no gap of standing_s: the line stands, newcomers are refused ...
    assert leave_line(turns, clock, 0.1) is REFUSED
    assert leave_line(turns, clock, 0.15) is REFUSED
    # ... but never one coming back with its answer.
    assert leave_line(turns, clock, 0.2, first=True) is None
    assert (turns.gave_up, turns.refused) == (3, 2)
    # Nobody had to leave for standing_s: the next stall is a new one, and nobody is refused.
    assert leave_line(turns, clock, 0.4) is None
    assert leave_line(turns, clock, 0.45) is None
    turns.release(holder)
    assert turns._holder is None


def test_the_door_turns_newcomers_away_only_while_a_standing_line_has_someone_in_it() -> None:
    """Worst inputs for the front door (``turning_away``): a stall (nobody may be turned
    away for it), a standing line that has just emptied (a newcomer would get a turn at
    once), and the end of the overload (the door opens again)."""
    clock = Clock()
    turns = Turns(lease_s=60.0, max_wait_s=0.005, standing_s=0.1, clock=clock)
    holder = turns.acquire()
    order: list[str] = []
    assert leave_line(turns, clock, 0.0) is None  # a stall begins
    clock.now = 0.01
    in_line = queue_up(turns, order, "during the stall")
    assert not turns.turning_away()  # someone waits, but the line has not stood
    turns.release(holder)
    in_line.join(timeout=10)
    holder = turns.acquire()
    assert leave_line(turns, clock, 0.05) is None
    assert leave_line(turns, clock, 0.1) is REFUSED  # the line stands
    assert not turns.turning_away()  # ... but nobody is in it: a newcomer gets a turn at once
    in_line = queue_up(turns, order, "while it stands")
    assert turns.turning_away()
    turns.release(holder)
    in_line.join(timeout=10)
    assert not turns.turning_away()  # the line emptied
    holder = turns.acquire()
    clock.now = 0.3  # nobody had to leave the line for standing_s: the overload is over
    in_line = queue_up(turns, order, "after")
    assert not turns.turning_away()
    turns.release(holder)
    in_line.join(timeout=10)
    assert order == ["during the stall", "while it stands", "after"]


def test_a_waiter_handed_a_turn_whose_lease_ran_out_before_it_woke_goes_on() -> None:
    """The race a starved thread meets (bench/shim, 32 connections on one core): handed the
    turn, then passed over when its lease ran out, it then reaches its longest wait."""
    clock = Clock()
    turns = Turns(lease_s=0.02, max_wait_s=0.005, clock=clock)
    turns.acquire()
    starved, next_one = _Waiter(), _Waiter()
    turns._line.extend([starved, next_one])
    turns._hand_over()  # the holder leaves: the starved waiter holds the turn ...
    clock.now = 0.05
    turns._hand_over()  # ... its lease runs out before it wakes: the next holds it
    with turns._mutex:
        assert turns._left_line(starved, clock.now, first=False) is starved
    assert turns._holder is next_one
    assert list(turns._line) == []


def hold_after_its_longest_wait(turns: Turns, clock: Clock) -> TurnHold:
    """A request's TurnHold, taken while another holds the turn, once it waited its longest."""
    holds: list[TurnHold] = []
    thread = threading.Thread(target=lambda: holds.append(TurnHold(turns)))
    thread.start()
    wait_until_waiting(turns, 1)
    clock.now += 1.0
    thread.join(timeout=10)
    (hold,) = holds
    return hold


def test_a_refused_turn_hold_holds_nothing() -> None:
    clock = Clock()
    turns = Turns(lease_s=60.0, max_wait_s=0.005, standing_s=0.0, clock=clock)
    holder = turns.acquire()
    hold = hold_after_its_longest_wait(turns, clock)
    assert hold.refused
    hold.release()
    assert turns._holder is holder


def test_a_turn_hold_without_a_turn_steps_outside_and_back_without_taking_one() -> None:
    clock = Clock()
    turns = Turns(lease_s=10.0, max_wait_s=0.005, clock=clock)
    holder = turns.acquire()
    hold = hold_after_its_longest_wait(turns, clock)
    assert not hold.refused  # the first to leave the line: a stall, not a standing line
    with hold.outside():
        pass
    assert turns._holder is holder  # it did not queue again for a turn it never had
    hold.release()
    assert turns._holder is holder


def test_a_turn_hold_steps_outside_and_comes_back_first() -> None:
    turns = Turns(lease_s=10.0, max_wait_s=60.0)
    hold = TurnHold(turns)
    order: list[str] = []
    stepped_out = threading.Event()
    back = threading.Event()

    def request() -> None:
        with hold.outside():
            stepped_out.set()
            back.wait(timeout=10)
        order.append("came back")
        hold.release()

    thread = threading.Thread(target=request)
    thread.start()
    assert stepped_out.wait(timeout=10)
    assert turns._holder is None  # free while the request is outside
    other = turns.acquire()
    waiter = queue_up(turns, order, "newcomer")
    back.set()
    wait_until_waiting(turns, 2)
    turns.release(other)
    thread.join(timeout=10)
    waiter.join(timeout=10)
    assert order == ["came back", "newcomer"]


def test_nested_outside_gives_back_nothing_twice() -> None:
    turns = Turns(lease_s=10.0, max_wait_s=60.0)
    hold = TurnHold(turns)
    with hold.outside(), hold.outside():
        assert turns._holder is None
    assert turns._holder is not None
    hold.release()
    assert turns._holder is None


def test_lease_and_longest_wait_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lease_s"):
        Turns(lease_s=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        Turns(lease_s=1.0, max_wait_s=0)
    with pytest.raises(ValueError, match="standing_s"):
        Turns(lease_s=1.0, standing_s=-1)


def test_apps_opt_in() -> None:
    class Yielding:
        yields_turns = True

    assert yields_turns(Yielding())
    assert not yields_turns(object())


def test_quick_calls_run_inside_slow_and_unknown_ones_outside() -> None:
    clock = Clock()
    quick = QuickCalls(quick_s=0.001, clock=clock)
    outside_entered: list[str] = []

    def outside_for(key: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def step_out() -> Iterator[None]:
            outside_entered.append(key)
            yield

        return step_out()

    def call(key: str, seconds: float) -> None:
        with quick.run(key, lambda: outside_for(key)):
            clock.now += seconds

    call("fast", 0.0001)  # unknown: outside, measured
    call("fast", 0.0001)  # known quick: inside
    call("slow", 0.01)
    call("slow", 0.01)
    assert outside_entered == ["fast", "slow", "slow"]
    assert quick.is_quick("fast")
    assert not quick.is_quick("slow")
    for _ in range(20):  # a quick call that turns slow is soon run outside
        call("fast", 0.01)
    assert not quick.is_quick("fast")


def test_quick_calls_without_turns_only_measure() -> None:
    clock = Clock()
    quick = QuickCalls(clock=clock)
    with quick.run("k", None):
        clock.now += 0.0001
    assert quick.is_quick("k")


def test_quick_calls_keep_a_bounded_number_of_keys() -> None:
    quick = QuickCalls(max_keys=2)
    for key in ("a", "b", "c"):
        quick.record(key, 0.0)
    assert quick.is_quick("a")
    assert quick.is_quick("b")
    assert not quick.is_quick("c")

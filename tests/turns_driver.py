"""Driving :class:`rpckit.http._server._turns.Turns` from tests: a clock that moves when told,
and threads that wait in its line."""

from __future__ import annotations

import threading
import time

from rpckit.http._server._turns import Turns


class Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def wait_until_waiting(turns: Turns, count: int) -> None:
    give_up = time.monotonic() + 10
    while len(turns._line) != count:
        assert time.monotonic() < give_up, "the thread never queued"
        time.sleep(0.001)


def leave_line(turns: Turns, clock: Clock, at: float, *, first: bool = False) -> object | None:
    """What a request that queues at ``at`` and waits ``max_wait_s`` in line gets."""
    clock.now = at
    got: list[object | None] = []
    thread = threading.Thread(target=lambda: got.append(turns.acquire(first=first)))
    thread.start()
    wait_until_waiting(turns, 1)
    clock.now = at + turns.max_wait_s
    thread.join(timeout=10)
    assert len(got) == 1
    return got[0]

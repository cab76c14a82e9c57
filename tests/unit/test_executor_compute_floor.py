"""The concurrency limit's floor follows what the calls do: calls that mostly wait keep room
while the GIL-wait signal holds the limit at its floor, and calls that compute get it back to
one a core (real handler threads, no sockets; bounded waves of calls)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from rpckit.server._admission import AdmissionConfig, Criticality
from rpckit.server._concurrency import ConcurrencyConfig
from rpckit.server._executor import AdmissionExecutor, CallFacts, current_verdict

WAVE = 80  # more than the threads: every wave meets the limit and leaves a queue
PHASE_S = 40.0  # generous: each phase ends as soon as its condition holds


class Meter:
    """How many calls ran at once, and how many were refused instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self.most = 0
        self.refused = 0

    def call(self, cpu_s: float, sleep_s: float) -> None:
        if current_verdict() is not None:
            with self._lock:
                self.refused += 1
            return
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        end = time.thread_time() + cpu_s
        while time.thread_time() < end:
            sum(range(100))
        if sleep_s:
            time.sleep(sleep_s)
        with self._lock:
            self._running -= 1


def make_executor() -> AdmissionExecutor:
    return AdmissionExecutor(
        threads=64,
        side_pool=concurrent.futures.ThreadPoolExecutor(2),
        admission=AdmissionConfig(workers=8, admit_within_allowance=False),
        # A lag target no probe meets: the signal holds the limit at its floor of 2.
        concurrency=ConcurrencyConfig(target_lag_s=1e-6),
        processes=1,
    )


@pytest.fixture
def executor() -> Iterator[AdmissionExecutor]:
    made = make_executor()
    yield made
    made.shutdown(wait=True)


def wave(executor: AdmissionExecutor, *, cpu_s: float, sleep_s: float) -> tuple[int, int]:
    """One wave of calls sent at once; (most running at once, the reported limit after)."""
    meter = Meter()
    facts = CallFacts(
        method="/pkg.Service/Method",
        deadline=time.monotonic() + 60.0,
        criticality=Criticality.DEFAULT,
    )
    futures = [executor.submit_call(lambda: meter.call(cpu_s, sleep_s), facts) for _ in range(WAVE)]
    for future in futures:
        future.result(timeout=60)
    assert meter.refused == 0, "calls with a minute to spare were refused"
    return meter.most, executor.load_report().concurrency_limit


def until(
    executor: AdmissionExecutor,
    caplog: pytest.LogCaptureFixture,
    *,
    cpu_s: float,
    sleep_s: float,
    done: Callable[[int, int, int], bool],
) -> None:
    """Waves until ``done(most running at once, reported limit, the floor)`` holds, within
    PHASE_S."""
    seen = []
    give_up = time.monotonic() + PHASE_S
    while time.monotonic() < give_up:
        most, limit = wave(executor, cpu_s=cpu_s, sleep_s=sleep_s)
        seen.append((most, limit, latest_floor(caplog)))
        if done(*seen[-1]):
            return
    pytest.fail(f"not within {PHASE_S} s: waves (most at once, limit, floor) {seen}")


def latest_floor(caplog: pytest.LogCaptureFixture) -> int:
    """The floor the executor last logged with a change of its limit (-1: none yet)."""
    changes = [r for r in caplog.records if r.getMessage().startswith("running limit now")]
    if not changes:
        return -1
    args = changes[-1].args
    assert isinstance(args, tuple)
    floor = args[3]  # (limit, threads, by the lag, the floor, cores)
    assert isinstance(floor, int)
    return floor


def test_waiting_calls_keep_room_at_the_floor_and_computing_calls_bring_it_back(
    executor: AdmissionExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpckit.server")
    # CPU-bound calls: the signal brings the limit down to its floor of 2.
    until(executor, caplog, cpu_s=0.004, sleep_s=0.0, done=lambda most, limit, floor: limit <= 2)
    # Calls that compute 2 ms and wait 40 ms: a core keeps computing with ~20 in flight,
    # and the floor lets them in whatever the signal says.
    until(
        executor,
        caplog,
        cpu_s=0.002,
        sleep_s=0.040,
        done=lambda most, limit, floor: floor >= 8 and limit >= 8 and most >= 8,
    )
    # They turn CPU-bound (the floor's worst input): it follows them down within seconds.
    until(
        executor,
        caplog,
        cpu_s=0.004,
        sleep_s=0.0,
        done=lambda most, limit, floor: 0 < floor <= 2 and limit <= 2,
    )

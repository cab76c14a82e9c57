"""AdmissionExecutor's line of started calls: calls that find room join one line that handler
threads take from; a thread that finishes a call takes the next itself.

The worst inputs are a burst of calls that all block in their handlers (each needs a thread of
its own, at once: a call left for a running thread to finish would wait until a timeout) and a
stop while calls are still in the line (none may be lost). Real threads; every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Iterator

import pytest

from rpckit.server._admission import AdmissionConfig, Criticality
from rpckit.server._executor import AdmissionExecutor, CallFacts

METHOD = "/pkg.Service/Method"
FACTS = CallFacts(method=METHOD, deadline=None, criticality=Criticality.DEFAULT)
WAIT_S = 30.0  # generous: a bound on a wait, never a pace


@pytest.fixture
def executor() -> Iterator[AdmissionExecutor]:
    side = concurrent.futures.ThreadPoolExecutor(1)
    made = AdmissionExecutor(threads=64, side_pool=side, admission=AdmissionConfig(workers=64))
    yield made
    made.shutdown(wait=True)
    side.shutdown(wait=True)


def test_a_burst_of_blocking_calls_runs_all_at_once(executor: AdmissionExecutor) -> None:
    """20 calls that each block until all 20 have started: they can only finish if a thread
    was woken or made for every one while the others held theirs."""
    calls = 20
    all_started = threading.Barrier(calls, timeout=WAIT_S)
    threads: set[int] = set()
    lock = threading.Lock()

    def call() -> None:
        with lock:
            threads.add(threading.get_ident())
        all_started.wait()

    futures = [executor.submit_call(call, FACTS) for _ in range(calls)]
    for future in futures:
        future.result(timeout=WAIT_S)  # a broken barrier raises here
    assert len(threads) == calls


def test_a_second_burst_reuses_the_threads_the_first_made(executor: AdmissionExecutor) -> None:
    """Idle threads are woken for the line before new ones are made."""
    calls = 8

    def burst() -> None:
        all_started = threading.Barrier(calls, timeout=WAIT_S)
        futures = [executor.submit_call(all_started.wait, FACTS) for _ in range(calls)]
        for future in futures:
            future.result(timeout=WAIT_S)

    burst()
    made = executor._spawned
    burst()
    assert executor._spawned == made == calls


def test_calls_behind_a_long_one_run_on_other_threads(executor: AdmissionExecutor) -> None:
    """A call that holds its thread for long does not hold up the calls started after it."""
    release = threading.Event()
    long = executor.submit_call(lambda: release.wait(WAIT_S), FACTS)
    try:
        short = [executor.submit_call(lambda: None, FACTS) for _ in range(5)]
        for future in short:
            future.result(timeout=WAIT_S)
        assert not long.done()
    finally:
        release.set()
    long.result(timeout=WAIT_S)


def test_a_stop_runs_every_call_already_started() -> None:
    side = concurrent.futures.ThreadPoolExecutor(1)
    executor = AdmissionExecutor(threads=4, side_pool=side, admission=AdmissionConfig(workers=4))
    gate = threading.Event()
    ran: list[int] = []

    def call(i: int) -> None:
        gate.wait(WAIT_S)
        ran.append(i)

    try:
        futures = [executor.submit_call(functools.partial(call, i), FACTS) for i in range(4)]
        gate.set()
        executor.shutdown(wait=True)
        for future in futures:
            future.result(timeout=WAIT_S)
    finally:
        gate.set()
        side.shutdown(wait=True)
    assert sorted(ran) == [0, 1, 2, 3]

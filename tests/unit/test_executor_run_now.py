"""AdmissionExecutor.run_now: in-process work run in the caller's thread when admission would
start it at once, and counted like a call on a handler thread (no sockets; a fake clock)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator

import pytest

from rpckit.server._admission import AdmissionConfig, Criticality, Reason, Rejection
from rpckit.server._executor import AdmissionExecutor, CallFacts, current_verdict

METHOD = "/pkg.Service/Method"


def facts(deadline: float | None = None) -> CallFacts:
    return CallFacts(method=METHOD, deadline=deadline, criticality=Criticality.DEFAULT)


class Clock:
    """The executor's monotonic clock: it moves only when work says it took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> Callable[[], None]:
        """Work that takes ``seconds`` of this clock."""

        def run() -> None:
            self.now += seconds

        return run


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def executor(clock: Clock) -> Iterator[AdmissionExecutor]:
    side = concurrent.futures.ThreadPoolExecutor(1)
    started: list[tuple[CallFacts, float]] = []
    made = AdmissionExecutor(
        threads=1,
        side_pool=side,
        admission=AdmissionConfig(
            workers=1,
            admit_within_allowance=False,
            deadline_probe_s=10.0,
            deadline_probe_free_burst=0,
        ),
        clock=clock,
        on_start=lambda f, waited: started.append((f, waited)),
    )
    made.started = started  # type: ignore[attr-defined]
    yield made
    made.shutdown(wait=True)
    side.shutdown(wait=True)


class Holder:
    """Work that holds its slot until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread = ""

    def __call__(self) -> None:
        self.thread = threading.current_thread().name
        self.entered.set()
        self.release.wait(timeout=20)


def test_runs_in_the_callers_thread_when_a_slot_is_free(executor: AdmissionExecutor) -> None:
    seen: list[tuple[str, int]] = []

    def work() -> None:
        seen.append((threading.current_thread().name, executor.load_report().in_flight))

    assert executor.run_now(work, facts()) is True
    assert seen == [(threading.current_thread().name, 1)]  # here, and counted in flight
    assert executor.load_report().in_flight == 0
    assert executor.started == [(facts(), 0.0)]  # type: ignore[attr-defined]


def test_feeds_the_service_time_average(executor: AdmissionExecutor, clock: Clock) -> None:
    assert executor.run_now(clock.work(0.02), facts()) is True
    estimate = executor._queue.service_estimate(METHOD)
    assert estimate is not None
    assert estimate >= 0.015


def test_declines_while_the_only_slot_is_taken(executor: AdmissionExecutor) -> None:
    holder = Holder()
    held = executor.submit_call(holder, facts())
    assert holder.entered.wait(timeout=10)
    ran: list[bool] = []
    assert executor.run_now(lambda: ran.append(True), facts()) is False
    assert ran == []  # not run: the caller goes through submit_call instead
    holder.release.set()
    held.result(timeout=10)
    assert holder.thread.startswith("rpckit-handler-")


def test_declines_while_calls_are_queued_and_hands_its_slot_on(
    executor: AdmissionExecutor,
) -> None:
    inline = Holder()
    ran_inline: list[bool] = []
    runner = threading.Thread(target=lambda: ran_inline.append(executor.run_now(inline, facts())))
    runner.start()
    assert inline.entered.wait(timeout=10)  # the only slot, taken in the caller's thread
    queued = Holder()
    future = executor.submit_call(queued, facts())
    # A window for a wrong hand-over to show (a negative check: no machine is too slow for it).
    assert not queued.entered.wait(timeout=0.05)  # the handler thread waits for the slot
    assert executor.load_report().queue_depth == 1
    assert executor.run_now(lambda: None, facts()) is False  # would pass over the queued call
    inline.release.set()
    runner.join(timeout=10)
    assert ran_inline == [True]
    assert queued.entered.wait(timeout=10)  # the slot went to the queued call
    queued.release.set()
    future.result(timeout=10)


def test_declines_a_deadline_shorter_than_the_service_time(
    executor: AdmissionExecutor, clock: Clock
) -> None:
    assert executor.run_now(clock.work(0.05), facts()) is True  # fastest 50 ms
    soon = clock() + 0.01
    # The first call the estimate would refuse runs anyway, to measure again (the probe) ...
    assert executor.run_now(clock.work(0.05), facts(deadline=soon)) is True
    # ... the next within deadline_probe_s is left to admission, which refuses it.
    soon = clock() + 0.01
    assert executor.run_now(lambda: None, facts(deadline=soon)) is False
    later = clock() + 10
    assert executor.run_now(lambda: None, facts(deadline=later)) is True


def test_declines_after_shutdown() -> None:
    side = concurrent.futures.ThreadPoolExecutor(1)
    executor = AdmissionExecutor(threads=1, side_pool=side, admission=AdmissionConfig(workers=1))
    executor.shutdown(wait=True)
    side.shutdown(wait=True)
    assert executor.run_now(lambda: None, facts()) is False


def test_counts_even_when_the_work_raises(executor: AdmissionExecutor) -> None:
    def boom() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run_now(boom, facts())
    assert executor.load_report().in_flight == 0
    assert executor.run_now(lambda: None, facts()) is True


def test_a_call_refused_on_arrival_is_answered_in_the_callers_thread(
    executor: AdmissionExecutor, clock: Clock
) -> None:
    """The worst input: a refusal storm (overload through the HTTP shim). A call refused on
    arrival costs no thread hand-off: its verdict is answered before submit_call returns."""
    seen: list[tuple[str, Rejection[object] | None]] = []

    def work() -> None:
        seen.append((threading.current_thread().name, current_verdict()))

    future = executor.submit_call(work, facts(deadline=clock() - 1.0))
    assert future.done()
    ((thread, verdict),) = seen
    assert thread == threading.current_thread().name
    assert verdict is not None
    assert verdict.reason is Reason.DEADLINE_GONE
    assert current_verdict() is None  # not left behind in the caller's thread
    done = executor.submit_call(lambda: None, facts())  # the executor goes on serving
    done.result(timeout=10)

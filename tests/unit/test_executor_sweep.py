"""AdmissionExecutor's sweep: queued calls whose deadline can no longer be met are refused while
they wait, not when a thread frees up. The lag probe sweeps where the limit adapts (one thread
waking every few milliseconds, not two); a sweeper thread does where it is fixed.

The worst input: every thread held by a call that will not end soon, and a queued call whose
deadline passes meanwhile -- also after shutdown has begun, when only the sweep can answer it.
Real threads; every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import pytest

from rpckit.server._admission import AdmissionConfig, Criticality, Reason, Rejection
from rpckit.server._concurrency import ConcurrencyConfig
from rpckit.server._executor import AdmissionExecutor, CallFacts, current_verdict

METHOD = "/pkg.Service/Method"
WAIT_S = 30.0  # generous: a bound on a wait, never a pace


@pytest.fixture(params=["adaptive limit", "fixed limit"])
def executor(request: pytest.FixtureRequest) -> Iterator[AdmissionExecutor]:
    side = concurrent.futures.ThreadPoolExecutor(1)
    made = AdmissionExecutor(
        threads=1,
        side_pool=side,
        admission=AdmissionConfig(workers=1),
        concurrency=ConcurrencyConfig() if request.param == "adaptive limit" else None,
    )
    yield made
    made.shutdown(wait=True)
    side.shutdown(wait=True)


def _facts(deadline_s: float | None) -> CallFacts:
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    return CallFacts(method=METHOD, deadline=deadline, criticality=Criticality.DEFAULT)


class Verdicts:
    """Calls that record the verdict they ran with (None: they ran as handlers)."""

    def __init__(self) -> None:
        self.seen: list[Rejection[object] | None] = []

    def call(self) -> None:
        self.seen.append(current_verdict())


def test_a_queued_call_is_refused_when_its_deadline_passes(executor: AdmissionExecutor) -> None:
    release = threading.Event()
    holder = executor.submit_call(lambda: release.wait(WAIT_S), _facts(None))
    verdicts = Verdicts()
    try:
        doomed = executor.submit_call(verdicts.call, _facts(0.2))
        doomed.result(timeout=WAIT_S)  # answered while the only thread is still held
        assert not holder.done()
    finally:
        release.set()
    holder.result(timeout=WAIT_S)
    assert len(verdicts.seen) == 1
    verdict = verdicts.seen[0]
    assert verdict is not None
    assert verdict.reason in (Reason.DEADLINE_GONE, Reason.DEADLINE_SHORT)
    sweeper = "rpckit-lag-probe" if executor._limit is not None else "rpckit-sweeper"
    assert executor._housekeeper.name == sweeper


def test_the_sweep_goes_on_after_shutdown_until_the_queue_is_empty(
    executor: AdmissionExecutor,
) -> None:
    release = threading.Event()
    holder = executor.submit_call(lambda: release.wait(WAIT_S), _facts(None))
    verdicts = Verdicts()
    doomed = executor.submit_call(verdicts.call, _facts(0.3))
    stopper = threading.Thread(target=executor.shutdown, kwargs={"wait": True})
    stopper.start()
    try:
        doomed.result(timeout=WAIT_S)
        assert not holder.done()
    finally:
        release.set()
    holder.result(timeout=WAIT_S)
    stopper.join(timeout=WAIT_S)
    assert not stopper.is_alive()
    assert not executor._housekeeper.is_alive()
    assert len(verdicts.seen) == 1
    assert verdicts.seen[0] is not None

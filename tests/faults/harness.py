"""What every fault test measures: calls made, answered, failed, lost, and time to recover.

A fault test runs bounded load (:class:`CallLoad`) through the fault and ends
with a :class:`FaultReport`, which it prints (``pytest -s`` or ``-rP`` shows it)
and asserts on. *Failed*: answered with an error. *Lost*: issued and never
answered (no status, not even DEADLINE_EXCEEDED, by the time the load stopped).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable

from rpckit import BalancedChannelConfig
from rpckit.client._p2c import PickerConfig
from tests.integration.test_balancer import Load

# Quick health polling, so restarts and state changes show within a fraction of a
# second; a 1 s latency memory, so one slow reply on a starved machine does not keep
# a backend out of P2C's favour for the rest of a test.
FAST = BalancedChannelConfig(
    health_backoff_initial_s=0.05,
    health_backoff_max_s=0.5,
    wait_for_backend_s=20.0,
    picker=PickerConfig(decay_s=1.0),
)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll ``condition`` every 10 ms until true; return when (monotonic); fail naming ``what``."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


@dataclasses.dataclass
class FaultReport:
    """One fault's outcome: what a test states and asserts."""

    fault: str
    calls: int
    ok: int
    failed: Counter[str]
    lost: int
    recover_s: float | None
    recovered: str = "recovered in"  # what recover_s measures

    def __str__(self) -> str:
        failed = sum(self.failed.values())
        codes = ", ".join(f"{code} {n}" for code, n in sorted(self.failed.items())) or "none"
        recover = "n/a" if self.recover_s is None else f"{self.recover_s:.2f} s"
        return (
            f"[fault] {self.fault}: {self.calls} calls, {self.ok} ok, {failed} failed ({codes}),"
            f" {self.lost} lost, {self.recovered} {recover}"
        )

    def show(self) -> FaultReport:
        print(self)
        return self


class CallLoad(Load):
    """Closed-loop threads calling ``call(i)``: stopped by the test, ``max_calls`` or ``max_s``.

    The integration tests' load, counting each call also when issued, and keeping
    what each OK call returned with when (``answers``): issued minus answered is lost.
    """

    def __init__(
        self,
        call: Callable[[int], object],
        *,
        threads: int = 3,
        max_calls: int = 5000,
        max_s: float = 60.0,
    ) -> None:
        super().__init__(self._counted, threads=threads, max_calls=max_calls, max_s=max_s)
        self._inner = call
        self._counts = threading.Lock()
        self.issued = 0
        self.answers: list[tuple[float, object]] = []  # (monotonic time, reply) of OK calls

    def _counted(self, number: int) -> object:
        with self._counts:
            self.issued += 1
        reply = self._inner(number)
        with self._counts:
            self.answers.append((time.monotonic(), reply))
        return reply

    @property
    def answered(self) -> int:
        return self.done

    def __enter__(self) -> CallLoad:
        super().__enter__()
        return self

    def report(self, fault: str, recover_s: float | None) -> FaultReport:
        """The outcome (after the load stopped: a call still out then is lost)."""
        failed = Counter(error.code().name for _, error in self.failures)
        lost = self.issued - self.ok - len(self.failures)
        return FaultReport(fault, self.issued, self.ok, failed, lost, recover_s).show()

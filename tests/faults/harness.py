"""What every fault test measures: calls made, answered, failed, lost, and time to recover.

A fault test runs bounded load (:class:`CallLoad`) through the fault and ends
with a :class:`FaultReport`, which it prints (``pytest -s`` or ``-rP`` shows it)
and asserts on. *Failed*: answered with an error. *Lost*: issued and never
answered (no status, not even DEADLINE_EXCEEDED, by the time the load stopped).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc

from rpckit import BalancedChannelConfig
from rpckit.client._p2c import PickerConfig

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


class CallLoad:
    """Closed-loop threads calling ``call(i)``: stopped by the test, ``max_calls`` or ``max_s``.

    Each call is counted when issued and when answered, with its status (``OK``
    or the gRPC code name); ``answers`` keeps what each OK call returned.
    """

    def __init__(
        self,
        call: Callable[[int], object],
        *,
        threads: int = 3,
        max_calls: int = 5000,
        max_s: float = 60.0,
    ) -> None:
        self._call = call
        self._max_calls = max_calls
        self._give_up = time.monotonic() + max_s
        self._stop = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self.issued = 0
        self.codes: Counter[str] = Counter()
        self.answers: list[tuple[float, object]] = []  # (monotonic time, reply) of OK calls
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.codes.values())

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._give_up:
            number = next(self._numbers)
            if number >= self._max_calls:
                return
            with self._lock:
                self.issued += 1
            try:
                reply = self._call(number)
            except grpc.RpcError as error:
                with self._lock:
                    self.codes[error.code().name] += 1
            else:
                with self._lock:
                    self.codes["OK"] += 1
                    self.answers.append((time.monotonic(), reply))

    def __enter__(self) -> CallLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def report(self, fault: str, recover_s: float | None) -> FaultReport:
        """The outcome so far (call after :meth:`stop`: a call still out then is lost)."""
        with self._lock:
            failed = Counter({c: n for c, n in self.codes.items() if c != "OK"})
            ok = self.codes["OK"]
            lost = self.issued - ok - sum(failed.values())
        return FaultReport(fault, self.issued, ok, failed, lost, recover_s).show()

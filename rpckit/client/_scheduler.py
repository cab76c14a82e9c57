"""The balanced channel's timer thread: one daemon thread running jobs at their time, in order.

It re-resolves DNS targets, sends delayed retries of futures, closes retired
connections and calls connectivity subscribers, so that none of this runs on
grpc's callback threads or under the channel's lock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["JOIN_TIMEOUT_S", "Job", "Scheduler", "run_safely"]

_log = logging.getLogger("rpckit.client")

JOIN_TIMEOUT_S = 5.0
"""close() waits at most this long for each thread (they end in milliseconds once cancelled)."""


class Job:
    """A function due at some time; ``Scheduler.cancel`` keeps it from running."""

    __slots__ = ("cancelled", "fn", "on_drop")

    def __init__(self, fn: Callable[[], None], on_drop: Callable[[], None] | None) -> None:
        self.fn = fn
        self.on_drop = on_drop
        self.cancelled = False


class Scheduler:
    """One daemon thread running jobs at their time, in order. Jobs left at close() are dropped
    (their ``on_drop`` runs instead)."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(
        self, delay_s: float, fn: Callable[[], None], on_drop: Callable[[], None] | None = None
    ) -> Job | None:
        job = Job(fn, on_drop)
        with self._cond:
            if not self._closed:
                heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._order), job))
                self._cond.notify()
                return job
        if on_drop is not None:
            on_drop()
        return None

    def call_soon(self, fn: Callable[[], None], on_drop: Callable[[], None] | None = None) -> None:
        self.call_later(0.0, fn, on_drop)

    @staticmethod
    def cancel(job: Job) -> None:
        job.cancelled = True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            dropped = [job for _, _, job in self._heap]
            self._heap.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT_S)
        for job in dropped:
            if not job.cancelled and job.on_drop is not None:
                run_safely(job.on_drop)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait_s = self._heap[0][0] - time.monotonic()
                        if wait_s <= 0:
                            break
                        self._cond.wait(wait_s)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._heap)
            if not job.cancelled:
                run_safely(job.fn)


def run_safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a callback's bug must not kill the channel's thread
        _log.exception("rpckit balanced channel: background job %r failed", fn)

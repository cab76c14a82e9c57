"""The executor grpcio's sync server runs handlers on: admission control in front of OS threads.

grpcio hands every call to ``executor.submit(...)`` from its single dispatch
thread. A plain ThreadPoolExecutor queues without bound, in FIFO order, and
runs calls whose client has long given up. :class:`AdmissionExecutor` instead
puts each call through :class:`~rpckit.server._admission.AdmissionQueue` (pure
policy: deadline checks, CoDel, adaptive LIFO, criticality, a hard bound):

* at submit -- a call that cannot be admitted is rejected at once;
* when a thread frees up -- the policy picks the next call and drops doomed ones;
* every few milliseconds while calls wait -- a sweeper drops calls that can no
  longer finish in time, so under overload clients get a fast rejection
  instead of a timeout.

A rejected call is answered at once, on whichever thread decided it:
RESOURCE_EXHAUSTED (or DEADLINE_EXCEEDED when the deadline is the reason) with
``grpc-retry-pushback-ms`` and the load report, without reading its request or
taking a handler thread (see :mod:`rpckit.server._grpc_internals`). Refusing must cost
far less than serving, or overload turns into a backlog inside grpcio where no
policy can see it. Should grpcio's internals ever differ, the call instead runs
on a small side pool with a *verdict* that makes rpckit's handler wrapper
refuse it.

Per-call facts (method, deadline, criticality) are read from the arguments
grpcio passes to ``submit``. When they cannot be read the call is admitted
with no deadline.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from rpckit.core._deadline import NO_DEADLINE_S
from rpckit.core._load import encode_load
from rpckit.core._wire import (
    CRITICALITY_METADATA_KEY,
    PUSHBACK_METADATA_KEY,
    REJECTION_DETAILS_PREFIX,
)
from rpckit.server._admission import (
    AdmissionConfig,
    AdmissionQueue,
    Criticality,
    Rejection,
    Ticket,
    parse_criticality,
)
from rpckit.server._concurrency import ConcurrencyConfig, ConcurrencyLimit
from rpckit.server._grpc_internals import abort_queued, read_call
from rpckit.v1 import load_pb2

__all__ = ["AdmissionExecutor", "CallFacts", "Verdict", "current_verdict"]

_log = logging.getLogger("rpckit.server")

#: How often waiting calls are re-checked. 5 ms keeps rejections within a few
#: ms of becoming certain without burning a core on wake-ups.
SWEEP_INTERVAL_S = 0.005

#: The dispatch-lag probe sleeps this long and measures how late it wakes with
#: the GIL (see _concurrency). It runs only while calls are queued or on handler threads.
PROBE_SLEEP_S = 0.005


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux threads have their own).

    Elsewhere, or where the kernel refuses, the thread keeps its priority: that
    only costs refusal latency under CPU contention, so it is logged, not raised.
    """
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:
        _log.debug("could not lower the handler thread's priority: %s", exc)


@dataclasses.dataclass(frozen=True)
class CallFacts:
    """What is known about a call before it runs."""

    method: str
    deadline: float | None  # monotonic
    criticality: Criticality


@dataclasses.dataclass
class _Work:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[None]
    facts: CallFacts


Verdict = Rejection[_Work] | None

_local = threading.local()


def current_verdict() -> Rejection[Any] | None:
    """The rejection this thread must answer with, if any; consumed on read.

    Called by the handler wrapper first thing: ``None`` means run the handler.
    """
    verdict: Rejection[Any] | None = getattr(_local, "verdict", None)
    _local.verdict = None
    return verdict


def rejection_status(rejection: Rejection[Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and message a rejected call is answered with."""
    reason = rejection.reason
    return grpc.StatusCode[reason.status], f"{REJECTION_DETAILS_PREFIX}{reason.message}"


def facts_from_submit(args: tuple[Any, ...], now_mono: float, now_wall: float) -> CallFacts:
    """Read method, deadline and criticality from grpcio's ``submit`` arguments."""
    call = read_call(args)
    if call is None:
        return CallFacts(method="", deadline=None, criticality=Criticality.DEFAULT)
    remaining = call.deadline_wall - now_wall
    deadline = None if remaining > NO_DEADLINE_S else now_mono + remaining
    criticality = Criticality.DEFAULT
    for key, value in call.metadata:
        if key == CRITICALITY_METADATA_KEY:
            try:
                criticality = parse_criticality(value if isinstance(value, str) else None)
            except ValueError:
                _log.info("ignoring bad %s metadata %r on %s", key, value, call.method)
    return CallFacts(method=call.method, deadline=deadline, criticality=criticality)


class AdmissionExecutor(concurrent.futures.Executor):
    """A fixed pool of handler threads fed by an admission-controlled queue."""

    def __init__(
        self,
        *,
        threads: int,
        side_pool: concurrent.futures.ThreadPoolExecutor,
        admission: AdmissionConfig,
        worker_index: int = 0,
        clock: Callable[[], float] = time.monotonic,
        on_reject: Callable[[CallFacts, Rejection[Any]], None] | None = None,
        on_start: Callable[[CallFacts, float], None] | None = None,
        concurrency: ConcurrencyConfig | None = None,
        handler_nice: int = 0,
    ) -> None:
        """``concurrency``: adapt how many of the threads may run at once to the
        dispatch lag (:mod:`rpckit.server._concurrency`); ``None`` runs all of them.
        ``handler_nice``: lower the handler threads' CPU priority by this much
        (Linux; see ``ServerConfig.handler_nice``)."""
        self._threads = threads
        self._handler_nice = handler_nice
        self._side_pool = side_pool
        self._clock = clock
        self._queue: AdmissionQueue[_Work] = AdmissionQueue(admission)
        # One lock, three conditions: a notify for "work is queued" must wake a
        # handler thread, never the sweeper (which would leave the call waiting).
        # Critical sections take the lock itself (``with self._lock``): entering a
        # Condition is a Python-level call, and these run on every call.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sweep_cond = threading.Condition(self._lock)
        self._probe_cond = threading.Condition(self._lock)
        self._limit = (
            None if concurrency is None else ConcurrencyLimit(threads, clock(), concurrency)
        )
        self._in_flight = 0
        self._in_flight_here = 0  # of which run_now runs in their callers' threads
        self._busy_s = 0.0
        self._util = (clock(), 0.0, 0.0)  # (sampled at, busy_s then, utilization)
        self._shutdown = False
        self._worker_index = worker_index
        self._on_reject = on_reject
        self._on_start = on_start
        self._pool = [
            threading.Thread(target=self._work_loop, name=f"rpckit-handler-{i}", daemon=True)
            for i in range(threads)
        ]
        self._sweeper = threading.Thread(
            target=self._sweep_loop, name="rpckit-sweeper", daemon=True
        )
        self._probe = threading.Thread(
            target=self._probe_loop, name="rpckit-lag-probe", daemon=True
        )
        for thread in self._pool:
            thread.start()
        self._sweeper.start()
        if self._limit is not None:
            self._probe.start()

    # -- concurrent.futures.Executor

    def submit(  # type: ignore[override]  # Executor.submit is generic over fn's result
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[None]:
        now = self._clock()
        facts = facts_from_submit(args, now, time.time())
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._admit(_Work(fn, args, kwargs, future, facts), now)
        return future

    def submit_call(
        self, fn: Callable[[], Any], facts: CallFacts
    ) -> concurrent.futures.Future[None]:
        """Admit in-process work (the HTTP shim's calls) as a call with ``facts``.

        Same queue, policy and handler threads as gRPC calls. ``fn`` runs on a
        handler thread; when admission rejects it, it runs on the side pool with
        a verdict (:func:`current_verdict`) that rpckit's handler wrapper
        answers without calling the handler. RuntimeError after shutdown.
        """
        now = self._clock()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._admit(_Work(fn, (), {}, future, facts), now)
        return future

    def _admit(self, work: _Work, now: float) -> None:
        """Offer ``work`` to the admission queue: queue it and wake a handler, or refuse it."""
        facts = work.facts
        ticket = Ticket(
            item=work,
            method=facts.method,
            enqueued_at=now,
            deadline=facts.deadline,
            criticality=facts.criticality,
        )
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an executor that was shut down")
            rejections = self._queue.offer(ticket, now, running=self._in_flight)
            if not any(r.ticket is ticket for r in rejections):
                self._notify_queued()
        self._reject_all(rejections)

    def run_now(self, fn: Callable[[], Any], facts: CallFacts) -> bool:
        """Run in-process work in the calling thread if admission would start it at once.

        That is: nothing is queued (no call is passed over), fewer calls are in
        flight than there are handler threads, and the call's deadline leaves
        more than its method's service time. Then ``fn`` runs here, counted
        like a call on a handler thread (in flight, busy time, service-time
        EWMA, queue-wait metric of 0), and True is returned once it has.
        Otherwise it returns False at once without running ``fn``: use
        :meth:`submit_call`, where the policy decides (queue, or reject). This
        spares the HTTP shim a thread handoff per request.

        The adaptive concurrency limit does not apply here: it keeps *handler
        threads* from crowding grpc's dispatch thread out of the GIL, and work
        run in its caller's thread is in that crowd either way -- handing it to
        a handler thread would add a thread and two switches, not remove any.
        bench/shim, 8 connections on one core: 2.5k req/s, p99 10 ms with the
        limit applied here (the HTTP threads' own GIL use lowers it, and calls
        then queue); 3.4k req/s, p99 3.7 ms without. Calls run here still
        count in flight, so queued calls wait for them.
        """
        now = self._clock()
        with self._lock:
            if (
                self._shutdown
                or self._queue.depth
                or self._in_flight >= self._threads
                or self._queue.deadline_reason(facts.method, facts.deadline, now) is not None
            ):
                return False
            self._in_flight += 1
            self._in_flight_here += 1
        try:
            if self._on_start is not None:
                self._on_start(facts, 0.0)
            fn()
        finally:
            ended = self._clock()
            with self._lock:
                self._in_flight -= 1
                self._in_flight_here -= 1
                self._busy_s += ended - now
                self._queue.record_service_time(facts.method, ended - now, ended)
                if self._queue.depth:  # calls queued meanwhile: this slot is theirs now
                    self._cond.notify()
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            self._cond.notify_all()
            self._sweep_cond.notify_all()
            self._probe_cond.notify_all()
        if wait:
            for thread in (*self._pool, self._sweeper):
                thread.join()
            if self._limit is not None:
                self._probe.join()

    # -- load

    def load_report(self) -> load_pb2.LoadReport:
        """The server's current load, for the ``rpckit-load-bin`` trailer."""
        now = self._clock()
        with self._lock:
            return load_pb2.LoadReport(
                queue_depth=self._queue.depth,
                in_flight=self._in_flight,
                workers=self._threads,
                concurrency_limit=self._running_limit(),
                utilization=self._utilization(now),
                codel_load=self._queue.codel_load(now),
                pid=os.getpid(),
                worker_index=self._worker_index,
                monotonic_ms=int(now * 1000),
            )

    def pushback_ms(self) -> int:
        with self._lock:
            return self._queue.pushback_ms(self._clock())

    def _utilization(self, now: float) -> float:
        sampled_at, busy_then, last = self._util
        if now - sampled_at < 1.0:
            return last
        busy_now = self._busy_s
        util = min(1.0, max(0.0, (busy_now - busy_then) / ((now - sampled_at) * self._threads)))
        self._util = (now, busy_now, util)
        return util

    # -- threads

    def _notify_queued(self) -> None:
        """A call was queued (lock held): wake a handler, the sweeper and the probe."""
        if self._in_flight < self._running_limit():
            self._cond.notify()
        self._sweep_cond.notify()
        self._probe_cond.notify()

    def _running_limit(self) -> int:
        return self._threads if self._limit is None else self._limit.limit

    def _work_loop(self) -> None:
        if self._handler_nice:
            lower_thread_priority(self._handler_nice)
        while True:
            with self._lock:
                while not self._shutdown and (
                    self._queue.depth == 0 or self._in_flight >= self._running_limit()
                ):
                    self._cond.wait()
                if self._shutdown and self._queue.depth == 0:
                    return
                ticket, drops = self._queue.take(self._clock())
                if ticket is not None:
                    self._in_flight += 1
            self._reject_all(drops)
            if ticket is None:
                continue
            work = ticket.item
            started = self._clock()
            if self._on_start is not None:
                self._on_start(work.facts, started - ticket.enqueued_at)
            try:
                self._run(work, None)
            finally:
                ended = self._clock()
                with self._lock:
                    self._in_flight -= 1
                    self._busy_s += ended - started
                    self._queue.record_service_time(work.facts.method, ended - started, ended)

    def _sweep_loop(self) -> None:
        while True:
            with self._lock:
                while not self._shutdown and self._queue.depth == 0:
                    self._sweep_cond.wait()
                if self._shutdown and self._queue.depth == 0:
                    return
                self._sweep_cond.wait(timeout=SWEEP_INTERVAL_S)
                drops = self._queue.expire(self._clock())
            self._reject_all(drops)

    def _probe_loop(self) -> None:
        """Measure the dispatch lag while there is work, and adapt the limit to it."""
        limit = self._limit
        assert limit is not None
        while True:
            with self._lock:
                # Calls run in their callers' threads (run_now) are outside the limit:
                # no reason to measure the lag for them alone.
                while (
                    not self._shutdown
                    and self._in_flight == self._in_flight_here
                    and self._queue.depth == 0
                ):
                    self._probe_cond.wait()
                if self._shutdown:
                    return
            started = self._clock()
            time.sleep(PROBE_SLEEP_S)
            now = self._clock()
            with self._lock:
                # Demand beyond the limit: calls wait for a slot, or (in a standing
                # queue, which admits calls only into free slots) are refused for want of one.
                saturated = self._in_flight >= limit.limit and (
                    self._queue.depth > 0 or self._queue.standing(now)
                )
                if limit.observe(now - started - PROBE_SLEEP_S, saturated=saturated, now=now):
                    self._queue.set_workers(limit.limit)
                    self._cond.notify_all()
                    _log.debug("concurrency limit now %d of %d", limit.limit, self._threads)

    def _reject_all(self, rejections: list[Rejection[_Work]]) -> None:
        if not rejections:
            return
        load = encode_load(self.load_report())
        for rejection in rejections:
            work = rejection.ticket.item
            if self._on_reject is not None:
                self._on_reject(work.facts, rejection)
            code, details = rejection_status(rejection)
            trailers = ((PUSHBACK_METADATA_KEY, str(rejection.pushback_ms)), load)
            if abort_queued(work.args, code, details, trailers):
                work.future.set_result(None)
                continue
            try:
                self._side_pool.submit(self._run, work, rejection)
            except RuntimeError:  # side pool already shut down: the server is gone
                work.future.set_result(None)

    @staticmethod
    def _run(work: _Work, verdict: Verdict) -> None:
        _local.verdict = verdict
        try:
            work.fn(*work.args, **work.kwargs)
        except BaseException as exc:  # noqa: BLE001 - grpcio itself failed; keep the thread alive
            _log.exception("grpcio failed running %s", work.facts.method)
            work.future.set_exception(exc)
        else:
            work.future.set_result(None)
        finally:
            _local.verdict = None

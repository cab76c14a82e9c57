"""The executor grpcio's sync server runs handlers on: threads on demand, calls limited by the GIL.

grpcio hands every call to ``executor.submit(...)`` from its single dispatch
thread, which needs the GIL for every network event (a new call, a request
message, a finished response). A plain ThreadPoolExecutor queues without bound,
in FIFO order, runs calls whose client has long given up, and lets every
thread compete for the GIL: with many CPU-bound handlers the dispatch thread
waits in that convoy, calls pile up inside grpcio where no policy can see them,
and even a refusal takes tens of milliseconds. A small fixed pool avoids that
but refuses a burst of calls that only wait on a downstream, CPU idle.

:class:`AdmissionExecutor` (docs/architecture.md, "Executor"):

* **Threads on demand.** Handler threads are made when calls need them, up to
  ``threads`` (hundreds), and end after ``idle_timeout_s`` without work; a
  handler blocked on I/O costs a thread, not a core or the GIL.
* **Calls limited by the GIL wait.** How many calls run at once is adapted
  (:mod:`rpckit.server._concurrency`) to one signal: how late a probe thread gets the
  GIL back after a short sleep -- the wait grpc's dispatch thread has on every
  event -- minus the time the probe waited for a *core*, which other processes
  cause and fewer calls here would not cure. CPU-bound handlers thus run a few
  at a time and the dispatch thread keeps up; handlers that wait on I/O leave
  the GIL free, and the limit grows fast (slow start) to hundreds. It never falls
  below the calls in flight that keep this process's share of the cores computing
  (:mod:`rpckit.server._compute`): what fewer calls can cure is too many *computing*.

A call that starts at once has its request message's receive started in ``submit``
(:func:`~rpckit.server._grpc_internals.receive_request_now`), so its handler thread does
not sleep again waiting for the dispatch thread to deliver it.

Calls beyond the limit wait in :class:`~rpckit.server._admission.AdmissionQueue`
(pure policy: deadline budgets, CoDel, adaptive LIFO, criticality, a bound). A
call that finds room with nothing queued starts at once: it joins a line of started
calls that handler threads take from. A sleeping thread is woken (or one made)
for each call in the line no thread is already on its way to, but a thread that
finishes a call takes the next itself, before the one woken for it gets there: a
thread handed each call as its own cost a wake-up and GIL hand-offs per call
(bench/README.md, "One line of started calls"). Waking one thread at a time for
the whole line was cheaper still, but a busy neighbour's share of the cores
made each wake of the chain wait its turn: refusals beside a busy core rose
from 2-3% to 9-10%.
A refused call is answered with RESOURCE_EXHAUSTED (or
DEADLINE_EXCEEDED), ``grpc-retry-pushback-ms`` and the load report, without
reading its request or taking a handler thread (see :mod:`rpckit.server._grpc_internals`);
should grpcio's internals ever differ, the call instead runs on a small side
pool with a *verdict* that makes rpckit's handler wrapper refuse it.

Per-call facts (method, deadline, criticality) are read from the arguments
grpcio passes to ``submit``; when they cannot be read the call is admitted
with no deadline. Methods given a pool of their own (:meth:`AdmissionExecutor.route`:
health) bypass admission here: grpcio normally sends them to that pool itself,
but not when a server interceptor hid the behaviour's ``experimental_thread_pool``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

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
from rpckit.server._compute import ComputeConfig, ComputeShare
from rpckit.server._concurrency import ConcurrencyConfig, ConcurrencyLimit, counted_lag
from rpckit.server._cpu import CpuShare, usable_cpus
from rpckit.server._grpc_internals import abort_queued, read_call, receive_request_now
from rpckit.server._switch import SwitchConfig, SwitchInterval
from rpckit.v1 import load_pb2

__all__ = ["AdmissionExecutor", "CallFacts", "Verdict", "current_verdict"]

_log = logging.getLogger("rpckit.server")

#: While calls are queued, how often doomed ones are swept out: refusals come
#: within a few milliseconds of becoming certain without burning a core.
SWEEP_INTERVAL_S = 0.005
#: The lag probe sleeps this long and measures how late it gets the GIL back.
PROBE_SLEEP_S = 0.005
#: The limit on calls running at once starts here (slow start grows it).
START_LIMIT = 8
#: While calls wait for room, the handlers' CPU is read again this often (not only
#: once per window), so room for calls that sleep comes before CoDel refuses.
CPU_RECHECK_S = 0.02
#: How long a built load report is reused (each response carries one).
LOAD_REPORT_TTL_S = 0.005


def rejection_status(rejection: Rejection[Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and message a rejected call is answered with."""
    reason = rejection.reason
    return grpc.StatusCode[reason.status], f"{REJECTION_DETAILS_PREFIX}{reason.message}"


@dataclasses.dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known about a call before it runs."""

    method: str
    deadline: float | None  # monotonic
    criticality: Criticality


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


class _Done:
    """What ``submit`` returns: grpcio only adds a done callback to it.

    A ``concurrent.futures.Future`` builds a Condition per call; this is a lock
    and a list, and the executor calls :meth:`finish` exactly once.
    """

    __slots__ = ("_callbacks", "_done", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Any], object]] = []
        self._done = False

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - a callback's failure is its owner's
                _log.exception("a done callback failed")

    def done(self) -> bool:
        return self._done


class _FutureDone:
    """:class:`_Done`'s interface over a real Future (``submit_call``'s callers wait on it)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def finish(self) -> None:
        self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        self.future.set_exception(exc)


@dataclasses.dataclass(slots=True)
class _Work:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: _Done | _FutureDone
    facts: CallFacts


Verdict = Rejection[_Work] | None

_local = threading.local()


def current_verdict() -> Rejection[Any] | None:
    """The rejection this thread must answer with, if any; consumed on read.

    Called by the handler wrapper first thing: ``None`` means run the handler.
    """
    verdict: Rejection[Any] | None = getattr(_local, "verdict", None)
    if verdict is not None:
        _local.verdict = None
    return verdict


class _Running:
    """A call on a handler thread (or run in its caller's)."""

    __slots__ = ("facts", "started")

    def __init__(self, facts: CallFacts, started: float) -> None:
        self.facts = facts
        self.started = started


class _Handler:
    """A handler thread: the lock it sleeps on while idle."""

    __slots__ = ("retired", "thread", "wake")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.thread: threading.Thread | None = None
        self.retired = False


class AdmissionExecutor(concurrent.futures.Executor):
    """Handler threads made on demand, running at most ``limit`` calls at once, fed by an
    admission-controlled queue (see the module docstring)."""

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
        idle_timeout_s: float = 30.0,
        processes: int = 1,
        switch: SwitchConfig | None = None,
        set_switch_interval: Callable[[float], None] = sys.setswitchinterval,
        compute: ComputeConfig | None = None,
    ) -> None:
        """``threads``: the most handler threads, made on demand and ended after
        ``idle_timeout_s`` idle, and the most calls running at once.
        ``concurrency``: adapt how many may run at once to the GIL wait
        (:mod:`rpckit.server._concurrency`), starting at ``START_LIMIT``; ``None`` runs up
        to ``threads``. ``handler_nice``: lower the handler threads' CPU priority
        by this much (Linux; see ``ServerConfig.handler_nice``). ``processes``: how many
        processes serve the port (``ServerConfig.processes``), for :mod:`rpckit.server._cpu`.
        ``switch``: set the GIL switch interval by :mod:`rpckit.server._switch`'s rule,
        through ``set_switch_interval`` (process-wide: for a server that owns its process).
        ``compute``: how the limit's floor is estimated (:mod:`rpckit.server._compute`)."""
        self._threads = threads
        self._processes = processes
        self._handler_nice = handler_nice
        self._idle_timeout_s = idle_timeout_s
        self._side_pool = side_pool
        self._clock = clock
        self._limit = (
            None
            if concurrency is None
            else ConcurrencyLimit(threads, clock(), concurrency, start=START_LIMIT)
        )
        # How many calls in flight keep this process's share of the cores computing: the
        # limit's floor (`_compute`). The share: the usable cores over the processes, at
        # most one (a process computes Python on one core at a time, the GIL's).
        self._compute = ComputeShare(compute)
        self._core_share = min(1.0, len(usable_cpus()) / max(1, processes))
        self._running_limit = threads if self._limit is None else self._limit.limit
        self._queue: AdmissionQueue[_Work] = AdmissionQueue(
            dataclasses.replace(admission, workers=self._running_limit)
        )
        # One lock. Idle handler threads sleep on locks of their own (_idle); the
        # sweeper or the probe on a condition. Critical sections take the lock
        # itself: entering a Condition is a Python-level call, and these run per call.
        self._lock = threading.Lock()
        self._sweep_wake = threading.Condition(self._lock)
        self._probe_wake = threading.Condition(self._lock)
        self._handlers: list[_Handler] = []
        self._idle: list[_Handler] = []  # sleeping handler threads, most recent last
        self._ready: collections.deque[tuple[_Work, _Running]] = collections.deque()
        self._alive = 0  # handler threads, idle ones included
        self._spawned = 0  # handler threads ever made (names them)
        self._starting = 0  # handler threads woken or made for work, not yet looking
        self._in_flight = 0
        self._in_flight_here = 0  # of which run_now runs in their callers' threads
        self._busy_s = 0.0
        self._util = (clock(), 0.0, 0.0)  # (sampled at, busy seconds then, utilization)
        self._shutdown = False
        self._worker_index = worker_index
        self._on_reject = on_reject
        self._on_start = on_start
        self._load_cache: tuple[float, tuple[str, bytes]] = (-1.0, ("", b""))
        self._switch = None if switch is None else SwitchInterval(switch, clock())
        self._set_switch_interval = set_switch_interval
        if self._switch is not None:
            set_switch_interval(self._switch.interval)
        self._routes: dict[str, concurrent.futures.Executor] = {}
        # One thread sweeps the queue: the lag probe where the limit adapts (it wakes every
        # few milliseconds while calls run anyway), else a sweeper of its own. Two threads
        # waking every 5 ms cost ~5% of a 2-core machine's CPU at bench/overload's 1x, and
        # each wake preempts a handler (bench/README.md, "Who refuses at 1x").
        self._housekeeper = (
            threading.Thread(target=self._sweep_loop, name="rpckit-sweeper", daemon=True)
            if self._limit is None
            else threading.Thread(target=self._probe_loop, name="rpckit-lag-probe", daemon=True)
        )
        self._housekeeper.start()

    # -- concurrent.futures.Executor

    def submit(  # type: ignore[override]  # Executor.submit is generic over fn's result
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[None]:
        """Admit one gRPC call (grpcio's dispatch thread calls this). The result only
        supports ``add_done_callback``, which is all grpcio uses."""
        now = self._clock()
        facts = facts_from_submit(args, now, time.time())
        pool = self._routes.get(facts.method)
        if pool is not None:
            return pool.submit(fn, *args, **kwargs)
        done = _Done()
        own = self._admit(_Work(fn, args, kwargs, done, facts), now)
        if own is not None:
            self._reject(own)
        return cast("concurrent.futures.Future[None]", done)

    def route(self, method: str, pool: concurrent.futures.Executor) -> None:
        """Run every call of ``method`` (``/pkg.Service/Method``) on ``pool``, outside admission.

        Set up before the server starts; read without a lock afterwards.
        """
        self._routes[method] = pool

    def submit_call(
        self, fn: Callable[[], Any], facts: CallFacts
    ) -> concurrent.futures.Future[None]:
        """Admit in-process work (the HTTP shim's calls) as a call with ``facts``.

        Same queue, policy, limit and threads as gRPC calls. ``fn`` runs on a
        handler thread; when admission rejects it, it runs with a verdict
        (:func:`current_verdict`) that rpckit's handler wrapper answers without
        calling the handler: refused on arrival, in this thread before this
        returns (its caller waits for the answer anyway, and under overload --
        when refusals come by the hundred a second -- two thread hand-offs per
        refusal cost the CPU the admitted calls need); refused later, after
        waiting, on the side pool. RuntimeError after shutdown.
        """
        work = _Work(fn, (), {}, _FutureDone(), facts)
        own = self._admit(work, self._clock())
        if own is not None:
            self._reject(own, here=True)
        return cast("_FutureDone", work.done).future

    def _admit(self, work: _Work, now: float) -> Rejection[_Work] | None:
        """Start ``work`` if there is room and nothing waits (it joins the line of started
        calls); else offer it to the admission queue (queued, or refused). ``work``'s own
        refusal, if any, is returned for the caller to answer (:meth:`_reject`); calls the
        offer dropped to make room are answered here."""
        facts = work.facts
        rejections: list[Rejection[_Work]] = []
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an executor that was shut down")
            queue = self._queue
            if (
                self._in_flight < self._running_limit
                and not queue.depth
                and queue.deadline_reason(facts.method, facts.deadline, now, slot_free=True) is None
            ):
                # Its request is read now, not by the handler thread (see receive_request_now).
                args = receive_request_now(work.args) if work.args else None
                if args is not None:
                    work.args = args
                self._ready.append((work, self._start(facts, now)))
                queue.note_started(now)
            else:
                ticket = Ticket(
                    item=work,
                    method=facts.method,
                    enqueued_at=now,
                    deadline=facts.deadline,
                    criticality=facts.criticality,
                )
                was_empty = not queue.depth
                rejections = queue.offer(ticket, now, running=self._in_flight)
                if was_empty and queue.depth:
                    # The sweeper and the probe wait for a queue only while there is
                    # none; once one stands they look every few ms of their own accord,
                    # and waking them per queued call cost context switches
                    # (bench/overhead).
                    self._sweep_wake.notify()
                    self._probe_wake.notify()
            spawn = self._dispatch()
        self._spawn(spawn)
        if not rejections:  # the usual case: started or queued
            return None
        own = next((r for r in rejections if r.ticket.item is work), None)
        self._reject_all([r for r in rejections if r is not own])
        return own

    def run_now(self, fn: Callable[[], Any], facts: CallFacts) -> bool:
        """Run in-process work in the calling thread if admission would start it at once.

        That is: nothing is queued (no call is passed over), fewer calls run than
        the limit allows, and the call's deadline leaves more than its method's
        fastest recent service time. Then ``fn`` runs here, counted like a call
        on a handler thread (in flight, busy time, service times, queue wait of
        0), and True is returned once it has. Otherwise it returns False at once
        without running ``fn``: use :meth:`submit_call`, where the policy decides
        (queue, or refuse). This spares the HTTP shim a thread handoff per request.
        """
        now = self._clock()
        with self._lock:
            if (
                self._shutdown
                or self._queue.depth
                or self._in_flight >= self._running_limit
                or self._queue.deadline_reason(facts.method, facts.deadline, now, slot_free=True)
                is not None
            ):
                return False
            record = self._start(facts, now)
            self._in_flight_here += 1
            self._queue.note_started(now)
        cpu_before = time.thread_time()
        try:
            if self._on_start is not None:
                self._on_start(facts, 0.0)
            fn()
        finally:
            cpu_s = time.thread_time() - cpu_before
            with self._lock:
                self._in_flight_here -= 1
                switch_to = self._finish(record, cpu_s)
                spawn = self._dispatch()
            self._spawn(spawn)
            if switch_to is not None:
                self._apply_switch(switch_to)
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            for handler in self._idle:
                handler.wake.release()
            self._starting += len(self._idle)
            self._idle.clear()
            self._sweep_wake.notify_all()
            self._probe_wake.notify_all()
            threads = [h.thread for h in self._handlers if h.thread is not None]
        if wait:
            for thread in (*threads, self._housekeeper):
                thread.join()

    # -- load

    def load_report(self) -> load_pb2.LoadReport:
        """The server's current load, for the ``rpckit-load-bin`` trailer."""
        now = self._clock()
        with self._lock:
            return self._load_report(now)

    def load_pair(self) -> tuple[str, bytes]:
        """The encoded load trailer, rebuilt at most every ``LOAD_REPORT_TTL_S``.

        Every response carries one; a few milliseconds of staleness is far below
        what a client's balancer can react to, and building one per call cost
        more than the rest of rpckit's per-call work.
        """
        now = self._clock()
        built_at, pair = self._load_cache
        if now - built_at < LOAD_REPORT_TTL_S:
            return pair
        with self._lock:
            pair = encode_load(self._load_report(now))
        self._load_cache = (now, pair)
        return pair

    def pushback_ms(self) -> int:
        with self._lock:
            return self._queue.pushback_ms(self._clock())

    def _load_report(self, now: float) -> load_pb2.LoadReport:
        queue = self._queue
        return load_pb2.LoadReport(
            queue_depth=queue.depth,
            in_flight=self._in_flight,
            workers=self._alive,
            concurrency_limit=self._running_limit,
            utilization=self._utilization(now),
            codel_load=queue.codel_load(now),
            pid=os.getpid(),
            worker_index=self._worker_index,
            monotonic_ms=int(now * 1000),
        )

    def _utilization(self, now: float) -> float:
        """Share of the limit's calls busy over the last second or so (0..1)."""
        sampled_at, busy_then, last = self._util
        if now - sampled_at < 1.0:
            return last
        busy_now = self._busy_s
        limit = max(1, self._running_limit)
        util = min(1.0, max(0.0, (busy_now - busy_then) / ((now - sampled_at) * limit)))
        self._util = (now, busy_now, util)
        return util

    # -- calls (the lock is held)

    def _start(self, facts: CallFacts, now: float) -> _Running:
        self._in_flight += 1
        if self._in_flight == 1 and self._limit is not None:
            self._probe_wake.notify()
        return _Running(facts, now)

    def _apply_switch(self, change: tuple[float, str]) -> None:
        """Set the GIL switch interval ``_switch`` chose, for the reason given (the lock
        is not held)."""
        interval, why = change
        self._set_switch_interval(interval)
        _log.debug("GIL switch interval now %.1f ms: %s", interval * 1000, why)

    def _finish(self, record: _Running, cpu_s: float) -> tuple[float, str] | None:
        """The call ``record`` ended, having used ``cpu_s`` of its thread's CPU. The new
        switch interval, if any."""
        ended = self._clock()
        self._in_flight -= 1
        self._busy_s += ended - record.started
        method = record.facts.method
        self._queue.record_service_time(method, ended - record.started, ended)
        self._compute.observe(cpu_s, self._queue.fastest_service(method, ended), ended)
        if self._switch is None:
            return None
        interval = self._switch.observe(cpu_s, ended, method)
        if interval is None:
            return None
        if interval == self._switch.config.long_s:
            return interval, "no call held the GIL for long lately"
        return interval, f"a call of {record.facts.method} used {cpu_s * 1000:.1f} ms of CPU"

    # -- threads

    def _dispatch(self) -> int:
        """(Lock held.) Wake idle threads for the work waiting for one -- each started
        call in the line and each queued call there is room for -- less the threads
        already on their way; returns threads to spawn."""
        wanted = (
            len(self._ready)
            + min(self._queue.depth, self._running_limit - self._in_flight)
            - self._starting
        )
        if wanted <= 0:
            return 0
        while wanted and self._idle:
            self._idle.pop().wake.release()  # the most recently idle: warm caches
            self._starting += 1
            wanted -= 1
        spawn = min(wanted, self._threads - self._alive)
        self._alive += spawn
        self._starting += spawn
        return spawn

    def _spawn(self, count: int) -> None:
        """Start ``count`` handler threads (already counted alive); the lock is not held."""
        for _ in range(count):
            handler = _Handler()
            with self._lock:
                handler.thread = threading.Thread(
                    target=self._work_loop,
                    args=(handler,),
                    name=f"rpckit-handler-{self._spawned}",
                    daemon=True,
                )
                self._spawned += 1
                self._handlers.append(handler)
            handler.thread.start()

    def _work_loop(self, handler: _Handler) -> None:
        """A handler thread: run the next started call or one it finds queued; sleep
        when idle; end after ``idle_timeout_s`` without work.

        A thread is idle exactly while it is in ``_idle``; ``_dispatch`` wakes one
        (counted in ``_starting`` until it looks) to take a started call from
        ``_ready`` or a queued one from the admission queue.
        """
        if self._handler_nice:
            lower_thread_priority(self._handler_nice)
        looking: bool | None = True  # made for waiting work
        while looking is not None:
            with self._lock:
                started, waited, drops = self._next(handler, looking=looking)
            looking = False
            if drops:
                self._reject_all(drops)
            if started is None:
                if not drops:
                    looking = self._sleep(handler)
                continue
            work, record = started
            if self._on_start is not None:
                self._on_start(work.facts, waited)
            cpu_before = time.thread_time()
            try:
                self._run(work, None)
            finally:
                cpu_s = time.thread_time() - cpu_before
                with self._lock:
                    switch_to = self._finish(record, cpu_s)
                if switch_to is not None:
                    self._apply_switch(switch_to)

    def _next(
        self, handler: _Handler, *, looking: bool
    ) -> tuple[tuple[_Work, _Running] | None, float, list[Rejection[_Work]]]:
        """(Lock held.) The next started call, or one taken from the queue, how long it
        waited there, and the calls dropped on the way; with no call and no drops the
        thread is now idle (in ``_idle``), or retired at shutdown."""
        if looking:
            self._starting -= 1
        if self._ready:
            return self._ready.popleft(), 0.0, []
        if self._queue.depth and self._in_flight < self._running_limit:
            now = self._clock()
            ticket, drops = self._queue.take(now)
            if ticket is None:
                return None, 0.0, drops
            record = self._start(ticket.item.facts, now)
            return (ticket.item, record), now - ticket.enqueued_at, drops
        if self._shutdown:
            self._retire(handler)
        else:
            self._idle.append(handler)
        return None, 0.0, []

    def _sleep(self, handler: _Handler) -> bool | None:
        """Sleep until woken to look for work (True) or idle too long, or retired at
        shutdown (None: the thread ends)."""
        if handler.retired:
            return None  # by _next, at shutdown
        if handler.wake.acquire(timeout=self._idle_timeout_s):
            return True
        with self._lock:
            if handler in self._idle:  # nobody woke it: end
                self._idle.remove(handler)
                self._retire(handler)
                return None
        handler.wake.acquire()  # woken just as it timed out: the release has happened
        return True

    def _handler_threads(self) -> list[threading.Thread]:
        """(Lock held.) The handler threads not retired: none of them has returned."""
        return [h.thread for h in self._handlers if h.thread is not None]

    def _retire(self, handler: _Handler) -> None:
        handler.retired = True
        self._alive -= 1
        self._handlers.remove(handler)

    def _sweep_loop(self) -> None:
        """While calls are queued, drop the doomed ones every ``SWEEP_INTERVAL_S`` (where no
        limit adapts: the lag probe sweeps otherwise)."""
        while True:
            with self._lock:
                while not self._shutdown and self._queue.depth == 0:
                    self._sweep_wake.wait()
                if self._shutdown and self._queue.depth == 0:
                    return
                self._sweep_wake.wait(SWEEP_INTERVAL_S)
                drops = self._queue.expire(self._clock())
            self._reject_all(drops)

    def _probe_loop(self) -> None:
        """While calls run or wait, measure how late a sleeping thread wakes with the GIL
        (what grpc's dispatch thread suffers on every event) and adapt the limit to it.

        Which lateness counts depends on the queue (docs/architecture.md, "Executor"):
        while no queue stands, only the wait for the GIL -- the time the probe
        waited for a *core* (its scheduler run delay) is taken out, so a neighbour
        process busy on the cores does not throttle a lightly loaded server; once
        a queue stands, the wait for a core counts too -- if the handlers use the CPU
        (:func:`~rpckit.server._concurrency.counted_lag`, :class:`HandlerCpu`;
        sleeping handlers are not what a neighbour's load could be taken out on), and
        only as far as this server's own processes take the cores
        (:mod:`rpckit.server._cpu`): then the dispatch thread's wait for a core is
        what makes refusals slow, and fewer runnable handlers here shorten it
        (measurements: bench/README.md, "Measurements behind the defaults"), while a
        wait a neighbour causes is not cured by refusing calls.
        Calls run in their callers' threads (run_now) are outside the limit: no
        reason to measure for them alone.

        After each sleep it also drops the queue's doomed calls, the sweeper's job where
        no limit adapts: a queue is reason enough to run, and past shutdown it only sweeps,
        until the queue is empty (the handler threads drain it).
        """
        limit = self._limit
        assert limit is not None
        own = ThreadSchedStats()  # the probe's own run delay
        tid = threading.get_native_id()
        machine = CpuShare(self._processes, clock=self._clock)
        meter = _HandlerMeter(self._clock())
        while True:
            with self._lock:
                rested = False
                while (
                    not self._shutdown
                    and self._in_flight == self._in_flight_here
                    and not self._queue.depth
                ):
                    self._probe_wake.wait()
                    rested = True
                if self._shutdown and not self._queue.depth:
                    meter.close()
                    own.close()
                    return
                threads = self._handler_threads() if rested else []
            if rested:  # measure the handlers' CPU from now, not over the rest
                meter.restart(threads, self._clock())
            started = self._clock()
            delay_before = own.run_delay_s(tid)
            time.sleep(PROBE_SLEEP_S)
            now = self._clock()
            late = now - started - PROBE_SLEEP_S
            waited_for_a_core = own.run_delay_s(tid) - delay_before
            spawn = 0
            # Of the wait for a core, only this server's share of the busy CPU is ours,
            # and only as far as the cores are short (`_cpu`).
            others = waited_for_a_core * (1.0 - machine.fraction())
            with self._lock:
                drops = self._queue.expire(now) if self._queue.depth else []
                # Demand beyond the limit: calls wait for room, or (in a standing
                # queue, which admits only into free room) are refused for want of it.
                saturated = self._in_flight >= self._running_limit and (
                    self._queue.depth > 0 or self._queue.standing(now)
                )
                threads = self._handler_threads() if meter.due(now, saturated=saturated) else []
            self._reject_all(drops)
            if self._shutdown:
                continue  # only the sweep, as the sweeper did: no limit to adapt, no threads made
            # Read outside the lock: the dispatch thread admits calls meanwhile.
            cpu_now = meter.read(threads, now)
            cpu_share = meter.share
            with self._lock:
                standing = self._queue.standing(now)
                late = counted_lag(
                    late - others,
                    waited_for_a_core - others,
                    standing=standing,
                    handlers_cpu_share=cpu_share,
                )
                busy = self._in_flight - self._in_flight_here
                limit.observe(
                    max(0.0, late),
                    saturated=saturated,
                    now=now,
                    busy=busy,
                    handlers_cpu_share=cpu_share,
                    handlers_cpu_now=cpu_now,
                    # Next to nothing here wants the GIL: the lateness is the host's.
                    quiet=busy <= 1 and not standing and not self._queue.depth,
                )
                floor = self._compute.floor(
                    self._core_share,
                    self._threads,
                    processes=self._processes,
                    index=self._worker_index,
                )
                cap = max(limit.limit, floor)
                if cap != self._running_limit:
                    self._running_limit = cap
                    self._queue.set_workers(cap)
                    spawn = self._dispatch()
                    _log.debug(
                        "running limit now %d of %d threads (%d by the lag, %d to keep "
                        "%.2f cores computing)",
                        cap,
                        self._threads,
                        limit.limit,
                        floor,
                        self._core_share,
                    )
            self._spawn(spawn)

    # -- refusals

    def _reject_all(self, rejections: list[Rejection[_Work]]) -> None:
        for rejection in rejections:
            self._reject(rejection)

    def _reject(self, rejection: Rejection[_Work], *, here: bool = False) -> None:
        """Answer a refused call: grpcio aborts a queued gRPC call itself; other work runs
        with the verdict, in this thread (``here``) or on the side pool."""
        work = rejection.ticket.item
        if self._on_reject is not None:
            self._on_reject(work.facts, rejection)
        code, details = rejection_status(rejection)
        trailers = ((PUSHBACK_METADATA_KEY, str(rejection.pushback_ms)), self.load_pair())
        if abort_queued(work.args, code, details, trailers):
            work.done.finish()
            return
        if here:
            self._run(work, rejection)
            return
        try:
            self._side_pool.submit(self._run, work, rejection)
        except RuntimeError:  # side pool already shut down: the server is gone
            work.done.finish()

    @staticmethod
    def _run(work: _Work, verdict: Verdict) -> None:
        if verdict is not None:
            _local.verdict = verdict
        try:
            work.fn(*work.args, **work.kwargs)
        except BaseException as exc:  # noqa: BLE001 - grpcio itself failed; keep the thread alive
            _log.exception("grpcio failed running %s", work.facts.method)
            if isinstance(work.done, _FutureDone):
                work.done.fail(exc)
                return
        finally:
            _local.verdict = None
        work.done.finish()


class _HandlerMeter:
    """The handler threads' CPU as the probe loop reads it: once a window, and every
    ``CPU_RECHECK_S`` while calls wait for room (are the calls running sleeping? then
    room is cheap). Used by the probe thread only."""

    def __init__(self, now: float) -> None:
        self._stats = ThreadSchedStats()
        self._window = HandlerCpu(now, stats=self._stats)
        self._recheck = HandlerCpu(now, window_s=CPU_RECHECK_S, stats=self._stats)
        self.share = 1.0  # until measured, count core waits as before this measure
        self._window_due = self._recheck_due = False

    def due(self, now: float, *, saturated: bool) -> bool:
        """Whether :meth:`read` at ``now`` reads the threads' clocks (then pass them)."""
        self._window_due = self._window.due(now)
        self._recheck_due = saturated and self._recheck.due(now)
        return self._window_due or self._recheck_due

    def restart(self, threads: list[threading.Thread], now: float) -> None:
        """Measure from ``now`` (after a rest with no call running)."""
        for measure in (self._window, self._recheck):
            measure.share(threads, now)
        self._forget_ended(threads)

    def read(self, threads: list[threading.Thread], now: float) -> float | None:
        """One probe sample: updates :attr:`share` if a window ended; returns the
        recheck's share if one was due."""
        if self._window_due:
            self.share = self._window.share(threads, now)
            self._forget_ended(threads)
        return self._recheck.share(threads, now) if self._recheck_due else None

    def close(self) -> None:
        self._stats.close()

    def _forget_ended(self, threads: list[threading.Thread]) -> None:
        self._stats.forget_all_but({t.native_id for t in threads if t.native_id is not None})


class HandlerCpu:
    """The CPU the handler threads used *or waited for*, in cores, over windows of ``window_s``.

    Read once per window from each handler thread's scheduler statistics
    (``/proc/self/task/TID/schedstat``: time on a core plus time runnable but
    waiting for one). Handlers that sleep or wait on a downstream add neither;
    handlers that compute add the first, and, when other processes starve them
    of the cores, the second -- so starved CPU-bound handlers are not mistaken
    for sleeping ones. A thread waiting for the GIL is asleep in the kernel, but
    the one holding it is not, so handlers crowding the GIL show too. Where the
    file cannot be read, the share is reported as 1.0: busy, the rules as before.
    """

    def __init__(
        self, now: float, window_s: float = 0.25, stats: ThreadSchedStats | None = None
    ) -> None:
        self._window_s = window_s
        self._since = now
        self._stats = stats if stats is not None else ThreadSchedStats()
        self._last: dict[int, float] = {}  # native thread id -> seconds at the last read

    def due(self, now: float) -> bool:
        return now - self._since >= self._window_s

    def share(self, threads: list[threading.Thread], now: float) -> float:
        used = 0.0
        seen: dict[int, float] = {}
        for thread in threads:
            tid = thread.native_id
            if tid is None:
                continue
            demand = self._stats.demand_s(tid)
            if demand is None:
                if thread.is_alive():  # no schedstat here: assume busy
                    self._since = now
                    return 1.0
                continue
            used += max(0.0, demand - self._last.get(tid, demand))  # a tid may be reused
            seen[tid] = demand
        elapsed = max(now - self._since, 1e-9)
        self._last = seen
        self._since = now
        return used / elapsed


def _schedstat_s(text: bytes) -> tuple[float, float] | None:
    """A ``schedstat`` file's (seconds on a core, seconds runnable waiting for one)."""
    fields = text.split()
    try:
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (IndexError, ValueError):
        return None


class ThreadSchedStats:
    """The ``schedstat`` files of this process's threads, each opened once and read with
    ``pread``: with hundreds of handler threads read 50 times a second, opening each
    file for every read cost ~13 us a thread (3 ms a reading), against ~1.5 us.

    Used by one thread (the probe's); :meth:`forget_all_but` closes the files of
    threads that ended.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # native thread id -> open schedstat file

    def demand_s(self, tid: int) -> float | None:
        """Seconds thread ``tid`` has run or waited to run; None: no such thread, or no
        schedstat here. A thread's file stays readable after it ends, frozen: the probe
        passes the live threads to :meth:`forget_all_but` once a window."""
        times = self._times_s(tid)
        return None if times is None else times[0] + times[1]

    def run_delay_s(self, tid: int) -> float:
        """Seconds thread ``tid`` has spent runnable but waiting for a core (0 if unknown)."""
        times = self._times_s(tid)
        return 0.0 if times is None else times[1]

    def _times_s(self, tid: int) -> tuple[float, float] | None:
        for _attempt in range(2):  # a cached file that fails: open it again, once
            fd = self._fds.get(tid)
            if fd is None:
                try:
                    fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
                except OSError:
                    return None
                self._fds[tid] = fd
            try:
                return _schedstat_s(os.pread(fd, 128, 0))
            except OSError:
                self._close(tid)
        return None

    def forget_all_but(self, tids: set[int]) -> None:
        """Close the files of threads not in ``tids``."""
        for tid in [tid for tid in self._fds if tid not in tids]:
            self._close(tid)

    def close(self) -> None:
        for tid in list(self._fds):
            self._close(tid)

    def _close(self, tid: int) -> None:
        fd = self._fds.pop(tid, None)
        if fd is not None:
            os.close(fd)


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

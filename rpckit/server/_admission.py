"""Admission policy: the pure queueing brain of rpckit's server executor.

Calls wait here between grpcio's ``executor.submit`` and a free worker thread.
The policy decides, cheaply and without running the handler, which calls run
and which are rejected. It holds no locks, threads or clocks: the executor
adapter serialises access and passes ``now`` (monotonic seconds) to every call.

The rules (DESIGN.md, "Server" -> "Admission policy"):

* **Deadlines.** A call whose deadline has passed is rejected
  (``DEADLINE_GONE``); so is one whose remaining time is below its method's
  recent service time, an EWMA (``DEADLINE_SHORT``): it could not finish.
* **CoDel** (Facebook, "Fail at Scale", 2015). If the queue has not been idle
  at any time during the last ``codel_interval_s`` it is *standing*, and a
  call queued now may wait at most the CoDel target; otherwise it may wait up
  to the interval. As in the paper, a call's allowance is fixed when it is
  queued (``enqueue(req, timeout)``): a burst admitted into an idle queue is
  not dropped wholesale the moment the queue turns standing. Late calls are
  dropped (``CODEL``). The target scales with the method's service time
  (``max(codel_target_s, target_service_multiple x EWMA)``) so a 50 ms method
  is not held to a 5 ms budget. *Idle* means empty with no call shed for
  overload (``CODEL``, ``QUEUE_FULL``) within the interval: a queue kept short
  by refusing newcomers on arrival is still a standing one. A newcomer whose
  predicted wait is over a quarter of its allowance is refused on arrival
  (``admit_within_allowance``, ``admit_wait_fraction``): a refusal's latency
  is the wait before it, so a standing queue admits a call only into a worker
  that is free or about to be.
* **Adaptive LIFO** (same paper). FIFO while there is no standing queue;
  newest first once one stands, so the calls served are the ones whose clients
  are still waiting, and the stale ones age out through CoDel.
* **Criticality** (Google SRE book, "Handling Overload"). Higher criticality is
  served first; when the queue is full a newcomer evicts a queued call of
  lower criticality (``PREEMPTED``); in a standing queue sheddable calls get a
  tighter CoDel allowance. Sheddable work is thus shed first on every path.
* **Bound.** At most ``queue_limit`` calls are queued (``QUEUE_FULL``).

Every rejection carries a pushback (``grpc-retry-pushback-ms``): the time the
workers need to drain the current queue, from the service-time EWMAs.

Cost. Calls sit in one deque per criticality (arrival order, for FIFO/LIFO),
one CoDel heap (earliest expiry first: each call's enqueue time plus its
allowance) and one deadline heap per method (earliest deadline first). A call removed
through one structure is marked dead and skipped lazily by the others, and the
structures are compacted after every ``queue_limit`` removals.

* ``take`` looks only at the calls it would run (dropping doomed ones on the
  way): amortised O(1) plus O(1) per call dropped.
* The sweep (``expire``, and ``offer`` on a full queue) visits the head of
  each heap, O(m) for m methods with queued calls, plus O(log n) per call
  dropped. It is skipped entirely until the earliest
  moment any queued call could become doomed (a conservative "next due" time
  kept up to date by offers and service-time samples), so calling ``expire``
  every millisecond costs next to nothing while nothing is due.

No operation scans the whole queue.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import math
from collections import deque
from typing import Generic, TypeVar

from rpckit.core._validate import check_int, check_number
from rpckit.core._wire import CRITICALITY_METADATA_KEY

__all__ = [
    "AdmissionConfig",
    "AdmissionQueue",
    "Criticality",
    "Reason",
    "Rejection",
    "Ticket",
    "parse_criticality",
]

T = TypeVar("T")


class Criticality(enum.IntEnum):
    """How much a call matters when the server must shed load; higher is more important.

    A reduced form of the Google SRE book's criticalities (CRITICAL_PLUS,
    CRITICAL, SHEDDABLE_PLUS, SHEDDABLE): three levels are enough to say
    "shed me first", "normal" and "shed me last".
    """

    SHEDDABLE = 0
    DEFAULT = 1
    CRITICAL = 2


_CRITICALITY_BY_NAME = {c.name.lower(): c for c in Criticality}


def parse_criticality(value: str | None) -> Criticality:
    """Read the ``rpckit-criticality`` metadata value (case-insensitive).

    ``None`` or ``""`` (header absent or empty) is ``DEFAULT``; an unknown value
    raises ``ValueError`` naming it, so the adapter can answer INVALID_ARGUMENT.
    """
    if not value:
        return Criticality.DEFAULT
    try:
        return _CRITICALITY_BY_NAME[value.lower()]
    except KeyError:
        raise ValueError(
            f"unknown {CRITICALITY_METADATA_KEY} {value!r}: "
            "expected 'sheddable', 'default' or 'critical'"
        ) from None


class Reason(enum.Enum):
    """Why a call was not run. The value is a stable label for metrics."""

    QUEUE_FULL = "queue_full"
    """The queue held ``queue_limit`` calls, none of lower criticality."""
    CODEL = "codel"
    """The call waited longer than CoDel allows."""
    DEADLINE_GONE = "deadline_gone"
    """The call's deadline had passed."""
    DEADLINE_SHORT = "deadline_short"
    """The time left was below the method's service-time EWMA."""
    PREEMPTED = "preempted"
    """The queue was full and a call of higher criticality took this one's place."""

    @property
    def status(self) -> str:
        """The gRPC status code name the call is answered with."""
        if self in (Reason.DEADLINE_GONE, Reason.DEADLINE_SHORT):
            return "DEADLINE_EXCEEDED"
        return "RESOURCE_EXHAUSTED"

    @property
    def message(self) -> str:
        """The status message the client reads (no server internals)."""
        return _REASON_MESSAGES[self]


_REASON_MESSAGES = {
    Reason.QUEUE_FULL: "server overloaded: admission queue is full",
    Reason.CODEL: "server overloaded: call waited too long in the queue (CoDel)",
    Reason.PREEMPTED: "server overloaded: call shed for more critical traffic",
    Reason.DEADLINE_GONE: "deadline expired before the call could start",
    Reason.DEADLINE_SHORT: "deadline too short for this method's recent service time",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdmissionConfig:
    """Parameters of :class:`AdmissionQueue`; every field is validated on construction."""

    workers: int = 8
    """Worker threads the queue feeds; used to estimate drain time (pushback).
    DESIGN.md: a modest pool (8-16) per process; the sync server is CPU-bound
    on one core under the GIL, so more threads add contention, not throughput."""

    queue_limit: int = 256
    """Hard bound on queued (not running) calls. CoDel does the real shedding;
    this only bounds memory and the worst burst: 256 calls of 10 ms on 8
    workers drain in 320 ms, within a typical client deadline."""

    codel_target_s: float = 0.005
    """CoDel target, the floor of the allowed wait in a standing queue.
    5 ms: Fail at Scale."""

    codel_interval_s: float = 0.100
    """CoDel interval: a queue not idle at any time for this long is standing;
    until then a call may wait this long. 100 ms: Fail at Scale."""

    target_service_multiple: float = 0.1
    """Effective target = max(codel_target_s, multiple x method service EWMA).
    A call dropped from a standing queue has waited its target, and that wait
    is its refusal's latency, so the target stays short: measured in
    bench/overload (25-40 ms calls), 0.2 x S had such drops wait 10-12 ms and
    0.1 x S (the 5 ms floor) 5-8 ms, with the same goodput; a multiple of 1.0
    let refusals take 25+ ms and queued calls sink under LIFO. Slow methods
    get proportionally longer targets (a 500 ms method: 50 ms). 0 disables
    scaling (the fixed 5 ms target)."""

    admit_within_allowance: bool = True
    """Refuse a newcomer at once (``Reason.CODEL``) when its predicted wait is
    over ``admit_wait_fraction`` of its CoDel allowance: it would likely only be
    dropped later, after waiting. The prediction: the calls that must start
    before it (those queued ahead of it at the same or higher criticality, plus
    the running ones, minus the workers) each take one worker's turn, S / W
    (``offer``'s ``running``). Refusing on arrival keeps refusals fast, which
    is what lets a client retry elsewhere while its deadline still allows."""

    admit_wait_fraction: float = 0.25
    """Admit a newcomer only if its predicted wait is within this fraction of
    its allowance. Predictions err short under load: service times grow with
    the number of handlers sharing the GIL and the CPU, and a call admitted
    on a wrong prediction is dropped only after waiting its whole allowance
    (100 ms while the queue is not standing), a refusal as slow as it gets.
    Measured in bench/overload (2 processes, 2x overload): at 1.0, 2-4% of
    refusals were such drops after ~100 ms, setting the refusal p99 at 104 ms;
    at 0.25 and 0.5 there were none. In a standing queue (5 ms target) this
    admits a call only into a worker that is free or about to be: with W
    workers of service time S busy, the next one frees up S / W later on
    average, longer than a quarter of the target for any S above W x 1.25 ms."""

    service_half_life_s: float = 1.0
    """Half-life of the per-method service-time average. It is a time-decayed
    mean (each sample weighs 1, old samples fade by half every half-life), so it
    does not depend on the call rate: at 1000 calls/s one slow call barely moves
    it, and a real change of service time (a slow database) is half reflected
    after 1 s and ~90% after 3 s, fast enough for deadline and CoDel decisions."""

    sheddable_target_factor: float = 0.5
    """In a standing queue, sheddable calls may wait only this fraction of the
    target, so CoDel drops them before default and critical calls of the same
    age (SRE book: shed the least important work first)."""

    pushback_max_ms: int = 1000
    """Upper clamp of the suggested client back-off; the floor is 1 ms. One
    second keeps a burst of slow samples from sending clients away for long
    (the client still caps pushback by its own deadline and retry budget)."""

    def __post_init__(self) -> None:
        check_int("AdmissionConfig", "workers", self.workers, low=1)
        check_int("AdmissionConfig", "queue_limit", self.queue_limit, low=1)
        check_number("AdmissionConfig", "codel_target_s", self.codel_target_s, low=0.0, strict=True)
        check_number(
            "AdmissionConfig", "codel_interval_s", self.codel_interval_s, low=0.0, strict=True
        )
        if self.codel_interval_s < self.codel_target_s:
            raise ValueError(
                f"AdmissionConfig.codel_interval_s ({self.codel_interval_s!r}) must be >= "
                f"codel_target_s ({self.codel_target_s!r})"
            )
        check_number(
            "AdmissionConfig",
            "target_service_multiple",
            self.target_service_multiple,
            low=0.0,
            strict=False,
        )
        check_number(
            "AdmissionConfig", "service_half_life_s", self.service_half_life_s, low=0.0, strict=True
        )
        check_number(
            "AdmissionConfig",
            "sheddable_target_factor",
            self.sheddable_target_factor,
            low=0.0,
            strict=True,
        )
        check_number(
            "AdmissionConfig",
            "admit_wait_fraction",
            self.admit_wait_fraction,
            low=0.0,
            strict=True,
        )
        if self.admit_wait_fraction > 1.0:
            raise ValueError(
                "AdmissionConfig.admit_wait_fraction must be <= 1 (a call predicted to outwait "
                f"its allowance would be dropped after waiting), got {self.admit_wait_fraction!r}"
            )
        if self.sheddable_target_factor > 1.0:
            raise ValueError(
                "AdmissionConfig.sheddable_target_factor must be <= 1 (sheddable calls may not "
                f"wait longer than others), got {self.sheddable_target_factor!r}"
            )
        check_int("AdmissionConfig", "pushback_max_ms", self.pushback_max_ms, low=1)


@dataclasses.dataclass(eq=False)
class Ticket(Generic[T]):
    """One call waiting for a worker. Compared by identity; ``item`` is the adapter's payload.

    ``enqueued_at`` and ``deadline`` are absolute times on the same monotonic
    clock as ``now``; ``deadline`` is ``None`` when the caller set none.
    """

    item: T
    method: str
    enqueued_at: float
    deadline: float | None = None
    criticality: Criticality = Criticality.DEFAULT


@dataclasses.dataclass(frozen=True)
class Rejection(Generic[T]):
    """A call that will not run: answer it ``reason.status`` with ``grpc-retry-pushback-ms``."""

    ticket: Ticket[T]
    reason: Reason
    pushback_ms: int


class _Entry(Generic[T]):
    """A ticket's place in the queue; ``live`` turns False when it leaves by any path."""

    __slots__ = ("expires_at", "live", "seq", "ticket")

    def __init__(self, ticket: Ticket[T], seq: int, expires_at: float) -> None:
        self.ticket = ticket
        self.seq = seq
        self.expires_at = expires_at  # CoDel: enqueue time + the allowance given then
        self.live = True


class _ServiceTime:
    """Time-decayed mean of one method's service times (see ``service_half_life_s``)."""

    __slots__ = ("estimate", "updated_at", "weight", "weighted_sum")

    def __init__(self, seconds: float, now: float) -> None:
        self.weighted_sum = seconds
        self.weight = 1.0
        self.estimate = seconds
        self.updated_at = now

    def add(self, seconds: float, now: float, half_life_s: float) -> None:
        elapsed = now - self.updated_at
        if elapsed > 0.0:
            decay = 0.5 ** (elapsed / half_life_s)
            self.weighted_sum *= decay
            self.weight *= decay
            self.updated_at = now
        self.weighted_sum += seconds
        self.weight += 1.0
        self.estimate = self.weighted_sum / self.weight


_LEVELS = tuple(int(c) for c in Criticality)
_SHEDDABLE = int(Criticality.SHEDDABLE)
_LEVELS_HIGH_TO_LOW = tuple(sorted(Criticality, reverse=True))
# Due times are computed a little early so float rounding can never postpone a drop.
_DUE_SLACK_S = 1e-9
_LEVELS_LOW_TO_HIGH = tuple(sorted(Criticality))

_Dropped = list[tuple[Ticket[T], Reason]]


class AdmissionQueue(Generic[T]):
    """A bounded, criticality-aware CoDel queue with adaptive LIFO. Not thread-safe.

    The executor adapter calls :meth:`offer` at submit time, :meth:`take`
    when a worker is free, :meth:`expire` periodically (so doomed calls are
    answered within milliseconds under overload, not when a worker frees up)
    and :meth:`record_service_time` after each handler. Every returned
    :class:`Rejection` must be answered by the adapter; a ticket leaves the
    queue exactly once: taken, or rejected.
    """

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self._config = config if config is not None else AdmissionConfig()
        self._workers = self._config.workers
        self._next_seq = 0
        self._live: dict[Ticket[T], _Entry[T]] = {}
        self._live_per_level = [0] * len(Criticality)
        self._queued_per_method: dict[str, int] = {}
        # Arrival order per criticality: FIFO takes from the left, LIFO from the right.
        self._order: list[deque[_Entry[T]]] = [deque() for _ in Criticality]
        # Min-heap of (expires_at, seq, entry): the CoDel expiry order.
        self._codel: list[tuple[float, int, _Entry[T]]] = []
        # Min-heaps of (deadline, seq, entry) per method, for the deadline sweep.
        self._deadlines: dict[str, list[tuple[float, int, _Entry[T]]]] = {}
        self._service: dict[str, _ServiceTime] = {}
        self._last_empty: float | None = None
        self._last_shed = -math.inf  # last CODEL or QUEUE_FULL rejection
        self._removed_since_compact = 0
        # The sweep is skipped while now < _sweep_due, which is never later than
        # the earliest time a queued call becomes doomed.
        self._sweep_due = -math.inf

    @property
    def config(self) -> AdmissionConfig:
        return self._config

    # ------------------------------------------------------------ decisions

    def offer(
        self, ticket: Ticket[T], now: float, *, running: int | None = None
    ) -> list[Rejection[T]]:
        """Queue a newly submitted call; ``[]`` means it was queued.

        ``running`` is how many calls the workers are running now (``None``:
        the caller cannot say, and every worker is taken to be busy); it tells
        whether a worker is free for the newcomer.

        Rejects the newcomer when its deadline is gone or shorter than the
        method's service EWMA, when its predicted wait is too long for its
        CoDel allowance (``admit_within_allowance``), or when the queue is
        full even after dropping doomed calls and no queued call has lower
        criticality. Otherwise, if
        full, the oldest call of the lowest criticality below the newcomer's is
        evicted (``PREEMPTED``). The result may hold several rejections.
        """
        if not isinstance(ticket.criticality, Criticality):
            raise TypeError(f"Ticket.criticality must be a Criticality, got {ticket.criticality!r}")
        if ticket in self._live:
            raise ValueError("ticket is already queued")
        dropped: _Dropped[T] = []
        reason = self.deadline_reason(ticket.method, ticket.deadline, now)
        if reason is not None:
            dropped.append((ticket, reason))
            self._after_change(now)
            return self._rejections(dropped, now)
        if self._config.admit_within_allowance and self._would_outwait(ticket, now, running):
            self._shed(dropped, ticket, Reason.CODEL, now)
            return self._rejections(dropped, now)
        limit = self._config.queue_limit
        if len(self._live) >= limit:
            self._sweep_if_due(now, dropped)
        if len(self._live) >= limit:
            victim = self._preemption_victim(ticket.criticality)
            if victim is None:
                self._shed(dropped, ticket, Reason.QUEUE_FULL, now)
                self._after_change(now)
                return self._rejections(dropped, now)
            self._shed(dropped, victim, Reason.PREEMPTED, now)
        self._add(ticket, now)
        self._after_change(now)
        return self._rejections(dropped, now)

    def take(self, now: float) -> tuple[Ticket[T] | None, list[Rejection[T]]]:
        """A worker is free: the call it should run (``None`` if none) and the calls dropped.

        The highest criticality is served first; within it the oldest call
        (FIFO) or, once the queue is standing, the newest (LIFO). A candidate
        whose deadline is gone or too short for its service EWMA, or that has
        outwaited CoDel, is dropped and the next one tried, so the returned
        ticket is runnable at ``now``. Doomed calls elsewhere in the queue are
        left to :meth:`expire`, which keeps ``take`` O(1).
        """
        standing = self.standing(now)
        dropped: _Dropped[T] = []
        chosen: Ticket[T] | None = None
        while chosen is None and self._live:
            level = next(c for c in _LEVELS_HIGH_TO_LOW if self._live_per_level[c])
            entry = self._pop_live(level, newest=standing)
            self._remove(entry)
            reason = self._doom_reason(entry, now)
            if reason is None:
                chosen = entry.ticket
            elif reason is Reason.CODEL:
                self._shed(dropped, entry.ticket, reason, now)
            else:
                dropped.append((entry.ticket, reason))
        self._after_change(now)
        return chosen, self._rejections(dropped, now)

    def expire(self, now: float) -> list[Rejection[T]]:
        """Remove and return every queued call that can no longer run usefully at ``now``.

        Cheap to call often: it returns at once while no queued call can be due.
        """
        dropped: _Dropped[T] = []
        self._sweep_if_due(now, dropped)
        self._after_change(now)
        return self._rejections(dropped, now)

    def record_service_time(self, method: str, seconds: float, now: float) -> None:
        """Feed one handler's run time (seconds, from start in a worker to return)."""
        if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0.0:
            raise ValueError(f"service time must be a finite number >= 0, got {seconds!r}")
        stats = self._service.get(method)
        if stats is None:
            self._service[method] = _ServiceTime(seconds, now)
        else:
            stats.add(seconds, now, self._config.service_half_life_s)
        heap = self._deadlines.get(method)
        if heap:
            # The method's deadline margin changed: its queued calls may now be
            # due earlier than the sweep planned for.
            self._sweep_due = min(self._sweep_due, self._deadline_due(heap[0][2].ticket))

    # ------------------------------------------------------------ observations

    def service_estimate(self, method: str) -> float | None:
        """The method's service-time EWMA in seconds; ``None`` until its first sample."""
        stats = self._service.get(method)
        return None if stats is None else stats.estimate

    def codel_target(self, method: str) -> float:
        """The method's CoDel target: ``max(codel_target_s, multiple x service EWMA)``."""
        config = self._config
        estimate = self.service_estimate(method)
        if estimate is None:
            return config.codel_target_s
        return max(config.codel_target_s, config.target_service_multiple * estimate)

    def allowance(self, method: str, criticality: Criticality, *, standing: bool) -> float:
        """How long a queued call may wait before CoDel drops it.

        Standing queue: the method's CoDel target (times ``sheddable_target_factor``
        for sheddable calls). Otherwise: ``max(codel_interval_s, target)``.
        """
        return self._allowance(method, criticality, standing)

    def _allowance(self, method: str, level: int, standing: bool) -> float:
        # Hot path of the sweep: plain arithmetic, no enum construction.
        config = self._config
        target = config.codel_target_s
        stats = self._service.get(method)
        if stats is not None:
            scaled = config.target_service_multiple * stats.estimate
            target = max(target, scaled)
        if not standing:
            return target if target > config.codel_interval_s else config.codel_interval_s
        if level == _SHEDDABLE:
            return target * config.sheddable_target_factor
        return target

    def set_workers(self, workers: int) -> None:
        """The adapter's concurrency limit changed: drain estimates use ``workers`` from now."""
        check_int("AdmissionConfig", "workers", workers, low=1)
        self._workers = workers

    @property
    def depth(self) -> int:
        """Queued calls (not counting running ones)."""
        return len(self._live)

    def standing(self, now: float) -> bool:
        """True when the queue has not been idle at any time in the last ``codel_interval_s``.

        Idle: empty, with no call shed for overload within the interval. A
        queue that is empty only because newcomers are being refused on
        arrival is still standing, so the next newcomer gets the short target.
        """
        interval = self._config.codel_interval_s
        if not self._live and now - self._last_shed > interval:
            return False
        return self._last_empty is not None and now - self._last_empty > interval

    def codel_load(self, now: float) -> int:
        """CoDel pressure for the load report, 0-100.

        0 when there is no standing queue. Otherwise 1-100: the share of its
        CoDel allowance used so far by the queued call closest to its limit, in
        percent; 100 means calls are reaching the allowance and being dropped.
        """
        if not self.standing(now):
            return 0
        heap = self._codel
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        if not heap:
            return 1
        entry = heap[0][2]
        enqueued_at = entry.ticket.enqueued_at
        used = (now - enqueued_at) / max(entry.expires_at - enqueued_at, 1e-9)
        return min(100, max(1, round(100.0 * used)))

    def pushback_ms(self, now: float) -> int:
        """Suggested client back-off: time for the workers to drain the queue, 1 ms..max.

        Each queued call counts its method's service EWMA (``codel_target_s``
        while the method has none), divided over ``workers``. ``now`` is taken
        for symmetry with the other observations; the estimate does not age.
        """
        config = self._config
        work_s = 0.0
        for method, count in self._queued_per_method.items():
            estimate = self.service_estimate(method)
            work_s += count * (config.codel_target_s if estimate is None else estimate)
        drain_ms = math.ceil(1000.0 * work_s / self._workers)
        return min(config.pushback_max_ms, max(1, drain_ms))

    # ------------------------------------------------------------ internals

    def deadline_reason(self, method: str, deadline: float | None, now: float) -> Reason | None:
        """Why a call of ``method`` with ``deadline`` could not usefully start at ``now``
        (gone, or shorter than the method's service EWMA); None if it could."""
        if deadline is None:
            return None
        if deadline <= now:
            return Reason.DEADLINE_GONE
        estimate = self.service_estimate(method)
        if estimate is not None and deadline - now < estimate:
            return Reason.DEADLINE_SHORT
        return None

    def _would_outwait(self, ticket: Ticket[T], now: float, running: int | None) -> bool:
        """Is the newcomer's predicted wait over ``admit_wait_fraction`` of its allowance?

        Each call that must start first (queued ahead, or running beyond the
        workers less one for the newcomer) takes one worker's turn: S / W.
        """
        stats = self._service.get(ticket.method)
        if stats is None or stats.estimate <= 0.0:
            return False
        level = int(ticket.criticality)
        ahead = sum(self._live_per_level[lv] for lv in _LEVELS if lv >= level)
        workers = self._workers
        busy = workers if running is None else running
        turns = ahead + busy - workers + 1
        if turns <= 0:
            return False  # a worker is free for it
        allowance = self._allowance(ticket.method, level, self.standing(now))
        return turns * stats.estimate / workers > self._config.admit_wait_fraction * allowance

    def _doom_reason(self, entry: _Entry[T], now: float) -> Reason | None:
        ticket = entry.ticket
        reason = self.deadline_reason(ticket.method, ticket.deadline, now)
        if reason is not None:
            return reason
        if now > entry.expires_at:
            return Reason.CODEL
        return None

    def _sweep_if_due(self, now: float, dropped: _Dropped[T]) -> None:
        if now >= self._sweep_due:
            self._sweep(now, dropped)

    def _sweep(self, now: float, dropped: _Dropped[T]) -> None:
        """Drop every call whose deadline is gone/too short or that outwaited CoDel.

        Deadlines: per method, the earliest deadline is the first to become too
        short for that method's EWMA, so each heap is popped until its top is
        fine. CoDel: the expiry heap is popped until its top has time left.
        Records when the next sweep can first find something to drop.
        """
        due = min(self._sweep_deadlines(now, dropped), self._sweep_codel(now, dropped))
        self._sweep_due = due - _DUE_SLACK_S

    def _sweep_deadlines(self, now: float, dropped: _Dropped[T]) -> float:
        """Drop calls whose deadline is gone or too short; return the next deadline due time."""
        due = math.inf
        service = self._service
        for method in list(self._deadlines):
            heap = self._deadlines[method]
            stats = service.get(method)
            margin = 0.0 if stats is None else stats.estimate
            while heap:
                deadline, _, entry = heap[0]
                if entry.live:
                    if deadline <= now:
                        reason = Reason.DEADLINE_GONE
                    elif deadline - now < margin:
                        reason = Reason.DEADLINE_SHORT
                    else:
                        due = min(due, deadline - margin)
                        break
                    self._remove(entry)
                    dropped.append((entry.ticket, reason))
                heapq.heappop(heap)
            if not heap:
                del self._deadlines[method]
        return due

    def _sweep_codel(self, now: float, dropped: _Dropped[T]) -> float:
        """Drop calls that outwaited CoDel; return the next CoDel due time."""
        heap = self._codel
        while heap:
            expires_at, _, entry = heap[0]
            if entry.live:
                if now <= expires_at:
                    return expires_at
                self._remove(entry)
                self._shed(dropped, entry.ticket, Reason.CODEL, now)
            heapq.heappop(heap)
        return math.inf

    def _deadline_due(self, ticket: Ticket[T]) -> float:
        """When the ticket's deadline leaves less than its method's service EWMA."""
        if ticket.deadline is None:
            return math.inf
        stats = self._service.get(ticket.method)
        return ticket.deadline - (0.0 if stats is None else stats.estimate) - _DUE_SLACK_S

    def _preemption_victim(self, newcomer: Criticality) -> Ticket[T] | None:
        """Evict the oldest call of the lowest criticality below ``newcomer``, if any.

        The oldest has the least deadline left and is next in line for CoDel.
        """
        for level in _LEVELS_LOW_TO_HIGH:
            if level >= newcomer:
                return None
            if self._live_per_level[level]:
                entry = self._pop_live(level, newest=False)
                self._remove(entry)
                return entry.ticket
        return None

    def _pop_live(self, level: int, *, newest: bool) -> _Entry[T]:
        """Pop the oldest or newest live entry of a level known to have one."""
        order = self._order[level]
        while True:
            entry = order.pop() if newest else order.popleft()
            if entry.live:
                return entry

    def _idle(self, now: float) -> bool:
        """Empty, and nothing shed for overload within the CoDel interval."""
        return not self._live and now - self._last_shed > self._config.codel_interval_s

    def _add(self, ticket: Ticket[T], now: float) -> None:
        if self._idle(now):
            self._last_empty = now  # idle until this instant
        level = int(ticket.criticality)
        method = ticket.method
        allowance = self._allowance(method, level, self.standing(now))
        entry = _Entry(ticket, self._next_seq, ticket.enqueued_at + allowance)
        self._next_seq += 1
        self._live[ticket] = entry
        self._live_per_level[level] += 1
        self._queued_per_method[method] = self._queued_per_method.get(method, 0) + 1
        self._order[level].append(entry)
        heapq.heappush(self._codel, (entry.expires_at, entry.seq, entry))
        due = entry.expires_at - _DUE_SLACK_S
        if ticket.deadline is not None:
            heap = self._deadlines.get(method)
            if heap is None:
                heap = self._deadlines[method] = []
            heapq.heappush(heap, (ticket.deadline, entry.seq, entry))
            due = min(due, self._deadline_due(ticket))
        self._sweep_due = min(self._sweep_due, due)

    def _remove(self, entry: _Entry[T]) -> None:
        ticket = entry.ticket
        entry.live = False
        del self._live[ticket]
        self._live_per_level[ticket.criticality] -= 1
        remaining = self._queued_per_method[ticket.method] - 1
        if remaining:
            self._queued_per_method[ticket.method] = remaining
        else:
            del self._queued_per_method[ticket.method]
        self._removed_since_compact += 1

    def _after_change(self, now: float) -> None:
        if self._idle(now):
            self._last_empty = now
        if self._removed_since_compact >= self._config.queue_limit:
            self._compact()

    def _compact(self) -> None:
        """Drop dead entries everywhere: O(stored), once per ``queue_limit`` removals."""
        self._order = [deque(e for e in order if e.live) for order in self._order]
        self._codel = [item for item in self._codel if item[2].live]
        heapq.heapify(self._codel)
        deadlines: dict[str, list[tuple[float, int, _Entry[T]]]] = {}
        for method, heap in self._deadlines.items():
            alive_heap = [item for item in heap if item[2].live]
            if alive_heap:
                heapq.heapify(alive_heap)
                deadlines[method] = alive_heap
        self._deadlines = deadlines
        self._removed_since_compact = 0

    def _stored_entries(self) -> int:
        """Entries held by all structures, dead ones included (tests check the bound)."""
        return (
            sum(len(order) for order in self._order)
            + len(self._codel)
            + sum(len(heap) for heap in self._deadlines.values())
        )

    def _shed(self, dropped: _Dropped[T], ticket: Ticket[T], reason: Reason, now: float) -> None:
        """Drop a call for overload: the queue is not idle, however short it is kept."""
        dropped.append((ticket, reason))
        self._last_shed = now

    def _rejections(self, dropped: _Dropped[T], now: float) -> list[Rejection[T]]:
        if not dropped:
            return []
        pushback = self.pushback_ms(now)
        return [Rejection(ticket, reason, pushback) for ticket, reason in dropped]

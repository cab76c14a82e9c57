"""Admission policy: the pure queueing brain of rpckit's server executor.

Calls wait here between grpcio's ``executor.submit`` and a free worker thread.
The policy decides, cheaply and without running the handler, which calls run
and which are rejected. It holds no locks, threads or clocks: the executor
adapter serialises access and passes ``now`` (monotonic seconds) to every call.

Calls wait here for a *CPU slot*: the executor runs at most ``workers``
handlers that are using the CPU at once, on as many threads as it takes (a
handler waiting on I/O gives its slot back; see :mod:`rpckit.server._executor`). The
rules (docs/architecture.md, "Admission"):

* **Deadlines.** A call whose deadline has passed is rejected
  (``DEADLINE_GONE``); so is one whose time left is below the *fastest*
  recent service time of its method (``DEADLINE_SHORT``): it surely cannot
  finish. That estimate is a windowed minimum: it forgets what it has not
  seen again for ``service_window_s``, and while it refuses every call of a
  method, one call per ``deadline_probe_s`` runs anyway to measure again (more,
  ``deadline_probe_free_s``, of the calls that find a worker slot free). No
  burst of slow calls can lock a method out.
* **A call's own deadline bounds its wait while no queue stands.** It may
  wait until its deadline leaves the method's fastest service time, capped at
  ``max_wait_s`` (and never less than ``codel_interval_s``).
* **CoDel** (Facebook, "Fail at Scale", 2015). If the queue has not been idle
  at any time during the last ``codel_interval_s`` it is *standing*, and a
  call without a deadline queued now may wait at most the CoDel target. As in
  the paper, a call's allowance is fixed when it is queued (``enqueue(req,
  timeout)``): a burst admitted into an idle queue is not dropped wholesale the
  moment the queue turns standing. Late calls are dropped (``CODEL``). The
  target scales with the method's service time (``max(codel_target_s,
  target_service_multiple x average)``) so a 50 ms method is not held to a 5 ms
  budget. *Idle* means empty with no call shed for overload (``CODEL``,
  ``QUEUE_FULL``) within the interval: a queue kept short by refusing newcomers
  on arrival is still a standing one. A newcomer whose predicted wait is over
  its allowance is refused on arrival (``admit_within_allowance``): a refusal's
  latency is the wait before it. Long allowances keep a margin for predictions
  that err short: a quarter of it while no queue stands and for a call whose
  deadline bounds its wait (``admit_wait_fraction``), three quarters for the
  latter while the queue has been busy for less than that allowance, a burst it
  may drain in time (``burst_wait_fraction``).
* **A deadline bounds the wait in a standing queue too** (``deadline_bounds_wait``).
  A queue at high load is rarely idle for 100 ms, so standing alone does not
  tell a busy server from an overloaded one. A call with a deadline keeps its
  deadline's budget as its allowance; it is refused when it cannot be served in
  time, not because a queue exists.
* **Patient calls** (``patient_runs``). A call whose allowance holds many of its
  method's fastest runs is refused on arrival only if it could not start in time even
  were the queue served at that fastest rate: a burst that slows the server for a
  moment (its own senders taking the cores) predicts a backlog that is then served at
  the usual rate. Admitted too hopefully, it is dropped once its deadline leaves less
  than its fastest run, without running.
* **Adaptive LIFO** (same paper). FIFO while there is no standing queue; once
  one stands, calls without a deadline are taken newest first, so the ones
  served are those whose clients are still waiting and the stale ones age out
  through CoDel; calls with a deadline (which says whether the client still
  waits) oldest first. Between the two kinds, the call whose allowance ends
  first goes first.
* **Criticality** (Google SRE book, "Handling Overload"). Higher criticality is
  served first; when the queue is full a newcomer evicts a queued call of
  lower criticality (``PREEMPTED``); in a standing queue sheddable calls get a
  tighter CoDel allowance. Sheddable work is thus shed first on every path.
* **Bound.** At most ``queue_limit`` calls are queued (``QUEUE_FULL``).

Every rejection carries a pushback (``grpc-retry-pushback-ms``): the time the
slots need to drain the current queue, from the service-time averages.

Cost. Calls sit in two deques per criticality (arrival order: deadline-bounded
calls, and the others for FIFO/LIFO),
one CoDel heap (earliest expiry first: each call's enqueue time plus its
allowance) and one deadline heap per method (earliest deadline first). A call removed
through one structure is marked dead and skipped lazily by the others, and the
structures are compacted after every ``queue_limit`` removals. A dead entry lets go of
its ticket at once: the caller's item (for the executor, a gRPC call and its HTTP/2
stream) is never held past its removal.

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
from typing import Generic, TypeVar, cast

from rpckit.core._validate import check_fields, check_int, check_number
from rpckit.core._wire import CRITICALITY_METADATA_KEY
from rpckit.server._decay import DecayedMean

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
    """The time left was below the method's fastest recent service time."""
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
    Reason.CODEL: "server overloaded: the call could not start within its allowed wait",
    Reason.PREEMPTED: "server overloaded: call shed for more critical traffic",
    Reason.DEADLINE_GONE: "deadline expired before the call could start",
    Reason.DEADLINE_SHORT: "deadline too short for this method's fastest recent service time",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdmissionConfig:
    """Parameters of :class:`AdmissionQueue`; every field is validated on construction."""

    workers: int = 8
    """CPU slots the queue feeds (the executor adapts how many are open at once,
    ``set_workers``); used to predict waits and drain time (pushback)."""

    queue_limit: int = 1024
    """Hard bound on queued (not running) calls. CoDel and the deadline rules do the real
    shedding; this bounds memory and the worst burst. Patient callers (``patient_runs``)
    may queue up to their deadline's worth of short calls: bench/soak's backends held
    300-400 each after a 1 s burst of 11 ms calls with 2 s deadlines; a bound of 256
    refused 215 calls of one run's burst, 1,024 none in four. A queued call holds grpcio's
    call state and the request bytes received so far (its read waits for a thread)."""

    codel_target_s: float = 0.005
    """CoDel target, the floor of the allowed wait in a standing queue.
    5 ms: Fail at Scale."""

    codel_interval_s: float = 0.100
    """CoDel interval: a queue not idle at any time for this long is standing;
    until then a call may wait this long. 100 ms: Fail at Scale."""

    target_service_multiple: float = 0.1
    """Effective target = max(codel_target_s, multiple x method service time average).
    A call dropped from a standing queue has waited its target, and that wait
    is its refusal's latency, so the target stays short: 0.1 x S keeps such
    drops near the 5 ms floor at the goodput of longer targets (measurements:
    bench/README.md, "Measurements behind the defaults"). Slow methods
    get proportionally longer targets (a 500 ms method: 50 ms). 0 disables
    scaling (the fixed 5 ms target)."""

    max_wait_s: float = 10.0
    """While no queue stands, the longest a call may wait: its deadline's budget
    (time left minus the method's fastest service time), capped here; a call
    without a deadline may wait this long. A burst of calls that cannot all
    start at once (while the executor's limit grows, say) is served within
    deadlines instead of being shed after ``codel_interval_s``."""

    deadline_bounds_wait: bool = True
    """A call with a deadline keeps its deadline's budget as its allowance in a standing
    queue too, and such calls are served oldest first; CoDel's short target and
    adaptive LIFO then apply to calls without a deadline only. LIFO and the short
    target exist because a server cannot tell which queued calls are still wanted;
    a deadline tells it, so those calls are kept exactly as long as they can still
    finish in time and no longer. Without this, a queue that stands at high
    utilization (not overload: a queue of 90% load is rarely empty for 100 ms)
    admits only into a free slot and refuses calls it could serve well within
    their deadlines (measurements: bench/README.md, "Deadline-bounded waits").
    False: every call follows CoDel and LIFO once a queue stands."""

    admit_within_allowance: bool = True
    """Refuse a newcomer at once (``Reason.CODEL``) when its predicted wait is
    over ``admit_wait_fraction`` of its CoDel allowance: it would likely only be
    dropped later, after waiting. The prediction: the calls that must start
    before it (those queued ahead of it at the same or higher criticality, plus
    the running ones, minus the workers) each take one worker's turn, S / W,
    with S the method's recent slot hold time (``recent_window_s``; ``offer``'s
    ``running``). Refusing on arrival keeps refusals fast, which
    is what lets a client retry elsewhere while its deadline still allows."""

    admit_wait_fraction: float = 0.25
    """While no queue stands, admit a newcomer only if its predicted wait is within
    this fraction of its allowance; the same for a call whose deadline bounds its wait
    once the queue has been busy for longer than that allowance (before that,
    ``burst_wait_fraction``). Predictions err short under load: service
    times grow with the number of handlers sharing the GIL and the CPU, and a
    call admitted on a wrong prediction is dropped only after waiting its whole
    allowance (100 ms or more while the queue is not standing), a refusal as slow
    as it gets; at 0.25 there are next to none (measurements: bench/README.md,
    "Measurements behind the defaults"). In a standing queue the whole target is
    used: a wrong prediction there costs at most the target (5 ms) before the call
    is dropped, while a quarter of it refused a closed loop of 16 trivial calls
    that waited ~2 ms each (bench/overhead)."""

    burst_wait_fraction: float = 0.75
    """For a call whose deadline bounds its wait (``deadline_bounds_wait``): while the
    queue has been busy (not idle) for less than the call's allowance, admit it if its
    predicted wait is within this fraction of that allowance, not ``admit_wait_fraction``.
    A queue younger than a caller's budget may be a burst the server drains within it
    (bench/soak's: 1.4 s of work queued against 2 s deadlines, served only this deep);
    one busy for longer is overload that outlasts the calls, and there a deep queue only
    makes every call late (bench/overload at 3x: 0.75 throughout put the p50 at 190 ms of
    250 and cost 14% of the goodput). The queue's age is CoDel's own clock, the time since
    it was last idle, on the caller's time scale instead of 100 ms."""

    patient_runs: float = 50.0
    """A call whose allowance (its deadline's budget, ``deadline_bounds_wait``) holds at
    least this many of its method's fastest recent runs is *patient*: it is refused on
    arrival only when it could not start in time even were the queue served at that
    fastest rate (every turn ``fastest / workers``). The usual prediction takes the
    turns of the calls running now, and a burst that slows the server for a moment --
    the burst's own senders taking the cores -- predicts a backlog that it then serves
    at the usual rate once the burst has passed: bench/soak's callers (2 s deadlines,
    runs of 11.5 ms: 170 runs) were refused by the hundred in a burst the server served
    whole without refusals on arrival. An impatient call (bench/overload's seed: 250 ms
    for runs of 25 ms, 10 runs) keeps the prediction by the turns of now: a queue that
    its budget barely covers is one the usual prediction's errors overrun. A patient call
    admitted on a prediction that was too hopeful waits until its deadline leaves less
    than its fastest run and is dropped then, without running. 0 disables.

    Such a drop ends the method's patience for ``patient_backoff_s``: the fastest run is
    a minimum over every call of the method, so one cheap call of it (a cache hit, a
    readiness check with an empty request) made its 25 ms calls look like 0.9 ms ones,
    every such call patient, and the queue grew past what the deadlines allowed: a fresh
    server offered 3x its capacity admitted calls that then timed out by the hundred a
    second (bench/README.md, "Patience that the drops end")."""

    patient_backoff_s: float = 1.0
    """How long after a queued call of a method was dropped for its deadline (admitted on
    a hope that failed) its calls are not patient (``patient_runs``); the usual
    prediction then decides. It ends by itself: a method whose admitted calls stop being
    dropped is patient again one such interval later.

    If patience fails again soon after it came back (within four backoffs of the last
    failure), the backoff doubles, up to ``patient_backoff_max_s``; a failure after a
    longer calm starts again from this. A method whose cheap calls keep its fastest run
    low (bench/overload's seed beside an empty ``Do`` every 250 ms on eight connections)
    had patience back every second and the queue blown up to ~50 calls each time."""

    patient_backoff_max_s: float = 30.0
    """The longest ``patient_backoff_s`` grows to while patience keeps failing."""

    recent_window_s: float = 0.5
    """Wait predictions (and pushback) take a turn's length from the calls of the method that
    ended within this window -- their mean slot hold time, once at least four did; with
    fewer, from the decayed mean (``service_half_life_s``). Kept as five buckets: a sample
    counts for 1 to 1.2 windows. What a newcomer waits for is the calls running *now*: a
    burst of 200 calls that each waited 800 ms on a downstream weighed 200 samples in the
    decayed mean, which for seconds after the burst predicted ~0.5 s turns for 25 ms calls
    and refused them whenever every slot was busy; the window forgets the burst half a
    second after its last call ended, and follows the onset of a slow spell as fast."""

    service_window_s: float = 5.0
    """Window of each method's *fastest* service time, the bound ``DEADLINE_SHORT``
    refuses against: kept as five buckets, a sample is forgotten 1 to 1.2 windows
    after it came."""

    deadline_probe_s: float = 0.05
    """While ``DEADLINE_SHORT`` refuses a method's calls, one call per this interval
    is let through anyway (the probe), so the fastest service time is measured
    again; a probe that has to queue is dropped only once its deadline is gone."""

    deadline_probe_free_s: float = 0.005
    """A call that finds a worker slot free (nothing queued, fewer calls running than
    the limit) may probe more often: ``deadline_probe_free_burst`` such probes back to
    back, then one per this interval (a token bucket per method; never slower than
    ``deadline_probe_s``). Such a probe takes no slot another call was waiting for.
    After a burst of slow calls of a method (200 calls waiting 800 ms on a downstream),
    its fastest service time is 800 ms until a probe of an ordinary call ends, ~30 ms
    later; with ``deadline_probe_s`` alone the calls that came meanwhile were refused
    (0.3-1.3% of the next 6 s at 60 calls/s, bench/overload's burst profile). Worst
    input: a method that really is slower than its callers' deadlines, called fast
    while slots are free -- at most four calls and then one per this interval run to
    their deadlines, and once such calls fill the free slots the interval is
    ``deadline_probe_s`` again."""

    deadline_probe_free_burst: int = 4
    """The free-slot probes' bucket (``deadline_probe_free_s``): arrivals bunch, and the
    first probe takes a service time to end. 0: no free-slot probes."""

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
        check_fields(self)
        check_int("AdmissionConfig", "workers", self.workers, low=1)
        check_int("AdmissionConfig", "queue_limit", self.queue_limit, low=1)
        check_int(
            "AdmissionConfig", "deadline_probe_free_burst", self.deadline_probe_free_burst, low=0
        )
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
        for name in (
            "service_half_life_s",
            "service_window_s",
            "recent_window_s",
            "deadline_probe_s",
            "deadline_probe_free_s",
            "max_wait_s",
        ):
            check_number("AdmissionConfig", name, getattr(self, name), low=0.0, strict=True)
        check_number(
            "AdmissionConfig",
            "sheddable_target_factor",
            self.sheddable_target_factor,
            low=0.0,
            strict=True,
        )
        check_number("AdmissionConfig", "patient_runs", self.patient_runs, low=0.0, strict=False)
        check_number(
            "AdmissionConfig", "patient_backoff_s", self.patient_backoff_s, low=0.0, strict=False
        )
        if not self.patient_backoff_max_s >= self.patient_backoff_s:
            raise ValueError(
                f"AdmissionConfig.patient_backoff_max_s ({self.patient_backoff_max_s!r}) must "
                f"be >= patient_backoff_s ({self.patient_backoff_s!r})"
            )
        for name in ("admit_wait_fraction", "burst_wait_fraction"):
            fraction = getattr(self, name)
            check_number("AdmissionConfig", name, fraction, low=0.0, strict=True)
            if fraction > 1.0:
                raise ValueError(
                    f"AdmissionConfig.{name} must be <= 1 (a call predicted to outwait its "
                    f"allowance would be dropped after waiting), got {fraction!r}"
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

    __slots__ = ("expires_at", "live", "probe", "seq", "ticket")

    def __init__(self, ticket: Ticket[T], seq: int, expires_at: float, *, probe: bool) -> None:
        self.ticket = ticket
        self.seq = seq
        self.expires_at = expires_at  # CoDel: enqueue time + the allowance given then
        self.live = True
        # Let in although its deadline looked too short (deadline_probe_s): it runs to
        # measure the method again, so only a deadline that is gone drops it.
        self.probe = probe


#: What a removed entry holds in place of its ticket (see ``AdmissionQueue._remove``).
_RELEASED: Ticket[None] = Ticket(item=None, method="", enqueued_at=-math.inf)

_FASTEST_BUCKETS = 5  # the fastest-service window is kept as this many buckets
_RECENT_BUCKETS = 5  # the recent-hold window (recent_window_s) likewise
_RECENT_MIN_SAMPLES = 4  # fewer calls ended within the window: use the decayed mean


class _RecentMean:
    """Mean of the samples of the last ``recent_window_s``, kept as per-bucket sums and
    counts (a sample counts for 1 to 1.2 windows); None while fewer than
    ``_RECENT_MIN_SAMPLES`` are in the window."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()  # [bucket, sum, count], oldest first

    def add(self, seconds: float, now: float, window_s: float) -> None:
        bucket = math.floor(now * _RECENT_BUCKETS / window_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= bucket:
            last = buckets[-1]
            last[1] += seconds
            last[2] += 1.0
        else:
            buckets.append([float(bucket), seconds, 1.0])
            if len(buckets) > _RECENT_BUCKETS + 1:
                buckets.popleft()

    def mean(self, now: float, window_s: float) -> float | None:
        oldest = math.floor(now * _RECENT_BUCKETS / window_s) - _RECENT_BUCKETS
        total = count = 0.0
        for bucket, seconds, samples in self._buckets:
            if bucket >= oldest:
                total += seconds
                count += samples
        return total / count if count >= _RECENT_MIN_SAMPLES else None


class _ServiceTime:
    """What one method's calls recently took.

    ``wall``: decayed mean of the time from start to return (CoDel target scaling).
    ``hold``: decayed mean of the time a call held a CPU slot; the wall time until
    the executor reports one. ``predicted_hold()``: what wait predictions and pushback
    use, the mean hold of the calls that ended within ``recent_window_s`` (``hold``
    while too few did).
    ``fastest()``: the shortest wall time within ``service_window_s``, kept as
    per-bucket minimums, so it forgets (``DEADLINE_SHORT``).
    """

    __slots__ = (
        "_buckets",
        "_cached",
        "_cached_bucket",
        "_recent_hold",
        "_recent_wall",
        "dropped_late_at",
        "failed_at",
        "free_probes",
        "free_probes_at",
        "hold",
        "patience_backoff_s",
        "probed_at",
        "wall",
    )

    def __init__(self) -> None:
        self.wall: DecayedMean | None = None
        self.hold: DecayedMean | None = None
        self._recent_wall = _RecentMean()
        self._recent_hold = _RecentMean()
        self._buckets: deque[tuple[int, float]] = deque()  # (bucket, min), oldest first
        self._cached: float | None = None  # fastest() as of _cached_bucket
        self._cached_bucket = -1
        self.probed_at = -math.inf  # when a call last ran although DEADLINE_SHORT refused others
        # Probes a call that finds a slot free may still take (a token bucket, see
        # deadline_probe_free_s), as of free_probes_at; full at the first look.
        self.free_probes = math.inf
        self.free_probes_at = -math.inf
        self.dropped_late_at = -math.inf  # a queued call was last dropped for its deadline
        self.failed_at = -math.inf  # when patience last failed (a drop while it was on)
        self.patience_backoff_s = 0.0  # set from the config at the first failure

    def free_probe_available(self, now: float, config: AdmissionConfig) -> bool:
        """Refill the free-slot probes to ``now``; is one left?"""
        every = min(config.deadline_probe_free_s, config.deadline_probe_s)
        refill = (now - self.free_probes_at) / every
        self.free_probes = min(float(config.deadline_probe_free_burst), self.free_probes + refill)
        self.free_probes_at = now
        return self.free_probes >= 1.0

    def add_wall(self, seconds: float, now: float, config: AdmissionConfig) -> None:
        if self.wall is None:
            self.wall = DecayedMean(seconds, now)
        else:
            self.wall.add(seconds, now, config.service_half_life_s)
        self._recent_wall.add(seconds, now, config.recent_window_s)
        bucket = math.floor(now * _FASTEST_BUCKETS / config.service_window_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= bucket:
            buckets[-1] = (buckets[-1][0], min(buckets[-1][1], seconds))
        else:
            buckets.append((bucket, seconds))
            if len(buckets) > _FASTEST_BUCKETS + 1:
                buckets.popleft()
        if self._cached_bucket == bucket:
            self._cached = seconds if self._cached is None else min(self._cached, seconds)

    def add_hold(self, seconds: float, now: float, config: AdmissionConfig) -> None:
        if self.hold is None:
            self.hold = DecayedMean(seconds, now)
        else:
            self.hold.add(seconds, now, config.service_half_life_s)
        self._recent_hold.add(seconds, now, config.recent_window_s)

    def wall_estimate(self) -> float | None:
        return None if self.wall is None else self.wall.estimate

    def hold_estimate(self) -> float | None:
        return self.wall_estimate() if self.hold is None else self.hold.estimate

    def predicted_hold(self, now: float, config: AdmissionConfig) -> float | None:
        recent = self._recent_wall if self.hold is None else self._recent_hold
        mean = recent.mean(now, config.recent_window_s)
        return self.hold_estimate() if mean is None else mean

    def fastest(self, now: float, config: AdmissionConfig) -> float | None:
        """The shortest wall time within the window; None once every sample aged out.

        Asked on every call: the answer is kept until the bucket changes.
        """
        bucket = math.floor(now * _FASTEST_BUCKETS / config.service_window_s)
        if bucket == self._cached_bucket:
            return self._cached
        buckets = self._buckets
        while buckets and buckets[0][0] < bucket - _FASTEST_BUCKETS:
            buckets.popleft()
        self._cached = min(value for _, value in buckets) if buckets else None
        self._cached_bucket = bucket
        return self._cached


def _check_seconds(seconds: float) -> None:
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0.0:
        raise ValueError(f"service time must be a finite number >= 0, got {seconds!r}")


_LEVELS = tuple(int(c) for c in Criticality)
_SHEDDABLE = int(Criticality.SHEDDABLE)
_LEVELS_HIGH_TO_LOW = tuple(sorted(Criticality, reverse=True))
# Due times are computed a little early so float rounding can never postpone a drop.
_DUE_SLACK_S = 1e-9
_LEVELS_LOW_TO_HIGH = tuple(sorted(Criticality))

_Dropped = list[tuple[Ticket[T], Reason]]

# _deadline_check's answers for a call the estimate would refuse that may run as the probe:
# the interval's own (deadline_probe_s), or one from the free-slot bucket.
_PROBE = object()
_FREE_PROBE = object()


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
        # Arrival order per criticality, for calls whose wait their deadline bounds
        # (deadline_bounds_wait): always oldest first.
        self._order: list[deque[_Entry[T]]] = [deque() for _ in Criticality]
        # The same for the other calls: FIFO takes from the left, LIFO from the right.
        self._open: list[deque[_Entry[T]]] = [deque() for _ in Criticality]
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
        method's fastest recent service time (but see ``deadline_probe_s``), when
        its predicted wait is too long for its
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
        reason = self._deadline_check(ticket.method, ticket.deadline, now)
        if isinstance(reason, Reason):
            dropped.append((ticket, reason))
            self._after_change(now)
            return self._rejections(dropped, now)
        probe = reason is _PROBE
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
        self._add(ticket, now, probe=probe)
        self._after_change(now)
        return self._rejections(dropped, now)

    def take(self, now: float) -> tuple[Ticket[T] | None, list[Rejection[T]]]:
        """A worker is free: the call it should run (``None`` if none) and the calls dropped.

        The highest criticality is served first; within it the oldest call
        (FIFO) or, once the queue is standing, the newest call without a
        deadline (LIFO) or the oldest with one, whichever allowance ends first
        (``deadline_bounds_wait``). A candidate
        whose deadline is gone or too short for its method's fastest service time
        (a probe: only gone), or that has
        outwaited CoDel, is dropped and the next one tried, so the returned
        ticket is runnable at ``now``. Doomed calls elsewhere in the queue are
        left to :meth:`expire`, which keeps ``take`` O(1).
        """
        standing = self.standing(now)
        dropped: _Dropped[T] = []
        chosen: Ticket[T] | None = None
        while chosen is None and self._live:
            level = next(c for c in _LEVELS_HIGH_TO_LOW if self._live_per_level[c])
            entry = self._pop_next(level, standing=standing)
            reason = self._doom_reason(entry, now)
            ticket = self._remove(entry)
            if reason is None:
                chosen = ticket
            elif reason is Reason.CODEL:
                self._shed(dropped, ticket, reason, now)
            else:
                self._dropped_late(ticket.method, now)
                dropped.append((ticket, reason))
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
        """Feed one handler's run time (seconds, from start to return)."""
        _check_seconds(seconds)
        stats = self._service.get(method)
        if stats is None:
            stats = self._service[method] = _ServiceTime()
        stats.add_wall(seconds, now, self._config)
        heap = self._deadlines.get(method)
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        if heap:
            # The method's deadline margin changed: its queued calls may now be
            # due earlier than the sweep planned for.
            self._sweep_due = min(self._sweep_due, self._deadline_due(heap[0][2].ticket, now))

    def note_started(self, now: float) -> None:
        """A call started at once without being queued (a slot and a thread were free)."""
        if self._idle(now):
            self._last_empty = now

    def record_hold_time(self, method: str, seconds: float, now: float) -> None:
        """Feed how long one call held its CPU slot (start to first wait, or return)."""
        _check_seconds(seconds)
        stats = self._service.get(method)
        if stats is None:
            stats = self._service[method] = _ServiceTime()
        stats.add_hold(seconds, now, self._config)

    # ------------------------------------------------------------ observations

    def service_estimate(self, method: str) -> float | None:
        """The method's average service (wall) time in seconds; ``None`` before any."""
        stats = self._service.get(method)
        return None if stats is None else stats.wall_estimate()

    def hold_estimate(self, method: str) -> float | None:
        """The method's average CPU-slot hold time in seconds; ``None`` before any sample."""
        stats = self._service.get(method)
        return None if stats is None else stats.hold_estimate()

    def predicted_hold(self, method: str, now: float) -> float | None:
        """The slot hold time a wait prediction takes for one of the method's turns at
        ``now``: the mean of the calls that ended within ``recent_window_s`` if at least
        four did, else :meth:`hold_estimate`; ``None`` before any sample."""
        stats = self._service.get(method)
        return None if stats is None else stats.predicted_hold(now, self._config)

    def fastest_service(self, method: str, now: float) -> float | None:
        """The method's fastest service time within ``service_window_s``; ``None`` without."""
        stats = self._service.get(method)
        return None if stats is None else stats.fastest(now, self._config)

    def codel_target(self, method: str) -> float:
        """The method's CoDel target: ``max(codel_target_s, multiple x service time)``."""
        config = self._config
        estimate = self.service_estimate(method)
        if estimate is None:
            return config.codel_target_s
        return max(config.codel_target_s, config.target_service_multiple * estimate)

    def allowance(self, ticket: Ticket[T], now: float, *, standing: bool) -> float:
        """How long ``ticket`` may wait, if queued at ``now``, before it is dropped.

        Standing queue: the method's CoDel target (times ``sheddable_target_factor``
        for sheddable calls). Otherwise: the deadline's budget (time left minus the
        method's fastest service time; ``max_wait_s`` at most), and never less than
        ``max(codel_interval_s, target)``.
        """
        return self._allowance(ticket, int(ticket.criticality), now, standing)

    def _allowance(self, ticket: Ticket[T], level: int, now: float, standing: bool) -> float:
        # Hot path of offer: plain arithmetic, no enum construction.
        config = self._config
        target = config.codel_target_s
        stats = self._service.get(ticket.method)
        wall = None if stats is None else stats.wall_estimate()
        if wall is not None:
            target = max(target, config.target_service_multiple * wall)
        if standing and not self._bounded(ticket):
            return target * config.sheddable_target_factor if level == _SHEDDABLE else target
        floor = target if target > config.codel_interval_s else config.codel_interval_s
        budget = config.max_wait_s
        if ticket.deadline is not None:
            fastest = None if stats is None else stats.fastest(now, config)
            budget = min(budget, ticket.deadline - now - (fastest or 0.0))
        return budget if budget > floor else floor

    def set_workers(self, workers: int) -> None:
        """The adapter's concurrency limit changed: drain estimates use ``workers`` from now."""
        check_int("AdmissionConfig", "workers", workers, low=1)
        self._workers = workers

    @property
    def depth(self) -> int:
        """Queued calls (not counting running ones)."""
        return len(self._live)

    def _busy_for(self, now: float) -> float:
        """How long the queue has not been idle (0 while it is idle)."""
        if self._idle(now) or self._last_empty is None:
            return 0.0
        return now - self._last_empty

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
        """Suggested client back-off: time for the slots to drain the queue, 1 ms..max.

        Each queued call counts its method's predicted slot hold time (the calls that
        ended within ``recent_window_s``; ``codel_target_s`` while the method has
        none), divided over ``workers``.
        """
        config = self._config
        work_s = 0.0
        for method, count in self._queued_per_method.items():
            estimate = self.predicted_hold(method, now)
            work_s += count * (config.codel_target_s if estimate is None else estimate)
        drain_ms = math.ceil(1000.0 * work_s / self._workers)
        return min(config.pushback_max_ms, max(1, drain_ms))

    # ------------------------------------------------------------ internals

    def deadline_reason(
        self, method: str, deadline: float | None, now: float, *, slot_free: bool = False
    ) -> Reason | None:
        """Why a call of ``method`` with ``deadline`` could not usefully start at ``now``
        (gone, or shorter than the method's fastest recent service time); None if it could.

        For a call about to start: when the estimate alone would refuse it but no
        call was let through for that reason within ``deadline_probe_s`` -- or, when
        ``slot_free`` (a worker slot is free for it), a free-slot probe is left
        (``deadline_probe_free_s``) -- this one is (and counts as the probe), so the
        estimate is measured again.
        """
        reason = self._deadline_check(method, deadline, now, slot_free=slot_free)
        if reason is _PROBE or reason is _FREE_PROBE:
            self._probed(method, now, from_bucket=reason is _FREE_PROBE)
            return None
        return reason  # type: ignore[return-value]  # not a probe

    def _deadline_check(
        self, method: str, deadline: float | None, now: float, *, slot_free: bool = False
    ) -> Reason | object | None:
        """The deadline rules for a newcomer: a Reason, None, ``_PROBE`` -- too short by
        the estimate, but no probe ran for ``deadline_probe_s`` -- or ``_FREE_PROBE``
        (``slot_free``: a free-slot probe is left). The caller decides whether this call
        becomes it, and says so with ``_probed``."""
        reason = self._deadline_reason(method, deadline, now)
        if reason is Reason.DEADLINE_SHORT:
            stats = self._service[method]
            config = self._config
            if now - stats.probed_at >= config.deadline_probe_s:
                return _PROBE
            if slot_free and stats.free_probe_available(now, config):
                return _FREE_PROBE
        return reason

    def _probed(self, method: str, now: float, *, from_bucket: bool = False) -> None:
        stats = self._service[method]
        if from_bucket:
            stats.free_probes -= 1.0
        stats.probed_at = now

    def _deadline_reason(self, method: str, deadline: float | None, now: float) -> Reason | None:
        """Gone, or shorter than the method's fastest service time within the window."""
        if deadline is None:
            return None
        if deadline <= now:
            return Reason.DEADLINE_GONE
        stats = self._service.get(method)
        fastest = None if stats is None else stats.fastest(now, self._config)
        if fastest is None or deadline - now >= fastest:
            return None
        return Reason.DEADLINE_SHORT

    def _would_outwait(self, ticket: Ticket[T], now: float, running: int | None) -> bool:
        """Is the newcomer's predicted wait over the admitted fraction of its allowance?

        Each call that must start first (queued ahead, or running beyond the
        workers less one for the newcomer) takes one worker's turn: S / W.
        """
        stats = self._service.get(ticket.method)
        if stats is None:
            return False
        hold = stats.predicted_hold(now, self._config)
        if hold is None or hold <= 0.0:
            return False
        level = int(ticket.criticality)
        ahead = sum(self._live_per_level[lv] for lv in _LEVELS if lv >= level)
        workers = self._workers
        busy = workers if running is None else running
        turns = ahead + busy - workers + 1
        if turns <= 0:
            return False  # a slot is free for it
        standing = self.standing(now)
        allowance = self._allowance(ticket, level, now, standing)
        # In a standing queue a wrong prediction costs a call without a deadline at most the
        # short target before it is dropped; only long allowances need the margin
        # (admit_wait_fraction), deeper while the queue is younger than the allowance (a
        # burst, burst_wait_fraction).
        config = self._config
        fastest = self._patient_run(ticket, stats, allowance, now)
        if fastest is not None:  # patient: refused only if late even at the fastest rate
            return turns * fastest / workers > allowance
        if not self._bounded(ticket):
            fraction = 1.0 if standing else config.admit_wait_fraction
        elif self._busy_for(now) < allowance:
            fraction = config.burst_wait_fraction
        else:
            fraction = config.admit_wait_fraction
        return turns * hold / workers > fraction * allowance

    def _patient_run(
        self, ticket: Ticket[T], stats: _ServiceTime, allowance: float, now: float
    ) -> float | None:
        """The method's fastest recent run if the call's allowance holds ``patient_runs``
        of them (the call is patient), else None."""
        config = self._config
        runs = config.patient_runs
        if runs <= 0.0 or not self._bounded(ticket):
            return None
        if now - stats.dropped_late_at < stats.patience_backoff_s:
            return None  # hopes failed lately: no patience
        fastest = stats.fastest(now, config)
        if fastest is None or fastest <= 0.0 or allowance < runs * fastest:
            return None
        return fastest

    def _dropped_late(self, method: str, now: float) -> None:
        """A queued call of ``method`` was dropped for its deadline: see ``patient_backoff_s``."""
        stats = self._service.get(method)
        if stats is None:
            return
        if now - stats.dropped_late_at >= stats.patience_backoff_s:
            # Patience was on: it failed again. Soon after the last time: back off longer.
            config = self._config
            if now - stats.failed_at < 4.0 * stats.patience_backoff_s:
                stats.patience_backoff_s = min(
                    config.patient_backoff_max_s, 2.0 * stats.patience_backoff_s
                )
            else:
                stats.patience_backoff_s = config.patient_backoff_s
            stats.failed_at = now
        stats.dropped_late_at = now

    def _doom_reason(self, entry: _Entry[T], now: float) -> Reason | None:
        ticket = entry.ticket
        reason = self._deadline_reason(ticket.method, ticket.deadline, now)
        if reason is Reason.DEADLINE_GONE or (reason is not None and not entry.probe):
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
        short for that method's fastest service time, so each heap is popped until its top is
        fine. CoDel: the expiry heap is popped until its top has time left.
        Records when the next sweep can first find something to drop.
        """
        due = min(self._sweep_deadlines(now, dropped), self._sweep_codel(now, dropped))
        if self._deadlines:
            # A method's fastest time can rise with no new sample, when its fastest
            # sample ages out at a bucket edge: look again then.
            due = min(due, self._next_bucket_edge(now))
        self._sweep_due = due - _DUE_SLACK_S

    def _next_bucket_edge(self, now: float) -> float:
        width = self._config.service_window_s / _FASTEST_BUCKETS
        return (math.floor(now / width) + 1) * width

    def _sweep_deadlines(self, now: float, dropped: _Dropped[T]) -> float:
        """Drop calls whose deadline is gone or too short; return the next deadline due time."""
        due = math.inf
        for method in list(self._deadlines):
            heap = self._deadlines[method]
            margin = self.fastest_service(method, now) or 0.0
            while heap:
                deadline, _, entry = heap[0]
                if entry.live:
                    if deadline <= now:
                        reason = Reason.DEADLINE_GONE
                    elif deadline - now < margin and not entry.probe:
                        reason = Reason.DEADLINE_SHORT
                    else:
                        # A probe at the top holds up the heap until its deadline is
                        # gone: the calls behind it are checked at take() meanwhile.
                        due = min(due, deadline if entry.probe else deadline - margin)
                        break
                    self._dropped_late(method, now)
                    dropped.append((self._remove(entry), reason))
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
                self._shed(dropped, self._remove(entry), Reason.CODEL, now)
            heapq.heappop(heap)
        return math.inf

    def _deadline_due(self, ticket: Ticket[T], now: float) -> float:
        """When the ticket's deadline leaves less than its method's fastest service time."""
        if ticket.deadline is None:
            return math.inf
        fastest = self.fastest_service(ticket.method, now) or 0.0
        return ticket.deadline - fastest - _DUE_SLACK_S

    def _preemption_victim(self, newcomer: Criticality) -> Ticket[T] | None:
        """Evict the oldest call of the lowest criticality below ``newcomer``, if any.

        The oldest has the least deadline left and is next in line for CoDel.
        """
        for level in _LEVELS_LOW_TO_HIGH:
            if level >= newcomer:
                return None
            if self._live_per_level[level]:
                return self._remove(self._pop_oldest(level))
        return None

    def _pop_next(self, level: int, *, standing: bool) -> _Entry[T]:
        """Pop the call to serve next of a level known to have one.

        No standing queue: the oldest. A standing one: of the oldest deadline-bounded
        call and the newest other call (LIFO), the one whose allowance ends first.
        """
        bounded = _live_end(self._order[level], newest=False)
        other = _live_end(self._open[level], newest=standing)
        if bounded is None:
            pick_bounded = False
        elif other is None:
            pick_bounded = True
        elif standing:
            pick_bounded = bounded.expires_at <= other.expires_at
        else:
            pick_bounded = bounded.seq < other.seq
        if pick_bounded:
            return self._order[level].popleft()
        return self._open[level].pop() if standing else self._open[level].popleft()

    def _pop_oldest(self, level: int) -> _Entry[T]:
        """Pop the oldest live entry of a level known to have one."""
        bounded = _live_end(self._order[level], newest=False)
        other = _live_end(self._open[level], newest=False)
        if other is None or (bounded is not None and bounded.seq < other.seq):
            return self._order[level].popleft()
        return self._open[level].popleft()

    def _bounded(self, ticket: Ticket[T]) -> bool:
        """Does the call's deadline bound its wait even in a standing queue?"""
        return ticket.deadline is not None and self._config.deadline_bounds_wait

    def _idle(self, now: float) -> bool:
        """Empty, and nothing shed for overload within the CoDel interval."""
        return not self._live and now - self._last_shed > self._config.codel_interval_s

    def _add(self, ticket: Ticket[T], now: float, *, probe: bool = False) -> None:
        if self._idle(now):
            self._last_empty = now  # idle until this instant
        level = int(ticket.criticality)
        method = ticket.method
        allowance = self._allowance(ticket, level, now, self.standing(now))
        entry = _Entry(ticket, self._next_seq, ticket.enqueued_at + allowance, probe=probe)
        if probe:
            self._probed(method, now)
        self._next_seq += 1
        self._live[ticket] = entry
        self._live_per_level[level] += 1
        self._queued_per_method[method] = self._queued_per_method.get(method, 0) + 1
        (self._order if self._bounded(ticket) else self._open)[level].append(entry)
        heapq.heappush(self._codel, (entry.expires_at, entry.seq, entry))
        due = entry.expires_at - _DUE_SLACK_S
        if ticket.deadline is not None:
            heap = self._deadlines.get(method)
            if heap is None:
                heap = self._deadlines[method] = []
            heapq.heappush(heap, (ticket.deadline, entry.seq, entry))
            due = min(
                due,
                ticket.deadline if probe else self._deadline_due(ticket, now),
                self._next_bucket_edge(now),
            )
        self._sweep_due = min(self._sweep_due, due)

    def _remove(self, entry: _Entry[T]) -> Ticket[T]:
        """Take ``entry`` out of the queue; its ticket, which the entry no longer holds.

        A dead entry stays in the heaps and deques until popped or compacted (up to
        ``queue_limit`` removals later); were it to hold the ticket, it would hold the
        caller's item -- for the executor, a gRPC call, whose HTTP/2 stream stays open
        until the call is freed: with one connection's streams capped at 1,000, a
        client sending all its calls on one connection was refused streams
        (REFUSED_STREAM) once ~1,000 calls had passed through a queue.
        """
        ticket = entry.ticket
        entry.ticket = cast("Ticket[T]", _RELEASED)
        entry.live = False
        if entry.probe:
            # The sweep's next due time may be the probe's deadline, which held up its
            # method's deadline heap (_sweep_deadlines): look again at the next sweep.
            self._sweep_due = -math.inf
        del self._live[ticket]
        self._live_per_level[ticket.criticality] -= 1
        remaining = self._queued_per_method[ticket.method] - 1
        if remaining:
            self._queued_per_method[ticket.method] = remaining
        else:
            del self._queued_per_method[ticket.method]
        self._removed_since_compact += 1
        return ticket

    def _after_change(self, now: float) -> None:
        if self._idle(now):
            self._last_empty = now
        if self._removed_since_compact >= self._config.queue_limit:
            self._compact()

    def _compact(self) -> None:
        """Drop dead entries everywhere: O(stored), once per ``queue_limit`` removals."""
        self._order = [deque(e for e in order if e.live) for order in self._order]
        self._open = [deque(e for e in order if e.live) for order in self._open]
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
            sum(len(order) for order in (*self._order, *self._open))
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


def _live_end(order: deque[_Entry[T]], *, newest: bool) -> _Entry[T] | None:
    """The live entry at one end of ``order`` (dead ones there are discarded), or None."""
    while order:
        entry = order[-1] if newest else order[0]
        if entry.live:
            return entry
        if newest:
            order.pop()
        else:
            order.popleft()
    return None

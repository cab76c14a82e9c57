"""Concurrency limit: how many calls may run at once without starving grpcio's dispatcher.

grpcio's sync server has one Python thread that turns every network event into
work: a new call, a request message, a finished response. It needs the GIL for
each. Handler threads that burn CPU hold the GIL in turns, and once more of them
want it than the interpreter can serve, the dispatcher waits in that convoy
every time: new calls then queue inside grpc, out of admission control's sight,
and even a refusal takes tens of milliseconds. Handlers that wait on I/O hold a
thread but not the GIL, and hundreds of them cost the dispatcher nothing.

So the executor runs at most ``limit`` calls at once and adapts the limit to one
signal: the *dispatch lag*, how late a probe thread that sleeps a few
milliseconds gets the GIL back (what the dispatcher suffers on every event; see
:mod:`rpckit.server._executor` for which part of that lateness counts when). Evaluated
once per window on the lag's 90th percentile *above its no-load baseline*
(docs/architecture.md, "Executor"). The baseline is the 90th percentile of the
samples taken over the last ``baseline_window_s`` while at most one call ran and
no queue stood (``quiet``): what the host makes a sleeping thread wait with next
to nothing of this process competing for the GIL. A host that takes the vCPUs
away (steal, invisible to a thread's scheduler statistics) made every probe 3-4 ms
late at 60 light calls/s; judged against zero that read as a GIL convoy and
ratcheted the limit to its floor. Without quiet samples (a saturated server) the
baseline is zero, the rules as before. The judged lag:

* above ``target_lag_s`` while calls wanted more room than the limit gave (they
  waited, or were refused for want of it) and the limit was reached: the GIL
  is oversubscribed by the calls here; the limit shrinks by ``decrease`` (at
  least by one; halves above ``FAST_DECREASE_ABOVE`` x the target), down to
  ``min_limit``;
* above the target without that demand: the lag is not the calls' doing (the
  dispatcher's own work, or another process on the cores); the limit only
  comes down to the most calls that ran plus ``IDLE_HEADROOM``, so that it binds
  again soon should these calls turn CPU-bound;
* below ``increase_below`` x the target while calls wanted more room: it grows
  by one -- doubling below ``SLOW_START_BELOW`` x the target, where the GIL is
  all but idle and the calls wait on I/O (slow start: a burst of slow
  downstream calls gets hundreds of threads within a second or two);
* while calls wanted more room and the handlers running used almost no CPU
  (under ``HANDLERS_BUSY_CPU_SHARE`` of a core: they sleep or wait on a
  downstream), it doubles whatever the lag: room for them costs the dispatcher
  nothing, and the lag is then another process's doing;
* otherwise it holds.

Pure policy: the caller passes samples and ``now``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

from rpckit.core._validate import check_fields, check_int, check_number

__all__ = ["HANDLERS_BUSY_CPU_SHARE", "ConcurrencyConfig", "ConcurrencyLimit", "counted_lag"]

#: Below this fraction of the target lag the limit doubles instead of growing by one.
SLOW_START_BELOW = 0.25
#: Above this multiple of the target lag the limit at least halves (``decrease`` if smaller).
FAST_DECREASE_ABOVE = 3.0
#: A lagging window that never reached the limit brings it down to the busiest moment
#: plus this many, not below.
IDLE_HEADROOM = 4
#: Handler threads using at least this share of one core (together, over a window) are
#: taken to compete for the cores; below it they mostly wait (sleep, I/O, downstream calls).
HANDLERS_BUSY_CPU_SHARE = 0.1


def counted_lag(
    late_s: float, core_wait_s: float, *, standing: bool, handlers_cpu_share: float
) -> float:
    """The part of a probe's lateness that fewer calls running here would shorten.

    ``late_s``: how late the probe got the GIL back; ``core_wait_s``: the part of
    that it spent runnable, waiting for a core (another process, or this one's
    other threads, on the cores); ``handlers_cpu_share``: the CPU the handler
    threads used over the last window, in cores.

    The wait for the GIL always counts. The wait for a core counts only while a
    queue stands *and* the handlers here use the CPU: then fewer runnable handlers
    give the dispatch thread a core sooner (docs/architecture.md, "Executor").
    Handlers that sleep or wait on a downstream are not runnable: limiting them
    shortens nobody's wait, and counting a neighbour's load against them would
    ratchet the limit down to its floor below the calls already waiting, so that
    every new call is refused while the CPU here is idle -- and would hold it
    there, since the limit grows only once the lag falls, which a busy neighbour
    never lets it do.
    """
    gil_wait = max(0.0, late_s - core_wait_s)
    if standing and handlers_cpu_share >= HANDLERS_BUSY_CPU_SHARE:
        return max(0.0, late_s)
    return gil_wait


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConcurrencyConfig:
    """Parameters of :class:`ConcurrencyLimit`; validated on construction."""

    target_lag_s: float = 0.0030
    """Dispatch lag (p90 over a window) above which the limit shrinks. What is left
    of a refusal's latency, once refusals come on arrival, is the dispatcher's
    wait for the GIL; bench/README.md, "Measurements behind the defaults", has
    the measurements behind 3 ms."""

    increase_below: float = 0.6
    """The limit grows only while the lag p90 is below this fraction of the
    target (a dead band against flapping)."""

    window_s: float = 0.25
    """How often the limit is reconsidered. With a sample every ~5 ms a window
    holds ~50 samples, enough for a p90 that does not jump with one hiccup."""

    min_samples: int = 5
    """A window with fewer lag samples is extended, not judged."""

    decrease: float = 0.75
    """Multiplicative decrease on a lagging window."""

    min_limit: int = 2
    """Never fewer calls than this (capped by the thread count): the lag also rises
    with the dispatch thread's own work, which fewer calls cannot cure."""

    baseline_window_s: float = 1.0
    """How far back quiet samples (at most one call running, no queue standing) set
    the no-load baseline the lag is judged above (their 90th percentile; zero with
    fewer than ``min_samples``). A second follows a host's noisy spell within four
    windows and forgets it as fast; a server that never runs quiet has no baseline."""

    def __post_init__(self) -> None:
        check_fields(self)
        owner = "ConcurrencyConfig"
        for name in ("target_lag_s", "window_s", "increase_below", "decrease", "baseline_window_s"):
            check_number(owner, name, getattr(self, name), low=0.0, strict=True)
        if self.increase_below > 1.0:
            raise ValueError(f"{owner}.increase_below must be <= 1, got {self.increase_below!r}")
        if self.decrease >= 1.0:
            raise ValueError(f"{owner}.decrease must be < 1, got {self.decrease!r}")
        for name in ("min_samples", "min_limit"):
            check_int(owner, name, getattr(self, name), low=1)


def _p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


class ConcurrencyLimit:
    """AIMD limit on running handlers, driven by dispatch-lag samples. Not thread-safe."""

    def __init__(
        self,
        threads: int,
        now: float,
        config: ConcurrencyConfig | None = None,
        *,
        start: int | None = None,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self._config = config if config is not None else ConcurrencyConfig()
        self._max = threads
        self._min = min(threads, self._config.min_limit)
        if start is not None:
            check_int("ConcurrencyLimit", "start", start, low=1)
        self._limit = threads if start is None else max(self._min, min(threads, start))
        self._window_start = now
        self._samples: list[float] = []
        self._quiet: deque[tuple[float, float]] = deque()  # (when, lag) of quiet samples
        self._saturated = False
        self._busiest = 0  # the most calls running at one sample of the window
        self._cpu_share: float | None = None  # the handlers' CPU, in cores, lately

    @property
    def limit(self) -> int:
        """Handlers that may run at once now."""
        return self._limit

    @property
    def threads(self) -> int:
        return self._max

    def baseline(self, now: float) -> float:
        """The no-load lag: the 90th percentile of the quiet samples within
        ``baseline_window_s`` of ``now``; 0.0 with fewer than ``min_samples``."""
        quiet = self._quiet
        horizon = now - self._config.baseline_window_s
        while quiet and quiet[0][0] < horizon:
            quiet.popleft()
        if len(quiet) < self._config.min_samples:
            return 0.0
        return _p90([lag for _, lag in quiet])

    def observe(
        self,
        lag_s: float,
        *,
        saturated: bool,
        now: float,
        busy: int | None = None,
        handlers_cpu_share: float | None = None,
        handlers_cpu_now: float | None = None,
        quiet: bool = False,
    ) -> bool:
        """Feed one dispatch-lag sample; ``saturated``: calls wanted more room than the
        limit; ``busy``: calls running now (``None``: as many as the limit);
        ``handlers_cpu_share``: the CPU the handlers used over the last window, in
        cores (``None``: unknown; the latest given is the one judged);
        ``handlers_cpu_now``: a measurement just taken over the last few
        milliseconds, because calls wait for room; ``quiet``: at most one call ran
        and no queue stood, so the sample counts toward the no-load baseline.

        ``handlers_cpu_now`` under ``HANDLERS_BUSY_CPU_SHARE`` while calls want room
        and the limit is reached doubles the limit at once, not at the window's end:
        a standing queue's CoDel refuses within 100 ms, and the calls running sleep.
        One doubling per such measurement, so the next one (of the calls just let
        in) can stop it.

        Returns True when the limit changed.
        """
        if not math.isfinite(lag_s):
            raise ValueError(f"lag must be finite, got {lag_s!r}")
        lag_s = max(0.0, lag_s)
        self._samples.append(lag_s)
        if quiet:
            self._quiet.append((now, lag_s))
        self._saturated = self._saturated or saturated
        running = self._limit if busy is None else busy
        self._busiest = max(self._busiest, running)
        if handlers_cpu_share is not None:
            self._cpu_share = handlers_cpu_share
        if (
            handlers_cpu_now is not None
            and handlers_cpu_now < HANDLERS_BUSY_CPU_SHARE
            and saturated
            and running >= self._limit
            and self._limit < self._max
        ):
            self._limit = min(self._max, self._limit * 2)
            return True
        config = self._config
        if now - self._window_start < config.window_s or len(self._samples) < config.min_samples:
            return False
        p90 = max(0.0, _p90(self._samples) - self.baseline(now))
        before = self._limit
        waiting = self._cpu_share is not None and self._cpu_share < HANDLERS_BUSY_CPU_SHARE
        if self._saturated and waiting and self._busiest >= self._limit:
            # Calls want room and the ones running use (almost) no CPU: they sleep or
            # wait on a downstream, so room costs the dispatcher nothing, whatever the
            # lag (another process's doing). Slow start; CPU-bound newcomers show in
            # the next window's share, and the rules below take over.
            self._limit = min(self._max, self._limit * 2)
        elif p90 > config.target_lag_s and self._busiest >= self._limit and self._saturated:
            # Far over the target (a limit grown large for I/O-bound calls meeting
            # CPU-bound ones), halve; otherwise the gentler decrease.
            fast = p90 > FAST_DECREASE_ABOVE * config.target_lag_s
            factor = min(0.5, config.decrease) if fast else config.decrease
            shrunk = min(self._limit - 1, math.floor(self._limit * factor))
            self._limit = max(self._min, shrunk)
        elif p90 > config.target_lag_s:
            # Lagging while no call waited for room: the handlers here are not what
            # crowds the GIL (or the cores; another process may). Only bring the limit
            # down to what ran, with room, so that it binds again soon if they are.
            self._limit = max(self._min, min(self._limit, self._busiest + IDLE_HEADROOM))
        elif p90 < config.target_lag_s * config.increase_below and self._saturated:
            if p90 < config.target_lag_s * SLOW_START_BELOW:
                # The GIL is all but idle: the handlers wait on I/O. Double (slow start).
                self._limit = min(self._max, self._limit * 2)
            else:
                self._limit = min(self._max, self._limit + 1)
        self._samples.clear()
        self._saturated = False
        self._busiest = 0
        self._window_start = now
        return self._limit != before

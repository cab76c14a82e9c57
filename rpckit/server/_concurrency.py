"""Concurrency limit: how many handlers may run at once without starving grpcio's dispatcher.

grpcio's sync server has one Python thread that turns every network event into
work: a new call, a request message, a finished response. It needs the GIL for
each. Handler threads that burn CPU hold the GIL in turns, and once more of them
want it than the interpreter can serve, the dispatcher waits in that convoy
every time: new calls then queue inside grpc, out of admission control's sight,
and even a refusal takes tens of milliseconds (bench/overload measured a
rejection p99 of 145 ms with 8 CPU-bound handler threads, 22 ms with 4).

So admission runs at most ``limit`` handlers at once, below the thread count,
and adapts the limit to one signal: the *dispatch lag*, how late a thread that
sleeps for a millisecond gets the GIL back (what the dispatcher suffers on each
event). AIMD, evaluated once per window:

* lag p90 above ``target_lag_s``: the GIL is oversubscribed; the limit shrinks
  by ``decrease`` (at least by one), down to ``min_limit``;
* lag p90 below ``increase_below`` x the target while calls waited for a free
  slot, or were refused for want of one: the limit grows by one, up to the
  thread count;
* otherwise it holds.

I/O-bound handlers (which release the GIL while they wait) never raise the lag,
so they keep every thread; CPU-bound ones settle where the dispatcher still
answers within a couple of milliseconds. The lag also rises when other
processes take the CPU, and the limit then shrinks too, on purpose: a process
short of CPU that keeps every handler running descheduled GIL holders and
starves its dispatcher worse (measured with a CPU hog beside bench/overload at
3x: with the limit held at 8, refusals took 90-160 ms and goodput collapsed;
with it lowered, the server kept refusing within ~20 ms). ``min_limit`` bounds
how far either can throttle a process. Pure policy: the caller passes samples
and ``now``.
"""

from __future__ import annotations

import dataclasses
import math

from rpckit.core._validate import check_int, check_number

__all__ = ["ConcurrencyConfig", "ConcurrencyLimit"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConcurrencyConfig:
    """Parameters of :class:`ConcurrencyLimit`; validated on construction."""

    target_lag_s: float = 0.0020
    """Dispatch lag (p90 over a window) above which the limit shrinks. A refusal
    costs the dispatcher a few GIL acquisitions; measured in bench/overload (5 ms
    CPU + 20 ms wait per call, 2 processes on 2 cores, 3x overload), the window
    p90 was typically 1.3 ms with 2 handlers running, 1.7 ms with 3, 2.3 ms with 4
    and 4 ms with 6, and the rejection p99 grew from ~16 ms (3-4) to ~185 ms (6).
    Since refusals come on arrival (``AdmissionConfig.admit_wait_fraction``) what
    is left of their latency is the dispatcher's wait for the GIL: measured the
    same way in 3 alternating rounds, 2.5 ms gave a refusal p99 of 12-15 ms and
    202-205 req/s at 2x and 3x, 2.0 ms 8-11.5 ms and 178-190 req/s."""

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
    """Never fewer handlers than this (capped by the thread count): the lag also
    rises with the dispatch thread's own work and with other processes' CPU use,
    which fewer handlers cannot fully cure."""

    def __post_init__(self) -> None:
        owner = "ConcurrencyConfig"
        for name in ("target_lag_s", "window_s", "increase_below", "decrease"):
            check_number(owner, name, getattr(self, name), low=0.0, strict=True)
        if self.increase_below > 1.0:
            raise ValueError(f"{owner}.increase_below must be <= 1, got {self.increase_below!r}")
        if self.decrease >= 1.0:
            raise ValueError(f"{owner}.decrease must be < 1, got {self.decrease!r}")
        for name in ("min_samples", "min_limit"):
            check_int(owner, name, getattr(self, name), low=1)


class ConcurrencyLimit:
    """AIMD limit on running handlers, driven by dispatch-lag samples. Not thread-safe."""

    def __init__(self, threads: int, now: float, config: ConcurrencyConfig | None = None) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self._config = config if config is not None else ConcurrencyConfig()
        self._max = threads
        self._min = min(threads, self._config.min_limit)
        self._limit = threads
        self._window_start = now
        self._samples: list[float] = []
        self._saturated = False

    @property
    def limit(self) -> int:
        """Handlers that may run at once now."""
        return self._limit

    @property
    def threads(self) -> int:
        return self._max

    def observe(self, lag_s: float, *, saturated: bool, now: float) -> bool:
        """Feed one dispatch-lag sample; ``saturated``: calls wanted more slots than the limit.

        Returns True when the limit changed.
        """
        if not math.isfinite(lag_s):
            raise ValueError(f"lag must be finite, got {lag_s!r}")
        self._samples.append(max(0.0, lag_s))
        self._saturated = self._saturated or saturated
        config = self._config
        if now - self._window_start < config.window_s or len(self._samples) < config.min_samples:
            return False
        samples = sorted(self._samples)
        p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
        before = self._limit
        if p90 > config.target_lag_s:
            shrunk = min(self._limit - 1, math.floor(self._limit * config.decrease))
            self._limit = max(self._min, shrunk)
        elif p90 < config.target_lag_s * config.increase_below and self._saturated:
            self._limit = min(self._max, self._limit + 1)
        self._samples.clear()
        self._saturated = False
        self._window_start = now
        return self._limit != before

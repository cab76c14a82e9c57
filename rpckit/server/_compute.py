"""How many calls in flight keep a core computing: the floor of the concurrency limit.

The concurrency limit (:mod:`rpckit.server._concurrency`) caps the calls in flight, and
its signal -- how late a sleeping thread gets the GIL back -- also rises with a wait for
a core that other processes cause. On a crowded host it can drive the limit to its floor
of two calls while the calls are mostly asleep on a downstream: a method of 1 ms of CPU
and 10 ms of waiting then runs two calls at once, ~180 a second, with the cores partly
idle, and the queue stands. bench/soak met exactly that: three single-process backends
beside their load generator on two cores held their limits at 2-3 and served ~160 calls a
second each for 20 s after a burst, refusing thousands (docs/architecture.md, "Executor").

What running fewer calls can cure is too many calls *computing*. So the limit never falls
below the calls in flight that keep this process's share of the cores computing: its share
(usable cores over processes, at most one -- a process computes Python on one core at a
time, the GIL's) times how many calls in flight make one computing call. That is
1 / (the share of a run that computes): a call's thread CPU time over its method's
*fastest* recent run (what a run takes uncontended, so contention from the calls around it
does not make a call look asleep; a thread's CPU time leaves out its waits for the GIL and
for a core), rounded down: no more than the share computes. A CPU-bound method: one
call, below the limit's own floor of two. The seed profile (5 ms of a 25 ms run, four
processes on two cores): 0.5 x 4.6 = 2.3 each, and what rounding leaves is shared out by
worker index -- 3, 2, 2, 2 (see :meth:`ComputeShare.floor`). bench/soak's method (1.3 ms
of 11.5, one process): 8.

The estimate is a time-decayed mean over the calls that ended (``half_life_s``), capped at
``max_calls_per_slot``. Its worst input is calls turning CPU-bound after a sleepy spell (a
cache warms, a downstream answers at once): the floor then lets up to
``max_calls_per_slot`` x the core share compute at once until their runs end and are
counted -- a second of CPU-bound calls brings it back to them. Pure: the caller passes
each call's times and ``now``.
"""

from __future__ import annotations

import dataclasses
import math

from rpckit.core._validate import check_fields, check_number
from rpckit.server._decay import DecayedMean

__all__ = ["ComputeConfig", "ComputeShare"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """Parameters of :class:`ComputeShare`; validated on construction."""

    half_life_s: float = 1.0
    """Each ended call weighs 1 and fades by half every half-life: a change of what
    the calls do is half seen within a second, whatever the call rate."""

    max_calls_per_slot: float = 16.0
    """At most this many calls in flight per computing call. Calls that only sleep
    (a share near 0) get their room from the limit's own doubling for idle handlers;
    the cap bounds the worst input above."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_number("ComputeConfig", "half_life_s", self.half_life_s, low=0.0, strict=True)
        check_number(
            "ComputeConfig", "max_calls_per_slot", self.max_calls_per_slot, low=1.0, strict=False
        )


class ComputeShare:
    """The decayed mean share of a run that computes, over the calls that ended."""

    __slots__ = ("_config", "_mean")

    def __init__(self, config: ComputeConfig | None = None) -> None:
        self._config = config if config is not None else ComputeConfig()
        self._mean: DecayedMean | None = None

    @property
    def share(self) -> float:
        """The mean share (0..1); 1.0 before any call ended (as if every call computed
        throughout)."""
        return 1.0 if self._mean is None else self._mean.estimate

    def observe(self, cpu_s: float, fastest_wall_s: float | None, now: float) -> None:
        """A call ended having used ``cpu_s`` of its thread's CPU; its method's fastest
        recent run took ``fastest_wall_s`` (``None``: unknown, the call counts as computing
        throughout)."""
        if not math.isfinite(cpu_s) or cpu_s < 0.0:
            raise ValueError(f"cpu_s must be a finite number >= 0, got {cpu_s!r}")
        if fastest_wall_s is None or fastest_wall_s <= 0.0:
            share = 1.0
        else:
            share = min(1.0, cpu_s / fastest_wall_s)
        if self._mean is None:
            self._mean = DecayedMean(share, now)
        else:
            self._mean.add(share, now, self._config.half_life_s)

    def calls_per_slot(self) -> float:
        """Calls in flight that make one computing call: 1 / share, 1..``max_calls_per_slot``."""
        most = self._config.max_calls_per_slot
        share = self.share
        return most if share * most <= 1.0 else 1.0 / share

    def floor(self, core_share: float, threads: int, *, processes: int = 1, index: int = 0) -> int:
        """The most calls in flight that keep no more than ``core_share`` cores computing
        (rounded down; at least 1, at most ``threads``) -- for process ``index`` of
        ``processes`` that each have that share.

        Rounding down in every process leaves up to a call per process unused: the seed
        profile's 2.3 calls became 2 in each of four processes, 8 in flight where 9 keep
        the cores no busier than their share, and at 3x its offered load the limit sat at
        that floor with ~9% of the cores idle. So the processes share out what rounding
        leaves: the first ``floor(processes x fraction)`` of them take one call more
        (bench/README.md, "The floor's fractions"), and together they stay within the
        cores."""
        if not core_share > 0.0:
            raise ValueError(f"core_share must be > 0, got {core_share!r}")
        if processes < 1 or index < 0:
            raise ValueError(f"need processes >= 1 and index >= 0, got {processes}, {index}")
        exact = core_share * self.calls_per_slot()
        wanted = math.floor(exact + 1e-9)
        left_over = math.floor(processes * (exact - wanted) + 1e-9)
        if index % processes < left_over:
            wanted += 1
        return max(1, min(threads, wanted))

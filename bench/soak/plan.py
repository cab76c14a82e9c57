"""What a soak run does and when (pure): its plan, the restart plan, the burst window and the
arrival schedule (a Poisson process whose rate triples during the burst).

The burst must be one a good system can serve in time (`burst_wait_s`): at ``load`` x capacity
a burst of ``burst_factor`` for ``burst_s`` leaves ``(load x burst_factor - 1) x capacity x
burst_s`` calls queued at its end, and the last of them waits that many capacity-seconds, which
must fit in the deadline. 3x of 80% for 3 s (the first design) left 4.2 s of work queued
against 2 s deadlines: about half the burst could not be served in time by any system, so its
refusals said nothing about rpckit.

Nothing here starts a process or reads a clock; `bench.soak.__main__` carries the plan out.
"""

from __future__ import annotations

import dataclasses
import random
from typing import NamedTuple

from bench.harness.loadgen import poisson_schedule


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoakPlan:
    """One mode of the soak (full or quick); times in seconds from the soak's start."""

    duration_s: float  # the soak itself, at `load` x capacity
    load: float = 0.8  # share of the measured capacity offered
    restart_every_s: float  # one backend restarted (in turn) this often
    burst_factor: float = 3.0  # the rate during the burst, as a multiple of the soak rate
    burst_s: float  # how long the burst lasts (centred on the middle of the soak)
    warmup_s: float  # RSS growth is measured from here (allocator pools, lazy imports)
    # Before the soak, the same load and burst for this long (not in the soak's figures): RSS
    # is a high-water mark (glibc keeps freed memory), so the RSS baseline must come after
    # the processes met a burst once; then growth is growth that continues (bench/README.md).
    prelude_s: float
    rss_window_s: float  # growth = mean RSS over the last window / over the first one
    bucket_s: float = 5.0  # rows of the table
    deadline_s: float = 2.0  # generous: the soak is about losing nothing, not about the tail
    ramp_start_rps: float = 100.0
    ramp_factor: float = 1.25
    ramp_level_s: float
    # Capacity is the best goodput of a ramp level served with its p99 within this: a level
    # over capacity still keeps up by queueing into the 2 s deadline, and a soak at 80% of
    # such a figure ran at ~100% of what the backends sustain (bench/README.md, "Soak").
    ramp_p99_s: float = 0.25
    ramp_max_levels: int = 14
    max_requests: int = 200_000  # bound on any one schedule

    def __post_init__(self) -> None:
        positive = {
            "duration_s": self.duration_s,
            "load": self.load,
            "restart_every_s": self.restart_every_s,
            "burst_s": self.burst_s,
            "rss_window_s": self.rss_window_s,
            "bucket_s": self.bucket_s,
            "deadline_s": self.deadline_s,
            "ramp_start_rps": self.ramp_start_rps,
            "ramp_level_s": self.ramp_level_s,
            "ramp_p99_s": self.ramp_p99_s,
            "prelude_s": self.prelude_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"SoakPlan.{name} must be > 0, got {value!r}")
        if self.burst_factor < 1 or self.ramp_factor <= 1 or self.ramp_max_levels < 1:
            raise ValueError("need burst_factor >= 1, ramp_factor > 1 and ramp_max_levels >= 1")
        if self.warmup_s < 0 or self.warmup_s + 2 * self.rss_window_s > self.duration_s:
            raise ValueError(
                "the warm-up and two RSS windows must fit in the soak: "
                f"{self.warmup_s} + 2 x {self.rss_window_s} > {self.duration_s}"
            )
        if self.burst_s >= min(self.duration_s, self.prelude_s):
            raise ValueError("the burst must be shorter than the soak and the prelude")
        wait = burst_wait_s(load=self.load, burst_factor=self.burst_factor, burst_s=self.burst_s)
        if wait > BURST_WAIT_SHARE * self.deadline_s:
            raise ValueError(
                f"a {self.burst_factor:g}x burst of {self.burst_s:g} s at {self.load:.0%} of "
                f"capacity queues {wait:.2f} s of work, over {BURST_WAIT_SHARE:.0%} of the "
                f"{self.deadline_s:g} s deadline: no system could serve it in time"
            )


BURST_WAIT_SHARE = 0.75
"""The most of the deadline the burst's backlog may take (the rest: the call's own service
time, and capacity measured a little high by the ramp)."""


def burst_wait_s(*, load: float, burst_factor: float, burst_s: float) -> float:
    """How long (s) the last call of a burst waits at a FIFO server of capacity 1 that is fed
    ``load`` x ``burst_factor`` during ``burst_s`` s (0 if that is within capacity): the
    backlog at the burst's end, in seconds of capacity. After the burst the backlog drains at
    ``1 - load``, so no later call waits longer."""
    return max(0.0, load * burst_factor - 1.0) * burst_s


# 3x of 80% for 1 s: 1.4 s of work queued at the burst's end, inside the 2 s deadline.
FULL = SoakPlan(
    duration_s=60.0, restart_every_s=15.0, burst_s=1.0, warmup_s=5.0, rss_window_s=10.0,
    ramp_level_s=3.0, prelude_s=6.0,
)  # fmt: skip
QUICK = SoakPlan(
    duration_s=20.0, restart_every_s=6.0, burst_s=1.0, warmup_s=2.0, rss_window_s=5.0,
    ramp_level_s=1.5, ramp_factor=1.5, ramp_max_levels=8, prelude_s=4.0,
)  # fmt: skip


class Restart(NamedTuple):
    """Backend ``backend`` gets SIGTERM (drain, exit) at ``at_s`` and is started again."""

    at_s: float
    backend: int


def restart_plan(*, duration_s: float, every_s: float, backends: int) -> list[Restart]:
    """One restart every ``every_s``, half a period in (so none at the very start or end),
    the backends in turn: 60 s every 15 s over 3 -> 7.5 s #0, 22.5 #1, 37.5 #2, 52.5 #0."""
    if duration_s <= 0 or every_s <= 0 or backends < 1:
        raise ValueError("need duration_s > 0, every_s > 0 and backends >= 1")
    plan: list[Restart] = []
    at = every_s / 2
    while at < duration_s:
        plan.append(Restart(at, len(plan) % backends))
        at += every_s
    return plan


def burst_window(*, duration_s: float, burst_s: float) -> tuple[float, float]:
    """The burst's [start, end), centred on the middle of the soak."""
    if not 0 < burst_s < duration_s:
        raise ValueError("need 0 < burst_s < duration_s")
    return (duration_s - burst_s) / 2, (duration_s + burst_s) / 2


def soak_schedule(
    *,
    rate_rps: float,
    duration_s: float,
    burst: tuple[float, float],
    burst_factor: float,
    max_requests: int,
    rng: random.Random,
) -> list[float]:
    """Arrival offsets: Poisson at ``rate_rps`` over the soak, plus Poisson at
    ``(burst_factor - 1) x rate_rps`` inside the burst window (the union of independent
    Poisson processes is Poisson at the summed rate, so the burst runs at ``burst_factor`` x)."""
    base = poisson_schedule(
        rate_rps=rate_rps, duration_s=duration_s, max_requests=max_requests, rng=rng
    )
    start, end = burst
    extra: list[float] = []
    if burst_factor > 1 and end > start:
        extra = [
            start + at
            for at in poisson_schedule(
                rate_rps=(burst_factor - 1) * rate_rps,
                duration_s=end - start,
                max_requests=max_requests,
                rng=rng,
            )
        ]
    return sorted(base + extra)[:max_requests]


def burst_schedule(
    plan: SoakPlan, *, rate_rps: float, duration_s: float, rng: random.Random
) -> tuple[tuple[float, float], list[float]]:
    """The plan's load at ``rate_rps`` for ``duration_s`` with its burst centred in it: the
    burst window and the arrival schedule (the soak, and its prelude)."""
    window = burst_window(duration_s=duration_s, burst_s=plan.burst_s)
    schedule = soak_schedule(
        rate_rps=rate_rps,
        duration_s=duration_s,
        burst=window,
        burst_factor=plan.burst_factor,
        max_requests=plan.max_requests,
        rng=rng,
    )
    return window, schedule

"""What bench/overload offers: its load profiles, and how long each mode spends on them.

Pure data and pure schedules; `runner` does the I/O.

- ``seed``: 5 ms CPU + 20 ms wait, 250 ms deadline (issue 12's seed scenario);
- ``io``: 0.5 ms CPU + 200 ms wait, 500 ms deadline (gevent's home ground);
- ``burst``: 200 calls that each wait 800 ms (no CPU), 10 s deadlines, sent at once; then
  ordinary calls at a light rate for a few seconds (did the server recover?); repeated.

The two load profiles run as open-loop Poisson steps at multiples of 1x, gunicorn+gevent's
capacity for that profile, measured by a ramp in the same run.
"""

from __future__ import annotations

import dataclasses

from bench.harness.loadgen import Work

PROFILE_NAMES = ("seed", "io", "burst")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadProfile:
    """Open-loop steps of one kind of call at multiples of a baseline's capacity."""

    name: str
    work: Work
    deadline_ms: float
    # A rough CPU cost of one call along the whole path (client, server, handler) in ms:
    # the capacity ramp starts at a quarter of cores * 1000 / call_cost_ms.
    call_cost_ms: float
    deadline_reason: str = ""  # why this deadline, for the report

    def __post_init__(self) -> None:
        if self.deadline_ms <= 0 or self.call_cost_ms <= 0:
            raise ValueError("deadline_ms and call_cost_ms must be > 0")

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    def describe(self) -> str:
        """e.g. ``5 ms CPU + 20 ms wait, 250 ms deadline``."""
        return (
            f"{self.work.cpu_ms:g} ms CPU + {self.work.wait_ms:g} ms wait, "
            f"{self.deadline_ms:g} ms deadline"
        )

    def ideal_rps(self, cores: int) -> float:
        """What ``cores`` would carry if a call cost exactly call_cost_ms of CPU."""
        return cores * 1000 / self.call_cost_ms


@dataclasses.dataclass(frozen=True, kw_only=True)
class BurstProfile:
    """Bursts of slow calls sent at once, each followed by ordinary calls at a light rate."""

    name: str
    size: int  # calls per burst, all sent at once
    work: Work
    deadline_ms: float
    recovery: LoadProfile  # the ordinary calls after each burst
    recovery_rps: float

    def __post_init__(self) -> None:
        if self.size < 1 or self.deadline_ms <= 0 or self.recovery_rps <= 0:
            raise ValueError("need size >= 1, deadline_ms > 0 and recovery_rps > 0")

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    def describe(self) -> str:
        return (
            f"{self.size} calls at once, each {self.work.cpu_ms:g} ms CPU + "
            f"{self.work.wait_ms:g} ms wait, {self.deadline_ms / 1000:g} s deadlines; then "
            f"{self.recovery.name} calls at {self.recovery_rps:g}/s"
        )


SEED = LoadProfile(
    name="seed",
    work=Work(cpu_ms=5.0, wait_ms=20.0),
    deadline_ms=250.0,
    call_cost_ms=5.0,
    deadline_reason="issue 12's seed scenario: 225 ms of room to queue beyond the 25 ms call",
)
IO = LoadProfile(
    name="io",
    work=Work(cpu_ms=0.5, wait_ms=200.0),
    deadline_ms=500.0,
    call_cost_ms=2.0,
    deadline_reason=(
        "500 ms, not 250: a 200.5 ms call with a 250 ms deadline has 50 ms of slack, so a "
        "GC pause or a few ms in a queue would be a timeout and the profile would measure "
        "scheduling jitter; 500 ms leaves 300 ms of room to queue, about the seed "
        "profile's 225 ms, so both profiles tolerate the same absolute queueing"
    ),
)
BURST = BurstProfile(
    name="burst",
    size=200,
    work=Work(cpu_ms=0.0, wait_ms=800.0),
    deadline_ms=10_000.0,
    recovery=SEED,
    recovery_rps=60.0,
)


def with_overrides(
    profile: LoadProfile,
    *,
    cpu_ms: float | None = None,
    wait_ms: float | None = None,
    deadline_ms: float | None = None,
    payload_bytes: int | None = None,
) -> LoadProfile:
    """The profile with some of its call's parameters replaced (None keeps them)."""
    work = dataclasses.replace(
        profile.work,
        cpu_ms=profile.work.cpu_ms if cpu_ms is None else cpu_ms,
        wait_ms=profile.work.wait_ms if wait_ms is None else wait_ms,
        payload_bytes=profile.work.payload_bytes if payload_bytes is None else payload_bytes,
    )
    changed = (cpu_ms, wait_ms, deadline_ms) != (None, None, None)
    return dataclasses.replace(
        profile,
        work=work,
        deadline_ms=profile.deadline_ms if deadline_ms is None else deadline_ms,
        deadline_reason="set on the command line" if changed else profile.deadline_reason,
    )


def burst_schedule(size: int) -> list[float]:
    """``size`` arrivals all at offset 0: sent at once."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [0.0] * size


def parse_capacities(items: list[str], known: tuple[str, ...]) -> dict[str, float]:
    """``["seed=280", "io=900"]`` -> ``{"seed": 280.0, "io": 900.0}`` (a clear ValueError on
    anything else)."""
    capacities: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ValueError(f"--capacity {item!r}: expected PROFILE=RPS, PROFILE one of {known}")
        try:
            rps = float(value)
        except ValueError:
            raise ValueError(f"--capacity {item!r}: {value!r} is not a number") from None
        if not rps > 0:
            raise ValueError(f"--capacity {item!r}: must be > 0")
        capacities[name] = rps
    return capacities


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Durations and caps of one mode. Every step is bounded by these."""

    warmup_s: float  # start of each step excluded from the statistics
    measure_s: float  # measured part of each step
    ramp_level_s: float  # each capacity ramp level
    ramp_factor: float  # ramp growth per level
    ramp_max_levels: int
    quiesce_timeout_s: float  # longest wait for a server to go idle after a step
    quiesce_window_s: float  # idle means under 5% of a core over this long
    memory_warm_s: float  # load before reading PSS
    system_warmup_s: float  # unmeasured light load after a system starts
    bursts: int  # bursts per system
    recovery_s: float  # ordinary calls after each burst
    time_budget_s: float  # load steps that would start after this are skipped (noted)
    max_requests_per_step: int = 200_000

    def __post_init__(self) -> None:
        durations = (
            self.warmup_s,
            self.measure_s,
            self.ramp_level_s,
            self.memory_warm_s,
            self.system_warmup_s,
            self.recovery_s,
            self.quiesce_window_s,
        )
        if min(durations) <= 0:
            raise ValueError("durations must be > 0")
        if self.ramp_factor <= 1 or self.ramp_max_levels < 1 or self.max_requests_per_step < 1:
            raise ValueError("need ramp_factor > 1, ramp_max_levels >= 1, max_requests >= 1")
        if self.bursts < 1:
            raise ValueError("bursts must be >= 1")


# Quick: every profile on every system in under 3 minutes on 2 cores (short steps, a coarse
# ramp, one burst; the budget leaves ~30 s for start-up and the memory readings). Its numbers
# are for smoke-testing the bench, not for the acceptance.
QUICK = Plan(
    warmup_s=0.2,
    measure_s=0.7,
    ramp_level_s=0.7,
    ramp_factor=1.5,
    ramp_max_levels=6,
    quiesce_timeout_s=1.5,
    quiesce_window_s=0.1,
    memory_warm_s=0.5,
    system_warmup_s=0.4,
    bursts=1,
    recovery_s=1.5,
    time_budget_s=150.0,
)
# Full: long enough for queues to reach their steady state (collapse takes seconds to build);
# the recovery window is the issue's: 6 s of ordinary calls at 60/s after each burst.
FULL = Plan(
    warmup_s=3.0,
    measure_s=15.0,
    ramp_level_s=5.0,
    ramp_factor=1.12,
    ramp_max_levels=16,
    quiesce_timeout_s=15.0,
    quiesce_window_s=0.2,
    memory_warm_s=5.0,
    system_warmup_s=3.0,
    bursts=3,
    recovery_s=6.0,
    time_budget_s=3600.0,
)

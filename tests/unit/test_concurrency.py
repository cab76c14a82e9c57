"""The concurrency limit's AIMD policy, driven by synthetic dispatch-lag samples."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit._concurrency import ConcurrencyConfig, ConcurrencyLimit

CONFIG = ConcurrencyConfig()  # 2.5 ms target, grow below 1.5 ms, 250 ms windows, 5+ samples


def feed(
    limit: ConcurrencyLimit, lag_s: float, *, saturated: bool, start: float, windows: int
) -> float:
    """Feed ``windows`` full windows of 10 equal samples each; return the time reached."""
    now = start
    for _ in range(windows):
        for _ in range(10):
            now += CONFIG.window_s / 9.9  # the 10th sample closes the window, float sums aside
            limit.observe(lag_s, saturated=saturated, now=now)
    return now


def test_starts_with_every_thread() -> None:
    assert ConcurrencyLimit(8, 0.0).limit == 8


def test_a_lagging_dispatcher_shrinks_the_limit_multiplicatively_to_the_floor() -> None:
    limit = ConcurrencyLimit(16, 0.0)
    now = feed(limit, 0.010, saturated=True, start=0.0, windows=1)
    assert limit.limit == 12  # 16 x 0.75
    now = feed(limit, 0.010, saturated=True, start=now, windows=1)
    assert limit.limit == 9
    feed(limit, 0.010, saturated=True, start=now, windows=20)
    assert limit.limit == CONFIG.min_limit


def test_small_limits_still_shrink_by_one() -> None:
    limit = ConcurrencyLimit(3, 0.0, ConcurrencyConfig(min_limit=1))
    now = feed(limit, 0.010, saturated=True, start=0.0, windows=1)
    assert limit.limit == 2  # floor(3 x 0.75) = 2
    feed(limit, 0.010, saturated=True, start=now, windows=1)
    assert limit.limit == 1


def test_the_floor_is_capped_by_the_threads() -> None:
    limit = ConcurrencyLimit(2, 0.0)  # min_limit 2 = 2 threads: nothing to shrink
    feed(limit, 0.010, saturated=True, start=0.0, windows=3)
    assert limit.limit == 2


def test_a_quick_dispatcher_grows_the_limit_by_one_only_when_calls_wait() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = feed(limit, 0.010, saturated=True, start=0.0, windows=3)
    low = limit.limit
    now = feed(limit, 0.0002, saturated=False, start=now, windows=5)
    assert limit.limit == low  # no demand: no reason to grow
    now = feed(limit, 0.0002, saturated=True, start=now, windows=2)
    assert limit.limit == low + 2
    feed(limit, 0.0002, saturated=True, start=now, windows=50)
    assert limit.limit == 8  # never above the thread count


def test_a_lag_between_half_and_the_whole_target_holds() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = feed(limit, 0.010, saturated=True, start=0.0, windows=1)
    held = limit.limit
    feed(limit, 0.002, saturated=True, start=now, windows=10)
    assert limit.limit == held


def test_the_window_is_judged_on_its_90th_percentile() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = 0.0
    for i in range(20):  # one slow sample in 20: a hiccup, not a convoy
        now += CONFIG.window_s / 19.9
        limit.observe(0.050 if i == 3 else 0.0001, saturated=True, now=now)
    assert limit.limit == 8
    for i in range(20):  # 3 in 20 slow: above the 90th percentile
        now += CONFIG.window_s / 19.9
        limit.observe(0.050 if i % 7 == 0 else 0.0001, saturated=True, now=now)
    assert limit.limit == 6


def test_too_few_samples_extend_the_window() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    assert not limit.observe(0.010, saturated=True, now=1.0)  # 1 sample, long after the start
    for i in range(3):
        assert not limit.observe(0.010, saturated=True, now=1.0 + i)
    assert limit.observe(0.010, saturated=True, now=5.0)  # the fifth sample judges
    assert limit.limit == 6


def test_one_thread_is_never_limited_below_itself() -> None:
    limit = ConcurrencyLimit(1, 0.0)
    feed(limit, 0.010, saturated=True, start=0.0, windows=5)
    assert limit.limit == 1


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="threads"):
        ConcurrencyLimit(0, 0.0)
    with pytest.raises(ValueError, match="target_lag_s"):
        ConcurrencyConfig(target_lag_s=0.0)
    with pytest.raises(ValueError, match="decrease"):
        ConcurrencyConfig(decrease=1.0)
    with pytest.raises(ValueError, match="min_limit"):
        ConcurrencyConfig(min_limit=0)
    with pytest.raises(ValueError, match="lag"):
        ConcurrencyLimit(4, 0.0).observe(float("nan"), saturated=False, now=0.0)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    threads=st.integers(1, 32),
    samples=st.lists(st.tuples(st.floats(-0.001, 0.1), st.booleans()), max_size=300),
)
def test_the_limit_stays_within_its_bounds(threads: int, samples: list[tuple[float, bool]]) -> None:
    limit = ConcurrencyLimit(threads, 0.0)
    now = 0.0
    for lag, saturated in samples:
        now += 0.01
        before = limit.limit
        changed = limit.observe(lag, saturated=saturated, now=now)
        assert changed == (limit.limit != before)
        assert min(threads, CONFIG.min_limit) <= limit.limit <= threads
        assert limit.limit <= before + 1  # additive increase


def test_a_seeded_load_settles_between_the_floor_and_the_threads() -> None:
    """A toy GIL: the lag grows with the running limit; the limit settles where it is ~target."""
    rng = random.Random(7)
    limit = ConcurrencyLimit(16, 0.0, ConcurrencyConfig(min_limit=1))
    now, seen = 0.0, []
    for _ in range(4000):
        now += 0.002
        lag = 0.0006 * limit.limit * rng.uniform(0.5, 1.5)  # 0.6 ms per running handler
        limit.observe(lag, saturated=True, now=now)
        seen.append(limit.limit)
    settled = seen[len(seen) // 2 :]
    assert min(settled) >= 2
    assert max(settled) <= 4


def runs(limit: ConcurrencyLimit, wall_s: float, cpu_s: float, count: int = 20) -> None:
    for _ in range(count):
        limit.observe_run(wall_s, cpu_s)


def test_the_work_floor_keeps_enough_handlers_to_fill_a_core() -> None:
    """5 ms of CPU in 25 ms: five handlers keep a core busy, so a lagging dispatcher
    cannot push the limit below five."""
    limit = ConcurrencyLimit(8, 0.0)
    runs(limit, 0.025, 0.005)
    now = feed(limit, 0.001, saturated=False, start=0.0, windows=1)  # learnt while quick
    for _ in range(10):
        runs(limit, 0.025, 0.005)
        now = feed(limit, 0.010, saturated=True, start=now, windows=1)
    assert limit.floor == 5
    assert limit.limit == 5


def test_the_work_floor_reads_a_low_quantile_so_gil_waits_do_not_raise_it() -> None:
    """Runs that waited for the GIL look like more waiting; the low quantile ignores them."""
    limit = ConcurrencyLimit(16, 0.0)
    now = 0.0
    for _ in range(10):
        runs(limit, 0.025, 0.005, count=5)  # uncontended: ratio 5
        runs(limit, 0.060, 0.005, count=35)  # contended: ratio 12
        now = feed(limit, 0.002, saturated=False, start=now, windows=1)
    assert limit.floor == 5


def test_the_work_floor_is_held_while_the_dispatcher_lags() -> None:
    """Under a lagging dispatcher every run waits for the GIL: those runs do not move the
    floor, or it would climb with the contention it is meant to bound."""
    limit = ConcurrencyLimit(16, 0.0)
    runs(limit, 0.025, 0.005)
    now = feed(limit, 0.001, saturated=False, start=0.0, windows=1)
    for _ in range(20):
        runs(limit, 0.080, 0.005)  # ratio 16
        now = feed(limit, 0.010, saturated=True, start=now, windows=1)
    assert (limit.floor, limit.limit) == (5, 5)


def test_io_bound_handlers_keep_every_thread_and_cpu_bound_ones_go_to_min_limit() -> None:
    io = ConcurrencyLimit(8, 0.0)
    cpu = ConcurrencyLimit(8, 0.0)
    now = 0.0
    for _ in range(10):
        runs(io, 0.050, 0.0)  # no measurable CPU
        runs(cpu, 0.005, 0.005)
        feed(io, 0.001, saturated=True, start=now, windows=1)
        feed(io, 0.010, saturated=True, start=now + 1, windows=1)
        feed(cpu, 0.001, saturated=False, start=now, windows=1)
        now = feed(cpu, 0.010, saturated=True, start=now + 1, windows=1)
    assert (io.floor, io.limit) == (8, 8)
    assert (cpu.floor, cpu.limit) == (CONFIG.min_limit, CONFIG.min_limit)


def test_a_rising_floor_lifts_the_limit_and_without_runs_the_floor_holds() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = feed(limit, 0.010, saturated=True, start=0.0, windows=10)
    assert limit.limit == CONFIG.min_limit  # no runs seen yet: the floor is min_limit
    runs(limit, 0.030, 0.005)  # ratio 6
    now = feed(limit, 0.002, saturated=False, start=now, windows=1)
    assert limit.limit == 6
    now = feed(limit, 0.010, saturated=True, start=now, windows=3)  # no runs: floor kept
    assert (limit.floor, limit.limit) == (6, 6)


def test_the_work_floor_can_be_turned_off() -> None:
    limit = ConcurrencyLimit(8, 0.0, ConcurrencyConfig(work_floor_quantile=None))
    now = 0.0
    for _ in range(10):
        runs(limit, 0.025, 0.005)
        now = feed(limit, 0.001, saturated=False, start=now, windows=1)
        now = feed(limit, 0.010, saturated=True, start=now, windows=1)
    assert limit.limit == CONFIG.min_limit
    with pytest.raises(ValueError, match="work_floor_quantile"):
        ConcurrencyConfig(work_floor_quantile=1.0)
    with pytest.raises(ValueError, match="finite"):
        ConcurrencyLimit(8, 0.0).observe_run(float("nan"), 0.001)

"""The concurrency limit's AIMD policy, driven by synthetic dispatch-lag samples."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.server._concurrency import ConcurrencyConfig, ConcurrencyLimit

CONFIG = ConcurrencyConfig()  # 2 ms target, grow below 1.2 ms, 250 ms windows, 5+ samples


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
    feed(limit, 0.0016, saturated=True, start=now, windows=10)  # 1.2 ms < p90 <= 2 ms
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


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"target_lag_s": -0.001}, ValueError, "target_lag_s"),
        ({"window_s": float("inf")}, ValueError, "window_s"),
        ({"increase_below": 0.0}, ValueError, "increase_below"),
        ({"increase_below": 1.5}, ValueError, "increase_below"),
        ({"decrease": 0.0}, ValueError, "decrease"),
        ({"min_samples": 0}, ValueError, "min_samples"),
        ({"min_limit": True}, TypeError, "min_limit"),
        ({"target_lag_s": "2ms"}, TypeError, "target_lag_s"),
    ],
)
def test_config_validation_names_the_field(
    kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=f"ConcurrencyConfig.{field}"):
        ConcurrencyConfig(**kwargs)  # type: ignore[arg-type]

"""The concurrency limit's AIMD policy, driven by synthetic dispatch-lag samples."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rpckit.server._concurrency import (
    FAST_DECREASE_ABOVE,
    HANDLERS_BUSY_CPU_SHARE,
    IDLE_HEADROOM,
    SLOW_START_BELOW,
    ConcurrencyConfig,
    ConcurrencyLimit,
    counted_lag,
)

CONFIG = ConcurrencyConfig()  # 3 ms target, grow below 1.8 ms, 250 ms windows, 5+ samples
# Lags (window p90s) in each band of the default config:
IDLE = 0.0002  # below SLOW_START_BELOW x target (0.75 ms): the limit doubles if calls wait
QUICK = 0.0012  # between that and increase_below x target (1.8 ms): it grows by one
HOLD = 0.0024  # between 1.8 ms and the 3 ms target: it holds
LAGGING = 0.005  # over the target, below FAST_DECREASE_ABOVE x target (9 ms): x decrease
CONVOY = 0.012  # over 9 ms: it halves


def feed(
    limit: ConcurrencyLimit,
    lag_s: float,
    *,
    saturated: bool,
    start: float,
    windows: int,
    busy: int | None = None,
) -> float:
    """Feed ``windows`` full windows of 10 equal samples each; return the time reached."""
    now = start
    for _ in range(windows):
        for _ in range(10):
            now += CONFIG.window_s / 9.9  # the 10th sample closes the window, float sums aside
            limit.observe(lag_s, saturated=saturated, now=now, busy=busy)
    return now


def test_the_bands_match_the_config() -> None:
    target = CONFIG.target_lag_s
    assert IDLE < SLOW_START_BELOW * target < QUICK < CONFIG.increase_below * target < HOLD
    assert HOLD < target < LAGGING < FAST_DECREASE_ABOVE * target < CONVOY


def test_starts_with_every_thread_or_where_told() -> None:
    assert ConcurrencyLimit(8, 0.0).limit == 8
    assert ConcurrencyLimit(32, 0.0, start=8).limit == 8
    assert ConcurrencyLimit(4, 0.0, start=8).limit == 4  # never above the threads
    assert ConcurrencyLimit(32, 0.0, start=1).limit == CONFIG.min_limit  # nor below the floor
    assert ConcurrencyLimit(1, 0.0, start=8).limit == 1


def test_a_lagging_dispatcher_shrinks_the_limit_multiplicatively_to_the_floor() -> None:
    limit = ConcurrencyLimit(16, 0.0)
    now = feed(limit, LAGGING, saturated=True, start=0.0, windows=1)
    assert limit.limit == 12  # 16 x 0.75
    now = feed(limit, LAGGING, saturated=True, start=now, windows=1)
    assert limit.limit == 9
    feed(limit, LAGGING, saturated=True, start=now, windows=20)
    assert limit.limit == CONFIG.min_limit


def test_a_convoy_halves_the_limit_to_the_floor() -> None:
    """A limit grown large for I/O-bound calls meets CPU-bound ones: back off fast."""
    limit = ConcurrencyLimit(64, 0.0)
    now, seen = 0.0, []
    for _ in range(6):
        now = feed(limit, CONVOY, saturated=True, start=now, windows=1)
        seen.append(limit.limit)
    assert seen == [32, 16, 8, 4, 2, 2]


def test_small_limits_still_shrink_by_one() -> None:
    limit = ConcurrencyLimit(3, 0.0, ConcurrencyConfig(min_limit=1))
    now = feed(limit, LAGGING, saturated=True, start=0.0, windows=1)
    assert limit.limit == 2  # floor(3 x 0.75) = 2
    feed(limit, LAGGING, saturated=True, start=now, windows=1)
    assert limit.limit == 1
    limit = ConcurrencyLimit(3, 0.0, ConcurrencyConfig(min_limit=1))
    now = feed(limit, CONVOY, saturated=True, start=0.0, windows=1)
    assert limit.limit == 1  # floor(3 x 0.5)


def test_the_floor_is_capped_by_the_threads() -> None:
    limit = ConcurrencyLimit(2, 0.0)  # min_limit 2 = 2 threads: nothing to shrink
    feed(limit, 0.010, saturated=True, start=0.0, windows=3)
    assert limit.limit == 2


def test_a_quick_dispatcher_grows_the_limit_by_one_only_when_calls_wait() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = feed(limit, LAGGING, saturated=True, start=0.0, windows=3)
    low = limit.limit
    assert low == 3  # 8 -> 6 -> 4 -> 3
    now = feed(limit, QUICK, saturated=False, start=now, windows=5)
    assert limit.limit == low  # no demand: no reason to grow
    now = feed(limit, QUICK, saturated=True, start=now, windows=2)
    assert limit.limit == low + 2
    feed(limit, QUICK, saturated=True, start=now, windows=50)
    assert limit.limit == 8  # never above the thread count


def test_an_idle_dispatcher_doubles_the_limit_only_when_calls_wait() -> None:
    """Slow start: handlers that wait on I/O leave the GIL idle, so room grows fast."""
    limit = ConcurrencyLimit(200, 0.0, start=8)
    now = feed(limit, IDLE, saturated=False, start=0.0, windows=5)
    assert limit.limit == 8  # no demand: no reason to grow
    seen = []
    for _ in range(6):
        now = feed(limit, IDLE, saturated=True, start=now, windows=1)
        seen.append(limit.limit)
    assert seen == [16, 32, 64, 128, 200, 200]  # capped at the threads


def test_the_worst_state_recovers_by_slow_start() -> None:
    """Driven to the floor by a convoy, the limit is back at every thread within a few
    windows once the lag is gone and calls wait."""
    limit = ConcurrencyLimit(256, 0.0)
    now = feed(limit, CONVOY, saturated=True, start=0.0, windows=20)
    assert limit.limit == CONFIG.min_limit
    windows = 0
    while limit.limit < 256:
        now = feed(limit, IDLE, saturated=True, start=now, windows=1)
        windows += 1
    assert windows == 7  # 2 -> 4 -> ... -> 128 -> 256: log2(256 / 2) windows


def test_a_lag_no_waiting_call_caused_brings_the_limit_down_only_to_what_ran() -> None:
    """The worst input for a lag signal: a neighbour process (or the dispatcher's own work)
    lags the GIL while the calls here wait on I/O and none wanted more room. The limit
    must not throttle them; it only comes down to the most that ran, plus headroom."""
    limit = ConcurrencyLimit(256, 0.0)
    now = feed(limit, CONVOY, saturated=False, busy=10, start=0.0, windows=1)
    assert limit.limit == 10 + IDLE_HEADROOM
    now = feed(limit, CONVOY, saturated=False, busy=10, start=now, windows=20)
    assert limit.limit == 10 + IDLE_HEADROOM  # no further, however long it lasts
    # Calls waited, but the limit never bound (fewer ran than it allowed): the same.
    now = feed(limit, CONVOY, saturated=True, busy=5, start=now, windows=1)
    assert limit.limit == 5 + IDLE_HEADROOM
    # At the limit with calls waiting: now it is the calls here, and it halves.
    now = feed(limit, CONVOY, saturated=True, busy=9, start=now, windows=1)
    assert limit.limit == 4
    # Without a running count every sample counts as the limit reached.
    feed(limit, LAGGING, saturated=False, start=now, windows=3)
    assert limit.limit == 4
    floor = ConcurrencyLimit(256, 0.0)
    feed(floor, CONVOY, saturated=False, busy=0, start=0.0, windows=1)
    assert floor.limit == IDLE_HEADROOM  # none ran: the headroom ...
    high_floor = ConcurrencyLimit(256, 0.0, ConcurrencyConfig(min_limit=IDLE_HEADROOM + 2))
    feed(high_floor, CONVOY, saturated=False, busy=0, start=0.0, windows=1)
    assert high_floor.limit == IDLE_HEADROOM + 2  # ... and never below min_limit


def test_a_lag_between_the_growth_band_and_the_target_holds() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = feed(limit, LAGGING, saturated=True, start=0.0, windows=1)
    held = limit.limit
    feed(limit, HOLD, saturated=True, start=now, windows=10)  # 1.8 ms < p90 <= 3 ms
    assert limit.limit == held


@pytest.mark.parametrize(
    ("lag", "after"),
    [
        (CONFIG.target_lag_s * SLOW_START_BELOW * 0.999, 16),
        (CONFIG.target_lag_s * SLOW_START_BELOW, 9),  # not below: one more
        (CONFIG.target_lag_s * CONFIG.increase_below * 0.999, 9),
        (CONFIG.target_lag_s * CONFIG.increase_below, 8),  # not below: holds
        (CONFIG.target_lag_s, 8),  # not over: holds
        (CONFIG.target_lag_s * 1.001, 6),
        (CONFIG.target_lag_s * FAST_DECREASE_ABOVE, 6),  # not over: x 0.75
        (CONFIG.target_lag_s * FAST_DECREASE_ABOVE * 1.001, 4),
    ],
)
def test_band_edges(lag: float, after: int) -> None:
    limit = ConcurrencyLimit(32, 0.0, start=8)
    feed(limit, lag, saturated=True, start=0.0, windows=1)
    assert limit.limit == after


def test_the_window_is_judged_on_its_90th_percentile() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    now = 0.0
    for i in range(20):  # one slow sample in 20: a hiccup, not a convoy
        now += CONFIG.window_s / 19.9
        limit.observe(0.050 if i == 3 else 0.0001, saturated=True, now=now)
    assert limit.limit == 8
    for i in range(20):  # 3 in 20 lagging: above the 90th percentile
        now += CONFIG.window_s / 19.9
        limit.observe(LAGGING if i % 7 == 0 else 0.0001, saturated=True, now=now)
    assert limit.limit == 6


def test_too_few_samples_extend_the_window() -> None:
    limit = ConcurrencyLimit(8, 0.0)
    assert not limit.observe(LAGGING, saturated=True, now=1.0)  # 1 sample, long after the start
    for i in range(3):
        assert not limit.observe(LAGGING, saturated=True, now=1.0 + i)
    assert limit.observe(LAGGING, saturated=True, now=5.0)  # the fifth sample judges
    assert limit.limit == 6


def test_one_thread_is_never_limited_below_itself() -> None:
    limit = ConcurrencyLimit(1, 0.0)
    now = feed(limit, CONVOY, saturated=True, start=0.0, windows=5)
    assert limit.limit == 1
    feed(limit, IDLE, saturated=True, start=now, windows=5)
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


# Lags drawn from every band, so windows of each kind are judged.
band_lags = st.sampled_from([0.0, IDLE, QUICK, HOLD, LAGGING, CONVOY]) | st.floats(-0.001, 0.1)


def expected_limit(before: int, p90: float, wanted: bool, busiest: int, threads: int) -> int:
    """The rules of the module docstring, band by band (default config)."""
    target, floor = CONFIG.target_lag_s, min(threads, CONFIG.min_limit)
    if p90 > target and wanted and busiest >= before:  # the calls here crowd the GIL
        factor = 0.5 if p90 > FAST_DECREASE_ABOVE * target else CONFIG.decrease
        return max(floor, min(before - 1, math.floor(before * factor)))
    if p90 > target:  # not the calls' doing: down to what ran, with headroom
        return max(floor, min(before, busiest + IDLE_HEADROOM))
    if wanted and p90 < SLOW_START_BELOW * target:
        return min(threads, 2 * before)
    if wanted and p90 < CONFIG.increase_below * target:
        return min(threads, before + 1)
    return before


# Batches of samples: one lag for each of ``count`` samples, whether calls wanted more room
# (said by the batch's first sample) and the calls running at each (None: the limit).
batches = st.lists(
    st.tuples(band_lags, st.integers(1, 40), st.booleans(), st.none() | st.integers(0, 70)),
    max_size=25,
)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(threads=st.integers(1, 64), start=st.none() | st.integers(1, 64), batches=batches)
def test_each_window_moves_the_limit_by_its_band(
    threads: int, start: int | None, batches: list[tuple[float, int, bool, int | None]]
) -> None:
    limit = ConcurrencyLimit(threads, 0.0, start=start)
    floor = min(threads, CONFIG.min_limit)
    assert limit.limit == (threads if start is None else max(floor, min(threads, start)))
    window: list[float] = []
    wanted, busiest = False, 0  # of the window so far
    window_start = now = 0.0
    for lag, count, wants, busy in batches:
        for i in range(count):
            now += 0.01
            before = limit.limit
            window.append(max(0.0, lag))
            wanted = wanted or (wants and i == 0)
            busiest = max(busiest, before if busy is None else busy)
            changed = limit.observe(lag, saturated=wants and i == 0, now=now, busy=busy)
            assert changed == (limit.limit != before)
            assert floor <= limit.limit <= threads
            if now - window_start < CONFIG.window_s or len(window) < CONFIG.min_samples:
                assert limit.limit == before  # judged only once per window
                continue
            p90 = sorted(window)[min(len(window) - 1, int(0.9 * len(window)))]
            assert limit.limit == expected_limit(before, p90, wanted, busiest, threads)
            window, wanted, busiest, window_start = [], False, 0, now


@settings(deadline=None, max_examples=200, derandomize=True)
@example(decrease=0.75, limit_before=16, lags=(LAGGING, CONVOY))  # the default: 12, then 8
@example(decrease=0.3, limit_before=16, lags=(LAGGING, CONVOY))  # 4 (x 0.3), then 8 (halved)
@given(
    decrease=st.floats(0.05, 0.95),
    limit_before=st.integers(2, 64),
    lags=st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 0.05)),
)
def test_property_a_laggier_window_never_leaves_a_larger_limit(
    decrease: float, limit_before: int, lags: tuple[float, float]
) -> None:
    """Monotonic in the lag: a convoy must shrink the limit at least as much as a lag just
    over the target does, whatever ``decrease`` is configured."""
    config = ConcurrencyConfig(decrease=decrease, min_limit=1)
    after = []
    for lag in sorted(lags):
        limit = ConcurrencyLimit(64, 0.0, config, start=limit_before)
        feed(limit, lag, saturated=True, start=0.0, windows=1)
        after.append(limit.limit)
    assert after[1] <= after[0]


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


# ---------------------------------------------------------------- which lateness counts


def test_the_wait_for_the_gil_always_counts() -> None:
    for standing in (False, True):
        for share in (0.0, 0.5):
            counted = counted_lag(0.005, 0.003, standing=standing, handlers_cpu_share=share)
            assert counted >= 0.002


def test_the_wait_for_a_core_counts_only_in_a_standing_queue_of_busy_handlers() -> None:
    busy = HANDLERS_BUSY_CPU_SHARE
    assert counted_lag(0.005, 0.004, standing=True, handlers_cpu_share=busy) == 0.005
    assert counted_lag(0.005, 0.004, standing=False, handlers_cpu_share=1.0) == pytest.approx(0.001)
    # Handlers that sleep: a neighbour's load is not theirs to pay for.
    assert counted_lag(0.005, 0.004, standing=True, handlers_cpu_share=busy / 2) == (
        pytest.approx(0.001)
    )
    assert counted_lag(0.003, 0.004, standing=True, handlers_cpu_share=0.0) == 0.0


def test_sleeping_handlers_under_a_busy_neighbour_get_room_again() -> None:
    """Worst input: the limit is full of calls that sleep, a queue stands, and another
    process keeps every probe waiting ~8 ms for a core. Counting that wait shrank the
    limit to its floor and held it there; counted as it is now, the limit grows."""
    limit = ConcurrencyLimit(16, 0.0, start=8)
    now = 0.0
    for _ in range(8):
        for _ in range(10):
            now += CONFIG.window_s / 9.9
            lag = counted_lag(0.0082, 0.008, standing=True, handlers_cpu_share=0.01)
            limit.observe(lag, saturated=True, now=now, busy=limit.limit)
    assert limit.limit == 16
    # The same lateness with handlers that compute: the limit comes down, as before.
    busy = ConcurrencyLimit(16, 0.0, start=8)
    for _ in range(8):
        for _ in range(10):
            now += CONFIG.window_s / 9.9
            lag = counted_lag(0.0082, 0.008, standing=True, handlers_cpu_share=0.9)
            busy.observe(lag, saturated=True, now=now, busy=busy.limit)
    assert busy.limit == CONFIG.min_limit


def test_room_for_calls_that_wait_grows_whatever_the_lag() -> None:
    """Worst input: every running call sleeps on a downstream, more want room, and the
    machine is so busy that even the GIL comes late (lag far over the target). The
    sleeping calls cost the dispatcher nothing: each measurement of the handlers' CPU
    that finds them idle doubles the limit at once (CoDel would refuse within 100 ms)."""
    limit = ConcurrencyLimit(64, 0.0, start=8)
    now = 0.01
    assert limit.observe(CONVOY, saturated=True, now=now, busy=8, handlers_cpu_now=0.02)
    assert limit.limit == 16  # at once, not at the window's end
    assert not limit.observe(CONVOY, saturated=True, now=now + 0.01, busy=16)
    assert limit.limit == 16  # one doubling per measurement
    assert limit.observe(CONVOY, saturated=True, now=now + 0.02, busy=16, handlers_cpu_now=0.0)
    assert limit.limit == 32
    # Not saturated, or not full: a measurement is no reason to grow.
    assert not limit.observe(CONVOY, saturated=False, now=now + 0.03, busy=32, handlers_cpu_now=0)
    assert not limit.observe(CONVOY, saturated=True, now=now + 0.04, busy=20, handlers_cpu_now=0)
    # Once the calls let in compute, the convoy halves the limit at the window's end.
    limit.observe(CONVOY, saturated=True, now=now + 0.05, busy=32, handlers_cpu_now=0.8)
    assert limit.limit == 32
    for _ in range(10):
        now += CONFIG.window_s / 9.9
        limit.observe(CONVOY, saturated=True, now=now, busy=32, handlers_cpu_share=0.8)
    assert limit.limit == 16


def test_waiting_handlers_double_the_limit_each_window_too() -> None:
    """Measured every sample (as before windows), a saturated window of idle handlers
    ends doubled; never past the threads."""
    limit = ConcurrencyLimit(16, 0.0, start=16)
    now = 0.0
    for _ in range(10):
        now += CONFIG.window_s / 9.9
        limit.observe(CONVOY, saturated=True, now=now, busy=16, handlers_cpu_share=0.0)
    assert limit.limit == 16


def test_a_noisy_host_sets_the_baseline_the_lag_is_judged_above() -> None:
    """Worst input: the host takes the vCPUs away now and then (steal, which no thread's
    scheduler statistics show), so every probe is ~4 ms late however little runs here.
    Quiet samples (at most one call running) show that lateness; above it, light load
    lags nothing, and calls that want room get it instead of a limit at its floor."""
    noisy = 0.004
    limit = ConcurrencyLimit(64, 0.0, start=8)
    now = 0.0
    for _ in range(8):  # windows alternating quiet moments and calls waiting at the limit
        for i in range(10):
            now += CONFIG.window_s / 9.9
            quiet = i % 2 == 0
            limit.observe(
                noisy, saturated=not quiet, now=now, busy=1 if quiet else limit.limit, quiet=quiet
            )
    assert limit.baseline(now) == pytest.approx(noisy)
    assert limit.limit > 8  # grew: the lag above the baseline is ~0
    # Judged against zero (no quiet samples), the same lag shrinks it to its floor.
    blind = ConcurrencyLimit(64, 0.0, start=8)
    feed(blind, noisy, saturated=True, start=0.0, windows=8, busy=8)
    assert blind.limit == CONFIG.min_limit


def test_a_convoy_above_a_noisy_baseline_still_shrinks_the_limit() -> None:
    limit = ConcurrencyLimit(64, 0.0, start=16)
    now = 0.0
    for _ in range(3):
        for i in range(10):
            now += CONFIG.window_s / 9.9
            quiet = i < 5
            lag = 0.004 if quiet else 0.004 + CONVOY
            limit.observe(lag, saturated=not quiet, now=now, busy=1 if quiet else 16, quiet=quiet)
    assert limit.limit == 2  # 16 -> 8 -> 4 -> 2: 10 ms above the 4 ms baseline is a convoy


def test_the_baseline_forgets_a_noisy_spell_and_needs_enough_quiet_samples() -> None:
    limit = ConcurrencyLimit(64, 0.0, start=8)
    for i in range(4):
        limit.observe(0.004, saturated=False, now=0.01 * (i + 1), busy=1, quiet=True)
    assert limit.baseline(0.05) == 0.0  # four quiet samples: too few to judge by
    limit.observe(0.004, saturated=False, now=0.05, busy=1, quiet=True)
    assert limit.baseline(0.05) == pytest.approx(0.004)
    assert limit.baseline(0.05 + CONFIG.baseline_window_s + 0.001) == 0.0  # gone after 1 s
    # Once forgotten, a lagging saturated server shrinks as it always did.
    feed(limit, LAGGING, saturated=True, start=2.0, windows=1, busy=8)
    assert limit.limit == 6
    with pytest.raises(ValueError, match="baseline_window_s"):
        ConcurrencyConfig(baseline_window_s=0.0)

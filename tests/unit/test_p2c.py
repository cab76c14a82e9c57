"""Unit tests of the P2C picker and peak-EWMA load (rpckit.client._p2c), seeded simulation."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.client._p2c import BackendLoad, PickerConfig, pick

CONFIG = PickerConfig()


def load_with(latency_s: float, *, now: float = 0.0, outstanding: int = 0) -> BackendLoad:
    """A backend whose first reply took ``latency_s``, with ``outstanding`` calls in flight."""
    load = BackendLoad(now, CONFIG)
    load.start(now)
    load.finish(latency_s, now)
    for _ in range(outstanding):
        load.start(now)
    return load


# ---------------------------------------------------------------- config


def test_config_defaults_follow_design() -> None:
    assert (CONFIG.decay_s, CONFIG.initial_latency_s, CONFIG.report_ttl_s) == (10.0, 0.030, 2.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decay_s", 0.0),
        ("decay_s", math.inf),
        ("initial_latency_s", -0.001),
        ("initial_latency_s", 0.0),
        ("report_ttl_s", -1.0),
        ("report_ttl_s", math.nan),
    ],
)
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PickerConfig(**{field: value})


def test_config_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="decay_s"):
        PickerConfig(decay_s="10")  # type: ignore[arg-type]


# ---------------------------------------------------------------- peak-EWMA


def test_new_backend_starts_at_initial_latency() -> None:
    load = BackendLoad(5.0, CONFIG)
    assert load.latency == 0.030
    assert load.latency_at(5.0) == 0.030
    assert load.cost(5.0) == pytest.approx(0.030)


def test_initial_estimate_decays_so_new_backends_get_tried() -> None:
    load = BackendLoad(0.0, CONFIG)
    assert load.latency_at(10.0) == pytest.approx(0.030 * math.exp(-1))


@pytest.mark.parametrize("first", [0.001, 0.5])
def test_first_reply_replaces_the_prior(first: float) -> None:
    load = BackendLoad(0.0, CONFIG)
    load.start(0.0)
    load.finish(first, 0.001)
    assert load.latency == first


def test_sample_above_estimate_jumps_to_it() -> None:
    load = load_with(0.010)
    load.start(1.0)
    load.finish(0.200, 1.0)
    assert load.latency == 0.200


def test_sample_below_estimate_is_averaged_with_time_weight() -> None:
    load = load_with(0.100, now=0.0)
    load.start(5.0)
    load.finish(0.010, 5.0)
    current = 0.100 * math.exp(-0.5)  # decayed for 5 s of the 10 s time constant
    weight = math.exp(-0.5)
    assert load.latency == pytest.approx(current * weight + 0.010 * (1 - weight))
    assert 0.010 < load.latency < current


def test_a_burst_of_fast_samples_barely_moves_a_peak() -> None:
    # Peak sensitivity: 10 fast replies within 10 ms do not erase a slow one.
    load = load_with(0.500, now=0.0)
    for i in range(10):
        load.start(0.001 * i)
        load.finish(0.005, 0.001 * (i + 1))
    assert load.latency > 0.49


def test_idle_estimate_decays_toward_zero() -> None:
    load = load_with(1.0, now=0.0)
    assert load.latency_at(10.0) == pytest.approx(math.exp(-1))
    assert load.latency_at(50.0) < 0.01
    assert load.latency == 1.0  # the stored value is untouched by reading


def test_outstanding_counts_started_calls() -> None:
    load = BackendLoad(0.0, CONFIG)
    for _ in range(3):
        load.start(0.0)
    load.finish(0.01, 0.01)
    load.abandon()
    assert load.outstanding == 1


def test_abandon_keeps_the_latency_estimate() -> None:
    load = load_with(0.050)
    load.start(1.0)
    load.abandon()
    assert (load.latency, load.outstanding) == (0.050, 0)


def test_end_without_start_is_an_error() -> None:
    load = BackendLoad(0.0, CONFIG)
    with pytest.raises(ValueError, match="finish"):
        load.finish(0.01, 0.0)
    with pytest.raises(ValueError, match="abandon"):
        load.abandon()


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_finish_rejects_impossible_latency(bad: float) -> None:
    load = BackendLoad(0.0, CONFIG)
    load.start(0.0)
    with pytest.raises(ValueError, match="latency_s"):
        load.finish(bad, 0.0)
    assert load.outstanding == 1  # nothing changed


def test_cost_counts_outstanding_and_fresh_reported_queue() -> None:
    load = load_with(0.010, outstanding=2)
    assert load.cost(0.0) == pytest.approx(0.010 * 3)
    load.report(4, 0.0)
    assert load.cost(0.0) == pytest.approx(0.010 * 7)
    assert load.reported_queue_depth(2.0) == 4  # exactly at the TTL: still fresh
    assert load.reported_queue_depth(2.001) == 0
    assert load.cost(2.001) == pytest.approx(0.010 * math.exp(-0.2001) * 3)


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_report_rejects_bad_depth(bad: int) -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        BackendLoad(0.0, CONFIG).report(bad, 0.0)


@settings(deadline=None)
@given(
    first=st.floats(0.0, 10.0),
    gap=st.floats(0.0, 100.0),
    sample=st.floats(0.0, 10.0),
    other=st.floats(0.0, 10.0),
)
def test_update_is_peak_sensitive_bounded_and_monotone(
    first: float, gap: float, sample: float, other: float
) -> None:
    def after(x: float) -> float:
        load = load_with(first, now=0.0)
        load.start(gap)
        load.finish(x, gap)
        return load.latency

    current = load_with(first, now=0.0).latency_at(gap)
    new = after(sample)
    if sample >= current:
        assert new == sample
    else:
        assert sample <= new <= current
    # A slower reply never leaves a lower estimate than a faster one.
    low, high = sorted((sample, other))
    assert after(low) <= after(high)


# ---------------------------------------------------------------- pick


def test_pick_none_and_one() -> None:
    rng = random.Random(1)
    loads = [load_with(0.01), load_with(0.02)]
    assert pick(loads, [], rng, 0.0) is None
    assert pick(loads, [1], rng, 0.0) == 1


def test_pick_of_two_takes_the_cheaper() -> None:
    rng = random.Random(2)
    loads = [load_with(0.010, outstanding=5), load_with(0.020)]  # costs 0.060 vs 0.020
    assert {pick(loads, [0, 1], rng, 0.0) for _ in range(50)} == {1}


def test_pick_uses_reported_queue_depth() -> None:
    rng = random.Random(3)
    loads = [load_with(0.010), load_with(0.010)]
    loads[0].report(3, 0.0)
    assert {pick(loads, [0, 1], rng, 0.0) for _ in range(50)} == {1}
    assert 0 in {pick(loads, [0, 1], rng, 5.0) for _ in range(50)}  # report went stale


def test_ties_are_broken_at_random() -> None:
    rng = random.Random(4)
    loads = [BackendLoad(0.0, CONFIG), BackendLoad(0.0, CONFIG)]
    counts = Counter(pick(loads, [0, 1], rng, 0.0) for _ in range(2000))
    assert 850 < counts[0] < 1150


def test_pick_rejects_indices_outside_loads() -> None:
    loads = [load_with(0.01)]
    with pytest.raises(ValueError, match="outside"):
        pick(loads, [3], random.Random(5), 0.0)
    with pytest.raises(ValueError, match="outside"):
        pick(loads, [0, -1], random.Random(5), 0.0)


@settings(deadline=None, max_examples=200)
@given(
    latencies=st.lists(st.floats(0.0001, 5.0), min_size=1, max_size=12),
    outstanding=st.lists(st.integers(0, 20), min_size=12, max_size=12),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_pick_is_eligible_and_never_the_unique_worst(
    latencies: list[float], outstanding: list[int], data: st.DataObject, seed: int
) -> None:
    loads = [
        load_with(lat, outstanding=out)
        for lat, out in zip(latencies, outstanding[: len(latencies)], strict=True)
    ]
    eligible = data.draw(st.lists(st.integers(0, len(loads) - 1), unique=True, max_size=len(loads)))
    rng = random.Random(seed)
    costs = {i: loads[i].cost(0.0) for i in eligible}
    for _ in range(20):
        chosen = pick(loads, eligible, rng, 0.0)
        if not eligible:
            assert chosen is None
            continue
        assert chosen in eligible
        worst = max(costs.values())
        if len(eligible) >= 2 and sum(c == worst for c in costs.values()) == 1:
            assert costs[chosen] < worst


def test_pick_is_deterministic_for_a_seed() -> None:
    loads = [load_with(0.001 * (i + 1), outstanding=i % 3) for i in range(8)]
    eligible = [0, 2, 3, 5, 7]
    runs = [
        [pick(loads, eligible, rng, 0.0) for _ in range(100)]
        for rng in (random.Random(7), random.Random(7))
    ]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1  # several backends are cheapest of some pair


# ---------------------------------------------------------------- simulation


def simulate(
    service_s: list[float],
    *,
    rate_per_s: float,
    duration_s: float,
    seed: int,
    first_latency_s: dict[int, float] | None = None,
    count_from_s: float = 0.0,
) -> Counter[int]:
    """Poisson arrivals picked by P2C onto backends with fixed mean service time.

    Each call's latency is exponential around its backend's mean (no queueing
    at the backend: the point is what the picker does with what it sees).
    ``first_latency_s`` overrides the latency of a backend's first call (a
    one-off spike). Returns the number of calls each backend received from
    ``count_from_s`` on.
    """
    spikes = dict(first_latency_s or {})
    rng = random.Random(seed)
    loads = [BackendLoad(0.0, CONFIG) for _ in service_s]
    eligible = list(range(len(loads)))
    completions: list[tuple[float, int, float]] = []  # (time, backend, latency)
    sent: Counter[int] = Counter()
    now = 0.0
    while now < duration_s:
        now += rng.expovariate(rate_per_s)
        while completions and completions[0][0] <= now:
            done_at, backend, latency = heapq.heappop(completions)
            loads[backend].finish(latency, done_at)
        chosen = pick(loads, eligible, rng, now)
        assert chosen is not None
        loads[chosen].start(now)
        latency = spikes.pop(chosen, 0.0) or rng.expovariate(1.0 / service_s[chosen])
        heapq.heappush(completions, (now + latency, chosen, latency))
        if now >= count_from_s:
            sent[chosen] += 1
    return sent


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_simulation_avoids_a_backend_ten_times_slower(seed: int) -> None:
    service = [0.010] * 4 + [0.100]
    sent = simulate(service, rate_per_s=400.0, duration_s=60.0, seed=seed)
    total = sum(sent.values())
    assert sent[4] / total < 0.03
    # The fast backends share the rest evenly (within 20% of a fair share).
    fast_share = [sent[i] / (total - sent[4]) for i in range(4)]
    assert all(0.2 < share < 0.3 for share in fast_share)


def test_simulation_equal_backends_share_evenly() -> None:
    sent = simulate([0.010] * 4, rate_per_s=400.0, duration_s=30.0, seed=21)
    total = sum(sent.values())
    assert all(0.2 < sent[i] / total < 0.3 for i in range(4))


def test_simulation_forgives_a_one_off_spike() -> None:
    # Backend 0's first reply takes 2 s; the idle decay brings it back into rotation.
    sent = simulate(
        [0.010] * 4,
        rate_per_s=400.0,
        duration_s=120.0,
        seed=31,
        first_latency_s={0: 2.0},
        count_from_s=90.0,
    )
    total = sum(sent.values())
    assert 0.2 < sent[0] / total < 0.3


# ---------------------------------------------------------------- admission refusals


def test_a_refusal_never_makes_a_backend_cheaper() -> None:
    load = load_with(0.020, now=0.0)
    assert load.latency_at(5.0) < 0.020  # idle decay, so a quiet backend gets tried again
    load.start(5.0)
    load.reject(0.001, 5.0)  # ...but this one answered "busy": the decay is undone
    assert load.latency_at(5.0) == pytest.approx(0.020)
    assert load.outstanding == 0
    for second in range(6, 60):  # a backend that keeps refusing keeps its estimate
        load.start(float(second))
        load.reject(0.001, float(second))
    assert load.latency_at(59.0) == pytest.approx(0.020)
    load.start(60.0)
    load.reject(0.250, 60.0)  # a long queue: at least the time it needs to drain
    assert load.latency_at(60.0) == pytest.approx(0.250)


def test_a_refusal_is_not_a_sample_the_first_reply_still_replaces_the_prior() -> None:
    load = BackendLoad(0.0, CONFIG)
    load.start(0.0)
    load.reject(0.100, 0.0)
    assert load.latency == pytest.approx(0.100)
    load.start(0.0)
    load.finish(0.005, 0.0)
    assert load.latency == pytest.approx(0.005)


def test_reject_checks_its_arguments() -> None:
    load = BackendLoad(0.0, CONFIG)
    with pytest.raises(ValueError, match="reject"):
        load.reject(0.0, 0.0)  # nothing outstanding
    load.start(0.0)
    with pytest.raises(ValueError, match="wait_s"):
        load.reject(-1.0, 0.0)
    assert load.outstanding == 1

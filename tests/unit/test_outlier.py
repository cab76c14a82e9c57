"""Unit tests of outlier ejection (rpckit.client._outlier): state machine, rules, the cap."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.client._outlier import BackendState, OutlierConfig, OutlierDetector

IN, OUT, DUE, PROBING = (
    BackendState.IN_SERVICE,
    BackendState.EJECTED,
    BackendState.PROBE_DUE,
    BackendState.PROBING,
)
NO_JITTER = OutlierConfig(ejection_jitter=0.0)


def detector(ids: str = "abcd", config: OutlierConfig = NO_JITTER) -> OutlierDetector[str]:
    det: OutlierDetector[str] = OutlierDetector(config)
    for backend_id in ids:
        det.add(backend_id)
    return det


def fail(det: OutlierDetector[str], backend_id: str, times: int, now: float) -> None:
    rng = random.Random(0)
    for _ in range(times):
        det.record(backend_id, False, now, rng)


# ---------------------------------------------------------------- config


def test_config_defaults_follow_design() -> None:
    c = OutlierConfig()
    assert (c.consecutive_failures, c.success_rate_threshold, c.window_s) == (5, 0.8, 30.0)
    assert (c.base_ejection_s, c.max_ejection_s, c.max_ejected_fraction) == (5.0, 300.0, 0.5)
    assert c.min_window_calls == 20


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_failures", 0),
        ("success_rate_threshold", 1.5),
        ("window_s", 0.0),
        ("min_window_calls", 0),
        ("max_ejection_s", 1.0),  # below the 5 s base
        ("ejection_multiplier", 0.5),
        ("ejection_jitter", -0.1),
        ("max_ejected_fraction", 1.1),
        ("probe_timeout_s", math.inf),
    ],
)
def test_config_rejects_bad_values(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        OutlierConfig(**kwargs)


def test_config_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="consecutive_failures"):
        OutlierConfig(consecutive_failures=5.0)  # type: ignore[arg-type]


def test_ejection_lengths_double_from_5_s_to_the_300_s_cap() -> None:
    rng = random.Random(1)
    lengths = [NO_JITTER.ejection_s(n, rng) for n in range(1, 10)]
    assert lengths == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert NO_JITTER.ejection_s(10**6, rng) == 300.0  # no overflow
    with pytest.raises(ValueError, match="from 1"):
        NO_JITTER.ejection_s(0, rng)


@settings(deadline=None)
@given(ejections=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_jittered_ejection_stays_within_bounds(ejections: int, seed: int) -> None:
    config = OutlierConfig()
    nominal = min(300.0, 5.0 * 2.0 ** (ejections - 1))
    length = config.ejection_s(ejections, random.Random(seed))
    assert 5.0 <= nominal <= length <= min(300.0, nominal * 1.25)


# ---------------------------------------------------------------- consecutive rule


def test_five_consecutive_failures_eject() -> None:
    det = detector()
    fail(det, "a", 4, now=1.0)
    assert det.state("a", 1.0) is IN
    fail(det, "a", 1, now=1.0)
    assert det.state("a", 1.0) is OUT
    assert det.ejected() == {"a"}
    assert det.eligible("abcd", 1.0) == ["b", "c", "d"]


def test_a_success_resets_the_consecutive_count() -> None:
    det = detector()
    rng = random.Random(2)
    for _ in range(3):
        fail(det, "a", 4, now=1.0)
        det.record("a", True, 1.0, rng)
    assert det.state("a", 1.0) is IN  # 12 failures, never 5 in a row, 3 calls short of 20


# ---------------------------------------------------------------- success-rate rule


def test_low_success_rate_over_enough_calls_ejects() -> None:
    det = detector()
    rng = random.Random(3)
    # 3 successes then 1 failure, repeated: 75% success, never 5 failures in a row.
    for i in range(19):
        det.record("a", i % 4 != 3, 0.5 * i, rng)
    assert det.state("a", 9.0) is IN  # 19 calls: below the minimum volume
    det.record("a", True, 9.5, rng)
    det.record("a", False, 10.0, rng)  # 21 calls, 15 ok: 71%
    assert det.state("a", 10.0) is OUT


def test_success_rate_at_the_threshold_stays() -> None:
    det = detector()
    rng = random.Random(4)
    for i in range(40):  # exactly 80%: 4 ok, 1 failure
        det.record("a", i % 5 != 4, 0.1 * i, rng)
    assert det.state("a", 4.0) is IN


def test_failures_older_than_the_window_are_forgotten() -> None:
    det = detector()
    rng = random.Random(5)
    for i in range(16):  # 16 calls at t=0..1.5, 4 failures
        det.record("a", i % 4 != 0, 0.1 * i, rng)
    # 40 s later: the old calls left the window, 10 new ones with 3 failures.
    for i in range(10):
        det.record("a", i % 3 != 0, 40.0 + 0.1 * i, rng)
    assert det.state("a", 41.0) is IN  # 10 calls in the window: under the minimum


# ---------------------------------------------------------------- probe cycle


def test_ejection_ends_in_one_probe_then_readmission() -> None:
    det = detector()
    rng = random.Random(6)
    fail(det, "a", 5, now=0.0)
    assert det.state("a", 4.99) is OUT
    assert det.state("a", 5.0) is DUE
    assert det.eligible("ab", 5.0) == ["a", "b"]
    assert det.on_pick("a", 5.0) is True
    assert det.state("a", 5.0) is PROBING
    assert det.eligible("ab", 5.1) == ["b"]  # only one probe at a time
    assert det.on_pick("a", 5.1) is False
    det.record("a", True, 5.2, rng)
    assert det.state("a", 5.2) is IN
    assert det.ejected() == frozenset()
    fail(det, "a", 4, now=5.3)  # counters were cleared on readmission
    assert det.state("a", 5.3) is IN


def test_failed_probe_ejects_for_longer() -> None:
    det = detector()
    rng = random.Random(7)
    fail(det, "a", 5, now=0.0)
    det.on_pick("a", 5.0)
    det.record("a", False, 5.5, rng)
    assert det.state("a", 15.49) is OUT  # second ejection: 10 s from 5.5
    assert det.state("a", 15.5) is DUE
    det.on_pick("a", 15.5)
    det.record("a", False, 15.5, rng)
    assert det.state("a", 35.49) is OUT  # third: 20 s
    assert det.state("a", 35.5) is DUE


def test_results_while_ejected_are_ignored() -> None:
    det = detector()
    rng = random.Random(8)
    fail(det, "a", 5, now=0.0)
    det.record("a", True, 1.0, rng)  # a late reply to a call sent before the ejection
    assert det.state("a", 1.0) is OUT
    det.record("a", True, 6.0, rng)  # probe due but not sent: still not the probe
    assert det.state("a", 6.0) is DUE


def test_lost_probe_lets_another_probe_through() -> None:
    det = detector()
    fail(det, "a", 5, now=0.0)
    det.on_pick("a", 5.0)
    assert det.state("a", 34.9) is PROBING
    assert det.state("a", 35.0) is DUE
    assert det.on_pick("a", 35.0) is True


def test_time_in_service_forgives_past_ejections() -> None:
    det = detector()
    rng = random.Random(9)
    fail(det, "a", 5, now=0.0)  # 1st ejection, 5 s
    det.on_pick("a", 5.0)
    det.record("a", False, 5.0, rng)  # 2nd, 10 s
    det.on_pick("a", 15.0)
    det.record("a", True, 15.0, rng)  # readmitted at 15
    fail(det, "a", 5, now=20.0)  # soon after: 3rd ejection, 20 s
    assert det.state("a", 39.9) is OUT
    det.on_pick("a", 40.0)
    det.record("a", True, 40.0, rng)  # readmitted at 40
    fail(det, "a", 5, now=40.0 + 2 * 30.0)  # 60 s later: two forgiven, so the 2nd again
    assert det.state("a", 100.0 + 9.9) is OUT
    assert det.state("a", 100.0 + 10.0) is DUE


def test_jitter_spreads_ejection_ends() -> None:
    ends = set()
    for seed in range(20):
        det = detector(config=OutlierConfig())
        rng = random.Random(seed)
        for _ in range(5):
            det.record("a", False, 0.0, rng)
        ends.add(next(t / 100 for t in range(500, 700) if det.state("a", t / 100) is DUE))
    assert len(ends) > 10
    assert min(ends) >= 5.0
    assert max(ends) <= 6.25


# ---------------------------------------------------------------- cap and membership


@pytest.mark.parametrize(("backends", "cap"), [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)])
def test_cap_is_half_rounded_down(backends: int, cap: int) -> None:
    ids = "abcde"[:backends]
    det = detector(ids)
    for backend_id in ids:
        fail(det, backend_id, 5, now=0.0)
    assert det.max_ejected() == cap
    assert len(det.ejected()) == cap


def test_capped_backend_is_ejected_once_there_is_room() -> None:
    det = detector("ab")
    rng = random.Random(10)
    fail(det, "a", 5, now=0.0)
    fail(det, "b", 7, now=0.0)
    assert det.state("b", 0.0) is IN  # the cap (1 of 2) holds b in
    det.on_pick("a", 5.0)
    det.record("a", True, 5.0, rng)  # a is back: room again
    fail(det, "b", 1, now=5.1)  # b's counters were kept: one more failure ejects
    assert det.state("b", 5.1) is OUT


def test_unknown_backends_are_eligible_and_their_results_ignored() -> None:
    det = detector("a")
    fail(det, "z", 10, now=0.0)
    assert "z" not in det
    assert det.eligible(["z", "a"], 0.0) == ["z", "a"]
    assert det.on_pick("z", 0.0) is False
    with pytest.raises(KeyError):
        det.state("z", 0.0)


def test_remove_forgets_and_readmits_over_the_cap() -> None:
    det = detector("abcd")
    fail(det, "a", 5, now=0.0)
    fail(det, "b", 5, now=1.0)
    assert det.ejected() == {"a", "b"}
    det.remove("c")  # 3 backends: cap 1, a ends first and goes back
    assert det.ejected() == {"b"}
    assert det.state("a", 1.0) is IN
    det.remove("c")  # idempotent
    det.add("b")  # adding a known backend keeps its state
    assert det.state("b", 1.0) is OUT
    assert len(det) == 3


# ---------------------------------------------------------------- properties

Event = tuple[str, int, float, bool]  # (kind, backend, dt, ok)

events = st.lists(
    st.tuples(
        st.sampled_from(["record", "record", "record", "pick", "add", "remove"]),
        st.integers(0, 7),
        st.floats(0.0, 20.0),
        st.booleans(),
    ),
    max_size=300,
)


@settings(deadline=None, max_examples=200)
@given(events=events, initial=st.integers(0, 8), seed=st.integers(0, 2**32))
def test_never_more_than_half_ejected(events: list[Event], initial: int, seed: int) -> None:
    rng = random.Random(seed)
    det: OutlierDetector[int] = OutlierDetector()
    for backend_id in range(initial):
        det.add(backend_id)
    now = 0.0
    for kind, backend_id, dt, ok in events:
        now += dt
        if kind == "record":
            det.record(backend_id, ok and rng.random() < 0.3, now, rng)  # mostly failures
        elif kind == "pick":
            det.on_pick(backend_id, now)
        elif kind == "add":
            det.add(backend_id)
        else:
            det.remove(backend_id)
        out = det.ejected()
        assert len(out) <= len(det) // 2
        known = [b for b in range(8) if b in det]
        eligible = det.eligible(known, now)
        assert len(eligible) >= len(known) - len(out)
        for b in known:
            state = det.state(b, now)
            assert (b in eligible) == (state in (IN, DUE))
            assert (b in out) == (state is not IN)


@settings(deadline=None)
@given(outcomes=st.lists(st.booleans(), max_size=200), seed=st.integers(0, 2**32))
def test_mostly_healthy_backend_is_never_ejected(outcomes: list[bool], seed: int) -> None:
    # Fewer than 5 failures in a row and at least 80% success overall, at 10 calls/s.
    det = detector("ab")
    rng = random.Random(seed)
    streak = 0
    failures = 0
    for i, wanted in enumerate(outcomes):
        # Turn a wanted failure into a success where it would break either rule.
        breaks = streak + 1 >= 5 or failures + 1 > 0.2 * (i + 1) - 1e-9
        ok = wanted or breaks
        streak = 0 if ok else streak + 1
        failures += not ok
        det.record("a", ok, 0.1 * i, rng)
    assert det.state("a", 0.1 * len(outcomes)) is IN

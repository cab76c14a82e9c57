"""Unit tests of the pure admission policy (rpckit.server._admission): examples, then properties."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.server._admission import (
    AdmissionConfig,
    AdmissionQueue,
    Criticality,
    Reason,
    Rejection,
    Ticket,
    parse_criticality,
)

SHED, DEFAULT, CRIT = Criticality.SHEDDABLE, Criticality.DEFAULT, Criticality.CRITICAL


# The model below predates refusing on arrival: it checks queueing, CoDel drops and order,
# with a service-time target of 1x and no wait bound at offer. That rule has its own tests.
UNBOUNDED_WAIT: dict[str, Any] = {"target_service_multiple": 1.0, "admit_within_allowance": False}

# The prediction examples use one admission fraction, a quarter, for every queue age:
# the deeper one for a young queue (burst_wait_fraction) has its own test.
QUARTER: dict[str, Any] = {"burst_wait_fraction": 0.25}

# While no queue stands, a call without a deadline may wait max_wait_s (10 s by default). The
# CoDel examples bound that at the interval (the rule before deadline-bound waits) so a queue
# turns standing and sheds within a few hundred simulated milliseconds; the deadline-bound
# waits have their own section.
INTERVAL_WAIT: dict[str, Any] = {"max_wait_s": 0.100}


def ticket(
    name: str,
    at: float,
    *,
    method: str = "m",
    deadline: float | None = None,
    crit: Criticality = DEFAULT,
) -> Ticket[str]:
    return Ticket(name, method, at, deadline, crit)


def take_all(q: AdmissionQueue[str], now: float) -> tuple[list[str], list[Rejection[str]]]:
    taken: list[str] = []
    dropped: list[Rejection[str]] = []
    for _ in range(q.depth + 1):
        t, rejected = q.take(now)
        dropped += rejected
        if t is None:
            break
        taken.append(t.item)
    return taken, dropped


def reasons(rejections: list[Rejection[str]]) -> dict[str, Reason]:
    return {r.ticket.item: r.reason for r in rejections}


# ---------------------------------------------------------------- criticality, reasons, config


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT),
        ("", DEFAULT),
        ("default", DEFAULT),
        ("sheddable", SHED),
        ("SHEDDABLE", SHED),
        ("Critical", CRIT),
    ],
)
def test_parse_criticality(value: str | None, expected: Criticality) -> None:
    assert parse_criticality(value) is expected


@pytest.mark.parametrize("bad", ["urgent", "critical ", "2", "CRITICAL_PLUS"])
def test_parse_criticality_names_the_bad_value(bad: str) -> None:
    with pytest.raises(ValueError, match="rpckit-criticality") as info:
        parse_criticality(bad)
    assert repr(bad) in str(info.value)


def test_reason_status_and_labels() -> None:
    statuses = {r: r.status for r in Reason}
    assert statuses == {
        Reason.QUEUE_FULL: "RESOURCE_EXHAUSTED",
        Reason.CODEL: "RESOURCE_EXHAUSTED",
        Reason.PREEMPTED: "RESOURCE_EXHAUSTED",
        Reason.DEADLINE_GONE: "DEADLINE_EXCEEDED",
        Reason.DEADLINE_SHORT: "DEADLINE_EXCEEDED",
    }
    assert len({r.value for r in Reason}) == len(Reason)
    assert all(r.message for r in Reason)


def test_config_defaults_follow_fail_at_scale() -> None:
    config = AdmissionConfig()
    assert (config.codel_target_s, config.codel_interval_s) == (0.005, 0.100)
    assert config.workers == 8
    assert config.queue_limit == 1024
    assert AdmissionQueue().config == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        AdmissionConfig(8)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": True}, TypeError, "workers"),
        ({"workers": 2.0}, TypeError, "workers"),
        ({"queue_limit": 0}, ValueError, "queue_limit"),
        ({"codel_target_s": 0.0}, ValueError, "codel_target_s"),
        ({"codel_target_s": -0.001}, ValueError, "codel_target_s"),
        ({"codel_target_s": math.nan}, ValueError, "codel_target_s"),
        ({"codel_interval_s": math.inf}, ValueError, "codel_interval_s"),
        ({"codel_interval_s": "0.1"}, TypeError, "codel_interval_s"),
        ({"codel_target_s": 0.2, "codel_interval_s": 0.1}, ValueError, "codel_interval_s"),
        ({"target_service_multiple": -1.0}, ValueError, "target_service_multiple"),
        ({"service_half_life_s": 0.0}, ValueError, "service_half_life_s"),
        ({"sheddable_target_factor": 0.0}, ValueError, "sheddable_target_factor"),
        ({"sheddable_target_factor": 1.5}, ValueError, "sheddable_target_factor"),
        ({"admit_wait_fraction": 0.0}, ValueError, "admit_wait_fraction"),
        ({"admit_wait_fraction": 1.5}, ValueError, "admit_wait_fraction"),
        ({"admit_wait_fraction": math.nan}, ValueError, "admit_wait_fraction"),
        ({"pushback_max_ms": 0}, ValueError, "pushback_max_ms"),
    ],
)
def test_config_validation_names_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        AdmissionConfig(**kwargs)


def test_offer_misuse() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    t = ticket("a", 0.0)
    assert q.offer(t, 0.0) == []
    with pytest.raises(ValueError, match="already queued"):
        q.offer(t, 0.0)
    with pytest.raises(TypeError, match="criticality"):
        q.offer(Ticket("b", "m", 0.0, None, 1), 0.0)  # type: ignore[arg-type]
    # Once it has left, the same ticket object may be offered again.
    assert q.take(0.001) == (t, [])
    assert q.offer(t, 0.002) == []
    assert q.depth == 1


# ---------------------------------------------------------------- order


def test_fifo_while_no_standing_queue() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    for i, name in enumerate("abcd"):
        assert q.offer(ticket(name, i * 0.001), i * 0.001) == []
    assert not q.standing(0.010)
    assert take_all(q, 0.010) == (["a", "b", "c", "d"], [])


def test_lifo_once_the_queue_has_stood_then_fifo_again() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**INTERVAL_WAIT))
    q.offer(ticket("old", 0.0), 0.0)
    for i, name in enumerate("abc"):
        q.offer(ticket(name, 0.104 + i * 0.0001), 0.104 + i * 0.0001)
    assert not q.standing(0.100)  # not empty since 0.0, but not for longer than the interval
    assert q.standing(0.105)
    taken, dropped = take_all(q, 0.105)
    assert taken == ["c", "b", "a"]  # newest first
    assert reasons(dropped) == {"old": Reason.CODEL}  # waited 105 ms > its 100 ms
    # Empty, but it shed at 0.105: not idle, so a newcomer still meets a standing queue.
    q.offer(ticket("w", 0.150), 0.150)
    assert q.standing(0.150)
    assert take_all(q, 0.150) == (["w"], [])
    # Empty with nothing shed for an interval: idle, the next calls are served in order again.
    q.offer(ticket("x", 0.210), 0.210)
    q.offer(ticket("y", 0.211), 0.211)
    assert not q.standing(0.212)
    assert take_all(q, 0.212) == (["x", "y"], [])


def test_idle_is_tracked_on_every_path() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**INTERVAL_WAIT))
    q.offer(ticket("a", 0.0, deadline=0.05), 0.0)
    assert q.expire(0.06)[0].reason is Reason.DEADLINE_GONE  # emptied by expire at 0.06
    q.offer(ticket("b", 0.1), 0.1)  # a deadline is the caller's limit, not overload: idle
    q.offer(ticket("c", 0.2), 0.2)
    assert not q.standing(0.199)  # idle at 0.1 (the offer found it empty)
    assert q.standing(0.201)
    t, dropped = q.take(0.201)  # newest first; b is left for the sweep
    assert (t and t.item, dropped) == ("c", [])
    assert q.depth == 1
    assert q.standing(0.201)
    assert reasons(q.expire(0.201)) == {"b": Reason.CODEL}  # waited 101 ms > its 100 ms
    assert q.standing(0.201)  # empty, but it shed: not idle
    assert q.standing(0.301)
    assert not q.standing(0.302)  # empty and nothing shed for an interval
    q.offer(ticket("d", 0.35), 0.35)
    assert not q.standing(0.449)
    assert q.standing(0.451)


def test_higher_criticality_served_first() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("s1", 0.0, crit=SHED), 0.0)
    q.offer(ticket("d1", 0.0, crit=DEFAULT), 0.0)
    q.offer(ticket("c1", 0.0, crit=CRIT), 0.0)
    q.offer(ticket("s2", 0.0, crit=SHED), 0.0)
    q.offer(ticket("c2", 0.0, crit=CRIT), 0.0)
    assert take_all(q, 0.001) == (["c1", "c2", "d1", "s1", "s2"], [])


# ---------------------------------------------------------------- CoDel


def test_codel_standing_queue_drops_calls_older_than_target() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**INTERVAL_WAIT))
    q.offer(ticket("anchor", 0.0), 0.0)
    assert q.standing(0.101)
    q.offer(ticket("stale", 0.101), 0.101)  # will have waited 6.5 ms
    q.offer(ticket("fresh", 0.107), 0.107)  # will have waited 0.5 ms
    dropped = q.expire(0.1075)
    assert reasons(dropped) == {"anchor": Reason.CODEL, "stale": Reason.CODEL}
    t, dropped = q.take(0.1075)
    assert (t and t.item, dropped) == ("fresh", [])


def test_codel_allowance_is_fixed_when_a_call_is_queued() -> None:
    """Fail at Scale's enqueue(req, timeout): a burst queued while idle keeps its allowance."""
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("anchor", 0.0), 0.0)
    for i in range(3):  # queued before the queue stands, no deadline: max_wait_s, 10 s each
        q.offer(ticket(f"burst{i}", 0.05), 0.05)
    assert q.standing(0.101)
    q.offer(ticket("late", 0.101), 0.101)  # queued into a standing queue: 5 ms
    assert reasons(q.expire(0.107)) == {"late": Reason.CODEL}
    assert q.depth == 4  # the others keep their 10 s although the queue now stands
    assert q.expire(9.999) == []
    assert reasons(q.expire(10.001)) == {"anchor": Reason.CODEL}
    assert q.expire(10.0495) == []
    assert set(reasons(q.expire(10.0505))) == {"burst0", "burst1", "burst2"}


@pytest.mark.parametrize(
    ("max_wait_s", "allowed_s"),
    [(10.0, 10.0), (0.5, 0.5), (0.100, 0.100), (0.020, 0.100)],  # never below the interval
)
def test_without_a_standing_queue_a_call_without_a_deadline_may_wait_max_wait(
    max_wait_s: float, allowed_s: float
) -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(max_wait_s=max_wait_s))
    q.offer(ticket("patient", 0.0), 0.0)
    assert q.allowance(ticket("probe", 0.0), 0.0, standing=False) == allowed_s
    assert q.expire(0.99 * allowed_s) == []  # far over the 5 ms target: the queue had not stood
    t, dropped = q.take(0.99 * allowed_s)
    assert (t and t.item, dropped) == ("patient", [])
    # A call that outwaits its allowance is dropped either way.
    q.offer(ticket("late", 100.0), 100.0)
    assert q.expire(100.0 + 0.99 * allowed_s) == []
    assert reasons(q.expire(100.0 + 1.01 * allowed_s)) == {"late": Reason.CODEL}


def test_codel_target_scales_with_service_time() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**UNBOUNDED_WAIT, **INTERVAL_WAIT))
    q.record_service_time("slow", 0.020, now=0.0)
    assert q.codel_target("slow") == pytest.approx(0.020)
    assert q.codel_target("fast") == 0.005
    q.offer(ticket("anchor", 0.0, method="slow"), 0.0)
    q.offer(ticket("slow-15ms", 0.101, method="slow"), 0.101)  # standing from here on
    q.offer(ticket("fast-15ms", 0.101, method="fast"), 0.101)
    dropped = q.expire(0.116)
    assert reasons(dropped) == {"anchor": Reason.CODEL, "fast-15ms": Reason.CODEL}
    t, _ = q.take(0.116)
    assert t is not None
    assert t.item == "slow-15ms"


def test_sheddable_gets_a_tighter_allowance_in_a_standing_queue() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**INTERVAL_WAIT))
    q.offer(ticket("anchor", 0.0, crit=CRIT), 0.0)
    q.offer(ticket("shed", 0.101, crit=SHED), 0.101)
    q.offer(ticket("default", 0.101), 0.101)
    q.offer(ticket("crit", 0.101, crit=CRIT), 0.101)
    # 4 ms of waiting: above 0.5 x 5 ms, below 5 ms.
    assert reasons(q.expire(0.105)) == {"anchor": Reason.CODEL, "shed": Reason.CODEL}
    assert take_all(q, 0.105) == (["crit", "default"], [])


def test_codel_load_measures_use_of_the_allowance() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**INTERVAL_WAIT))
    assert q.codel_load(0.0) == 0  # empty
    q.offer(ticket("anchor", 0.0), 0.0)
    assert q.codel_load(0.099) == 0  # not standing
    q.offer(ticket("young", 0.101), 0.101)  # standing: 5 ms
    q.expire(0.1011)  # drops the anchor (waited > its 100 ms)
    assert q.depth == 1
    assert q.codel_load(0.1035) == 50  # young waited 2.5 ms of its 5 ms
    assert q.codel_load(0.1059) == 98
    assert q.codel_load(0.120) == 100  # clamped: it is due to be dropped


# ---------------------------------------------------------------- deadlines


def test_deadline_gone_and_short_at_offer_use_the_fastest_recent_service_time() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.record_service_time("slow", 0.050, now=0.0)
    q.record_service_time("slow", 0.090, now=0.0)  # mean 70 ms, fastest 50 ms
    assert reasons(q.offer(ticket("gone", 1.0, deadline=1.0), 1.0)) == {
        "gone": Reason.DEADLINE_GONE
    }
    # The first call the estimate alone would refuse is let through to measure again ...
    assert q.offer(ticket("probe", 1.0, method="slow", deadline=1.03), 1.0) == []
    # ... and the next ones within deadline_probe_s are refused.
    assert reasons(q.offer(ticket("short", 1.0, method="slow", deadline=1.03), 1.0)) == {
        "short": Reason.DEADLINE_SHORT
    }
    # 50 ms left: below the 70 ms mean, but the method has finished that fast.
    assert q.offer(ticket("enough", 1.0, method="slow", deadline=1.05), 1.0) == []
    assert q.offer(ticket("fast", 1.0, method="fast", deadline=1.03), 1.0) == []
    assert q.offer(ticket("none", 1.0, method="slow"), 1.0) == []
    later = 1.0 + 0.9 * q.config.deadline_probe_s  # still within the interval
    assert reasons(
        q.offer(ticket("short2", later, method="slow", deadline=later + 0.03), later)
    ) == {"short2": Reason.DEADLINE_SHORT}
    assert q.depth == 4


def test_deadline_short_while_queued_is_dropped_at_take() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.record_service_time("slow", 0.050, now=0.0)
    q.offer(ticket("slow", 0.0, method="slow", deadline=0.080), 0.0)
    q.offer(ticket("fast", 0.0, method="fast", deadline=0.080), 0.0)
    t, dropped = q.take(0.040)  # 40 ms left: below slow's 50 ms, plenty for fast
    assert t is not None
    assert t.item == "fast"
    assert reasons(dropped) == {"slow": Reason.DEADLINE_SHORT}


def test_a_new_service_time_sample_can_make_queued_calls_due_at_once() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("t", 0.0, deadline=0.100), 0.0)
    assert q.expire(0.010) == []
    q.record_service_time("m", 0.095, now=0.020)  # 80 ms left < the fastest, 95 ms
    assert reasons(q.expire(0.020)) == {"t": Reason.DEADLINE_SHORT}


def test_expire_drops_a_call_made_short_when_the_fastest_sample_ages_out() -> None:
    """The fastest service time can rise with no new sample: its minimum left the window.

    The sweep must not sleep past the moment that dooms a queued call (a refusal that
    waits is a slow refusal); ``take`` already drops such a call, ``expire`` must too.
    """
    q: AdmissionQueue[str] = AdmissionQueue()  # 5 s window
    q.record_service_time("m", 0.010, now=0.0)
    q.record_service_time("m", 0.500, now=4.5)
    assert q.offer(ticket("c", 5.0, deadline=8.0), 5.0) == []  # may wait 2.99 s
    assert q.expire(5.0) == []
    assert q.fastest_service("m", 7.6) == 0.500  # the 10 ms sample was forgotten at 6.0
    # 0.4 s left at 7.6, below the 0.5 s it takes at the fastest: doomed, so dropped now.
    assert reasons(q.expire(7.6)) == {"c": Reason.DEADLINE_SHORT}


def test_expire_rejects_doomed_calls_without_taking() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("d10", 0.0, deadline=0.010), 0.0)
    q.offer(ticket("d30", 0.0, deadline=0.030), 0.0)
    q.offer(ticket("none", 0.0), 0.0)
    assert q.expire(0.005) == []
    assert reasons(q.expire(0.011)) == {"d10": Reason.DEADLINE_GONE}
    assert reasons(q.expire(0.031)) == {"d30": Reason.DEADLINE_GONE}
    assert q.depth == 1


# ---------------------------------------------------------------- the fastest service time


def test_fastest_service_is_a_windowed_minimum_that_forgets() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()  # a 5 s window kept in 1 s buckets
    assert q.fastest_service("m", 0.0) is None
    q.record_service_time("m", 0.030, now=0.5)
    q.record_service_time("m", 0.010, now=0.9)
    q.record_service_time("m", 0.020, now=1.0)
    q.record_service_time("m", 0.800, now=4.0)
    assert q.fastest_service("m", 4.0) == 0.010  # the minimum ...
    estimate = q.service_estimate("m")
    assert estimate is not None
    assert estimate > 0.2  # ... where the mean is dragged up by one slow call
    assert q.fastest_service("m", 5.99) == 0.010  # remembered for the whole window
    assert q.fastest_service("m", 6.0) == 0.020  # [0 s, 1 s) forgotten at 6 s
    assert q.fastest_service("m", 7.0) == 0.800
    assert q.fastest_service("m", 10.0) is None  # every sample forgotten
    assert q.fastest_service("other", 10.0) is None
    q.record_service_time("m", 0.050, now=10.5)  # a fresh sample counts at once
    assert q.fastest_service("m", 10.5) == 0.050
    q.record_service_time("m", 0.040, now=10.6)  # also within the bucket last asked about
    assert q.fastest_service("m", 10.6) == 0.040
    q.record_service_time("m", 0.045, now=10.7)
    assert q.fastest_service("m", 10.7) == 0.040


@settings(deadline=None, max_examples=150, derandomize=True)
@given(
    window_s=st.sampled_from([0.05, 1.0, 5.0]),
    samples=st.lists(
        st.tuples(st.floats(0.0, 0.7), st.floats(0.0, 1.0)),  # (gap in windows, seconds)
        min_size=1,
        max_size=40,
    ),
    asked_after=st.floats(0.0, 1.5),  # in windows, after the last sample
)
def test_property_fastest_remembers_a_sample_for_one_to_six_fifths_of_the_window(
    window_s: float, samples: list[tuple[float, float]], asked_after: float
) -> None:
    """Kept in 5 buckets: a sample counts for at least the window and at most 1.2 windows."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(service_window_s=window_s))
    fed: list[tuple[float, float]] = []
    now = 0.0

    def check(at: float) -> None:
        surely = [s for t, s in fed if at - t < window_s * (1 - 1e-9)]
        maybe = [s for t, s in fed if at - t < 1.2 * window_s * (1 + 1e-9)]
        fastest = q.fastest_service("m", at)
        if surely:
            assert fastest is not None
            assert fastest <= min(surely)
        if not maybe:
            assert fastest is None
        if fastest is not None:
            assert fastest in maybe

    for gap, seconds in samples:
        now += gap * window_s
        q.record_service_time("m", seconds, now)
        fed.append((now, seconds))
        check(now)
    check(now + asked_after * window_s)


# ---------------------------------------------------------------- probes and recovery


def test_one_call_per_probe_interval_runs_while_the_estimate_refuses() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(deadline_probe_s=0.25))
    q.record_service_time("m", 0.8, now=0.0)
    q.record_service_time("n", 0.8, now=0.0)
    short = Reason.DEADLINE_SHORT
    # 250 ms deadlines against an 800 ms fastest service time.
    verdicts = [q.deadline_reason("m", at + 0.25, at) for at in (1.0, 1.0, 1.1, 1.249, 1.25, 1.3)]
    assert verdicts == [None, short, short, short, None, short]
    assert q.deadline_reason("n", 1.3 + 0.25, 1.3) is None  # each method has its own probe
    assert q.deadline_reason("m", 1.5, 1.5) is Reason.DEADLINE_GONE  # gone is never probed
    # A call whose deadline is long enough runs on its own merit and spends no probe.
    assert q.deadline_reason("m", 1.5 + 1.0, 1.5) is None
    assert q.deadline_reason("m", 1.5 + 0.25, 1.5) is None  # the probe due since 1.5
    assert q.deadline_reason("m", 1.6 + 0.25, 1.6) is short


def test_calls_that_find_a_slot_free_probe_four_at_once_then_at_the_shorter_interval() -> None:
    """After a burst of slow calls the estimate refuses ordinary ones until a probe ends.
    Arrivals bunch: a call that finds a slot free may probe four times back to back, then
    once per ``deadline_probe_free_s``; one that would wait still at ``deadline_probe_s``."""
    config = AdmissionConfig(deadline_probe_s=0.05, deadline_probe_free_s=0.005)
    q: AdmissionQueue[str] = AdmissionQueue(config)
    q.record_service_time("m", 0.8, now=0.0)
    short = Reason.DEADLINE_SHORT
    at = [1.0, 1.0001, 1.0002, 1.0003, 1.0004, 1.0005, 1.0056, 1.006, 1.0107]
    free = [q.deadline_reason("m", t + 0.25, t, slot_free=True) for t in at]
    # The interval's own probe, four from the bucket, none left, one refilled, ...
    assert free == [None, None, None, None, None, short, None, short, None]
    busy = [q.deadline_reason("m", t + 0.25, t) for t in (1.02, 1.0608)]
    assert busy == [short, None]


def test_free_slot_probes_are_bounded_by_their_interval() -> None:
    """Worst input: a method really slower than its callers' deadlines, called every
    0.1 ms for a second while slots are free -- four calls, then one per 5 ms, run
    (and the interval's own, one per 50 ms)."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(deadline_probe_free_s=0.005))
    q.record_service_time("m", 0.8, now=0.0)
    ran = sum(
        q.deadline_reason("m", t + 0.25, t, slot_free=True) is None
        for t in (1.0 + i * 1e-4 for i in range(10_000))
    )
    assert 200 <= ran <= 4 + 200 + 20 + 1


def test_no_free_slot_probes_with_an_empty_bucket() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(deadline_probe_free_burst=0))
    q.record_service_time("m", 0.8, now=0.0)
    verdicts = [q.deadline_reason("m", t + 0.25, t, slot_free=True) for t in (1.0, 1.01, 1.05)]
    assert verdicts == [None, Reason.DEADLINE_SHORT, None]  # only the interval's probes
    with pytest.raises(ValueError, match="deadline_probe_free_burst"):
        AdmissionConfig(deadline_probe_free_burst=-1)


def test_the_free_slot_interval_never_exceeds_the_probe_interval() -> None:
    config = AdmissionConfig(deadline_probe_s=0.01, deadline_probe_free_s=1.0)
    q: AdmissionQueue[str] = AdmissionQueue(config)
    q.record_service_time("m", 0.8, now=0.0)
    verdicts = [q.deadline_reason("m", t + 0.25, t, slot_free=True) for t in [1.0] * 6]
    assert verdicts == [None] * 5 + [Reason.DEADLINE_SHORT]
    assert q.deadline_reason("m", 1.0101 + 0.25, 1.0101, slot_free=True) is None  # interval's
    # A token refilled after 10 ms (the probe interval), not after 1 s.
    assert q.deadline_reason("m", 1.0102 + 0.25, 1.0102, slot_free=True) is None
    assert q.deadline_reason("m", 1.0103 + 0.25, 1.0103, slot_free=True) is Reason.DEADLINE_SHORT


def test_the_sweep_and_take_do_not_probe() -> None:
    """Calls already queued are dropped on the estimate, and spend no probe doing it."""
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("swept", 0.0, deadline=0.5), 0.0)
    q.offer(ticket("taken", 0.0, deadline=0.5, crit=CRIT), 0.0)
    q.record_service_time("m", 0.8, now=0.01)  # both have 490 ms left, below 800 ms
    t, dropped = q.take(0.01)  # the critical one first
    assert (t, reasons(dropped)) == (
        None,
        {"taken": Reason.DEADLINE_SHORT, "swept": Reason.DEADLINE_SHORT},
    )
    assert q.offer(ticket("later", 0.02, deadline=0.835), 0.02, running=0) == []  # 815 ms left
    assert q.expire(0.03) == []
    assert reasons(q.expire(0.04)) == {"later": Reason.DEADLINE_SHORT}  # 795 ms left
    assert q.deadline_reason("m", 0.04 + 0.25, 0.04) is None  # the probe is still unspent


def test_a_probe_that_has_to_queue_still_runs() -> None:
    """While every slot is busy a probe is queued. It must reach a slot, not be dropped by
    ``take`` as DEADLINE_SHORT: otherwise a busy server never measures the method again
    until the slow samples leave the window (5-6 s), one wasted probe per interval."""
    q: AdmissionQueue[str] = AdmissionQueue()
    q.record_service_time("m", 0.8, now=0.0)
    q.record_hold_time("m", 0.001, now=0.0)  # it waits on a downstream: turns are short
    assert q.offer(ticket("probe", 1.0, deadline=1.25), 1.0, running=8) == []
    assert reasons(q.offer(ticket("short", 1.0, deadline=1.25), 1.0, running=8)) == {
        "short": Reason.DEADLINE_SHORT
    }
    t, dropped = q.take(1.001)  # a slot frees up
    assert (t and t.item, dropped) == ("probe", [])


def test_a_call_whose_deadline_turns_short_behind_a_probe_is_swept_once_the_probe_ran() -> None:
    """A probe atop its method's deadline heap holds up the sweep until its deadline is gone;
    once the probe leaves (taken to run), the next sweep looks at the calls behind it
    again, not only when the probe's deadline would have passed. Found by the model test."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1))
    q.record_service_time("m", 0.030, now=0.0)
    assert q.offer(ticket("fits", 0.0, deadline=0.030), 0.0, running=1) == []  # 30 ms left
    assert q.offer(ticket("probe", 0.0, deadline=0.015, crit=Criticality.CRITICAL), 0.0) == []
    assert q.expire(0.0) == []
    t, dropped = q.take(0.0)
    assert (t and t.item, dropped) == ("probe", [])
    # 1 ms later "fits" has 29 ms left, below the fastest 30 ms: it cannot finish.
    assert reasons(q.expire(0.001)) == {"fits": Reason.DEADLINE_SHORT}


SLOW_S, ORDINARY_S = 0.8, 0.025  # the downstream hiccup; an ordinary call


def slow_spell(q: AdmissionQueue[str], *, until: float) -> None:
    """Drive ``m`` into its worst state: 800 ms calls end every 10 ms from 0.8 s to ``until``,
    so every bucket of the window holds only slow samples."""
    i = 0
    while (at := SLOW_S + i * 0.01) <= until:
        q.record_service_time("m", SLOW_S, now=at)
        i += 1
    assert q.fastest_service("m", until) == SLOW_S


def ordinary_calls(
    q: AdmissionQueue[str],
    *,
    start: float,
    stop: float,
    took: Callable[[float], float],
    rate: float = 60.0,
    deadline_s: float = 0.25,
) -> list[tuple[float, bool]]:
    """Calls of ``m`` arriving at ``rate`` on an otherwise idle server (the executor's
    direct start); each admitted one records ``took(started)`` when it ends.
    Returns (arrival, admitted) per call."""
    ends: list[tuple[float, float]] = []
    outcomes: list[tuple[float, bool]] = []
    i = 0
    while (now := start + i / rate) < stop:
        while ends and ends[0][0] <= now:
            end, seconds = heapq.heappop(ends)
            q.record_service_time("m", seconds, now=end)
        admitted = q.deadline_reason("m", now + deadline_s, now) is None
        if admitted:
            q.note_started(now)
            heapq.heappush(ends, (now + took(now), took(now)))
        outcomes.append((now, admitted))
        i += 1
    return outcomes


def test_a_slow_spell_does_not_lock_a_method_out_one_probe_brings_it_back() -> None:
    """The issue's lock-out: after 800 ms calls, 250 ms deadlines looked hopeless forever."""
    q: AdmissionQueue[str] = AdmissionQueue()
    slow_spell(q, until=6.0)
    outcomes = ordinary_calls(q, start=6.0, stop=12.0, took=lambda _: ORDINARY_S)
    assert len(outcomes) == 360  # 6 s at 60/s
    assert outcomes[0] == (6.0, True)  # the probe: its 25 ms is the new fastest
    refused = [at for at, admitted in outcomes if not admitted]
    assert refused == [outcomes[1][0]]  # only the call that came while the probe ran


def test_while_the_downstream_stays_slow_one_call_per_probe_interval_runs() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    every = q.config.deadline_probe_s
    slow_spell(q, until=6.0)
    healed, rate = 8.0, 60.0
    outcomes = ordinary_calls(
        q, start=6.0, stop=12.0, rate=rate, took=lambda at: SLOW_S if at < healed else ORDINARY_S
    )
    probes = [at for at, admitted in outcomes if admitted and at < healed]
    # While slow: the first call that comes once an interval has passed; the rest refused.
    assert probes[0] == 6.0
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(every - 1e-9 <= gap <= every + 1 / rate + 1e-9 for gap in gaps)
    assert len(probes) >= (healed - 6.0) / (every + 1 / rate)
    assert len(probes) < len(outcomes) / 2  # most are refused at once, as they should be
    # The first probe after the downstream healed measures 25 ms: from its end on all run.
    first = next(at for at, admitted in outcomes if admitted and at >= healed)
    assert first <= healed + every + 1 / rate
    assert all(admitted for at, admitted in outcomes if at >= first + ORDINARY_S)


def test_without_probes_a_slow_spell_ages_out_of_the_window() -> None:
    config = AdmissionConfig(deadline_probe_s=3600.0)  # one probe an hour: the window alone
    q: AdmissionQueue[str] = AdmissionQueue(config)
    slow_spell(q, until=6.0)
    outcomes = ordinary_calls(
        q, start=6.0, stop=14.0, took=lambda at: SLOW_S if at < 6.5 else ORDINARY_S
    )
    admitted = [at for at, ok in outcomes if ok]
    assert admitted[0] == 6.0  # the one probe, which met the slow downstream too
    last_slow = 6.0 + SLOW_S
    recovered = admitted[1]
    window = config.service_window_s
    assert last_slow + window <= recovered <= last_slow + 1.2 * window
    assert all(ok for at, ok in outcomes if at >= recovered)


# ---------------------------------------------------------------- deadline-bound waits


def test_without_a_standing_queue_a_call_may_wait_most_of_its_deadline() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(deadline_bounds_wait=False))
    q.record_service_time("m", 0.025, now=0.0)
    q.record_service_time("m", 0.040, now=0.0)  # fastest 25 ms
    assert q.offer(ticket("ten", 0.0, deadline=10.0), 0.0) == []
    assert q.offer(ticket("three", 0.0, deadline=3.0), 0.0) == []
    assert q.standing(0.2)  # it has stood since: a newcomer now gets the 5 ms target ...
    assert q.allowance(ticket("new", 0.2, deadline=10.2), 0.2, standing=True) == 0.005
    # ... but the calls queued before keep their deadline budgets.
    assert q.expire(2.9749) == []
    assert reasons(q.expire(2.9751)) == {"three": Reason.DEADLINE_SHORT}  # 24.9 ms left
    t, dropped = q.take(5.0)
    assert (t and t.item, dropped) == ("ten", [])


def test_in_a_standing_queue_a_deadline_still_bounds_the_wait() -> None:
    """deadline_bounds_wait (the default): a queue that stands at high load does not cut a
    call with a deadline to the 5 ms target; calls without one still get it."""
    q: AdmissionQueue[str] = AdmissionQueue()
    q.record_service_time("m", 0.025, now=0.0)
    q.record_service_time("m", 0.040, now=0.0)  # fastest 25 ms
    assert q.offer(ticket("anchor", 0.0, deadline=10.0), 0.0) == []
    assert q.standing(0.2)
    assert q.allowance(ticket("new", 0.2, deadline=0.45), 0.2, standing=True) == pytest.approx(
        0.225  # 250 ms left less the fastest 25 ms
    )
    assert q.allowance(ticket("open", 0.2), 0.2, standing=True) == 0.005
    assert q.offer(ticket("new", 0.2, deadline=0.45), 0.2, running=0) == []
    assert q.offer(ticket("open", 0.2), 0.2, running=0) == []
    # 100 ms later the call without a deadline has outwaited its 5 ms; the other waits on.
    assert reasons(q.expire(0.3)) == {"open": Reason.CODEL}
    taken, dropped = take_all(q, 0.3)
    assert (taken, dropped) == (["anchor", "new"], [])


def test_in_a_standing_queue_bounded_calls_go_oldest_first_beside_lifo_for_the_rest() -> None:
    """Deadline calls are served in arrival order; the others newest first; between the
    two, whichever allowance ends first."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**UNBOUNDED_WAIT))
    q.record_service_time("m", 0.010, now=0.0)  # target = 10 ms (1 x the mean)
    assert q.offer(ticket("anchor", 0.0, deadline=10.0), 0.0) == []
    now = 0.2
    assert q.standing(now)
    for name, deadline in (("d1", 1.0), ("o1", None), ("d2", 0.6), ("o2", None)):
        assert (
            q.offer(ticket(name, now, deadline=None if deadline is None else now + deadline), now)
            == []
        )
    # anchor's allowance ended at 10 s - fastest, o2's at 0.21: o2 (newest open) first,
    # then o1 (open, same 0.21, but o2 is newest), then the bounded ones oldest first.
    taken, dropped = take_all(q, now + 0.001)
    assert (taken, dropped) == (["o2", "o1", "anchor", "d1", "d2"], [])


@pytest.mark.parametrize(
    ("max_wait_s", "served"),
    [(10.0, 20), (0.100, 8)],  # 0.1 s: the rule before deadline-bound waits
)
def test_a_burst_that_cannot_start_at_once_waits_within_its_deadlines(
    max_wait_s: float, served: int
) -> None:
    """The issue's burst: 20 calls that each wait 800 ms on a downstream, 10 s deadlines,
    8 slots. With waits bound by the interval, 12 of 20 were refused after ~100 ms."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(max_wait_s=max_wait_s))
    q.record_service_time("burst", SLOW_S, now=0.0)
    q.record_hold_time("burst", 0.001, now=0.0)  # a CPU slot for 1 ms of the 800
    for _ in range(8):
        q.note_started(1.0)  # 8 start at once
    for i in range(12):
        t = ticket(f"b{i}", 1.0, method="burst", deadline=11.0)
        assert q.offer(t, 1.0, running=8) == []
    taken, dropped = take_all(q, 1.0 + SLOW_S)  # the first 8 end, 8 slots free
    assert len(dropped) == 20 - served
    assert all(r.reason is Reason.CODEL for r in dropped)
    more, dropped = take_all(q, 1.0 + 2 * SLOW_S)
    assert 8 + len(taken) + len(more) == served
    assert dropped == []


@pytest.mark.parametrize(
    ("method", "deadline_in", "standing", "crit", "expected", "bounds"),
    [
        ("m", None, False, DEFAULT, 10.0, True),  # no deadline: max_wait_s
        ("m", 60.0, False, DEFAULT, 10.0, True),  # capped at max_wait_s
        ("m", 2.0, False, DEFAULT, 1.8, True),  # the budget: 2 s left less the fastest 0.2 s
        ("m", 2.0, False, SHED, 1.8, True),  # criticality counts only once a queue stands
        ("m", 0.25, False, DEFAULT, 0.1, True),  # a 50 ms budget: never below the interval
        ("m", 0.1, False, DEFAULT, 0.1, True),  # no budget at all: still the interval
        ("slow", 2.1, False, DEFAULT, 0.2, True),  # or the target, when that is longer
        ("m", 2.0, True, DEFAULT, 1.8, True),  # standing, but the deadline bounds the wait
        ("m", 2.0, True, SHED, 1.8, True),
        ("m", 2.0, True, DEFAULT, 0.04, False),  # standing: the target (0.1 x the 0.4 s mean)
        ("m", None, True, CRIT, 0.04, True),  # no deadline: the target
        ("m", 2.0, True, SHED, 0.02, False),  # x sheddable_target_factor
        ("m", None, True, SHED, 0.02, True),
        ("new", 2.0, False, DEFAULT, 2.0, True),  # no sample yet: the whole time left
        ("new", 2.0, True, DEFAULT, 2.0, True),
        ("new", 2.0, True, DEFAULT, 0.005, False),
    ],
)
def test_allowance(
    method: str,
    deadline_in: float | None,
    standing: bool,
    crit: Criticality,
    expected: float,
    bounds: bool,
) -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(deadline_bounds_wait=bounds))
    q.record_service_time("m", 0.2, now=0.0)
    q.record_service_time("m", 0.6, now=0.0)  # mean 0.4 s, fastest 0.2 s
    q.record_service_time("slow", 2.0, now=0.0)  # target 0.2 s
    now = 1.0
    deadline = None if deadline_in is None else now + deadline_in
    t = ticket("t", now, method=method, deadline=deadline, crit=crit)
    assert q.allowance(t, now, standing=standing) == pytest.approx(expected)


# ---------------------------------------------------------------- idle moments


def test_a_call_started_without_queueing_is_an_idle_moment() -> None:
    """A call that started at once (a slot and a thread were free) shows the queue idle then,
    so a shed moments later does not make it a standing queue it never was."""

    def after_a_shed(*, started_at: float | None) -> AdmissionQueue[str]:
        q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, **QUARTER))
        q.record_service_time("m", 0.010, now=0.0)
        assert q.offer(ticket("a", 0.0), 0.0, running=0) == []
        assert q.take(0.0)[0] is not None  # the queue was last seen idle at 0.0
        if started_at is not None:
            q.note_started(started_at)
        # Three calls ahead on one slot (30 ms) > a quarter of its 100 ms: refused, a shed.
        refused = q.offer(ticket("b", 1.05, deadline=1.16), 1.05, running=3)
        assert reasons(refused) == {"b": Reason.CODEL}
        return q

    noted = after_a_shed(started_at=1.0)
    assert not noted.standing(1.06)
    assert noted.offer(ticket("c", 1.06), 1.06, running=0) == []
    assert noted.expire(1.07) == []  # queued into an idle queue: max_wait_s
    unnoted = after_a_shed(started_at=None)
    unnoted.note_started(1.055)  # a shed 5 ms ago: the queue is not idle, nothing changes
    assert unnoted.standing(1.06)
    assert unnoted.offer(ticket("c", 1.06), 1.06, running=0) == []
    assert reasons(unnoted.expire(1.07)) == {"c": Reason.CODEL}  # the 5 ms target


# ---------------------------------------------------------------- bound and preemption


def full_queue(crit: Criticality, limit: int = 3) -> AdmissionQueue[str]:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(queue_limit=limit))
    for i in range(limit):
        assert q.offer(ticket(f"q{i}", 0.0, crit=crit), 0.0) == []
    return q


def test_full_queue_rejects_newcomer_of_equal_or_lower_criticality() -> None:
    q = full_queue(DEFAULT)
    assert reasons(q.offer(ticket("d", 0.001), 0.001)) == {"d": Reason.QUEUE_FULL}
    assert reasons(q.offer(ticket("s", 0.001, crit=SHED), 0.001)) == {"s": Reason.QUEUE_FULL}
    assert q.depth == 3


def test_critical_newcomer_preempts_oldest_of_lowest_criticality() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(queue_limit=3))
    q.offer(ticket("d0", 0.0), 0.0)
    q.offer(ticket("s0", 0.0, crit=SHED), 0.0)
    q.offer(ticket("s1", 0.0, crit=SHED), 0.0)
    rejected = q.offer(ticket("c", 0.001, crit=CRIT), 0.001)
    assert reasons(rejected) == {"s0": Reason.PREEMPTED}
    assert reasons(q.offer(ticket("c2", 0.001, crit=CRIT), 0.001)) == {"s1": Reason.PREEMPTED}
    assert reasons(q.offer(ticket("c3", 0.001, crit=CRIT), 0.001)) == {"d0": Reason.PREEMPTED}
    assert reasons(q.offer(ticket("c4", 0.001, crit=CRIT), 0.001)) == {"c4": Reason.QUEUE_FULL}
    assert take_all(q, 0.002) == (["c", "c2", "c3"], [])


def test_full_queue_first_drops_doomed_calls() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(queue_limit=2))
    q.offer(ticket("doomed", 0.0, deadline=0.01), 0.0)
    q.offer(ticket("ok", 0.0), 0.0)
    assert reasons(q.offer(ticket("new", 0.02), 0.02)) == {"doomed": Reason.DEADLINE_GONE}
    assert q.depth == 2


# ---------------------------------------------------------------- service time and pushback


def test_service_estimate_is_a_time_decayed_mean() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(service_half_life_s=1.0))
    assert q.service_estimate("m") is None
    q.record_service_time("m", 0.010, now=0.0)
    assert q.service_estimate("m") == pytest.approx(0.010)
    q.record_service_time("m", 0.030, now=1.0)  # the old sample now weighs 1/2
    assert q.service_estimate("m") == pytest.approx((0.010 * 0.5 + 0.030) / 1.5)
    # Rate-independent: a burst at one instant averages instead of keeping only the last.
    for i in range(100):
        q.record_service_time("burst", 0.001 * (i % 2), now=5.0)
    assert q.service_estimate("burst") == pytest.approx(0.0005)
    assert q.service_estimate("other") is None
    with pytest.raises(ValueError, match="service time"):
        q.record_service_time("m", -1.0, now=2.0)
    with pytest.raises(ValueError, match="service time"):
        q.record_service_time("m", math.nan, now=2.0)


def test_pushback_is_the_drain_time_clamped() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(
        AdmissionConfig(workers=8, queue_limit=20, admit_within_allowance=False)
    )
    assert q.pushback_ms(0.0) == 1
    q.record_service_time("m", 0.010, now=0.0)
    for i in range(16):
        q.offer(ticket(f"t{i}", 0.0), 0.0)
    assert q.pushback_ms(0.0) == 20  # 16 calls x 10 ms / 8 workers
    q.offer(ticket("unknown", 0.0, method="new"), 0.0)  # no EWMA yet: counts the 5 ms target
    assert q.pushback_ms(0.0) == math.ceil(20 + 5 / 8)
    q.record_service_time("m", 100.0, now=0.0)
    assert q.pushback_ms(0.0) == 1000
    for i in range(3):
        q.offer(ticket(f"fill{i}", 0.0), 0.0)
    rejected = q.offer(ticket("late", 0.0), 0.0)
    assert [(r.reason, r.pushback_ms) for r in rejected] == [(Reason.QUEUE_FULL, 1000)]


def test_hold_estimate_is_a_decayed_mean_that_falls_back_to_the_wall_time() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(service_half_life_s=1.0))
    assert q.hold_estimate("m") is None
    q.record_service_time("m", 0.800, now=0.0)
    assert q.hold_estimate("m") == pytest.approx(0.800)  # no hold sample yet: the wall time
    q.record_hold_time("m", 0.002, now=0.0)
    assert q.hold_estimate("m") == pytest.approx(0.002)  # from the first hold sample on
    q.record_hold_time("m", 0.008, now=1.0)  # the old sample now weighs 1/2
    assert q.hold_estimate("m") == pytest.approx((0.002 * 0.5 + 0.008) / 1.5)
    assert q.service_estimate("m") == pytest.approx(0.800)  # the wall mean is apart
    assert q.codel_target("m") == pytest.approx(0.080)  # and still scales the target
    # Hold samples alone: no wall time, no fastest time, the fixed target.
    q.record_hold_time("cpu", 0.004, now=0.0)
    assert q.hold_estimate("cpu") == pytest.approx(0.004)
    assert q.service_estimate("cpu") is None
    assert q.fastest_service("cpu", 0.0) is None
    assert q.codel_target("cpu") == 0.005
    for bad in (-1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="service time"):
            q.record_hold_time("m", bad, now=2.0)


@pytest.mark.parametrize(
    ("holds", "admitted"),
    [
        ((), 0),  # no hold sample: a turn is the 800 ms wall time, over the 25 ms at once
        ((0.004,), 12),  # 2 ms per turn on 2 slots: 12 turns fit 25 ms
        ((0.004, 0.014), 5),  # the mean, 9 ms: 4.5 ms per turn
    ],
)
def test_wait_predictions_count_slot_hold_times_not_wall_times(
    holds: tuple[float, ...], admitted: int
) -> None:
    """An I/O-bound method holds a CPU slot for a sliver of its wall time: slots free quickly."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2, **QUARTER))
    q.record_service_time("m", SLOW_S, now=0.0)
    for hold in holds:
        q.record_hold_time("m", hold, now=0.0)
    deadline = 1.0 + SLOW_S + 0.100  # a 100 ms budget: up to 25 ms predicted wait admitted
    offers = [q.offer(ticket(f"t{i}", 1.0, deadline=deadline), 1.0, running=2) for i in range(30)]
    assert [r == [] for r in offers] == [True] * admitted + [False] * (30 - admitted)


def test_pushback_counts_slot_hold_times() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(
        AdmissionConfig(workers=8, admit_within_allowance=False)
    )
    q.record_service_time("m", 0.080, now=0.0)
    for i in range(16):
        q.offer(ticket(f"t{i}", 0.0), 0.0)
    assert q.pushback_ms(0.0) == 160  # no hold sample: 16 calls x 80 ms wall / 8 slots
    q.record_hold_time("m", 0.004, now=0.0)
    assert q.pushback_ms(0.0) == 8  # 16 calls x 4 ms in a slot / 8 slots


def after_a_burst(q: AdmissionQueue[str], until: float) -> None:
    """200 calls that each waited 800 ms end at 0.8 s; then 25 ms calls end at 60/s."""
    for _ in range(200):
        q.record_service_time("m", 0.800, now=0.800)
    now = 0.800
    while now < until:
        now += 1 / 60
        q.record_service_time("m", 0.025, now=now)


def test_a_burst_that_has_ended_stops_predicting_long_waits_within_the_recent_window() -> None:
    """The recovery's worst state: the limit at 6 and every slot busy right after a burst
    of 800 ms calls. The decayed mean still counts the burst's 200 samples seconds later
    (~0.3 s turns); predictions take the calls that ended in the last 0.5 s, so a 25 ms
    call with a 250 ms deadline queues behind one turn instead of being refused."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=6))
    after_a_burst(q, until=1.5)
    now = 1.5
    # The decayed mean: one turn ~60 ms, over the 56 ms a quarter of the budget allows.
    assert (q.hold_estimate("m") or 0.0) > 0.3
    assert q.predicted_hold("m", now) == pytest.approx(0.025)
    assert q.offer(ticket("next", now, deadline=now + 0.250), now, running=6) == []
    # Right as the burst ends, the window holds it: predictions are long, as they should be
    # while its calls were what ran.
    q2: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=6))
    after_a_burst(q2, until=0.85)
    assert (q2.predicted_hold("m", 0.85) or 0.0) > 0.5
    [rejection] = q2.offer(ticket("early", 0.85, deadline=0.85 + 0.250), 0.85, running=12)
    assert rejection.reason is Reason.CODEL


def test_predictions_follow_the_onset_of_a_slow_spell_within_the_recent_window() -> None:
    """The window's other worst input: calls turn slow (a slow downstream). The decayed
    mean of 2 s of fast calls lags; the window shows the new times half a second on."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=4))
    now = 0.0
    while now < 2.0:
        now += 0.01
        q.record_service_time("m", 0.010, now=now)
    while now < 2.6:
        now += 0.05
        q.record_service_time("m", 0.400, now=now)
    assert (q.hold_estimate("m") or 1.0) < 0.2
    assert q.predicted_hold("m", now) == pytest.approx(0.400)
    assert q.pushback_ms(now) == 1  # nothing queued
    q.offer(ticket("queued", now), now, running=0)
    assert q.pushback_ms(now) in (100, 101)  # one call of 400 ms over 4 slots, rounded up


def test_a_thin_recent_window_falls_back_to_the_decayed_mean() -> None:
    """Fewer than four calls ended within the window (a quiet method): one odd call must
    not set the predictions alone, so the decayed mean stands in."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2))
    for i in range(20):
        q.record_service_time("m", 0.020, now=0.1 * i)
    q.record_service_time("m", 1.000, now=5.0)
    assert q.predicted_hold("m", 5.0) == q.hold_estimate("m")
    for i in range(3):
        q.record_service_time("m", 0.030, now=5.1 + 0.01 * i)
    assert q.predicted_hold("m", 5.2) == pytest.approx((1.0 + 3 * 0.030) / 4)
    with pytest.raises(ValueError, match="recent_window_s"):
        AdmissionConfig(recent_window_s=0.0)


def test_structures_stay_bounded_under_sustained_overload() -> None:
    config = AdmissionConfig(queue_limit=32, workers=2, **UNBOUNDED_WAIT)
    q: AdmissionQueue[str] = AdmissionQueue(config)
    now = 0.0
    offered = accounted = 0
    for i in range(20_000):
        now += 0.0002
        crit = Criticality(i % 3)
        deadline = now + 0.001 * (i % 50) if i % 4 else None
        offered += 1
        accounted += len(
            q.offer(ticket(f"t{i}", now, method=f"m{i % 5}", deadline=deadline, crit=crit), now)
        )
        if i % 3 == 0:
            t, dropped = q.take(now)
            accounted += len(dropped) + (t is not None)
            q.record_service_time(f"m{i % 5}", 0.002, now)
        if i % 7 == 0:
            accounted += len(q.expire(now))
        assert q.depth <= config.queue_limit
        assert q._stored_entries() <= 3 * q.depth + 2 * config.queue_limit
    assert accounted + q.depth == offered


# ---------------------------------------------------------------- properties

METHODS = ("a", "b", "c")

# Small steps make standing queues form and persist; larger ones let them drain.
steps = st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.03])
offer_op = st.tuples(
    st.just("offer"),
    steps,
    st.sampled_from(list(Criticality)),
    st.sampled_from(METHODS),
    # deadline relative to now; often within the service times recorded, to meet probes
    st.none() | st.floats(-0.01, 0.3) | st.floats(0.0, 0.05),
)
take_op = st.tuples(st.just("take"), steps)
expire_op = st.tuples(st.just("expire"), steps)
record_op = st.tuples(st.just("record"), steps, st.sampled_from(METHODS), st.floats(0.0, 0.06))
start_op = st.tuples(st.just("start"), steps)  # a call started without queueing
operations = st.lists(
    st.one_of(offer_op, offer_op, offer_op, take_op, take_op, expire_op, record_op, start_op),
    min_size=20,
    max_size=150,
)
configs = st.builds(
    AdmissionConfig,
    workers=st.integers(1, 4),
    queue_limit=st.integers(1, 8),
    target_service_multiple=st.sampled_from([0.0, 1.0, 2.0]),
    sheddable_target_factor=st.sampled_from([0.5, 1.0]),
    admit_within_allowance=st.just(False),
    deadline_bounds_wait=st.booleans(),
    max_wait_s=st.sampled_from([0.05, 0.2, 10.0]),  # below, above and far above the interval
    service_window_s=st.sampled_from([0.05, 0.5, 5.0]),  # runs last up to ~4 s
    deadline_probe_s=st.sampled_from([0.01, 0.25]),
)


class Model:
    """What the queue should hold, kept by the test independently of the implementation.

    The decayed mean service time is read from the queue (it has its own test above); the
    fastest service time, the probes, idleness and every allowance are the model's own.
    """

    def __init__(self, q: AdmissionQueue[int], config: AdmissionConfig) -> None:
        self.q = q
        self.config = config
        self.queued: dict[Ticket[int], int] = {}  # ticket -> arrival index
        self.outcome: dict[int, str] = {}  # item -> "taken" / "rejected"
        self.last_empty: float | None = None
        self.last_shed = -math.inf  # last overload rejection (CODEL, QUEUE_FULL, PREEMPTED)
        self.shed_now = False  # the current operation shed a call for overload
        self.allow: dict[Ticket[int], float] = {}  # CoDel allowance, fixed when queued
        self.samples: dict[str, list[tuple[float, float]]] = {}  # method -> (at, seconds)
        self.probed_at: dict[str, float] = {}  # method -> when a probe was last let through
        self.probes = 0
        self.probe_tickets: set[Ticket[int]] = set()  # only a gone deadline drops these
        self.offered = 0
        self.taken_by_mode = {"fifo": 0, "lifo": 0}

    def fastest(self, method: str, now: float) -> float | None:
        """The shortest sample still in the window. The window is kept as five buckets of a
        fifth of ``service_window_s`` on a grid from time 0; a sample counts while its
        bucket is the current one or one of the five before it."""
        window = self.config.service_window_s
        current = math.floor(now * 5 / window)
        kept = [
            seconds
            for at, seconds in self.samples.get(method, [])
            if current - math.floor(at * 5 / window) <= 5
        ]
        return min(kept, default=None)

    def allowance(self, t: Ticket[int], now: float, standing: bool) -> float:
        c = self.config
        estimate = self.q.service_estimate(t.method)
        target = c.codel_target_s
        if estimate is not None:
            target = max(target, c.target_service_multiple * estimate)
        if standing and not self.bounded(t):
            return target * (c.sheddable_target_factor if t.criticality is SHED else 1.0)
        budget = c.max_wait_s  # the deadline budget, capped (no queue stands, or bounded)
        if t.deadline is not None:
            budget = min(budget, t.deadline - now - (self.fastest(t.method, now) or 0.0))
        return max(budget, c.codel_interval_s, target)  # ... and never below the interval

    def bounded(self, t: Ticket[int]) -> bool:
        return t.deadline is not None and self.config.deadline_bounds_wait

    def standing(self, now: float) -> bool:
        interval = self.config.codel_interval_s
        if not self.queued and now - self.last_shed > interval:
            return False  # idle
        return self.last_empty is not None and now - self.last_empty > interval

    def runnable(self, t: Ticket[int], now: float) -> bool:
        fastest = self.fastest(t.method, now) or 0.0
        long_enough = t in self.probe_tickets or (t.deadline or 0.0) - now >= fastest
        deadline_ok = t.deadline is None or (t.deadline > now and long_enough)
        return deadline_ok and now <= t.enqueued_at + self.allow[t]

    def behind_a_probe(self, t: Ticket[int], now: float) -> bool:
        """A call whose deadline is only too short, behind a queued probe of its method
        with an earlier deadline: the sweep stops at the probe (``_sweep_deadlines``) and
        the call is dropped when take() reaches it."""
        return (
            t.deadline is not None
            and t.deadline > now
            and now <= t.enqueued_at + self.allow[t]
            and any(
                p in self.queued
                and p.method == t.method
                and (p.deadline or 0.0, p.item) < (t.deadline, t.item)
                for p in self.probe_tickets
            )
        )

    def leave(self, t: Ticket[int], how: str) -> None:
        assert t.item not in self.outcome, f"ticket {t.item} left twice"
        self.outcome[t.item] = how
        self.queued.pop(t, None)

    def reject_all(self, rejected: list[Rejection[int]], now: float) -> None:
        for r in rejected:
            self.leave(r.ticket, "rejected")
            if r.reason in (Reason.CODEL, Reason.QUEUE_FULL, Reason.PREEMPTED):
                self.shed_now = True
        for r in rejected:
            self.check_rejection(r, now)

    def check_rejection(self, r: Rejection[int], now: float) -> None:
        t = r.ticket
        assert 1 <= r.pushback_ms <= self.config.pushback_max_ms
        if r.reason is Reason.DEADLINE_GONE:
            assert t.deadline is not None
            assert t.deadline <= now
        elif r.reason is Reason.DEADLINE_SHORT:
            fastest = self.fastest(t.method, now)
            assert t not in self.probe_tickets, "a probe dropped before its deadline was gone"
            assert t.deadline is not None
            assert fastest is not None
            assert t.deadline - now < fastest
        elif r.reason is Reason.CODEL:
            assert t in self.allow, "refused on arrival, but the model disables that"
            assert now > t.enqueued_at + self.allow[t]

    def run(self, ops: list[tuple[Any, ...]]) -> None:
        q, now = self.q, 0.0
        for op in ops:
            now += op[1]
            standing = self.standing(now)
            assert q.standing(now) == standing
            self.shed_now = False
            if op[0] == "offer":
                self.offer(op, now, standing)
            elif op[0] == "take":
                self.take(now, standing)
            elif op[0] == "expire":
                self.reject_all(q.expire(now), now)
                for t in self.queued:  # the sweep left only runnable calls
                    assert self.runnable(t, now) or self.behind_a_probe(t, now)
            elif op[0] == "start":
                q.note_started(now)  # idle now if nothing is queued or was shed lately
            else:
                q.record_service_time(op[2], op[3], now)
                self.samples.setdefault(op[2], []).append((now, op[3]))
            if self.shed_now:
                self.last_shed = now
            if not self.queued and now - self.last_shed > self.config.codel_interval_s:
                self.last_empty = now
            assert q.depth == len(self.queued) <= self.config.queue_limit
            assert (q.codel_load(now) == 0) == (not q.standing(now))
            assert 0 <= q.codel_load(now) <= 100
            assert 1 <= q.pushback_ms(now) <= self.config.pushback_max_ms
            for method in METHODS:
                assert q.fastest_service(method, now) == self.fastest(method, now)
        # Flush: everything offered is accounted for exactly once.
        for r in q.expire(now + 1000.0):
            self.leave(r.ticket, "rejected")
        assert q.depth == 0
        assert not self.queued
        assert sorted(self.outcome) == list(range(self.offered))

    def offer(self, op: tuple[Any, ...], now: float, standing: bool) -> None:
        _, _, crit, method, relative_deadline = op
        deadline = None if relative_deadline is None else now + relative_deadline
        t = Ticket(self.offered, method, now, deadline, crit)
        self.offered += 1
        was_full = len(self.queued) >= self.config.queue_limit
        before = list(self.queued)
        fastest = self.fastest(method, now)
        rejected = self.q.offer(t, now)
        gone = {r.ticket for r in rejected}
        shed_for_room = any(
            r.ticket is not t and r.reason in (Reason.CODEL, Reason.PREEMPTED) for r in rejected
        )
        idle = not shed_for_room and now - self.last_shed > self.config.codel_interval_s
        # Idle before the newcomer, or emptied to make room for it (its calls' deadlines
        # gone): either way the newcomer finds no queue standing, and its allowance is set so.
        emptied = idle and all(o in gone for o in before)
        self.allow[t] = self.allowance(t, now, standing and not emptied)
        self.queued[t] = t.item
        self.reject_all(rejected, now)
        if emptied:
            self.last_empty = now
        by_reason = {r.ticket.item: r.reason for r in rejected}
        if deadline is not None and deadline <= now:
            assert by_reason == {t.item: Reason.DEADLINE_GONE}
        elif deadline is not None and fastest is not None and deadline - now < fastest:
            if now - self.probed_at.get(method, -math.inf) >= self.config.deadline_probe_s:
                assert by_reason.get(t.item) is not Reason.DEADLINE_SHORT
                if t.item not in by_reason:  # queued: it is the probe, measuring again
                    self.probed_at[method] = now
                    self.probes += 1
                    self.probe_tickets.add(t)
            else:
                assert by_reason == {t.item: Reason.DEADLINE_SHORT}
        if t.item not in by_reason:
            assert t in self.queued
        for r in rejected:
            if r.ticket is not t:  # only a full queue disturbs queued calls
                assert was_full
            if r.reason is Reason.PREEMPTED:
                assert r.ticket.criticality < crit
                assert t.item not in by_reason
                lower = [o for o in self.queued if o.criticality < r.ticket.criticality]
                assert not lower, "preempted a call while a less critical one stayed"
                same = [o for o in self.queued if o.criticality == r.ticket.criticality]
                assert all(o.item > r.ticket.item for o in same), "preempted not the oldest"
            if r.reason is Reason.QUEUE_FULL:
                assert r.ticket is t
                assert len(self.queued) == self.config.queue_limit
                assert all(o.criticality >= crit for o in self.queued)

    def take(self, now: float, standing: bool) -> None:
        t, rejected = self.q.take(now)
        self.reject_all(rejected, now)
        for r in rejected:  # take drops only the candidates it looked at
            assert r.reason not in (Reason.PREEMPTED, Reason.QUEUE_FULL)
        if t is None:
            assert not self.queued
            return
        assert t in self.queued
        assert t.deadline is None or t.deadline > now
        assert self.runnable(t, now)
        self.leave(t, "taken")
        assert all(o.criticality <= t.criticality for o in self.queued)
        same_level = [o for o in self.queued if o.criticality == t.criticality]
        bounded = [o for o in same_level if self.bounded(o)]
        others = [o for o in same_level if not self.bounded(o)]
        if same_level:
            self.taken_by_mode["lifo" if standing and not self.bounded(t) else "fifo"] += 1
        if not standing:  # oldest first
            assert all(o.item > t.item for o in same_level)
        elif self.bounded(t):  # the oldest bounded call, its allowance ending first
            assert all(o.item > t.item for o in bounded)
            if others:
                newest = max(others, key=lambda o: o.item)
                assert self.expiry(t) <= self.expiry(newest) + 1e-9
        else:  # the newest other call, its allowance ending before the oldest bounded one's
            assert all(o.item < t.item for o in others)
            if bounded:
                oldest = min(bounded, key=lambda o: o.item)
                assert self.expiry(t) <= self.expiry(oldest) + 1e-9

    def expiry(self, t: Ticket[int]) -> float:
        return t.enqueued_at + self.allow[t]


@settings(deadline=None, max_examples=120, derandomize=True)
@given(config=configs, ops=operations)
def test_property_queue_matches_model(config: AdmissionConfig, ops: list[tuple[Any, ...]]) -> None:
    Model(AdmissionQueue(config), config).run(ops)


@pytest.mark.parametrize(("seed", "window_s"), [(0, 5.0), (1, 5.0), (2, 0.2), (3, 0.05)])
def test_model_under_sustained_overload(seed: int, window_s: float) -> None:
    """Long seeded runs at ~2x capacity, where standing queues, LIFO and shedding are the norm."""
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    for _ in range(3000):
        dt = rng.choice([0.0, 0.0005, 0.001, 0.002])
        draw = rng.random()
        if draw < 0.55:
            deadline = None if rng.random() < 0.3 else rng.uniform(-0.002, 0.3)
            ops.append(("offer", dt, rng.choice(list(Criticality)), rng.choice(METHODS), deadline))
        elif draw < 0.82:
            ops.append(("take", dt))
        elif draw < 0.95:
            ops.append(("expire", dt))
        else:
            ops.append(("record", dt, rng.choice(METHODS), rng.uniform(0.0, 0.01)))
    config = AdmissionConfig(
        workers=2, queue_limit=16, max_wait_s=0.2, service_window_s=window_s, **UNBOUNDED_WAIT
    )
    model = Model(AdmissionQueue(config), config)
    model.run(ops)
    assert model.taken_by_mode["fifo"] > 0
    assert model.taken_by_mode["lifo"] > 0


@settings(deadline=None, max_examples=40, derandomize=True)
@given(
    config=configs,
    ops=operations,
    lags=st.lists(st.floats(0.0, 0.01), min_size=150, max_size=150),
)
def test_property_out_of_order_stamps_never_yield_a_doomed_call(
    config: AdmissionConfig, ops: list[tuple[Any, ...]], lags: list[float]
) -> None:
    """The adapter may stamp enqueued_at a little before it gets the lock."""
    q: AdmissionQueue[int] = AdmissionQueue(config)
    now, offered, left = 0.0, 0, 0
    allowance: dict[int, float] = {}  # fixed when queued
    probes: set[int] = set()
    for op, lag in zip(ops, lags, strict=False):
        now += op[1]
        standing = q.standing(now)
        if op[0] == "offer":
            deadline = None if op[4] is None else now + op[4]
            t = Ticket(offered, op[3], now - lag, deadline, op[2])
            allowance[offered] = q.allowance(t, now, standing=standing)
            fastest = q.fastest_service(t.method, now)
            rejected = q.offer(t, now)
            queued = all(r.ticket is not t for r in rejected)
            short = deadline is not None and fastest is not None and deadline - now < fastest
            if queued and short:
                probes.add(t.item)  # let in to measure again: only a gone deadline drops it
            left += len(rejected)
            offered += 1
        elif op[0] in ("take", "expire"):
            taken, rejected = q.take(now) if op[0] == "take" else (None, q.expire(now))
            left += len(rejected) + (taken is not None)
            if taken is not None:
                fastest = q.fastest_service(taken.method, now) or 0.0
                long_enough = taken.item in probes or (taken.deadline or 0.0) - now >= fastest
                assert taken.deadline is None or (taken.deadline > now and long_enough)
                assert now <= taken.enqueued_at + allowance[taken.item]
        elif op[0] == "start":
            q.note_started(now)
        else:
            q.record_service_time(op[2], op[3], now)
        assert q.depth <= config.queue_limit
    assert left + q.depth == offered


# ---------------------------------------------------------------- refusing on arrival


# A 110 ms deadline on a method whose fastest call took 10 ms: a 100 ms budget, so while no
# queue stands a newcomer is admitted if it is predicted to wait at most 25 ms.
BUDGET_100MS = 0.110


@pytest.mark.parametrize(("deadline", "admitted"), [(BUDGET_100MS, 5), (0.2225, 10)])
def test_newcomer_refused_at_once_when_its_predicted_wait_is_over_a_quarter_of_its_allowance(
    deadline: float, admitted: int
) -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2, **QUARTER))
    q.record_service_time("m", 0.010, now=0.0)  # not standing: allowance = deadline budget
    # Both workers busy: a call with k queued ahead waits k + 1 turns of 10 ms / 2 workers.
    for i in range(admitted):  # waits of 5, 10, ... ms, up to a quarter of the budget
        assert q.offer(ticket(f"t{i}", 0.0, deadline=deadline), 0.0, running=2) == []
    # One more turn: likely dropped later, so refused now.
    (refused,) = q.offer(ticket("late", 0.0, deadline=deadline), 0.0, running=2)
    assert refused.ticket.item == "late"
    assert refused.reason is Reason.CODEL
    assert q.depth == admitted


def test_free_workers_shorten_the_predicted_wait() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2, **QUARTER))
    q.record_service_time("m", 0.010, now=0.0)
    # Nothing running: the first two calls start at once, five more fit the 25 ms.
    for i in range(7):
        assert q.offer(ticket(f"t{i}", 0.0, deadline=BUDGET_100MS), 0.0, running=0) == []
    assert q.offer(ticket("late", 0.0, deadline=BUDGET_100MS), 0.0, running=0) != []


def test_without_a_running_count_every_worker_counts_as_busy() -> None:
    def admitted(running: int | None) -> int:
        q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2, **QUARTER))
        q.record_service_time("m", 0.010, now=0.0)
        tickets = [ticket(f"t{i}", 0.0, deadline=BUDGET_100MS) for i in range(20)]
        if running is None:
            return sum(q.offer(t, 0.0) == [] for t in tickets)
        return sum(q.offer(t, 0.0, running=running) == [] for t in tickets)

    assert admitted(None) == admitted(2) == 5
    assert admitted(1) == 6


def test_standing_queue_admits_a_slow_call_only_into_a_free_worker() -> None:
    """Calls whose wait no deadline bounds (deadline_bounds_wait off here)."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2, deadline_bounds_wait=False))
    q.record_service_time("m", 0.040, now=0.0)  # target = max(5 ms, 0.1 x 40 ms) = 5 ms
    assert q.offer(ticket("anchor", 0.0, deadline=10.0), 0.0, running=2) == []
    now = 0.2  # the queue has not been empty for 200 ms: standing
    assert q.standing(now)
    # One worker free but "anchor" is queued for it: "a" would wait a turn (20 ms),
    # far over a quarter of the 5 ms target.
    (refused,) = q.offer(ticket("a", now, deadline=10.0), now, running=1)
    assert refused.ticket.item == "a"
    assert refused.reason is Reason.CODEL
    # Both workers free: one is the newcomer's.
    assert q.offer(ticket("b", now, deadline=10.0), now, running=0) == []


def test_standing_queue_still_queues_calls_short_enough_to_wait() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=8, deadline_bounds_wait=False))
    q.record_service_time("m", 0.001, now=0.0)  # 1 ms calls: a turn is 0.125 ms
    assert q.offer(ticket("anchor", 0.0, deadline=10.0), 0.0, running=8) == []
    now = 0.2
    assert q.standing(now)
    # Every worker busy; 40 turns of 0.125 ms fit the 5 ms target (in a standing queue a
    # wrong prediction costs at most the target, so the whole target is used).
    admitted = [
        q.offer(ticket(f"t{i}", now, deadline=10.0), now, running=8) == [] for i in range(42)
    ]
    assert admitted == [True] * 39 + [False] * 3


def test_critical_newcomer_counts_only_calls_at_or_above_its_level() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, **QUARTER))
    q.record_service_time("m", 0.010, now=0.0)  # allowance 100 ms: waits up to 25 ms admitted

    def offer(name: str, crit: Criticality) -> list[Rejection[str]]:
        return q.offer(ticket(name, 0.0, deadline=BUDGET_100MS, crit=crit), 0.0, running=1)

    for i in range(2):  # waits of 10 and 20 ms behind the running call
        assert offer(f"s{i}", SHED) == []
    assert offer("s-late", SHED) != []
    assert offer("crit", CRIT) == []


@settings(deadline=None, derandomize=True)
@given(
    workers=st.integers(1, 16),
    service_s=st.floats(0.0001, 1.0),
    hold_s=st.none() | st.floats(0.0001, 1.0),
    budget_s=st.none() | st.floats(0.0, 20.0),
    queued=st.integers(0, 20),
    running=st.integers(0, 32),
    standing=st.booleans(),
)
def test_property_refused_on_arrival_only_when_no_worker_is_free_for_it(
    workers: int,
    service_s: float,
    hold_s: float | None,
    budget_s: float | None,
    queued: int,
    running: int,
    standing: bool,
) -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=workers))
    q.record_service_time("m", service_s, now=0.0)
    if hold_s is not None:
        q.record_hold_time("m", hold_s, now=0.0)
    for i in range(queued):  # a method with no service sample yet is never refused on arrival
        assert q.offer(ticket(f"q{i}", 0.0, method="other"), 0.0, running=running) == []
    now = 0.2 if standing else 0.0  # queued since 0 and never empty: standing at 0.2 s
    assert q.standing(now) == (standing and queued > 0)
    # The deadline leaves the fastest service time plus the budget (no deadline: none).
    deadline = None if budget_s is None else now + service_s + budget_s
    new = ticket("new", now, deadline=deadline)
    allowance = q.allowance(new, now, standing=q.standing(now))
    turns = queued + running - workers + 1  # worker turns before "new" could start
    turn_s = service_s if hold_s is None else hold_s  # a turn is a slot's hold time
    busy_for = now if queued else 0.0  # the queue has not been idle since 0
    if deadline is None:  # CoDel: the whole (short) target in a standing queue
        fraction = 1.0 if q.standing(now) else 0.25
    else:  # a young queue may be a burst: deeper
        fraction = 0.75 if busy_for < allowance else 0.25
    config = AdmissionConfig()
    # A patient call (its allowance holds patient_runs of the fastest run, here the only
    # run: service_s) is refused only if late even were every turn that fastest run.
    patient = deadline is not None and allowance >= config.patient_runs * service_s
    refused = q.offer(new, now, running=running) != []
    if patient:
        assert refused == (turns > 0 and turns * service_s / workers > allowance)
    else:
        assert refused == (turns > 0 and turns * turn_s / workers > fraction * allowance)


def test_no_bound_before_the_first_service_sample() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, queue_limit=50))
    assert all(q.offer(ticket(f"t{i}", 0.0), 0.0) == [] for i in range(50))


def test_a_queue_younger_than_a_callers_budget_admits_deeper() -> None:
    """burst_wait_fraction: a queue busy for less than a call's allowance may be a burst
    drained in time; one busy for longer is overload, and only a quarter. (Budgets of 100
    runs are patient by default: patient_runs has its own tests.)"""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, patient_runs=0.0))
    q.record_service_time("m", 0.010, now=0.0)  # a turn: 10 ms on the one worker

    def depth(now: float, deadline_in: float) -> int:
        """How many newcomers, behind the one running call, are admitted at ``now``."""
        for i in range(500):
            if q.offer(ticket(f"n{now}-{i}", now, deadline=now + deadline_in), now, running=1):
                return i
        raise AssertionError("never refused")

    assert q.offer(ticket("anchor", 0.0, deadline=100.0), 0.0, running=1) == []  # busy from 0
    # A young queue: 1 s budgets (0.99 s allowance, 10 ms fastest), 0.75 of it is 74 turns,
    # the anchor's included.
    assert depth(0.0, 1.0) == 73
    assert reasons(q.expire(1.2)) == {f"n0.0-{i}": Reason.DEADLINE_GONE for i in range(73)}
    # The anchor kept it busy for 1.2 s, longer than a 1 s caller's budget: a quarter, 24.
    assert depth(1.2, 1.0) == 23
    # A caller with a 2 s budget still meets a queue younger than that: 0.75 of 1.99 s.
    assert q.offer(ticket("two", 1.2, deadline=3.2), 1.2, running=1) == []
    # A call without a deadline follows CoDel in the standing queue: 5 ms, refused.
    assert reasons(q.offer(ticket("open", 1.2), 1.2, running=1)) == {"open": Reason.CODEL}


NOW_TURN = (0.010 + 8 * 0.040) / 9  # the recent window's mean: the fastest run and eight slow


def burst_taught(**config: Any) -> AdmissionQueue[str]:
    """A queue that saw one 10 ms run (the fastest), then eight of 40 ms (the turns of now)."""
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, **config))
    q.record_service_time("m", 0.010, now=0.0)
    for i in range(8):
        q.record_service_time("m", 0.040, now=0.1 + i * 0.01)
    return q


def admitted_behind_one(q: AdmissionQueue[str], now: float, deadline_in: float) -> int:
    """How many newcomers at ``now`` queue behind the one running call before one is refused."""
    for i in range(1000):
        if q.offer(
            ticket(f"n{now}-{deadline_in}-{i}", now, deadline=now + deadline_in), now, running=1
        ):
            return i
    raise AssertionError("never refused")


def test_a_patient_call_is_refused_only_if_late_even_at_the_fastest_rate() -> None:
    """patient_runs: a budget of at least 50 fastest runs. bench/soak's burst: the calls
    running now take 40 ms each (their senders took the cores), the method's fastest run is
    10 ms; the backlog is served at the fastest rate once the burst has passed."""
    # 2 s budgets (1.99 s allowance: 199 fastest runs) are patient: 199 turns of 10 ms, the
    # running call's included, so 199 queue behind it -- not 0.75 x 1.99 s of 40 ms turns.
    assert admitted_behind_one(burst_taught(), 0.2, 2.0) == 199
    # 0.4 s budgets hold 39 fastest runs: impatient, the turns of now and the young queue's 0.75.
    assert admitted_behind_one(burst_taught(), 0.2, 0.4) == math.floor(0.75 * 0.39 / NOW_TURN)
    # patient_runs=0 turns the rule off: the 2 s budgets get the turns of now too (40).
    off = burst_taught(patient_runs=0.0)
    assert admitted_behind_one(off, 0.2, 2.0) == math.floor(0.75 * 1.99 / NOW_TURN)


def late_drop_taught(**config: Any) -> AdmissionQueue[str]:
    """:func:`burst_taught`, then a queued call of the method dropped for its deadline at 0.26."""
    q = burst_taught(**config)
    assert q.offer(ticket("late", 0.2, deadline=0.25), 0.2, running=0) == []
    assert reasons(q.expire(0.26)) == {"late": Reason.DEADLINE_GONE}
    return q


def test_a_drop_for_its_deadline_ends_the_methods_patience_for_a_while() -> None:
    """patient_backoff_s. The fastest run is a minimum over every call of the method: one
    cheap call makes every call patient, and a fresh server offered 3x its capacity
    admitted calls that timed out by the hundred a second. A queued call dropped for its
    deadline is the evidence that hopes failed: for a second the usual prediction decides,
    then the method is patient again."""
    hopeful = admitted_behind_one(late_drop_taught(patient_backoff_s=0.0), 0.3, 2.0)
    usual = admitted_behind_one(late_drop_taught(patient_runs=0.0), 0.3, 2.0)
    assert usual < hopeful
    assert admitted_behind_one(late_drop_taught(), 0.3, 2.0) == usual
    # A second after the drop (at 0.26), with no drop since, it is patient again.
    again = admitted_behind_one(late_drop_taught(patient_backoff_s=0.0), 1.3, 2.0)
    assert admitted_behind_one(late_drop_taught(), 1.3, 2.0) == again
    assert admitted_behind_one(late_drop_taught(patient_runs=0.0), 1.3, 2.0) < again


def drop_late_at(q: AdmissionQueue[str], at: float) -> None:
    """A call of ``m`` queued at ``at`` and dropped for its deadline 60 ms later."""
    assert q.offer(ticket(f"late{at}", at, deadline=at + 0.05), at, running=0) == []
    assert reasons(q.expire(at + 0.06)) == {f"late{at}": Reason.DEADLINE_GONE}


def test_patience_that_keeps_failing_backs_off_longer_and_a_calm_resets_it() -> None:
    """patient_backoff_s doubles while patience fails again soon after it came back (a
    method whose cheap calls keep its fastest run low), up to patient_backoff_max_s; a
    failure after a long calm starts from the base again. Drops while patience is off
    (the rest of one failure's queue) do not count as new failures."""
    q = burst_taught(patient_backoff_s=1.0, patient_backoff_max_s=4.0)

    def backoff() -> float:
        return q._service["m"].patience_backoff_s

    drop_late_at(q, 1.0)
    assert backoff() == 1.0
    drop_late_at(q, 1.5)  # patience still off: the same failure
    assert backoff() == 1.0
    drop_late_at(q, 2.7)  # patience came back at 2.56 and failed again
    assert backoff() == 2.0
    drop_late_at(q, 4.9)  # back at 4.76, failed again
    assert backoff() == 4.0
    drop_late_at(q, 9.0)  # back at 8.96, failed again: capped
    assert backoff() == 4.0
    drop_late_at(q, 40.0)  # after a calm of over four backoffs: from the base again
    assert backoff() == 1.0


def test_patient_backoff_max_must_cover_the_base() -> None:
    with pytest.raises(ValueError, match="patient_backoff_max_s"):
        AdmissionConfig(patient_backoff_s=2.0, patient_backoff_max_s=1.0)


def test_patience_is_not_ended_by_a_refusal_on_arrival() -> None:
    """Only a queued call dropped for its deadline ends patience: a call refused on
    arrival was never admitted on a hope."""
    q = burst_taught()
    gone = q.offer(ticket("gone", 0.2, deadline=0.1), 0.2, running=1)
    assert reasons(gone) == {"gone": Reason.DEADLINE_GONE}
    hopeful = admitted_behind_one(burst_taught(patient_backoff_s=0.0), 0.2, 2.0)
    assert admitted_behind_one(q, 0.2, 2.0) == hopeful


def test_patient_calls_admitted_too_hopefully_are_dropped_before_they_run() -> None:
    """The patience rule's worst input: overload that outlasts the calls (400 arrivals a
    second, 50 served). Admitted on the fastest rate, a patient call the server cannot reach
    in time is dropped without running once its deadline leaves less than its fastest run;
    the rest are refused on arrival, the queue stays within its bound, every call is
    accounted for, and the calls that run start with time for a fastest run."""
    config = AdmissionConfig(workers=1, queue_limit=300)
    q: AdmissionQueue[str] = AdmissionQueue(config)
    q.record_service_time("m", 0.010, now=0.0)
    ran = 0
    dropped: list[Reason] = []  # after waiting
    refused: list[Reason] = []  # on arrival
    started_with: list[tuple[float, float]] = []  # (time left, the fastest run then)
    for step in range(2000):  # 10 s: two calls arrive per 5 ms; one 20 ms run per 20 ms
        now = step * 0.005
        for k in range(2):
            rejections = q.offer(ticket(f"c{step}-{k}", now, deadline=now + 2.0), now, running=1)
            refused += [r.reason for r in rejections]
        if step % 4 == 0:
            chosen, drops = q.take(now)
            dropped += [r.reason for r in drops]
            if chosen is not None:
                ran += 1
                fastest = q.fastest_service("m", now)
                assert chosen.deadline is not None
                assert fastest is not None
                started_with.append((chosen.deadline - now, fastest))
                q.record_service_time("m", 0.020, now)
        dropped += [r.reason for r in q.expire(now)]
        assert q.depth <= config.queue_limit
    assert ran == 500
    assert ran + len(dropped) + len(refused) + q.depth == 4000
    assert all(left >= fastest for left, fastest in started_with)
    assert dropped
    assert set(dropped) <= {Reason.DEADLINE_SHORT, Reason.DEADLINE_GONE}
    assert refused
    assert set(refused) <= {Reason.CODEL, Reason.QUEUE_FULL}


# ---------------------------------------------------------------- a ticket leaves, its item goes


class Payload:
    """A queued item a test can watch being freed (a weak reference)."""


def _freed(refs: list[weakref.ref[Payload]]) -> int:
    return sum(ref() is None for ref in refs)


def _queue_with(
    tickets: list[tuple[float, float | None, Criticality]], *, queue_limit: int = 64
) -> tuple[AdmissionQueue[Payload], list[weakref.ref[Payload]]]:
    q: AdmissionQueue[Payload] = AdmissionQueue(
        AdmissionConfig(workers=1, queue_limit=queue_limit, max_wait_s=1.0)
    )
    refs = []
    for at, deadline, crit in tickets:
        item = Payload()
        refs.append(weakref.ref(item))
        assert q.offer(Ticket(item, "m", at, deadline, crit), at, running=1) == []
    return q, refs


def _holds_nothing_gone(q: AdmissionQueue[Payload], refs: list[weakref.ref[Payload]]) -> None:
    """Every item that left is freed, though dead entries that held them remain stored."""
    assert q._stored_entries() > q.depth  # not compacted: the entries are still there
    assert _freed(refs) == len(refs) - q.depth


@pytest.mark.parametrize("path", ["taken", "expired", "dropped at take", "preempted"])
def test_the_queue_holds_no_item_once_its_ticket_has_left(path: str) -> None:
    """The worst input: calls passing through the queue faster than its dead entries are
    compacted (once per ``queue_limit`` removals). The executor's items hold gRPC calls, whose
    HTTP/2 streams stay open, counted against the connection's cap, while anything holds them."""
    if path == "taken":
        q, refs = _queue_with([(0.001 * i, None, DEFAULT) for i in range(3)])
        assert all(q.take(0.01)[0] is not None for _ in range(3))
    elif path == "expired":  # a deadline gone, and a call that outwaited its allowance
        q, refs = _queue_with([(1.0, 1.05, DEFAULT), (1.0, None, DEFAULT), (2.9, None, DEFAULT)])
        assert {r.reason for r in q.expire(3.0)} == {Reason.DEADLINE_GONE, Reason.CODEL}
    elif path == "dropped at take":
        q, refs = _queue_with([(1.0, None, DEFAULT), (1.0, None, DEFAULT)])
        chosen, dropped = q.take(2.6)
        assert chosen is None
        assert [r.reason for r in dropped] == [Reason.CODEL] * 2
        del dropped
    else:  # a full queue of sheddable calls makes room for a critical one
        q, refs = _queue_with([(0.0, None, SHED), (0.0, None, SHED)], queue_limit=2)
        critical = Payload()
        refs.append(weakref.ref(critical))
        rejections = q.offer(Ticket(critical, "m", 0.1, None, CRIT), 0.1, running=1)
        assert [r.reason for r in rejections] == [Reason.PREEMPTED]
        del rejections, critical
    _holds_nothing_gone(q, refs)

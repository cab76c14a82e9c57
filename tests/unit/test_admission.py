"""Unit tests of the pure admission policy (rpckit.server._admission): examples, then properties."""

from __future__ import annotations

import dataclasses
import math
import random
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
    assert config.queue_limit == 256
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
    q: AdmissionQueue[str] = AdmissionQueue()
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
    q: AdmissionQueue[str] = AdmissionQueue()
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
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("anchor", 0.0), 0.0)
    assert q.standing(0.101)
    q.offer(ticket("stale", 0.101), 0.101)  # will have waited 6.5 ms
    q.offer(ticket("fresh", 0.107), 0.107)  # will have waited 0.5 ms
    dropped = q.expire(0.1075)
    assert reasons(dropped) == {"anchor": Reason.CODEL, "stale": Reason.CODEL}
    t, dropped = q.take(0.1075)
    assert (t and t.item, dropped) == ("fresh", [])


def test_codel_allowance_is_fixed_when_a_call_is_queued() -> None:
    """Fail at Scale's enqueue(req, timeout): a burst queued while idle keeps its interval."""
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("anchor", 0.0), 0.0)
    for i in range(3):  # queued before the queue stands: 100 ms each
        q.offer(ticket(f"burst{i}", 0.05), 0.05)
    assert q.standing(0.101)
    q.offer(ticket("late", 0.101), 0.101)  # queued into a standing queue: 5 ms
    assert reasons(q.expire(0.107)) == {"anchor": Reason.CODEL, "late": Reason.CODEL}
    assert q.depth == 3  # the burst has waited 57 ms of its 100
    assert q.expire(0.1495) == []
    assert set(reasons(q.expire(0.1505))) == {"burst0", "burst1", "burst2"}


def test_codel_without_standing_queue_allows_waiting_up_to_interval() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("patient", 0.0), 0.0)
    assert q.expire(0.090) == []  # 90 ms > target, but the queue has not stood
    t, dropped = q.take(0.095)
    assert (t and t.item, dropped) == ("patient", [])
    # A call that outwaits the interval is dropped either way.
    q.offer(ticket("late", 0.2), 0.2)
    assert reasons(q.expire(0.301)) == {"late": Reason.CODEL}


def test_codel_target_scales_with_service_time() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(**UNBOUNDED_WAIT))
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
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("anchor", 0.0, crit=CRIT), 0.0)
    q.offer(ticket("shed", 0.101, crit=SHED), 0.101)
    q.offer(ticket("default", 0.101), 0.101)
    q.offer(ticket("crit", 0.101, crit=CRIT), 0.101)
    # 4 ms of waiting: above 0.5 x 5 ms, below 5 ms.
    assert reasons(q.expire(0.105)) == {"anchor": Reason.CODEL, "shed": Reason.CODEL}
    assert take_all(q, 0.105) == (["crit", "default"], [])


def test_codel_load_measures_use_of_the_allowance() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
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


def test_deadline_gone_and_short_at_offer_use_the_method_ewma() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.record_service_time("slow", 0.050, now=0.0)
    assert reasons(q.offer(ticket("gone", 1.0, deadline=1.0), 1.0)) == {
        "gone": Reason.DEADLINE_GONE
    }
    assert reasons(q.offer(ticket("short", 1.0, method="slow", deadline=1.03), 1.0)) == {
        "short": Reason.DEADLINE_SHORT
    }
    assert q.offer(ticket("enough", 1.0, method="slow", deadline=1.05), 1.0) == []
    assert q.offer(ticket("fast", 1.0, method="fast", deadline=1.03), 1.0) == []
    assert q.offer(ticket("none", 1.0, method="slow"), 1.0) == []
    assert q.depth == 3


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
    q.record_service_time("m", 0.095, now=0.020)  # 80 ms left < 95 ms EWMA
    assert reasons(q.expire(0.020)) == {"t": Reason.DEADLINE_SHORT}


def test_expire_rejects_doomed_calls_without_taking() -> None:
    q: AdmissionQueue[str] = AdmissionQueue()
    q.offer(ticket("d10", 0.0, deadline=0.010), 0.0)
    q.offer(ticket("d30", 0.0, deadline=0.030), 0.0)
    q.offer(ticket("none", 0.0), 0.0)
    assert q.expire(0.005) == []
    assert reasons(q.expire(0.011)) == {"d10": Reason.DEADLINE_GONE}
    assert reasons(q.expire(0.031)) == {"d30": Reason.DEADLINE_GONE}
    assert q.depth == 1


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
    st.none() | st.floats(-0.01, 0.3),  # deadline relative to now
)
take_op = st.tuples(st.just("take"), steps)
expire_op = st.tuples(st.just("expire"), steps)
record_op = st.tuples(st.just("record"), steps, st.sampled_from(METHODS), st.floats(0.0, 0.06))
operations = st.lists(
    st.one_of(offer_op, offer_op, offer_op, take_op, take_op, expire_op, record_op),
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
)


class Model:
    """What the queue should hold, kept by the test independently of the implementation."""

    def __init__(self, q: AdmissionQueue[int], config: AdmissionConfig) -> None:
        self.q = q
        self.config = config
        self.queued: dict[Ticket[int], int] = {}  # ticket -> arrival index
        self.outcome: dict[int, str] = {}  # item -> "taken" / "rejected"
        self.last_empty: float | None = None
        self.last_shed = -math.inf  # last overload rejection (CODEL, QUEUE_FULL, PREEMPTED)
        self.shed_now = False  # the current operation shed a call for overload
        self.allow: dict[Ticket[int], float] = {}  # CoDel allowance, fixed when queued
        self.offered = 0
        self.taken_by_mode = {"fifo": 0, "lifo": 0}

    def allowance(self, t: Ticket[int], standing: bool) -> float:
        c = self.config
        estimate = self.q.service_estimate(t.method)
        target = c.codel_target_s
        if estimate is not None:
            target = max(target, c.target_service_multiple * estimate)
        if not standing:
            return max(c.codel_interval_s, target)
        return target * (c.sheddable_target_factor if t.criticality is SHED else 1.0)

    def standing(self, now: float) -> bool:
        interval = self.config.codel_interval_s
        if not self.queued and now - self.last_shed > interval:
            return False  # idle
        return self.last_empty is not None and now - self.last_empty > interval

    def runnable(self, t: Ticket[int], now: float) -> bool:
        estimate = self.q.service_estimate(t.method) or 0.0
        deadline_ok = t.deadline is None or (t.deadline > now and t.deadline - now >= estimate)
        return deadline_ok and now <= t.enqueued_at + self.allow[t]

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
        estimate = self.q.service_estimate(t.method)
        if r.reason is Reason.DEADLINE_GONE:
            assert t.deadline is not None
            assert t.deadline <= now
        elif r.reason is Reason.DEADLINE_SHORT:
            assert t.deadline is not None
            assert estimate is not None
            assert t.deadline - now < estimate
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
                    assert self.runnable(t, now)
            else:
                q.record_service_time(op[2], op[3], now)
            if self.shed_now:
                self.last_shed = now
            if not self.queued and now - self.last_shed > self.config.codel_interval_s:
                self.last_empty = now
            assert q.depth == len(self.queued) <= self.config.queue_limit
            assert (q.codel_load(now) == 0) == (not q.standing(now))
            assert 0 <= q.codel_load(now) <= 100
            assert 1 <= q.pushback_ms(now) <= self.config.pushback_max_ms
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
        self.allow[t] = self.allowance(t, standing)
        rejected = self.q.offer(t, now)
        self.queued[t] = t.item
        self.reject_all(rejected, now)
        shed_for_room = any(
            r.ticket is not t and r.reason in (Reason.CODEL, Reason.PREEMPTED) for r in rejected
        )
        idle = not shed_for_room and now - self.last_shed > self.config.codel_interval_s
        if idle and not any(o in self.queued for o in before):
            self.last_empty = now  # idle before the newcomer, or emptied to make room for it
        by_reason = {r.ticket.item: r.reason for r in rejected}
        estimate = self.q.service_estimate(method)
        if deadline is not None and deadline <= now:
            assert by_reason == {t.item: Reason.DEADLINE_GONE}
        elif deadline is not None and estimate is not None and deadline - now < estimate:
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
        same_level = [o.item for o in self.queued if o.criticality == t.criticality]
        if same_level:
            self.taken_by_mode["lifo" if standing else "fifo"] += 1
        if standing:  # newest first
            assert all(item < t.item for item in same_level)
        else:  # oldest first
            assert all(item > t.item for item in same_level)


@settings(deadline=None, max_examples=120, derandomize=True)
@given(config=configs, ops=operations)
def test_property_queue_matches_model(config: AdmissionConfig, ops: list[tuple[Any, ...]]) -> None:
    Model(AdmissionQueue(config), config).run(ops)


@pytest.mark.parametrize("seed", range(4))
def test_model_under_sustained_overload(seed: int) -> None:
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
    config = AdmissionConfig(workers=2, queue_limit=16, **UNBOUNDED_WAIT)
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
    for op, lag in zip(ops, lags, strict=False):
        now += op[1]
        standing = q.standing(now)
        if op[0] == "offer":
            deadline = None if op[4] is None else now + op[4]
            allowance[offered] = q.allowance(op[3], op[2], standing=standing)
            left += len(q.offer(Ticket(offered, op[3], now - lag, deadline, op[2]), now))
            offered += 1
        elif op[0] in ("take", "expire"):
            t, rejected = q.take(now) if op[0] == "take" else (None, q.expire(now))
            left += len(rejected) + (t is not None)
            if t is not None:
                estimate = q.service_estimate(t.method) or 0.0
                assert t.deadline is None or (t.deadline > now and t.deadline - now >= estimate)
                assert now <= t.enqueued_at + allowance[t.item]
        else:
            q.record_service_time(op[2], op[3], now)
        assert q.depth <= config.queue_limit
    assert left + q.depth == offered


# ---------------------------------------------------------------- refusing on arrival


def test_newcomer_refused_at_once_when_its_predicted_wait_is_over_a_quarter_of_its_allowance() -> (
    None
):
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2))
    q.record_service_time("m", 0.010, now=0.0)  # not standing: allowance 100 ms, admits 25 ms
    # Both workers busy: a call with k queued ahead waits k + 1 turns of 10 ms / 2 workers.
    for i in range(5):  # waits of 5, 10, ..., 25 ms
        assert q.offer(ticket(f"t{i}", 0.0), 0.0, running=2) == []
    (refused,) = q.offer(ticket("late", 0.0), 0.0, running=2)  # 30 ms: likely dropped later
    assert refused.ticket.item == "late"
    assert refused.reason is Reason.CODEL
    assert q.depth == 5


def test_free_workers_shorten_the_predicted_wait() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2))
    q.record_service_time("m", 0.010, now=0.0)
    # Nothing running: the first two calls start at once, five more fit the 25 ms.
    for i in range(7):
        assert q.offer(ticket(f"t{i}", 0.0), 0.0, running=0) == []
    assert q.offer(ticket("late", 0.0), 0.0, running=0) != []


def test_without_a_running_count_every_worker_counts_as_busy() -> None:
    def admitted(running: int | None) -> int:
        q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2))
        q.record_service_time("m", 0.010, now=0.0)
        if running is None:
            return sum(q.offer(ticket(f"t{i}", 0.0), 0.0) == [] for i in range(20))
        return sum(q.offer(ticket(f"t{i}", 0.0), 0.0, running=running) == [] for i in range(20))

    assert admitted(None) == admitted(2) == 5
    assert admitted(1) == 6


def test_standing_queue_admits_a_slow_call_only_into_a_free_worker() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=2))
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
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=8))
    q.record_service_time("m", 0.001, now=0.0)  # 1 ms calls: a turn is 0.125 ms
    assert q.offer(ticket("anchor", 0.0, deadline=10.0), 0.0, running=8) == []
    now = 0.2
    assert q.standing(now)
    # Every worker busy; 10 turns of 0.125 ms fit a quarter of the 5 ms target.
    admitted = [
        q.offer(ticket(f"t{i}", now, deadline=10.0), now, running=8) == [] for i in range(12)
    ]
    assert admitted == [True] * 9 + [False] * 3


def test_critical_newcomer_counts_only_calls_at_or_above_its_level() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1))
    q.record_service_time("m", 0.010, now=0.0)  # allowance 100 ms: waits up to 25 ms admitted
    for i in range(2):  # waits of 10 and 20 ms behind the running call
        assert q.offer(ticket(f"s{i}", 0.0, crit=Criticality.SHEDDABLE), 0.0, running=1) == []
    assert q.offer(ticket("s-late", 0.0, crit=Criticality.SHEDDABLE), 0.0, running=1) != []
    assert q.offer(ticket("crit", 0.0, crit=Criticality.CRITICAL), 0.0, running=1) == []


@given(
    workers=st.integers(1, 16),
    service_s=st.floats(0.0001, 1.0),
    queued=st.integers(0, 20),
    running=st.integers(0, 32),
    standing=st.booleans(),
)
def test_property_refused_on_arrival_only_when_no_worker_is_free_for_it(
    workers: int, service_s: float, queued: int, running: int, standing: bool
) -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=workers))
    q.record_service_time("m", service_s, now=0.0)
    for i in range(queued):  # a method with no service sample yet is never refused on arrival
        assert q.offer(ticket(f"q{i}", 0.0, method="other"), 0.0, running=running) == []
    now = 0.2 if standing else 0.0  # queued since 0 and never empty: standing at 0.2 s
    assert q.standing(now) == (standing and queued > 0)
    allowance = q.allowance("m", DEFAULT, standing=q.standing(now))
    turns = queued + running - workers + 1  # worker turns before "new" could start
    refused = q.offer(ticket("new", now), now, running=running) != []
    assert refused == (turns > 0 and turns * service_s / workers > 0.25 * allowance)


def test_no_bound_before_the_first_service_sample() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionConfig(workers=1, queue_limit=50))
    assert all(q.offer(ticket(f"t{i}", 0.0), 0.0) == [] for i in range(50))

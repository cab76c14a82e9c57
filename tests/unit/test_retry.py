"""Unit tests of the retry policy (rpckit.client._retry): decisions, backoff, budget, throttle."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.client._retry import (
    STATUS_CODE_NAMES,
    AdaptiveThrottle,
    AdaptiveThrottleConfig,
    RetryBudget,
    RetryBudgetConfig,
    RetryVerdict,
    backoff_s,
    retry_decision,
)

V = RetryVerdict


def decide(
    code: str,
    *,
    reached_handler: bool | None = None,
    idempotent: bool = False,
    pushback_ms: int | None = None,
    attempts: int = 1,
    max_attempts: int = 3,
    time_left_s: float | None = None,
    backoff: float = 0.01,
    min_attempt_s: float = 0.0,
) -> RetryVerdict:
    return retry_decision(
        code=code,
        reached_handler=reached_handler,
        idempotent=idempotent,
        pushback_ms=pushback_ms,
        attempts=attempts,
        max_attempts=max_attempts,
        time_left_s=time_left_s,
        backoff_s=backoff,
        min_attempt_s=min_attempt_s,
    )


# ---------------------------------------------------------------- decision table


@pytest.mark.parametrize(
    ("code", "reached_handler", "idempotent", "pushback_ms", "expected"),
    [
        # UNAVAILABLE: safe when it never reached a handler, else only if idempotent.
        ("UNAVAILABLE", False, False, None, V.RETRY_NOT_HANDLED),
        ("UNAVAILABLE", None, False, None, V.MAY_HAVE_RUN),
        ("UNAVAILABLE", True, False, None, V.MAY_HAVE_RUN),
        ("UNAVAILABLE", None, True, None, V.RETRY_IDEMPOTENT),
        ("UNAVAILABLE", True, True, None, V.RETRY_IDEMPOTENT),
        ("UNAVAILABLE", False, True, None, V.RETRY_NOT_HANDLED),
        # RESOURCE_EXHAUSTED: only with pushback (admission rejected it before any handler).
        ("RESOURCE_EXHAUSTED", None, False, 20, V.RETRY_NOT_HANDLED),
        ("RESOURCE_EXHAUSTED", False, False, 0, V.RETRY_NOT_HANDLED),
        ("RESOURCE_EXHAUSTED", True, False, 20, V.MAY_HAVE_RUN),
        ("RESOURCE_EXHAUSTED", True, True, 20, V.RETRY_IDEMPOTENT),
        ("RESOURCE_EXHAUSTED", False, True, None, V.NOT_RETRYABLE),
        ("RESOURCE_EXHAUSTED", None, True, None, V.NOT_RETRYABLE),
        # A negative pushback is the server saying "do not retry".
        ("RESOURCE_EXHAUSTED", False, True, -1, V.SERVER_DECLINED),
        ("UNAVAILABLE", False, True, -1, V.SERVER_DECLINED),
        # Never retried, whatever the method.
        ("DEADLINE_EXCEEDED", False, True, 20, V.NOT_RETRYABLE),
        ("CANCELLED", False, True, None, V.NOT_RETRYABLE),
        ("INTERNAL", None, True, None, V.NOT_RETRYABLE),
        ("UNKNOWN", None, True, None, V.NOT_RETRYABLE),
        ("ABORTED", None, True, None, V.NOT_RETRYABLE),
        ("DATA_LOSS", None, True, None, V.NOT_RETRYABLE),
        ("INVALID_ARGUMENT", False, True, None, V.NOT_RETRYABLE),
        ("UNIMPLEMENTED", False, True, None, V.NOT_RETRYABLE),
        ("OK", True, True, None, V.NOT_RETRYABLE),
    ],
)
def test_safety_table(
    code: str,
    reached_handler: bool | None,
    idempotent: bool,
    pushback_ms: int | None,
    expected: RetryVerdict,
) -> None:
    verdict = decide(
        code, reached_handler=reached_handler, idempotent=idempotent, pushback_ms=pushback_ms
    )
    assert verdict is expected
    assert verdict.retry == (expected in (V.RETRY_NOT_HANDLED, V.RETRY_IDEMPOTENT))


def test_attempts_are_limited() -> None:
    assert decide("UNAVAILABLE", reached_handler=False, attempts=2, max_attempts=3).retry
    assert (
        decide("UNAVAILABLE", reached_handler=False, attempts=3, max_attempts=3)
        is V.ATTEMPTS_EXHAUSTED
    )


@pytest.mark.parametrize(
    ("time_left_s", "min_attempt_s", "expected"),
    [
        (0.051, 0.0, V.RETRY_NOT_HANDLED),
        (0.05, 0.0, V.NO_TIME_LEFT),  # the deadline would pass as the backoff ends
        (0.1, 0.06, V.NO_TIME_LEFT),  # too little left for the attempt itself
        (0.2, 0.06, V.RETRY_NOT_HANDLED),
        (None, 5.0, V.RETRY_NOT_HANDLED),  # no deadline
    ],
)
def test_retry_must_fit_before_the_deadline(
    time_left_s: float | None, min_attempt_s: float, expected: RetryVerdict
) -> None:
    verdict = decide(
        "UNAVAILABLE",
        reached_handler=False,
        backoff=0.05,
        time_left_s=time_left_s,
        min_attempt_s=min_attempt_s,
    )
    assert verdict is expected


def test_decision_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="status code"):
        decide("Unavailable")
    with pytest.raises(ValueError, match="attempts"):
        decide("UNAVAILABLE", attempts=0)
    with pytest.raises(ValueError, match="backoff_s"):
        decide("UNAVAILABLE", backoff=-1.0)


def test_verdict_labels_are_stable_and_distinct() -> None:
    assert len({v.value for v in V}) == len(V)
    assert {v for v in V if v.retry} == {V.RETRY_NOT_HANDLED, V.RETRY_IDEMPOTENT}


@settings(deadline=None, max_examples=500)
@given(
    code=st.sampled_from(sorted(STATUS_CODE_NAMES)),
    reached_handler=st.sampled_from([True, False, None]),
    idempotent=st.booleans(),
    pushback_ms=st.one_of(st.none(), st.integers(-5, 5000)),
    attempts=st.integers(1, 6),
    max_attempts=st.integers(1, 6),
    time_left_s=st.one_of(st.none(), st.floats(0.0, 10.0)),
    backoff=st.floats(0.0, 5.0),
)
def test_a_retry_is_always_safe_and_fits(
    code: str,
    reached_handler: bool | None,
    idempotent: bool,
    pushback_ms: int | None,
    attempts: int,
    max_attempts: int,
    time_left_s: float | None,
    backoff: float,
) -> None:
    verdict = decide(
        code,
        reached_handler=reached_handler,
        idempotent=idempotent,
        pushback_ms=pushback_ms,
        attempts=attempts,
        max_attempts=max_attempts,
        time_left_s=time_left_s,
        backoff=backoff,
    )
    if not verdict.retry:
        return
    assert code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
    assert pushback_ms is None or pushback_ms >= 0
    if code == "RESOURCE_EXHAUSTED":
        assert pushback_ms is not None
    if not idempotent:  # a non-idempotent call is retried only if it never ran
        assert reached_handler is not True
        assert reached_handler is False or code == "RESOURCE_EXHAUSTED"
    assert attempts < max_attempts
    assert time_left_s is None or time_left_s > backoff


# ---------------------------------------------------------------- backoff


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    for attempt, ceiling in [(1, 0.025), (2, 0.05), (3, 0.1), (6, 0.8), (7, 1.0), (500, 1.0)]:
        rng = random.Random(attempt)
        draws = [backoff_s(attempt, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling  # full jitter reaches the ceiling...
        assert min(draws) < 0.1 * ceiling  # ...and the floor
        assert sum(draws) / len(draws) == pytest.approx(ceiling / 2, rel=0.15)


def test_backoff_respects_custom_base_and_cap() -> None:
    rng = random.Random(3)
    assert all(backoff_s(4, rng, base_s=0.1, cap_s=0.3) <= 0.3 for _ in range(100))
    assert backoff_s(1, rng, base_s=0.0) == 0.0


def test_pushback_overrides_backoff_exactly() -> None:
    rng = random.Random(4)
    assert backoff_s(1, rng, pushback_ms=250) == 0.25
    assert backoff_s(9, rng, pushback_ms=5000) == 5.0  # not capped: the deadline decides
    assert backoff_s(3, rng, pushback_ms=0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attempt": 0}, "attempt"),
        ({"attempt": 1, "pushback_ms": -1}, "do not retry"),
        ({"attempt": 1, "base_s": -0.1}, "base_s"),
        ({"attempt": 1, "cap_s": math.inf}, "cap_s"),
    ],
)
def test_backoff_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    attempt = int(kwargs.pop("attempt"))
    with pytest.raises(ValueError, match=match):
        backoff_s(attempt, random.Random(5), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- retry budget


def test_budget_config_defaults_and_validation() -> None:
    c = RetryBudgetConfig()
    assert (c.ratio, c.min_per_s, c.window_s) == (0.2, 10.0, 10.0)
    with pytest.raises(ValueError, match="window_s"):
        RetryBudgetConfig(window_s=0.0)
    with pytest.raises(ValueError, match="ratio"):
        RetryBudgetConfig(ratio=-0.1)
    with pytest.raises(TypeError, match="min_per_s"):
        RetryBudgetConfig(min_per_s=None)  # type: ignore[arg-type]


def test_reserve_alone_allows_min_per_s_times_window() -> None:
    budget = RetryBudget()
    granted = sum(budget.try_withdraw(0.0) for _ in range(150))
    assert granted == 100  # 10/s x 10 s, with no requests at all
    assert not budget.try_withdraw(9.999)  # the burst is still in every window reaching here
    assert budget.try_withdraw(10.0)  # (0, 10] excludes the burst at 0
    assert budget.retries == 101


def test_requests_add_ratio_of_a_retry_each() -> None:
    budget = RetryBudget(RetryBudgetConfig(min_per_s=0.0))
    for _ in range(10):
        budget.record_request(0.0)
    assert [budget.try_withdraw(0.0) for _ in range(3)] == [True, True, False]
    assert budget.requests == 10


def test_old_deposits_do_not_pay_for_a_burst_later() -> None:
    # 100 requests at t=0; at t=5 the window (0, 10] holds no request, so only the
    # reserve may be spent there (Finagle would also let the 20 deposits be spent).
    budget = RetryBudget(RetryBudgetConfig(min_per_s=0.5))  # reserve 5
    for _ in range(100):
        budget.record_request(0.0)
    assert sum(budget.try_withdraw(5.0) for _ in range(50)) == 5


def test_steady_outage_is_held_to_ratio_plus_floor() -> None:
    # 100 requests/s, every one failing and asking for a retry, for 60 s.
    budget = RetryBudget()
    granted = 0
    for i in range(6000):
        now = i * 0.01
        budget.record_request(now)
        granted += budget.try_withdraw(now)
    # The bound is 20/s + 10/s; the strict window lets bursts of the 100-retry reserve
    # through once per window, so the long-run rate sits between 20/s and 30/s.
    assert 20 * 60 <= granted <= 30 * 60 + 100


Op = tuple[int, bool]  # (ms since the previous op, True = withdraw, False = request)


def check_budget_history(
    config: RetryBudgetConfig, ops: list[Op]
) -> tuple[list[float], list[float], list[tuple[float, list[float], list[float]]]]:
    """Run ``ops``; return request times, granted retry times, and for each denied
    withdrawal its time with the requests and retries recorded before it."""
    budget = RetryBudget(config)
    now = 0.0
    requests: list[float] = []
    retries: list[float] = []
    denials: list[tuple[float, list[float], list[float]]] = []
    for gap_ms, withdraw in ops:
        now += gap_ms / 1000
        if not withdraw:
            budget.record_request(now)
            requests.append(now)
        elif budget.try_withdraw(now):
            retries.append(now)
        else:
            denials.append((now, list(requests), list(retries)))
    return requests, retries, denials


budget_configs = st.builds(
    RetryBudgetConfig,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_s=st.sampled_from([0.0, 0.25, 1.0, 10.0]),
    window_s=st.sampled_from([0.5, 1.0, 2.5, 10.0]),
)
budget_ops = st.lists(
    st.tuples(st.sampled_from([0, 0, 1, 7, 50, 300, 1200]), st.booleans()), max_size=250
)


def excess(
    config: RetryBudgetConfig,
    requests: list[float],
    retries: list[float],
    a: float,
    b: float,
    extra: int = 0,
) -> Fraction:
    """Retries minus what the bound allows in (a, b], exactly; > 0 means a violation."""
    n_req = sum(a < t <= b for t in requests)
    n_ret = sum(a < t <= b for t in retries) + extra
    allowed = Fraction(str(config.ratio)) * n_req + Fraction(str(config.min_per_s)) * Fraction(
        str(config.window_s)
    )
    return n_ret - allowed


def window_starts(config: RetryBudgetConfig, times: list[float], end: float) -> list[float]:
    """Every start a in [end - W, end) where the count in (a, end] can change."""
    start = end - config.window_s
    return [start] + [t for t in times if start <= t < end]


@settings(deadline=None, max_examples=300)
@given(config=budget_configs, ops=budget_ops)
def test_budget_bound_holds_over_every_window(config: RetryBudgetConfig, ops: list[Op]) -> None:
    requests, retries, _ = check_budget_history(config, ops)
    # The worst windows end at a retry and start just after an event (or W before).
    for end in set(retries):
        for a in window_starts(config, requests + retries, end):
            assert excess(config, requests, retries, a, end) <= 0


@settings(deadline=None, max_examples=300)
@given(config=budget_configs, ops=budget_ops)
def test_budget_denies_only_what_would_break_the_bound(
    config: RetryBudgetConfig, ops: list[Op]
) -> None:
    _, _, denials = check_budget_history(config, ops)
    for now, past_req, past_ret in denials:
        starts = window_starts(config, past_req + past_ret, now)
        assert any(excess(config, past_req, past_ret, a, now, extra=1) > 0 for a in starts)


# ---------------------------------------------------------------- adaptive throttle


def test_throttle_config_defaults_and_validation() -> None:
    c = AdaptiveThrottleConfig()
    assert (c.accepts_multiplier, c.window_s) == (2.0, 120.0)
    with pytest.raises(ValueError, match="accepts_multiplier"):
        AdaptiveThrottleConfig(accepts_multiplier=0.0)
    with pytest.raises(ValueError, match="window_s"):
        AdaptiveThrottleConfig(window_s=-1.0)


def test_healthy_backend_is_never_throttled() -> None:
    throttle = AdaptiveThrottle()
    rng = random.Random(1)
    for i in range(1000):
        assert not throttle.should_reject_locally(i * 0.01, rng)
        throttle.record(True, i * 0.01)
    assert throttle.reject_probability(10.0) == 0.0
    assert throttle.counts(10.0) == (1000, 1000)


def test_probability_follows_the_sre_formula() -> None:
    throttle = AdaptiveThrottle()
    for i in range(100):
        throttle.record(i < 25, 1.0)  # 100 requests, 25 accepted
    assert throttle.reject_probability(1.0) == pytest.approx((100 - 2 * 25) / 101)
    for _ in range(25):
        throttle.record(True, 2.0)  # 125 requests, 50 accepted: at K = 2, none rejected
    assert throttle.reject_probability(2.0) == pytest.approx(25 / 126)
    for _ in range(75):
        throttle.record(True, 2.0)
    assert throttle.reject_probability(2.0) == 0.0


def test_local_rejections_count_as_requests() -> None:
    throttle = AdaptiveThrottle()
    rng = random.Random(2)
    for _ in range(10):
        throttle.record(False, 0.0)
    rejected = sum(throttle.should_reject_locally(0.0, rng) for _ in range(100))
    requests, accepts = throttle.counts(0.0)
    assert (requests, accepts) == (10 + rejected, 0)
    assert rejected > 80


def test_throttle_forgets_after_the_window() -> None:
    throttle = AdaptiveThrottle(AdaptiveThrottleConfig(window_s=60.0))
    for _ in range(50):
        throttle.record(False, 0.0)
    assert throttle.reject_probability(59.0) > 0.9
    assert throttle.counts(61.0) == (0, 0)
    assert throttle.reject_probability(61.0) == 0.0


def test_throttle_settles_at_k_times_what_the_backend_accepts() -> None:
    # 100 calls/s offered; the backend accepts 20 per second and rejects the rest.
    throttle = AdaptiveThrottle()
    rng = random.Random(3)
    sent_late = 0
    for second in range(300):
        accepted_this_second = 0
        for i in range(100):
            now = second + i / 100
            if throttle.should_reject_locally(now, rng):
                continue
            accepted = accepted_this_second < 20
            accepted_this_second += accepted
            throttle.record(accepted, now)
            if second >= 240:
                sent_late += 1
    sent_per_s = sent_late / 60
    assert 35 < sent_per_s < 45  # K x accepted = 40/s reach the backend, not 100/s

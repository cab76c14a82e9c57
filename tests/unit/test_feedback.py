"""Unit tests of the balanced channel's feedback policy (rpckit.client._feedback).

Pure: status code names, trailers and details in; what they feed (P2C latency,
outlier ejection, throttling) and whether to retry out.
"""

from __future__ import annotations

import random

import pytest

from rpckit.client._feedback import (
    Feedback,
    Latency,
    Outcome,
    Shape,
    classify,
    observe,
    plan_retry,
)
from rpckit.client._retry import RetryVerdict
from rpckit.core._load import encode_load
from rpckit.core._wire import (
    PUSHBACK_METADATA_KEY,
    REJECTION_DETAILS_PREFIX,
    pushback_from_trailers,
)
from rpckit.v1 import load_pb2

REPORT = encode_load(load_pb2.LoadReport(queue_depth=4, pid=321))
REFUSAL = f"{REJECTION_DETAILS_PREFIX}queue full"


def fed(
    latency: Latency, outlier: bool | None = None, throttle: bool | None = None, hold_s: float = 0
) -> Feedback:
    return Feedback(
        latency=latency, hold_s=hold_s, outlier_success=outlier, throttle_accepted=throttle
    )


def refused(pushback: str = "250") -> Outcome:
    """An rpckit server's admission refusal: its prefix, a pushback and its load report."""
    return observe("RESOURCE_EXHAUSTED", (REPORT, (PUSHBACK_METADATA_KEY, pushback)), REFUSAL)


# ---------------------------------------------------------------- observe


def test_observe_reads_the_load_report_and_pushback() -> None:
    outcome = refused("250")
    assert outcome.code == "RESOURCE_EXHAUSTED"
    assert outcome.pushback_ms == 250
    assert outcome.report is not None
    assert (outcome.report.queue_depth, outcome.report.pid) == (4, 321)
    assert outcome.reached_handler is False  # admission runs before any handler
    assert outcome.shed


def test_a_connect_failure_made_up_in_the_client_never_reached_a_handler() -> None:
    outcome = observe("UNAVAILABLE", (), "failed to connect to all addresses; last error: ...")
    assert outcome.reached_handler is False
    assert outcome.report is None


def test_a_handler_relaying_a_downstream_connect_failure_may_have_run() -> None:
    # An rpckit server's errors carry its load report: the handler ran and relayed the text.
    outcome = observe("UNAVAILABLE", (REPORT,), "failed to connect to all addresses")
    assert outcome.reached_handler is None


def test_a_rejection_prefix_without_pushback_is_not_taken_for_an_admission_refusal() -> None:
    # A handler may well write "rpckit: ..." in its own error; without pushback it is its own.
    assert observe("RESOURCE_EXHAUSTED", (REPORT,), REFUSAL).reached_handler is None


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        ((), None),
        (((PUSHBACK_METADATA_KEY, "0"),), 0),
        (((PUSHBACK_METADATA_KEY, b"1500"),), 1500),
        (((PUSHBACK_METADATA_KEY, "-1"),), -1),
        (((PUSHBACK_METADATA_KEY, "soon"),), -1),  # unparseable: gRPC A6 says do not retry
        (((PUSHBACK_METADATA_KEY, b"\xff\xfe"),), -1),
        ((("other", "5"),), None),
    ],
)
def test_pushback_parsing(trailers: tuple[tuple[str, object], ...], expected: int | None) -> None:
    assert pushback_from_trailers(trailers) == expected


# ---------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("outcome", "shape", "expected"),
    [
        # A unary success is a latency sample, an outlier success, an accepted call.
        (
            observe("OK", (REPORT,), ""),
            Shape.UNARY,
            fed(Latency.SAMPLE, True, True),
        ),
        # Streams may last minutes: never a latency sample, still a success.
        (
            observe("OK", (REPORT,), ""),
            Shape.SERVER_STREAM,
            fed(Latency.ABANDON, True, True),
        ),
        (
            observe("OK", (), ""),
            Shape.BIDI_STREAM,
            fed(Latency.ABANDON, True, True),
        ),
        # An admission refusal holds the estimate at the pushback; overload, not a fault.
        (
            refused("250"),
            Shape.UNARY,
            fed(Latency.HOLD, True, False, hold_s=0.25),
        ),
        (
            refused("250"),
            Shape.CLIENT_STREAM,
            fed(Latency.HOLD, True, False, hold_s=0.25),
        ),
        # A negative pushback still holds (at 0 s), it never makes a negative latency.
        (
            refused("-1"),
            Shape.UNARY,
            fed(Latency.HOLD, True, False, hold_s=0.0),
        ),
        # A connect failure: no sample (failing fast must not look fast), a fault, a reject.
        (
            observe("UNAVAILABLE", (), "failed to connect to all addresses"),
            Shape.UNARY,
            fed(Latency.ABANDON, False, False),
        ),
        # A timeout is a latency peak and a fault.
        (
            observe("DEADLINE_EXCEEDED", (), "Deadline Exceeded"),
            Shape.UNARY,
            fed(Latency.SAMPLE, False, True),
        ),
        # A handler's crash: a fault, no sample.
        (
            observe("INTERNAL", (REPORT,), "boom"),
            Shape.UNARY,
            fed(Latency.ABANDON, False, True),
        ),
        # The request's own fault: the handler answered in its time; a success for the backend.
        (
            observe("INVALID_ARGUMENT", (REPORT,), "bad sku"),
            Shape.UNARY,
            fed(Latency.SAMPLE, True, True),
        ),
        # A quota without an rpckit report: a reject for the throttle, not a fault, no sample.
        (
            observe("RESOURCE_EXHAUSTED", (), "quota"),
            Shape.UNARY,
            fed(Latency.ABANDON, True, False),
        ),
        # The caller cancelled: nothing about the backend.
        (observe("CANCELLED", (), "Cancelled"), Shape.UNARY, fed(Latency.ABANDON)),
        # No status at all (the request failed to serialize): only the outstanding count drops.
        (Outcome(code=None), Shape.UNARY, fed(Latency.ABANDON)),
    ],
)
def test_classify(outcome: Outcome, shape: Shape, expected: Feedback) -> None:
    assert classify(outcome, shape) == expected


# ---------------------------------------------------------------- plan_retry


def plan(outcome: Outcome, shape: Shape = Shape.UNARY, **kwargs: object) -> tuple[str, float]:
    args: dict[str, object] = {
        "idempotent": False,
        "attempts": 1,
        "max_attempts": 3,
        "time_left_s": None,
        "rng": random.Random(3),
    }
    args.update(kwargs)
    result = plan_retry(outcome, shape=shape, **args)  # type: ignore[arg-type]
    return result.verdict.value, result.delay_s


def test_a_refusal_is_retried_after_exactly_the_servers_pushback() -> None:
    assert plan(refused("400")) == (RetryVerdict.RETRY_NOT_HANDLED.value, 0.4)


def test_a_negative_or_unparseable_pushback_declines_the_retry() -> None:
    assert plan(refused("-1"))[0] == RetryVerdict.SERVER_DECLINED.value
    assert plan(refused("later"))[0] == RetryVerdict.SERVER_DECLINED.value


def test_a_connect_failure_is_retried_after_a_jittered_backoff() -> None:
    connect = observe("UNAVAILABLE", (), "failed to connect to all addresses")
    delays = [plan(connect, rng=random.Random(seed))[1] for seed in range(50)]
    assert all(0.0 <= d <= 0.025 for d in delays)  # full jitter under the 25 ms base
    assert len(set(delays)) > 40  # spread, not synchronised
    third = [plan(connect, attempts=3, rng=random.Random(seed))[1] for seed in range(50)]
    assert max(third) > 0.025  # the ceiling doubles per retry
    assert all(d <= 0.1 for d in third)


@pytest.mark.parametrize("shape", [Shape.CLIENT_STREAM, Shape.BIDI_STREAM])
def test_calls_whose_requests_cannot_be_replayed_never_retry(shape: Shape) -> None:
    assert plan(refused("10"), shape)[0] == RetryVerdict.NOT_RETRYABLE.value


def test_a_server_stream_retries_like_a_unary_call() -> None:
    assert plan(refused("10"), Shape.SERVER_STREAM) == (RetryVerdict.RETRY_NOT_HANDLED.value, 0.01)


def test_the_retry_must_fit_in_the_time_left() -> None:
    assert plan(refused("500"), time_left_s=0.4)[0] == RetryVerdict.NO_TIME_LEFT.value
    assert plan(refused("300"), time_left_s=0.4)[0] == RetryVerdict.RETRY_NOT_HANDLED.value


def test_attempts_are_bounded() -> None:
    assert plan(refused("1"), attempts=3, max_attempts=3)[0] == (
        RetryVerdict.ATTEMPTS_EXHAUSTED.value
    )


def test_a_failure_that_may_have_run_retries_only_when_idempotent() -> None:
    reset = observe("UNAVAILABLE", (REPORT,), "Socket closed")
    assert plan(reset)[0] == RetryVerdict.MAY_HAVE_RUN.value
    assert plan(reset, idempotent=True)[0] == RetryVerdict.RETRY_IDEMPOTENT.value


@pytest.mark.parametrize("code", [None, "OK", "INTERNAL", "DEADLINE_EXCEEDED", "NOT_A_CODE"])
def test_other_outcomes_are_not_retried(code: str | None) -> None:
    assert plan(Outcome(code=code))[0] == RetryVerdict.NOT_RETRYABLE.value

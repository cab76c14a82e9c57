"""What an ended attempt teaches the balanced channel, and whether its call may be retried.

The balanced channel's classification policy, pure (docs/architecture.md, "The
balanced client: attempts and feedback"). An attempt's status, trailers and
details become an :class:`Outcome` (:func:`observe`); :func:`classify` says what
that outcome feeds:

* **P2C latency** (:class:`Latency`): a sample only from unary calls a handler
  answered without a fault, or that timed out (a peak); an admission refusal
  *holds* the estimate at no less than the server's pushback; anything else is
  abandoned (a backend failing fast must not look fast and draw more calls);
* **outlier ejection**: a fault (:data:`BACKEND_FAULTS`) or a success, except for
  admission refusals (overload, not a fault) and cancellations (the caller's doing);
* **adaptive throttling**: accepted unless the backend refused for overload
  (:data:`OVERLOAD_CODES`).

:func:`plan_retry` says whether the call may be retried and after how long,
composing :func:`rpckit.client._retry.retry_decision` and
:func:`rpckit.client._retry.backoff_s` with what the call's :class:`Shape` allows.
The retry budget is the caller's to consult last, so that only real retries pay.

Status codes are names (``"UNAVAILABLE"``), as in :mod:`rpckit.client._retry`:
no grpc import, clock, lock or thread.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Iterable
from typing import Any

from rpckit.client._retry import STATUS_CODE_NAMES, RetryVerdict, backoff_s, retry_decision
from rpckit.core._load import load_from_metadata
from rpckit.core._wire import REJECTION_DETAILS_PREFIX, pushback_from_trailers
from rpckit.v1 import load_pb2

__all__ = [
    "BACKEND_FAULTS",
    "NEVER_SENT_PREFIXES",
    "OVERLOAD_CODES",
    "Feedback",
    "Latency",
    "Outcome",
    "RetryPlan",
    "Shape",
    "classify",
    "observe",
    "plan_retry",
]

NEVER_SENT_PREFIXES = (
    "failed to connect to all addresses",  # grpc core: no connection to pick (refused, drained)
    "DNS resolution failed",  # grpc core: a host-name target did not resolve
    "empty address list",  # grpc core: the name resolved to nothing
)
"""How grpc core words a call it failed before sending it (checked only without server trailers)."""

BACKEND_FAULTS = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DATA_LOSS", "DEADLINE_EXCEEDED"})
"""Codes that count against a backend for outlier ejection (the _outlier docstring's list).
Admission rejections (details starting with REJECTION_DETAILS_PREFIX) are overload, not
faults: P2C steers by the queue depth those servers report instead."""

OVERLOAD_CODES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})
"""Codes that mean the backend did not accept the call (adaptive throttling's "rejects")."""


class Shape(enum.Enum):
    """A call's shape, named by the ``grpc.Channel`` factory that makes it."""

    UNARY = "unary_unary"
    SERVER_STREAM = "unary_stream"
    CLIENT_STREAM = "stream_unary"
    BIDI_STREAM = "stream_stream"

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send the same request (not an iterator already read)."""
        return self in (Shape.UNARY, Shape.SERVER_STREAM)

    @property
    def samples_latency(self) -> bool:
        """Whether the attempt's duration is a latency sample (streams may last for minutes)."""
        return self is Shape.UNARY


class Latency(enum.Enum):
    """What an ended attempt does to its backend's P2C latency estimate."""

    SAMPLE = "sample"
    """The attempt's duration is a sample (:meth:`rpckit.client._p2c.BackendLoad.finish`)."""
    HOLD = "hold"
    """The backend refused: hold the estimate at >= the pushback (``BackendLoad.reject``)."""
    ABANDON = "abandon"
    """No sample: only the outstanding count drops (``BackendLoad.abandon``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one attempt ended, as far as the policies care."""

    code: str | None
    """The status code name; None when the attempt ended without one (e.g. the request
    failed to serialize, or grpc's call object was in an odd state)."""
    details: str = ""
    pushback_ms: int | None = None
    """``grpc-retry-pushback-ms``; -1 when unparseable (gRPC A6: do not retry)."""
    report: load_pb2.LoadReport | None = None
    """The server's load report from the trailers, if it sent one."""
    reached_handler: bool | None = None
    """False when the call certainly never reached a handler; None when unknown."""

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def shed(self) -> bool:
        """An rpckit server's admission rejection (overload, not a fault)."""
        return self.details.startswith(REJECTION_DETAILS_PREFIX)


def observe(code: str | None, trailers: Iterable[Any] | None, details: str) -> Outcome:
    """The :class:`Outcome` of an attempt that ended with ``code``, ``trailers`` and ``details``.

    ``reached_handler`` is False when grpc core made the error up in the client
    (no trailers, one of :data:`NEVER_SENT_PREFIXES`), or when an rpckit server's
    admission control refused the call (its rejection prefix and a pushback):
    admission runs before any handler. An rpckit server's errors always carry its
    load report, so a handler relaying a downstream "failed to connect" is not
    mistaken for one.
    """
    pairs = tuple(trailers or ())
    pushback = pushback_from_trailers(pairs)
    made_up_in_client = not pairs and details.startswith(NEVER_SENT_PREFIXES)
    refused_by_admission = details.startswith(REJECTION_DETAILS_PREFIX) and pushback is not None
    reached: bool | None = False if made_up_in_client or refused_by_admission else None
    return Outcome(
        code=code,
        details=details,
        pushback_ms=pushback,
        report=load_from_metadata(pairs) if pairs else None,
        reached_handler=reached,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Feedback:
    """What one attempt's outcome feeds; None fields feed nothing."""

    latency: Latency
    hold_s: float = 0.0
    """For :attr:`Latency.HOLD`: the server's pushback in seconds (0 without one)."""
    outlier_success: bool | None = None
    """For outlier ejection: True a success, False a fault, None not counted."""
    throttle_accepted: bool | None = None
    """For adaptive throttling: whether the backend accepted the call; None not counted."""


def classify(outcome: Outcome, shape: Shape) -> Feedback:
    """What ``outcome`` of an attempt of a ``shape`` call feeds (see the module docstring)."""
    code = outcome.code
    refused = outcome.report is not None and not outcome.ok and outcome.reached_handler is False
    answered = outcome.ok or outcome.report is not None
    if refused:
        latency, hold_s = Latency.HOLD, max(0, outcome.pushback_ms or 0) / 1000
    elif shape.samples_latency and (
        code == "DEADLINE_EXCEEDED" or (answered and code not in BACKEND_FAULTS)
    ):
        latency, hold_s = Latency.SAMPLE, 0.0
    else:
        latency, hold_s = Latency.ABANDON, 0.0
    if code is None or code == "CANCELLED":
        return Feedback(latency=latency, hold_s=hold_s)
    fault = code in BACKEND_FAULTS and not outcome.shed
    return Feedback(
        latency=latency,
        hold_s=hold_s,
        outlier_success=not fault,
        throttle_accepted=code not in OVERLOAD_CODES,
    )


@dataclasses.dataclass(frozen=True)
class RetryPlan:
    """Whether to retry, why (a stable label), and the delay before the next attempt."""

    verdict: RetryVerdict
    delay_s: float

    @property
    def retry(self) -> bool:
        return self.verdict.retry


def plan_retry(
    outcome: Outcome,
    *,
    shape: Shape,
    idempotent: bool,
    attempts: int,
    max_attempts: int,
    time_left_s: float | None,
    rng: random.Random,
) -> RetryPlan:
    """Whether the call whose latest attempt ended with ``outcome`` may try again, and when.

    A call whose requests cannot be replayed (client or bidirectional streams)
    never retries; otherwise :func:`rpckit.client._retry.retry_decision` decides,
    with a full-jitter backoff or the server's non-negative pushback as the delay.
    ``attempts`` counts the attempts made, the failed one included.
    """
    code = outcome.code
    if not shape.replayable or code is None or code not in STATUS_CODE_NAMES:
        return RetryPlan(RetryVerdict.NOT_RETRYABLE, 0.0)
    pushback = outcome.pushback_ms
    delay = backoff_s(
        max(1, attempts),
        rng,
        pushback_ms=pushback if pushback is not None and pushback >= 0 else None,
    )
    verdict = retry_decision(
        code=code,
        reached_handler=outcome.reached_handler,
        idempotent=idempotent,
        pushback_ms=pushback,
        attempts=max(1, attempts),
        max_attempts=max_attempts,
        time_left_s=time_left_s,
        backoff_s=delay,
    )
    return RetryPlan(verdict, delay)

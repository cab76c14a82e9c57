"""Retry policy for the balanced channel: when a retry is safe, when to send it, if affordable.

Four pure pieces, composed by the channel adapter in this order after a failed
attempt::

    verdict = retry_decision(code=..., reached_handler=..., idempotent=..., ...)
    if verdict.retry and budget.try_withdraw(now):   # withdraw last: only real retries pay
        sleep(delay); send the next attempt to another backend

* :func:`retry_decision` -- is a retry safe and useful (the table is in its docstring);
* :func:`backoff_s` -- full-jitter exponential backoff, overridden by server pushback;
* :class:`RetryBudget` -- retries may be at most 20% of requests plus 10/s (Finagle);
* :class:`AdaptiveThrottle` -- the Google SRE book's client-side throttling: when
  a backend rejects much of what it is sent, reject some calls locally before
  sending them.

No grpc import, clock, lock or thread: the adapter passes ``now`` (monotonic
seconds) and ``rng``, and serialises access to the stateful classes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections import deque

from rpckit.core._validate import check_fields, check_number

__all__ = [
    "STATUS_CODE_NAMES",
    "AdaptiveThrottle",
    "AdaptiveThrottleConfig",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryVerdict",
    "backoff_s",
    "retry_decision",
]

STATUS_CODE_NAMES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
"""gRPC status code names (``grpc.StatusCode.X.name``), as :func:`retry_decision` takes them."""


# ---------------------------------------------------------------- decision


class RetryVerdict(enum.Enum):
    """Whether to retry a failed attempt, and why. The value is a stable label for metrics."""

    RETRY_NOT_HANDLED = "retry_not_handled"
    """Retry: the call never reached a handler, so it had no effect anywhere."""
    RETRY_IDEMPOTENT = "retry_idempotent"
    """Retry: the method is idempotent, so running it twice is harmless."""
    NOT_RETRYABLE = "not_retryable"
    """No: the status says another attempt would fail the same way (or it is OK)."""
    MAY_HAVE_RUN = "may_have_run"
    """No: the handler may have run and the method is not idempotent."""
    SERVER_DECLINED = "server_declined"
    """No: the server's pushback was negative, gRPC's way to say "do not retry"."""
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    """No: ``max_attempts`` attempts have been made."""
    NO_TIME_LEFT = "no_time_left"
    """No: the deadline would pass during the backoff or leave the attempt too little time."""

    @property
    def retry(self) -> bool:
        """True when this verdict says to retry."""
        return self in (RetryVerdict.RETRY_NOT_HANDLED, RetryVerdict.RETRY_IDEMPOTENT)


def retry_decision(
    *,
    code: str,
    reached_handler: bool | None,
    idempotent: bool,
    pushback_ms: int | None,
    attempts: int,
    max_attempts: int,
    time_left_s: float | None,
    backoff_s: float,
    min_attempt_s: float = 0.0,
) -> RetryVerdict:
    """Decide whether a failed attempt may be retried on another backend.

    Arguments:
        code: the attempt's gRPC status code name, e.g. ``"UNAVAILABLE"``.
        reached_handler: False when the call certainly never reached a handler
            (the connection could not be made, the channel was not ready),
            True when it did, None when unknown (e.g. a connection reset
            after the request was sent).
        idempotent: the method's ``option idempotency_level`` is
            ``NO_SIDE_EFFECTS`` or ``IDEMPOTENT``.
        pushback_ms: the ``grpc-retry-pushback-ms`` trailer, None if absent;
            a negative value (or an unparseable one, which the adapter maps
            to -1) means "do not retry" (gRPC proposal A6).
        attempts: attempts made so far, the failed one included (>= 1).
        max_attempts: total attempts allowed, the first included (>= 1).
        time_left_s: time until the caller's deadline, None without one.
        backoff_s: the delay planned before the next attempt (:func:`backoff_s`).
        min_attempt_s: the least time worth giving the next attempt after
            the backoff, e.g. the method's recent latency (default 0).

    The safety table (``handler?`` is ``reached_handler``; "idem." idempotent)::

        code                 pushback  handler?        retry when
        -------------------  --------  --------------  ---------------------------------
        UNAVAILABLE          any       False           always  (never ran: connect failure)
        UNAVAILABLE          any       True / None     idempotent only
        RESOURCE_EXHAUSTED   >= 0      False / None    always  (rejected by admission, which
                                                                runs before the handler)
        RESOURCE_EXHAUSTED   >= 0      True            idempotent only
        RESOURCE_EXHAUSTED   absent    any             never   (a quota, or a message over the
                                                                size limit: it would fail again)
        DEADLINE_EXCEEDED    -         any             never   (the caller's time is gone;
                                                                admission's early rejection means
                                                                the time left is too short)
        CANCELLED            -         any             never   (the caller gave up)
        ABORTED              -         any             never   (gRPC: retry at a higher level,
                                                                e.g. the whole transaction)
        INTERNAL, UNKNOWN,   -         any             never   (a bug or a crash would repeat;
        DATA_LOSS                                               it may also have half-run)
        OK and all others    -         any             never   (the request itself is wrong)

    RESOURCE_EXHAUSTED with pushback and an unknown ``reached_handler`` is
    treated as not handled: an rpckit server sets pushback only when its
    admission policy rejects a call, before any handler runs.

    Then, in order: a negative pushback declines any retry; ``attempts >=
    max_attempts`` stops; and with a deadline, the retry must fit:
    ``time_left_s > backoff_s + min_attempt_s``. The retry budget is not
    consulted here: withdraw from it only after a ``retry`` verdict.
    """
    if code not in STATUS_CODE_NAMES:
        raise ValueError(f"unknown gRPC status code name {code!r}")
    if attempts < 1 or max_attempts < 1:
        raise ValueError(f"attempts ({attempts}) and max_attempts ({max_attempts}) must be >= 1")
    if not math.isfinite(backoff_s) or backoff_s < 0 or min_attempt_s < 0:
        raise ValueError(f"backoff_s ({backoff_s}) and min_attempt_s must be finite and >= 0")

    if code == "UNAVAILABLE":
        verdict = (
            RetryVerdict.RETRY_NOT_HANDLED
            if reached_handler is False
            else RetryVerdict.RETRY_IDEMPOTENT
        )
    elif code == "RESOURCE_EXHAUSTED" and pushback_ms is not None:
        verdict = (
            RetryVerdict.RETRY_IDEMPOTENT if reached_handler else RetryVerdict.RETRY_NOT_HANDLED
        )
    else:
        return RetryVerdict.NOT_RETRYABLE
    if verdict is RetryVerdict.RETRY_IDEMPOTENT and not idempotent:
        return RetryVerdict.MAY_HAVE_RUN
    if pushback_ms is not None and pushback_ms < 0:
        return RetryVerdict.SERVER_DECLINED
    if attempts >= max_attempts:
        return RetryVerdict.ATTEMPTS_EXHAUSTED
    if time_left_s is not None and time_left_s <= backoff_s + min_attempt_s:
        return RetryVerdict.NO_TIME_LEFT
    return verdict


# ---------------------------------------------------------------- backoff


def backoff_s(
    attempt: int,
    rng: random.Random,
    *,
    base_s: float = 0.025,
    cap_s: float = 1.0,
    pushback_ms: int | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter", 2015;
    gRPC proposal A6): uniform in ``[0, min(cap_s, base_s x 2^(attempt-1))]``,
    which spreads retries of many clients instead of synchronising them. A
    server pushback (``grpc-retry-pushback-ms`` >= 0) replaces it exactly, as in
    A6: the server knows when it will have room. A negative pushback means "do
    not retry"; :func:`retry_decision` handles it and it is an error here.

    Defaults: 25 ms base, a fraction of a typical call, so the first retry
    comes quickly; 1 s cap, since a retry must fit in the caller's deadline.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, got {attempt}")
    if pushback_ms is not None:
        if pushback_ms < 0:
            raise ValueError(f"a negative pushback ({pushback_ms} ms) means do not retry")
        return pushback_ms / 1000.0
    if not (math.isfinite(base_s) and math.isfinite(cap_s)) or base_s < 0 or cap_s < 0:
        raise ValueError(f"base_s ({base_s}) and cap_s ({cap_s}) must be finite and >= 0")
    # Cap the exponent: 2^64 x base exceeds any sensible cap, and 2^2000 overflows a float.
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling)


# ---------------------------------------------------------------- budget


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryBudgetConfig:
    """Parameters of :class:`RetryBudget`; every field is validated on construction."""

    ratio: float = 0.2
    """Retries allowed per request. 20%: Finagle's ``RetryBudget`` default
    (``percentCanRetry``): a full outage multiplies load by 1.2, not by max_attempts."""

    min_per_s: float = 10.0
    """Retries allowed per second whatever the request rate, so a client with
    little traffic can still retry. 10/s: Finagle's ``minRetriesPerSec``."""

    window_s: float = 10.0
    """Length of the sliding window. 10 s: Finagle's budget ``ttl``."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_number("RetryBudgetConfig", "ratio", self.ratio, low=0.0, strict=False)
        check_number("RetryBudgetConfig", "min_per_s", self.min_per_s, low=0.0, strict=False)
        check_number("RetryBudgetConfig", "window_s", self.window_s, low=0.0, strict=True)


_UNITS_PER_RETRY = 1_000_000
"""The budget counts in millionths of a retry, so its arithmetic is exact integers
(Finagle counts in thousandths). Ratio and reserve are rounded down to it."""


class RetryBudget:
    """Finagle's retry budget, with the bound enforced over every window.

    Guarantee: for every window of ``window_s`` seconds, half-open ``(a, a + window_s]``,
    the retries granted in it are at most ``ratio x requests recorded in it +
    min_per_s x window_s``. (Finagle's leaky bucket lets deposits made up to
    10 s ago pay for a burst of retries now, so a window starting after those
    deposits may hold more; here they cannot.) ``ratio`` and the reserve are
    applied rounded down to millionths.

    How: with ``S(t) = ratio x requests(<= t) - retries(<= t)``, a retry at
    ``t`` is granted iff every window containing ``t`` stays within the bound
    counting only requests already recorded (later ones can only help), i.e.
    ``S(t) - 1 - max(S(a) for a in [t - window_s, t)) >= -reserve``. The
    sliding maximum is a monotonic deque of S's steps, each with the time the
    next step began; it holds at most one entry per retry in the window plus a
    few, so both methods are O(1) amortised.

    Record every original call with :meth:`record_request` (not the retries),
    and call :meth:`try_withdraw` only when a retry is otherwise decided.
    """

    def __init__(self, config: RetryBudgetConfig | None = None) -> None:
        self._config = config if config is not None else RetryBudgetConfig()
        self._deposit = math.floor(self._config.ratio * _UNITS_PER_RETRY)
        self._reserve = math.floor(
            self._config.min_per_s * self._config.window_s * _UNITS_PER_RETRY
        )
        self._requests = 0
        self._retries = 0
        # Steps of S before the current instant: [time, S, time the next step began];
        # S decreasing from front to back (each entry's S beats every later one).
        self._steps: deque[list[float]] = deque()
        self._now = -math.inf  # the instant of the current (open) step
        self._s_open = 0  # S at the start of the open step = S(now-): a candidate once closed

    @property
    def config(self) -> RetryBudgetConfig:
        """The parameters in force."""
        return self._config

    @property
    def requests(self) -> int:
        """Requests recorded so far (all time)."""
        return self._requests

    @property
    def retries(self) -> int:
        """Retries granted so far (all time)."""
        return self._retries

    def record_request(self, now: float) -> None:
        """An original call (not a retry) was sent: deposit ``ratio`` of a retry."""
        self._advance(now)
        self._requests += 1

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) if it would break the bound."""
        self._advance(now)
        peak = self._steps[0][1]
        if self._s() - _UNITS_PER_RETRY - peak < -self._reserve:
            return False
        self._retries += 1
        return True

    def _s(self) -> int:
        return self._deposit * self._requests - _UNITS_PER_RETRY * self._retries

    def _advance(self, now: float) -> None:
        if now > self._now:
            # Close the open step: S held self._s() from self._now until now.
            value = self._s()
            steps = self._steps
            while steps and steps[-1][1] <= value:
                steps.pop()
            steps.append([self._now, value, now])
            self._now = now
        # A time earlier than the last one (the clock is monotonic, so only by
        # misuse) is treated as the last one: the bound then still holds.
        cutoff = self._now - self._config.window_s
        steps = self._steps
        while len(steps) > 1 and steps[0][2] <= cutoff:
            steps.popleft()


# ---------------------------------------------------------------- adaptive throttling


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptiveThrottleConfig:
    """Parameters of :class:`AdaptiveThrottle`; every field is validated on construction."""

    accepts_multiplier: float = 2.0
    """K in the SRE formula: the client sends up to K times what the backend accepts.
    2: the Google SRE book ("Handling Overload"), which notes lower K is more
    aggressive and higher K wastes more backend work on rejections."""

    window_s: float = 120.0
    """The history the formula counts. Two minutes: the Google SRE book."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_number(
            "AdaptiveThrottleConfig",
            "accepts_multiplier",
            self.accepts_multiplier,
            low=0.0,
            strict=True,
        )
        check_number("AdaptiveThrottleConfig", "window_s", self.window_s, low=0.0, strict=True)


_THROTTLE_BUCKETS = 60
"""The throttle's window is kept as this many time buckets (2 s each by default):
bounded memory at any call rate; the window covers the last 59-60 buckets."""


class AdaptiveThrottle:
    """Client-side adaptive throttling (Google SRE book, "Handling Overload").

    Over the last ``window_s``, with ``requests`` the calls the application
    made and ``accepts`` the ones a backend accepted, a new call is rejected
    locally with probability ``max(0, (requests - K x accepts) / (requests + 1))``.
    While the backend accepts everything this is 0; when it rejects most calls,
    the client stops sending most of them, and the backend spends its capacity
    on work instead of on rejections.

    Feed it: :meth:`should_reject_locally` before each call (a True answer
    counts the call as a request that was not accepted), and :meth:`record`
    when a sent call ends (each counts as a request, accepted unless the
    backend rejected it for overload, e.g. RESOURCE_EXHAUSTED or UNAVAILABLE).
    """

    def __init__(self, config: AdaptiveThrottleConfig | None = None) -> None:
        self._config = config if config is not None else AdaptiveThrottleConfig()
        self._bucket_s = self._config.window_s / _THROTTLE_BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, accepts]
        self._requests = 0
        self._accepts = 0

    @property
    def config(self) -> AdaptiveThrottleConfig:
        """The parameters in force."""
        return self._config

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, accepts) in the window ending at ``now``."""
        self._expire(now)
        return self._requests, self._accepts

    def reject_probability(self, now: float) -> float:
        """The SRE formula's probability of rejecting the next call locally."""
        requests, accepts = self.counts(now)
        excess = requests - self._config.accepts_multiplier * accepts
        return max(0.0, excess / (requests + 1))

    def should_reject_locally(self, now: float, rng: random.Random) -> bool:
        """Whether to fail the next call without sending it. True counts it as a request."""
        if rng.random() < self.reject_probability(now):
            self._add(now, accepted=False)
            return True
        return False

    def record(self, accepted: bool, now: float) -> None:
        """A sent call ended; ``accepted`` False if the backend rejected it for overload."""
        self._expire(now)
        self._add(now, accepted=accepted)

    def _add(self, now: float, *, accepted: bool) -> None:
        index = math.floor(now / self._bucket_s)
        if not self._buckets or self._buckets[-1][0] < index:
            self._buckets.append([index, 0, 0])
        bucket = self._buckets[-1]  # an earlier time (misuse) lands in the newest bucket
        bucket[1] += 1
        self._requests += 1
        if accepted:
            bucket[2] += 1
            self._accepts += 1

    def _expire(self, now: float) -> None:
        oldest_kept = math.floor(now / self._bucket_s) - _THROTTLE_BUCKETS + 1
        while self._buckets and self._buckets[0][0] < oldest_kept:
            _, requests, accepts = self._buckets.popleft()
            self._requests -= requests
            self._accepts -= accepts

"""Pure statistics over load-generator records: outcomes, goodput, percentiles, wasted CPU.

Nothing here does I/O or reads a clock. A request is *good* only when it finished OK within its
deadline; latencies are measured from the request's *scheduled* start, so a load generator that
falls behind shows up as latency instead of hiding it (no coordinated omission). Rejections are
timed from the actual send instead: their latency says how fast the server refuses.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple


class Outcome(StrEnum):
    """How one request ended, as seen by the client."""

    OK = "ok"  # a successful reply (good if within the deadline)
    DEADLINE = "deadline"  # the client gave up at its deadline
    REJECTED = "rejected"  # the server refused before the deadline (code says how)
    ERROR = "error"  # anything else: connection errors, INTERNAL, HTTP 500...


# Codes that mean "the server refused this call" rather than "the call failed".
GRPC_REJECTION_CODES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
HTTP_REJECTION_STATUSES = frozenset({429, 503, 504})

# A DEADLINE_EXCEEDED that arrives earlier than this fraction of the deadline came from the
# server (admission control), not from the client's own timer.
SERVER_DEADLINE_FRACTION = 0.98


class RequestRecord(NamedTuple):
    """One request as the load generator saw it (times in seconds)."""

    scheduled_s: float  # offset of the scheduled start from the step's start
    latency_s: float  # from the scheduled start to the end of the call
    outcome: Outcome
    code: str  # grpc status name or "HTTP 503" or an exception name; "" for OK
    pid: int  # server process that replied (OK only), else 0
    send_lag_s: float  # how late the sender fired compared with the schedule


def classify_grpc(code_name: str, latency_s: float, deadline_s: float) -> tuple[Outcome, str]:
    """Outcome of a gRPC call from its status code name (e.g. ``"OK"``) and its latency."""
    if code_name == "OK":
        return (Outcome.OK, "") if latency_s <= deadline_s else (Outcome.DEADLINE, "late OK")
    if code_name == "DEADLINE_EXCEEDED" and latency_s >= deadline_s * SERVER_DEADLINE_FRACTION:
        return Outcome.DEADLINE, code_name
    if code_name in GRPC_REJECTION_CODES:
        return Outcome.REJECTED, code_name
    return Outcome.ERROR, code_name


def classify_http(status: int, latency_s: float, deadline_s: float) -> tuple[Outcome, str]:
    """Outcome of an HTTP exchange that got a status line back.

    A 504 is the HTTP face of DEADLINE_EXCEEDED (the shim's route timeout): read like it, a
    refusal when it comes early, a timeout when it comes at the deadline.
    """
    if 200 <= status < 300:
        return (Outcome.OK, "") if latency_s <= deadline_s else (Outcome.DEADLINE, "late OK")
    if status == 504 and latency_s >= deadline_s * SERVER_DEADLINE_FRACTION:
        return Outcome.DEADLINE, f"HTTP {status}"
    if status in HTTP_REJECTION_STATUSES:
        return Outcome.REJECTED, f"HTTP {status}"
    return Outcome.ERROR, f"HTTP {status}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepSummary:
    """What one load step measured, over its measurement window."""

    window_s: float
    sent: int
    offered_rps: float
    good: int
    goodput_rps: float
    deadline: int  # client timeouts (incl. OK replies that came too late)
    rejected: int
    rejected_rps: float
    errors: int
    good_p50_ms: float | None
    good_p99_ms: float | None
    rejected_p99_ms: float | None  # time to refusal, from the actual send
    rejected_codes: dict[str, int]
    error_codes: dict[str, int]
    send_lag_p99_ms: float | None
    send_lag_max_ms: float | None
    replies_by_pid: dict[int, int]

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["replies_by_pid"] = {str(pid): n for pid, n in self.replies_by_pid.items()}
        return data


def summarize(
    records: Iterable[RequestRecord], *, window_start_s: float, window_end_s: float
) -> StepSummary:
    """Summary of the records scheduled within [window_start_s, window_end_s)."""
    if window_end_s <= window_start_s:
        raise ValueError("the measurement window must have a positive length")
    window_s = window_end_s - window_start_s
    chosen = [r for r in records if window_start_s <= r.scheduled_s < window_end_s]
    good = [r.latency_s for r in chosen if r.outcome is Outcome.OK]
    # Rejections are timed from the actual send: how fast the server says no, net of any
    # sender lag (which the scheduled-time latencies of good calls rightly include).
    rejected = [r.latency_s - r.send_lag_s for r in chosen if r.outcome is Outcome.REJECTED]
    lags = [r.send_lag_s for r in chosen]
    return StepSummary(
        window_s=window_s,
        sent=len(chosen),
        offered_rps=len(chosen) / window_s,
        good=len(good),
        goodput_rps=len(good) / window_s,
        deadline=sum(1 for r in chosen if r.outcome is Outcome.DEADLINE),
        rejected=len(rejected),
        rejected_rps=len(rejected) / window_s,
        errors=sum(1 for r in chosen if r.outcome is Outcome.ERROR),
        good_p50_ms=_ms(percentile(good, 50)),
        good_p99_ms=_ms(percentile(good, 99)),
        rejected_p99_ms=_ms(percentile(rejected, 99)),
        rejected_codes=dict(Counter(r.code for r in chosen if r.outcome is Outcome.REJECTED)),
        error_codes=dict(Counter(r.code for r in chosen if r.outcome is Outcome.ERROR)),
        send_lag_p99_ms=_ms(percentile(lags, 99)),
        send_lag_max_ms=_ms(max(lags, default=None)),
        replies_by_pid=dict(Counter(r.pid for r in chosen if r.outcome is Outcome.OK)),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class HandlerTotals:
    """Handler CPU accounting summed over processes (see bench/overload/handler.py)."""

    cpu_total_s: float = 0.0
    cpu_wasted_s: float = 0.0  # CPU of calls that ended after their deadline
    calls: int = 0
    late_calls: int = 0

    @classmethod
    def sum_of(cls, dumps: Iterable[Mapping[str, Any]]) -> HandlerTotals:
        """Sum per-process dumps ``{cpu_total_s, cpu_wasted_s, calls, late_calls}``."""
        total = cls()
        for dump in dumps:
            total = total + cls(
                cpu_total_s=float(dump["cpu_total_s"]),
                cpu_wasted_s=float(dump["cpu_wasted_s"]),
                calls=int(dump["calls"]),
                late_calls=int(dump["late_calls"]),
            )
        return total

    def __add__(self, other: HandlerTotals) -> HandlerTotals:
        return HandlerTotals(
            cpu_total_s=self.cpu_total_s + other.cpu_total_s,
            cpu_wasted_s=self.cpu_wasted_s + other.cpu_wasted_s,
            calls=self.calls + other.calls,
            late_calls=self.late_calls + other.late_calls,
        )

    def __sub__(self, other: HandlerTotals) -> HandlerTotals:
        return HandlerTotals(
            cpu_total_s=self.cpu_total_s - other.cpu_total_s,
            cpu_wasted_s=self.cpu_wasted_s - other.cpu_wasted_s,
            calls=self.calls - other.calls,
            late_calls=self.late_calls - other.late_calls,
        )

    @property
    def wasted_fraction(self) -> float | None:
        """Share of handler CPU spent on calls that finished after their deadline."""
        return self.cpu_wasted_s / self.cpu_total_s if self.cpu_total_s > 0 else None


# ---------------------------------------------------------------- capacity ramp

# A ramp level "keeps up" when at least this share of the requests sent were good.
KEEPS_UP_FRACTION = 0.95


def ramp_rates(*, start_rps: float, factor: float, max_levels: int) -> list[float]:
    """Geometric offered rates for a capacity ramp: start, start*factor, ... (max_levels)."""
    if start_rps <= 0 or factor <= 1 or max_levels < 1:
        raise ValueError("need start_rps > 0, factor > 1 and max_levels >= 1")
    return [start_rps * factor**level for level in range(max_levels)]


def keeps_up(summary: StepSummary) -> bool:
    """Did the system serve (almost) everything it was sent, in time?"""
    return summary.sent > 0 and summary.good >= KEEPS_UP_FRACTION * summary.sent


def ramp_done(levels: Sequence[StepSummary], *, misses: int = 2) -> bool:
    """Stop a ramp once the last `misses` levels all failed to keep up.

    One miss is not enough: a single short level can fail on noise or a cold start.
    """
    if misses < 1:
        raise ValueError("misses must be >= 1")
    return len(levels) >= misses and not any(keeps_up(level) for level in levels[-misses:])


def capacity_from_ramp(levels: Sequence[StepSummary]) -> float:
    """Capacity estimate: the best goodput seen on the ramp (0 when there are no levels)."""
    return max((level.goodput_rps for level in levels), default=0.0)


def sustained_capacity(levels: Sequence[StepSummary], *, p99_ms: float) -> float:
    """The best goodput of a ramp level that kept up with its p99 within ``p99_ms``.

    A short level over capacity can still keep up when its deadline is long: the excess
    queues, and a 3 s level at 1.3x ends with ~0.9 s of work queued, inside a 2 s deadline.
    Its goodput is the rate the queue was filled at, not one the system sustains; its p99
    (the wait at the level's end) shows it. 0 when no level qualifies.
    """
    if not p99_ms > 0:
        raise ValueError(f"p99_ms must be > 0, got {p99_ms!r}")
    return capacity_from_ramp(
        [
            level
            for level in levels
            if keeps_up(level) and level.good_p99_ms is not None and level.good_p99_ms <= p99_ms
        ]
    )


# ---------------------------------------------------------------- bursts


@dataclasses.dataclass(frozen=True, kw_only=True)
class BurstSummary:
    """How one burst of calls sent at once ended."""

    sent: int
    ok: int  # OK within the deadline
    refused: int  # Outcome.REJECTED
    failed: int  # timed out at the client, or any other error
    finish_ms: float | None  # from the burst's send to the end of its last call
    ok_max_ms: float | None  # the slowest OK call
    codes: dict[str, int]  # refusals and failures by code

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize_burst(records: Sequence[RequestRecord]) -> BurstSummary:
    """Summary of one burst (every record scheduled at once; latencies from that moment)."""
    ok = [r.latency_s for r in records if r.outcome is Outcome.OK]
    return BurstSummary(
        sent=len(records),
        ok=len(ok),
        refused=sum(1 for r in records if r.outcome is Outcome.REJECTED),
        failed=sum(1 for r in records if r.outcome in (Outcome.DEADLINE, Outcome.ERROR)),
        finish_ms=_ms(max((r.latency_s for r in records), default=None)),
        ok_max_ms=_ms(max(ok, default=None)),
        codes=dict(Counter(r.code for r in records if r.outcome is not Outcome.OK)),
    )

"""The soak's accounting, RSS growth, checks and report (pure: no I/O, no clock).

Every call the schedule held ends as exactly one of: **OK** (answered OK within its deadline),
**failed** (any other end the client saw: a status code, or ``late OK``), or **lost** (it never
completed: the sender's wait for it ran out, code `LOST_CODE`). Every call of the soak is to the
one method, marked idempotent for the balanced client, so a failed call is a failed idempotent
call.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness.report import Check, format_cell, markdown_table, verdict
from bench.harness.stats import Outcome, RequestRecord, percentile

LOST_CODE = "no reply"  # what the load generator records for a call that never reported
MAX_RSS_GROWTH = 0.10  # acceptance: RSS growth < 10% over the run

# RSS samples of one process slot: (seconds from the soak's start, KiB or None if absent).
Samples = Sequence[Sequence[float | None]]


def is_lost(record: RequestRecord) -> bool:
    return record.outcome is Outcome.ERROR and record.code == LOST_CODE


def failure_code(record: RequestRecord) -> str | None:
    """The code a failed call is counted under; None for OK and lost calls."""
    if record.outcome is Outcome.OK or is_lost(record):
        return None
    return record.code or record.outcome.value


def account(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Totals over a run: sent, OK, failed (and by code), lost; they always add up."""
    codes = Counter(code for r in records if (code := failure_code(r)) is not None)
    ok = sum(1 for r in records if r.outcome is Outcome.OK)
    lost = sum(1 for r in records if is_lost(r))
    return {
        "sent": len(records),
        "ok": ok,
        "failed": sum(codes.values()),
        "failed_by_code": dict(sorted(codes.items())),
        "lost": lost,
    }


PHASES = ("steady", "restart", "burst")


def phase_of(
    at_s: float,
    *,
    restarts: Sequence[Mapping[str, Any]],
    burst: Sequence[float],
    settle_s: float,
) -> str:
    """Which part of the soak a call scheduled at ``at_s`` belongs to: ``burst`` from the
    burst's start until ``settle_s`` after its end, ``restart`` from a SIGTERM until
    ``settle_s`` after the backend was back (``ready_s``; the SIGTERM plus the drain and
    restart time if unknown), else ``steady``. The burst wins where they overlap."""
    start, end = burst
    if start <= at_s < end + settle_s:
        return "burst"
    for restart in restarts:
        back = restart.get("ready_s")
        back = restart["at_s"] if back is None else back
        if restart["at_s"] <= at_s < back + settle_s:
            return "restart"
    return "steady"


def account_by_phase(
    records: Sequence[RequestRecord],
    *,
    restarts: Sequence[Mapping[str, Any]],
    burst: Sequence[float],
    settle_s: float,
) -> dict[str, dict[str, Any]]:
    """`account` for each phase (see `phase_of`)."""
    parts = _by_phase(
        records, [r.scheduled_s for r in records], restarts=restarts, burst=burst, settle_s=settle_s
    )
    return {phase: account(part) for phase, part in parts.items()}


def _by_phase(
    items: Sequence[Any],
    times: Sequence[float],
    *,
    restarts: Sequence[Mapping[str, Any]],
    burst: Sequence[float],
    settle_s: float,
) -> dict[str, list[Any]]:
    """``items`` split by the phase (`phase_of`) of their ``times``."""
    parts: dict[str, list[Any]] = {phase: [] for phase in PHASES}
    for item, at_s in zip(items, times, strict=True):
        parts[phase_of(at_s, restarts=restarts, burst=burst, settle_s=settle_s)].append(item)
    return parts


_SHED_SAMPLE = re.compile(r"^rpckit_shed_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_REASON_LABEL = re.compile(r'(?:^|,)reason="(?P<reason>[^"]*)"')


def shed_by_reason(text: str) -> dict[str, float]:
    """``rpckit_shed_total`` (a server's admission refusals) summed by its ``reason`` label,
    from a Prometheus text exposition."""
    counts: dict[str, float] = {}
    for sample in _SHED_SAMPLE.finditer(text):
        reason = _REASON_LABEL.search(sample["labels"])
        name = reason["reason"] if reason else "?"
        counts[name] = counts.get(name, 0.0) + float(sample["value"])
    return counts


LOAD_GAUGES = (
    "rpckit_queue_depth",
    "rpckit_in_flight",
    "rpckit_concurrency_limit",
    "rpckit_utilization",
    "rpckit_codel_load",
)
_GAUGE_SAMPLE = re.compile(r"^(?P<name>rpckit_[a-z_]+) (?P<value>\S+)$", re.M)


def load_gauges(text: str) -> dict[str, float]:
    """A single-process server's load gauges (`LOAD_GAUGES`, unlabelled) from its metrics."""
    return {
        sample["name"]: float(sample["value"])
        for sample in _GAUGE_SAMPLE.finditer(text)
        if sample["name"] in LOAD_GAUGES
    }


# A backend's refusals that grew between two scrapes: [at_s, slot, reason, count].
ShedEvent = Sequence[Any]


def load_when_refusing(
    events: Sequence[ShedEvent], gauges: Sequence[Sequence[Any]]
) -> dict[str, dict[str, float | None]]:
    """Median of each load gauge over the scrapes that found the backend had refused calls
    in the second before (``refusing``) and over the others (``not refusing``)."""
    refused = {(at_s, slot) for at_s, slot, _reason, _n in events}
    split: dict[str, dict[str, list[float]]] = {"refusing": {}, "not refusing": {}}
    for at_s, slot, values in gauges:
        part = split["refusing" if (at_s, slot) in refused else "not refusing"]
        for name, value in values.items():
            part.setdefault(name, []).append(value)
    return {
        side: {name: percentile(values, 50) for name, values in sorted(part.items())}
        for side, part in split.items()
    }


def shed_buckets(
    events: Sequence[ShedEvent], *, bucket_s: float, duration_s: float
) -> list[dict[str, int]]:
    """Refusals by reason in each ``bucket_s`` of the soak, by the time they were scraped
    (each scrape covers the second before it)."""
    count = math.ceil(duration_s / bucket_s)
    rows: list[Counter[str]] = [Counter() for _ in range(count)]
    for at_s, _slot, reason, n in events:
        rows[min(count - 1, max(0, int(at_s // bucket_s)))][reason] += n
    return [dict(sorted(row.items())) for row in rows]


def shed_by_phase(
    events: Sequence[ShedEvent],
    *,
    restarts: Sequence[Mapping[str, Any]],
    burst: Sequence[float],
    settle_s: float,
) -> dict[str, dict[str, int]]:
    """Refusals by reason in each phase (`phase_of` of the scrape time)."""
    parts = _by_phase(
        events, [event[0] for event in events], restarts=restarts, burst=burst, settle_s=settle_s
    )
    out: dict[str, dict[str, int]] = {}
    for phase, part in parts.items():
        counts: Counter[str] = Counter()
        for _at_s, _slot, reason, n in part:
            counts[reason] += n
        out[phase] = dict(sorted(counts.items()))
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def window_mean(samples: Samples, start_s: float, end_s: float) -> float | None:
    """Mean of the samples taken in [start_s, end_s) (missing ones skipped)."""
    return _mean(
        [
            float(kib)
            for at, kib in samples
            if kib is not None and at is not None and start_s <= at < end_s
        ]
    )


def buckets(
    records: Sequence[RequestRecord],
    rss: Mapping[str, Samples],
    *,
    bucket_s: float,
    duration_s: float,
) -> list[dict[str, Any]]:
    """The per-``bucket_s`` table by scheduled time: offered, OK, failed by code, lost, p50/p99
    of OK calls' latency (ms, from the scheduled send) and each process's mean RSS (MiB)."""
    if bucket_s <= 0 or duration_s <= 0:
        raise ValueError("need bucket_s > 0 and duration_s > 0")
    count = math.ceil(duration_s / bucket_s)
    rows: list[list[RequestRecord]] = [[] for _ in range(count)]
    for record in records:
        rows[min(count - 1, max(0, int(record.scheduled_s // bucket_s)))].append(record)
    table = []
    for index, row in enumerate(rows):
        start = index * bucket_s
        totals = account(row)
        ok = [r.latency_s for r in row if r.outcome is Outcome.OK]
        means = {
            name: window_mean(samples, start, start + bucket_s) for name, samples in rss.items()
        }
        table.append(
            {
                "start_s": start,
                "offered_rps": round(len(row) / bucket_s, 1),
                **totals,
                "p50_ms": _ms(percentile(ok, 50)),
                "p99_ms": _ms(percentile(ok, 99)),
                "rss_mib": {n: None if m is None else round(m / 1024, 1) for n, m in means.items()},
            }
        )
    return table


def rss_growth(
    samples: Samples, *, warmup_s: float, window_s: float, end_s: float
) -> dict[str, float | None]:
    """RSS growth of one process slot: mean over the last ``window_s`` of the run over the mean
    of the first ``window_s`` after the warm-up, minus 1 (None without samples in both)."""
    first = window_mean(samples, warmup_s, warmup_s + window_s)
    last = window_mean(samples, end_s - window_s, end_s + 1e-9)
    growth = None if first is None or last is None or first <= 0 else last / first - 1
    return {
        "first_mib": None if first is None else round(first / 1024, 2),
        "last_mib": None if last is None else round(last / 1024, 2),
        "growth": None if growth is None else round(growth, 4),
    }


def checks(run: Mapping[str, Any]) -> list[Check]:
    """The acceptance checks: 0 failed idempotent calls, 0 lost calls, RSS growth < 10% for
    every process slot. A missing number is n/a, never a pass."""
    totals = run.get("totals")
    growth = run.get("rss_growth") or {}
    out = [
        Check(
            name="failed idempotent calls",
            value="-"
            if totals is None
            else f"{totals['failed']} of {totals['sent']}"
            + (f" ({_codes(totals['failed_by_code'])})" if totals["failed"] else ""),
            target="0",
            passed=None if totals is None or not totals["sent"] else totals["failed"] == 0,
        ),
        Check(
            name="lost calls",
            value="-" if totals is None else f"{totals['lost']} of {totals['sent']}",
            target="0",
            passed=None if totals is None or not totals["sent"] else totals["lost"] == 0,
        ),
    ]
    for name, entry in growth.items():
        value = entry.get("growth")
        out.append(
            Check(
                name=f"RSS growth: {name}",
                value="-"
                if value is None
                else f"{value:+.1%} ({entry['first_mib']} -> {entry['last_mib']} MiB)",
                target=f"< {MAX_RSS_GROWTH:.0%}",
                passed=None if value is None else value < MAX_RSS_GROWTH,
            )
        )
    if not growth:
        out.append(Check(name="RSS growth", value="-", target="< 10%", passed=None))
    return out


def _codes(by_code: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())) or "-"


def render_markdown(run: Mapping[str, Any]) -> str:
    """results.md: what ran, the capacity ramp, the per-bucket table, the checks, notes."""
    plan = run["plan"]
    machine = run["machine"]
    lines = [
        "# Soak: restarts and a burst through the balanced client",
        "",
        f"Command: `{run['command']}` ({run['mode']} mode, {run['started']}, "
        f"{run.get('elapsed_s', '?')} s).",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, grpcio {machine.get('grpcio', '-')}, "
        f"protobuf {machine.get('protobuf', '-')}; load average at the end "
        f"{machine.get('loadavg_end', '-')}.",
        "",
        f"{run['config']['backends']} backends (`{' '.join(run['config']['backend_argv'][1:])}`), "
        f"each call {run['config']['cpu_ms']:g} ms CPU + {run['config']['wait_ms']:g} ms wait, "
        f"deadline {plan['deadline_s']:g} s, through `rpckit.BalancedChannel` "
        f"(method idempotent) in {run['config']['senders']} sender process(es).",
        "",
        "## Capacity",
        "",
    ]
    ramp = run.get("capacity") or {}
    if ramp.get("ramp"):
        lines.append(
            markdown_table(
                ["offered/s", "OK/s", "OK", "sent", "p99 ms"],
                [
                    [
                        round(level["target_rps"]),
                        round(level["summary"]["goodput_rps"]),
                        level["summary"]["good"],
                        level["summary"]["sent"],
                        level["summary"]["good_p99_ms"],
                    ]
                    for level in ramp["ramp"]
                ],
            )
        )
        lines.append("")
    lines += [
        f"Capacity: **{format_cell(ramp.get('rps'), digits=0)} req/s** "
        f"({_capacity_source(ramp)}); "
        f"the soak offers {plan['load']:.0%} of it, **{format_cell(run.get('rate_rps'), digits=0)} "
        f"req/s**, for {plan['duration_s']:g} s, {plan['burst_factor']:g}x from "
        f"{run['burst'][0]:g} s to {run['burst'][1]:g} s; restarts (SIGTERM: drain, exit, start "
        "again on the same port): "
        + ", ".join(
            f"#{r['backend']} at {r['at_s']:g} s (back at {format_cell(r.get('ready_s'))} s)"
            for r in run.get("restarts", [])
        )
        + ".",
        "",
    ]
    if run.get("burst_wait_s") is not None:
        lines += [
            f"The burst can be served in time: {plan['load']:g} x {plan['burst_factor']:g} = "
            f"{plan['load'] * plan['burst_factor']:g}x capacity for {plan['burst_s']:g} s "
            f"leaves {run['burst_wait_s']:g} s of work queued at its end (the longest any call "
            f"of it must wait at a FIFO server running at capacity), under the "
            f"{plan['deadline_s']:g} s deadline.",
            "",
        ]
    prelude = run.get("prelude")
    if prelude:
        totals = prelude["totals"]
        lines += [
            f"Prelude (before the soak, not in its figures; the RSS baseline comes after a "
            f"burst): {plan['prelude_s']:g} s of the same load, the burst from "
            f"{prelude['burst'][0]:g} s: {totals['sent']} calls, {totals['ok']} OK, "
            f"{totals['failed']} failed ({_codes(totals['failed_by_code'])}), "
            f"{totals['lost']} lost.",
            "",
        ]
    lines += [f"## Every {plan['bucket_s']:g} s", ""]
    names = list(run.get("rss", {}))
    shed_rows = run.get("shed_buckets") or [{} for _ in run.get("buckets", [])]
    lines.append(
        markdown_table(
            ["from s", "offered/s", "sent", "OK", "failed", "lost", "p50 ms", "p99 ms"]
            + ["servers refused"]
            + [f"RSS {n} MiB" for n in names],
            [
                [
                    row["start_s"],
                    row["offered_rps"],
                    row["sent"],
                    row["ok"],
                    _codes(row["failed_by_code"]) if row["failed"] else 0,
                    row["lost"],
                    row["p50_ms"],
                    row["p99_ms"],
                    _codes(shed) if shed else 0,
                ]
                + [row["rss_mib"].get(n) for n in names]
                for row, shed in zip(run.get("buckets", []), shed_rows, strict=False)
            ],
        )
    )
    totals = run.get("totals") or {}
    lines += [
        "",
        f"Total: {totals.get('sent', 0)} calls, {totals.get('ok', 0)} OK, "
        f"{totals.get('failed', 0)} failed ({_codes(totals.get('failed_by_code', {}))}), "
        f"{totals.get('lost', 0)} lost.",
        "",
    ]
    by_phase = run.get("by_phase") or {}
    shed_phase = run.get("shed_by_phase") or {}
    if by_phase:
        lines += [
            f"By phase (`burst`: from its start to {plan['deadline_s']:g} s after its end; "
            f"`restart`: from a SIGTERM to {plan['deadline_s']:g} s after the backend was back; "
            "`steady`: the rest):",
            "",
            markdown_table(
                ["phase", "sent", "OK", "failed", "lost", "servers refused"],
                [
                    [
                        phase,
                        part["sent"],
                        part["ok"],
                        _codes(part["failed_by_code"]) if part["failed"] else 0,
                        part["lost"],
                        _codes(shed_phase.get(phase, {})) if shed_phase.get(phase) else 0,
                    ]
                    for phase, part in by_phase.items()
                ],
            ),
            "",
            "`servers refused`: the backends' admission refusals by reason (`rpckit_shed_total` "
            "on each backend's `--metrics` endpoint, scraped every second and before each "
            "SIGTERM), counting attempts: a refused attempt the client retried elsewhere "
            "is one here and may be OK in the client's columns.",
            "",
        ]
    load = run.get("load_when_refusing") or {}
    if load.get("refusing"):
        lines += [
            "The backends' load gauges at the scrapes (median; `refusing`: the backend had "
            "refused calls in the second before):",
            "",
            markdown_table(
                ["scrapes", *(name.removeprefix("rpckit_") for name in LOAD_GAUGES)],
                [
                    [side, *(format_cell(part.get(name)) for name in LOAD_GAUGES)]
                    for side, part in load.items()
                ],
            ),
            "",
        ]
    lines += [
        "## Checks",
        "",
        markdown_table(
            ["check", "value", "target", "verdict"],
            [
                [c["name"], c["value"], c["target"], verdict(c["passed"], gate=c.get("gate", True))]
                for c in run.get("acceptance", [])
            ],
        ),
        "",
        f"RSS growth: mean over the last {plan['rss_window_s']:g} s over the mean of the first "
        f"{plan['rss_window_s']:g} s after {plan['warmup_s']:g} s of warm-up, sampled every "
        "second. "
        "A backend slot's last window is the process started by its last restart.",
        "",
        "![soak](soak.png)",
    ]
    if run.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in run["notes"]]
    return "\n".join(lines) + "\n"


def _capacity_source(capacity: Mapping[str, Any]) -> str:
    """Where the capacity came from: the ramp (with its p99 bound) or ``--capacity``."""
    source = str(capacity.get("source", "-"))
    p99_ms = capacity.get("p99_ms")
    if source == "ramp" and p99_ms is not None:
        return f"the best ramp level that kept up with p99 within {p99_ms:g} ms"
    return source

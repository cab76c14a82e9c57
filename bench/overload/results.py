"""Pure rendering of an overload run: acceptance checks and the markdown report.

The run is the JSON document `bench.overload` writes (results.json); see `__main__` for how it
is produced. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness.report import Cell, Check, CurvePoint, format_cell, markdown_table, verdict

# The issue's acceptance targets (full mode), for rpckit --workers cores.
OVERLOAD_GOODPUT_SHARE = 0.90  # goodput at 2x and 3x >= 90% of goodput at 1x
MAX_WASTED_FRACTION = 0.02  # <= 2% of handler CPU on calls past their deadline
MAX_REJECTION_P99_MS = 10.0
MAX_MEMORY_RATIO = 1.6  # PSS of --workers 4 over --workers 1
MAX_HEALTH_MS = 50.0  # health Check answers SERVING within 50 ms under 3x overload


def _steps(run: Mapping[str, Any], system: str) -> list[dict[str, Any]]:
    for entry in run.get("systems", []):
        if entry["name"] == system:
            return list(entry.get("steps", []))
    return []


def _step_at(steps: Sequence[Mapping[str, Any]], multiple: float) -> Mapping[str, Any] | None:
    return next((step for step in steps if abs(step["multiple"] - multiple) < 1e-9), None)


def acceptance(run: Mapping[str, Any], *, system: str = "rpckit-workers") -> list[Check]:
    """The issue's acceptance checks for `system`, computed from the run."""
    steps = _steps(run, system)
    checks: list[Check] = []
    base = _step_at(steps, 1.0)
    for multiple in (2.0, 3.0):
        step = _step_at(steps, multiple)
        if base is None or step is None or base["summary"]["goodput_rps"] <= 0:
            checks.append(
                Check(
                    name=f"goodput at {multiple:g}x / 1x",
                    value="-",
                    target=f">= {OVERLOAD_GOODPUT_SHARE:.0%}",
                    passed=None,
                )
            )
            continue
        share = step["summary"]["goodput_rps"] / base["summary"]["goodput_rps"]
        checks.append(
            Check(
                name=f"goodput at {multiple:g}x / 1x",
                value=f"{share:.0%}",
                target=f">= {OVERLOAD_GOODPUT_SHARE:.0%}",
                passed=share >= OVERLOAD_GOODPUT_SHARE,
            )
        )
    wasted = [s["wasted_fraction"] for s in steps if s.get("wasted_fraction") is not None]
    worst_wasted = max(wasted, default=None)
    checks.append(
        Check(
            name="wasted CPU (worst step)",
            value="-" if worst_wasted is None else f"{worst_wasted:.1%}",
            target=f"<= {MAX_WASTED_FRACTION:.0%}",
            passed=None if worst_wasted is None else worst_wasted <= MAX_WASTED_FRACTION,
        )
    )
    rejection_p99 = [
        s["summary"]["rejected_p99_ms"]
        for s in steps
        if s["summary"]["rejected_p99_ms"] is not None
    ]
    worst_rejection = max(rejection_p99, default=None)
    checks.append(
        Check(
            name="rejection p99 (worst step)",
            value="no rejections" if worst_rejection is None else f"{worst_rejection:.1f} ms",
            target=f"<= {MAX_REJECTION_P99_MS:g} ms",
            passed=(worst_rejection is None and bool(steps))
            or (worst_rejection is not None and worst_rejection <= MAX_REJECTION_P99_MS),
        )
    )
    at_3x = _step_at(steps, 3.0)
    health = None if at_3x is None else at_3x.get("health")
    checks.append(
        Check(
            name="health Check at 3x: all SERVING, slowest",
            value="-"
            if not health or health["max_ms"] is None
            else f"{health['serving']}/{health['probes']} SERVING, {health['max_ms']:.1f} ms",
            target=f"<= {MAX_HEALTH_MS:g} ms",
            passed=None
            if not health or health["max_ms"] is None
            else health["serving"] == health["probes"] and health["max_ms"] <= MAX_HEALTH_MS,
        )
    )
    capacity = run.get("capacity", {})
    gunicorn_best = max(
        (s["summary"]["goodput_rps"] for s in _steps(run, "gunicorn")), default=None
    )
    own = capacity.get("rps") if capacity.get("system") == system else None
    checks.append(
        Check(
            name="capacity vs gunicorn's best goodput",
            value="-"
            if own is None or gunicorn_best is None
            else f"{own:.0f} vs {gunicorn_best:.0f}/s",
            target=">= 1x",
            passed=None if own is None or gunicorn_best is None else own >= gunicorn_best,
        )
    )
    ratio = memory_ratio(run, family="rpckit")
    checks.append(
        Check(
            name="PSS --workers 4 / --workers 1",
            value="-" if ratio is None else f"{ratio:.2f}x",
            target=f"<= {MAX_MEMORY_RATIO}x",
            passed=None if ratio is None else ratio <= MAX_MEMORY_RATIO,
        )
    )
    return checks


def memory_ratio(run: Mapping[str, Any], *, family: str) -> float | None:
    """PSS of the 4-worker configuration over the 1-worker one, for a family of systems."""
    by_workers = {
        entry["workers"]: entry.get("pss_kib")
        for entry in run.get("memory", [])
        if entry["family"] == family
    }
    one, four = by_workers.get(1), by_workers.get(4)
    return four / one if one and four else None


def curves(run: Mapping[str, Any]) -> dict[str, list[CurvePoint]]:
    """Plot points per system label."""
    return {
        entry["label"]: [
            CurvePoint(
                offered_rps=step["summary"]["offered_rps"],
                goodput_rps=step["summary"]["goodput_rps"],
                p99_ms=step["summary"]["good_p99_ms"],
            )
            for step in entry["steps"]
        ]
        for entry in run.get("systems", [])
        if entry.get("steps")
    }


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 1)


def _step_row(label: str, step: Mapping[str, Any]) -> list[Cell]:
    summary = step["summary"]
    window = summary["window_s"]
    return [
        label,
        f"{step['multiple']:g}x",
        summary["offered_rps"],
        summary["goodput_rps"],
        summary["good_p50_ms"],
        summary["good_p99_ms"],
        summary["rejected_rps"],
        summary["rejected_p99_ms"],
        summary["deadline"] / window,
        summary["errors"],
        _pct(step.get("wasted_fraction")),
        step["handler"]["cpu_total_s"],
        step["tree_cpu_s"],
        step.get("sender_cpu_s"),
        summary["send_lag_p99_ms"],
        _health_cell(step.get("health")),
    ]


def _health_cell(health: Mapping[str, Any] | None) -> str:
    if not health or health.get("max_ms") is None:
        return "-"
    return f"{health['serving']}/{health['probes']} @ {health['max_ms']:.0f} ms"


def render_markdown(run: Mapping[str, Any]) -> str:
    """The whole report as markdown."""
    config = run["config"]
    machine = run["machine"]
    capacity = run.get("capacity", {})
    out = [
        f"# Overload benchmark ({run['mode']} mode)\n",
        f"Handler: {config['cpu_ms']:g} ms CPU + {config['wait_ms']:g} ms wait; client deadline "
        f"{config['deadline_ms']:g} ms; open-loop Poisson arrivals; each step "
        f"{config['warmup_s']:g} s warm-up + {config['measure_s']:g} s measured; "
        f"{config['senders']} sender processes (nice {config.get('sender_niceness', '-')}) "
        "on the same cores as the servers.\n",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, Linux "
        f"{machine['kernel']}, Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"protobuf {machine['protobuf']}, gunicorn {machine['gunicorn']}, "
        f"gevent {machine['gevent']}, Flask {machine['flask']}.\n",
        f"Capacity (1x): **{format_cell(capacity.get('rps'))} req/s**, "
        f"{capacity.get('source', '-')} on {capacity.get('system', '-')}.\n",
        "Goodput = calls that returned OK within their deadline, per second. Latencies of "
        "successful calls (p50, p99) are measured from the scheduled send time, so a late "
        "sender counts against them; rejection latency from the actual send (time to refusal). "
        "Timeouts = calls the client gave up on at its deadline. Wasted CPU = handler CPU spent "
        "on calls that finished after their deadline, as a share of all handler CPU. Tree CPU = "
        "all CPU of the server's processes during the step and its drain.\n",
    ]
    systems = [entry for entry in run.get("systems", []) if entry.get("steps")]
    if systems:
        multiples = sorted({step["multiple"] for entry in systems for step in entry["steps"]})
        out.append("## Goodput (req/s) by offered load\n")
        pivot: list[list[Cell]] = []
        for entry in systems:
            row: list[Cell] = [entry["label"]]
            for multiple in multiples:
                step = _step_at(entry["steps"], multiple)
                row.append(None if step is None else step["summary"]["goodput_rps"])
            pivot.append(row)
        out.append(markdown_table(["system", *[f"{m:g}x" for m in multiples]], pivot))
        out.append("## All steps\n")
        rows = [_step_row(entry["label"], step) for entry in systems for step in entry["steps"]]
        out.append(
            markdown_table(
                [
                    "system",
                    "load",
                    "offered/s",
                    "goodput/s",
                    "p50 ms",
                    "p99 ms",
                    "rejected/s",
                    "reject p99 ms",
                    "timeouts/s",
                    "errors",
                    "wasted CPU %",
                    "handler CPU s",
                    "tree CPU s",
                    "load-gen CPU s",
                    "send lag p99 ms",
                    "health SERVING / max",
                ],
                rows,
            )
        )
    memory = run.get("memory", [])
    if memory:
        out.append("## Memory (PSS summed over the process tree, after a warm-up)\n")
        out.append(
            markdown_table(
                ["configuration", "processes", "processes that served", "PSS MiB", "note"],
                [
                    [
                        m["label"],
                        m.get("processes"),
                        m.get("processes_that_replied"),
                        None if m.get("pss_kib") is None else m["pss_kib"] / 1024,
                        m.get("error") or "",
                    ]
                    for m in memory
                ],
            )
        )
        ratios = [(family, memory_ratio(run, family=family)) for family in ("rpckit", "gunicorn")]
        out.append(
            "".join(
                f"- {family}: 4 workers / 1 worker = **{ratio:.2f}x**\n"
                for family, ratio in ratios
                if ratio is not None
            )
        )
    checks = run.get("acceptance", [])
    if checks:
        out.append("## Acceptance (rpckit --workers cores; the targets apply to full mode)\n")
        out.append(
            markdown_table(
                ["check", "value", "target", "result"],
                [
                    [
                        c["name"],
                        c["value"],
                        c["target"],
                        verdict(c["passed"]),
                    ]
                    for c in checks
                ],
            )
        )
    skipped = [entry for entry in run.get("systems", []) if not entry.get("steps")]
    notes = list(run.get("notes", []))
    notes += [f"{entry['label']}: {entry.get('note') or 'not run'}" for entry in skipped]
    if notes:
        out.append("## Notes\n")
        out.append("".join(f"- {note}\n" for note in notes))
    return "\n".join(out)

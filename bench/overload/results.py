"""Pure checks and rendering of an overload run: issue 12's acceptance, and the markdown report.

The run is the JSON document `bench.overload` writes (results.json; see `__main__` and
`runner` for how it is produced). Every check is a function of the run's numbers; a check
without the numbers it needs is undecided (n/a), never passed. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness.report import Cell, Check, CurvePoint, format_cell, markdown_table, verdict

RPCKIT = "rpckit"  # rpckit serve --workers auto (cores+1)
SHIM = "rpckit-http"  # the same behind the HTTP shim
DEFAULT = "rpckit-default"  # rpckit serve with its defaults (the burst check's subject)
BASELINE = "gunicorn"  # Flask + gunicorn -k gevent -w cores+1

# Issue 12's targets (full mode).
SHARE_OF_BEST = 0.90  # seed: goodput at 2x and 3x >= 90% of the system's own best
MAX_WASTED_FRACTION = 0.02  # <= 2% of handler CPU on calls that ended past their deadline
MAX_REFUSAL_P99_MS = 25.0  # refusal latency p99 at every load...
GOAL_REFUSAL_P99_MS = 10.0  # ...and the goal worth reporting
MAX_HEALTH_MS = 50.0  # health Check answers SERVING within 50 ms throughout
IO_SHARE_AT_3X = 0.90  # io: goodput at 3x >= 90% (of gunicorn's at 3x; of its own at 1x)
MAX_NEIGHBOUR_BAD = 0.01  # beside a busy core at 0.5x: <= 1% refused (or late)
MAX_RECOVERY_BAD = 0.01  # after a burst: <= 1% of ordinary calls refused or late


# ---------------------------------------------------------------- lookups


def system_entry(run: Mapping[str, Any], profile: str, system: str) -> Mapping[str, Any] | None:
    """A system's entry in one profile of the run, or None."""
    entries = run.get("profiles", {}).get(profile, {}).get("systems", [])
    return next((entry for entry in entries if entry["name"] == system), None)


def steps_of(run: Mapping[str, Any], profile: str, system: str) -> list[Mapping[str, Any]]:
    entry = system_entry(run, profile, system)
    return [] if entry is None else list(entry.get("steps", []))


def step_at(steps: Sequence[Mapping[str, Any]], multiple: float) -> Mapping[str, Any] | None:
    return next((step for step in steps if abs(step["multiple"] - multiple) < 1e-9), None)


def _goodput(step: Mapping[str, Any]) -> float:
    return float(step["summary"]["goodput_rps"])


# ---------------------------------------------------------------- checks


def goodput_at_every_load(
    steps: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]], *, name: str
) -> Check:
    """Goodput >= the baseline's at every load both ran; the value shows the closest one."""
    target = ">= baseline's at every load"
    pairs = [
        (step["multiple"], _goodput(step), _goodput(base))
        for step in steps
        if (base := step_at(baseline, step["multiple"])) is not None
    ]
    if not pairs:
        return Check(name=name, value="-", target=target, passed=None)
    multiple, own, other = min(pairs, key=lambda pair: pair[1] - pair[2])
    return Check(
        name=name,
        value=f"closest at {multiple:g}x: {own:.1f} vs {other:.1f}/s ({len(pairs)} loads)",
        target=target,
        passed=all(own >= other for _, own, other in pairs),
    )


def share_of_best(steps: Sequence[Mapping[str, Any]], multiple: float, *, name: str) -> Check:
    """Goodput at ``multiple`` >= SHARE_OF_BEST of the best goodput at any load."""
    target = f">= {SHARE_OF_BEST:.0%} of own best"
    step = step_at(steps, multiple)
    best = max((_goodput(s) for s in steps), default=0.0)
    if step is None or best <= 0:
        return Check(name=name, value="-", target=target, passed=None)
    share = _goodput(step) / best
    return Check(
        name=name,
        value=f"{share:.0%} ({_goodput(step):.1f} of {best:.1f}/s)",
        target=target,
        passed=share >= SHARE_OF_BEST,
    )


def share_of(
    step: Mapping[str, Any] | None,
    reference: Mapping[str, Any] | None,
    *,
    share: float,
    name: str,
    what: str,
) -> Check:
    """One step's goodput >= ``share`` of another step's (``what`` names the other)."""
    target = f">= {share:.0%} of {what}" if share != 1 else f">= {what}"
    if step is None or reference is None:
        return Check(name=name, value="-", target=target, passed=None)
    own, other = _goodput(step), _goodput(reference)
    ratio = own / other if other > 0 else math.inf
    return Check(
        name=name,
        value=f"{own:.1f} vs {other:.1f}/s ({ratio:.2f}x)",
        target=target,
        passed=own >= share * other,
    )


def worst_wasted(steps: Sequence[Mapping[str, Any]], *, name: str) -> Check:
    target = f"<= {MAX_WASTED_FRACTION:.0%}"
    wasted = [s["wasted_fraction"] for s in steps if s.get("wasted_fraction") is not None]
    if not wasted:
        return Check(name=name, value="-", target=target, passed=None)
    worst = max(wasted)
    return Check(
        name=name,
        value=f"{worst:.1%}",
        target=target,
        passed=worst <= MAX_WASTED_FRACTION,
    )


def refusal_p99(
    steps: Sequence[Mapping[str, Any]], *, name: str, limit_ms: float, gate: bool = True
) -> Check:
    """The worst step's refusal latency p99 within ``limit_ms`` (no refusal at all passes)."""
    target = f"<= {limit_ms:g} ms at every load"
    if not steps:
        return Check(name=name, value="-", target=target, passed=None, gate=gate)
    p99s = [s["summary"]["rejected_p99_ms"] for s in steps]
    measured = [p for p in p99s if p is not None]
    if not measured:
        return Check(name=name, value="no refusals", target=target, passed=True, gate=gate)
    worst = max(measured)
    return Check(
        name=name, value=f"{worst:.1f} ms", target=target, passed=worst <= limit_ms, gate=gate
    )


def health_throughout(steps: Sequence[Mapping[str, Any]], *, name: str) -> Check:
    """Every health probe of every step SERVING, the slowest within MAX_HEALTH_MS."""
    target = f"all SERVING, <= {MAX_HEALTH_MS:g} ms"
    healths = [s["health"] for s in steps if s.get("health") and s["health"].get("probes")]
    if not healths or len(healths) < len(steps):
        return Check(name=name, value="-", target=target, passed=None)
    probes = sum(h["probes"] for h in healths)
    serving = sum(h["serving"] for h in healths)
    slowest = max(h["max_ms"] for h in healths)
    return Check(
        name=name,
        value=f"{serving}/{probes} SERVING, slowest {slowest:.1f} ms",
        target=target,
        passed=serving == probes and slowest <= MAX_HEALTH_MS,
    )


def neighbour_refusals(step: Mapping[str, Any] | None, *, name: str) -> Check:
    """Beside a busy core: calls refused, timed out or failed, as a share of those sent."""
    target = f"<= {MAX_NEIGHBOUR_BAD:.0%} refused or late"
    if step is None or not step["summary"]["sent"]:
        return Check(name=name, value="-", target=target, passed=None)
    summary = step["summary"]
    sent = summary["sent"]
    refused, late = summary["rejected"], summary["deadline"] + summary["errors"]
    return Check(
        name=name,
        value=f"{refused / sent:.2%} refused, {late / sent:.2%} late ({sent} calls)",
        target=target,
        passed=(refused + late) / sent <= MAX_NEIGHBOUR_BAD,
    )


def bursts_all_ok(bursts: Sequence[Mapping[str, Any]], size: int, *, name: str) -> Check:
    target = f"{size}/{size} OK in every burst"
    if not bursts:
        return Check(name=name, value="-", target=target, passed=None)
    oks = [b["burst"]["ok"] for b in bursts]
    return Check(
        name=name,
        value=f"{', '.join(str(ok) for ok in oks)} OK of {size} "
        f"({len(bursts)} burst{'' if len(bursts) == 1 else 's'})",
        target=target,
        passed=all(b["burst"]["ok"] == b["burst"]["sent"] == size for b in bursts),
    )


def recovery_after_bursts(bursts: Sequence[Mapping[str, Any]], *, name: str) -> Check:
    """After every burst, ordinary calls served: the worst window's share not good."""
    target = f"<= {MAX_RECOVERY_BAD:.0%} refused or late after each burst"
    windows = [b["recovery"] for b in bursts if b["recovery"]["sent"]]
    if not windows:
        return Check(name=name, value="-", target=target, passed=None)
    bad = [(w["sent"] - w["good"]) / w["sent"] for w in windows]
    return Check(
        name=name,
        value=f"worst {max(bad):.1%} ({sum(w['sent'] for w in windows)} calls)",
        target=target,
        passed=max(bad) <= MAX_RECOVERY_BAD,
    )


def memory_ratio(run: Mapping[str, Any], *, family: str) -> float | None:
    """PSS of the 4-worker configuration over the 1-worker one, for a family of systems."""
    one, four = _pss_by_workers(run, family)
    return four / one if one and four else None


def per_extra_worker_kib(run: Mapping[str, Any], *, family: str) -> float | None:
    """What each worker beyond the first adds: (PSS of 4 workers - PSS of 1) / 3."""
    one, four = _pss_by_workers(run, family)
    return (four - one) / 3 if one and four else None


def _pss_by_workers(run: Mapping[str, Any], family: str) -> tuple[int | None, int | None]:
    by_workers = {
        entry["workers"]: entry.get("pss_kib")
        for entry in run.get("memory", [])
        if entry["family"] == family
    }
    return by_workers.get(1), by_workers.get(4)


def memory_per_extra_worker(run: Mapping[str, Any], *, name: str) -> Check:
    target = "<= gunicorn's"
    own = per_extra_worker_kib(run, family="rpckit")
    other = per_extra_worker_kib(run, family="gunicorn")
    if own is None or other is None:
        return Check(name=name, value="-", target=target, passed=None)
    return Check(
        name=name,
        value=f"{own / 1024:.1f} vs {other / 1024:.1f} MiB",
        target=target,
        passed=own <= other,
    )


def acceptance(run: Mapping[str, Any]) -> list[Check]:
    """Issue 12's acceptance checks, computed from the run (targets apply to full mode)."""
    checks: list[Check] = []
    gunicorn_seed = steps_of(run, "seed", BASELINE)
    for system, label in ((RPCKIT, "seed"), (SHIM, "HTTP")):
        steps = steps_of(run, "seed", system)
        checks.append(
            goodput_at_every_load(steps, gunicorn_seed, name=f"{label}: goodput vs gunicorn+gevent")
        )
        checks += [
            share_of_best(steps, multiple, name=f"{label}: goodput at {multiple:g}x")
            for multiple in (2.0, 3.0)
        ]
        checks.append(worst_wasted(steps, name=f"{label}: wasted CPU, worst step"))
        checks.append(refusal_p99(steps, name=f"{label}: refusal p99", limit_ms=MAX_REFUSAL_P99_MS))
        checks.append(
            refusal_p99(
                steps,
                name=f"{label}: refusal p99 (goal)",
                limit_ms=GOAL_REFUSAL_P99_MS,
                gate=False,
            )
        )
        if system == RPCKIT:
            checks.append(health_throughout(steps, name="seed: health Check, every step"))
    io_own, io_base = steps_of(run, "io", RPCKIT), steps_of(run, "io", BASELINE)
    for multiple, reference, share, what in (
        (1.0, step_at(io_base, 1.0), 1.0, "gunicorn's at 1x"),
        (3.0, step_at(io_base, 3.0), IO_SHARE_AT_3X, "gunicorn's at 3x"),
        (3.0, step_at(io_own, 1.0), IO_SHARE_AT_3X, "its own at 1x"),
    ):
        checks.append(
            share_of(
                step_at(io_own, multiple),
                reference,
                share=share,
                name=f"io: goodput at {multiple:g}x",
                what=what,
            )
        )
    burst = run.get("profiles", {}).get("burst", {})
    default_entry = system_entry(run, "burst", DEFAULT)
    bursts = [] if default_entry is None else list(default_entry.get("bursts", []))
    checks.append(
        bursts_all_ok(bursts, int(burst.get("size", 200)), name="burst: rpckit serve (defaults)")
    )
    checks.append(recovery_after_bursts(bursts, name="burst: recovery, rpckit serve (defaults)"))
    seed_entry = system_entry(run, "seed", RPCKIT)
    checks.append(
        neighbour_refusals(
            None if seed_entry is None else seed_entry.get("neighbour"),
            name="neighbour: seed at 0.5x beside a busy core",
        )
    )
    checks.append(memory_per_extra_worker(run, name="memory: PSS per extra worker"))
    return checks


def acceptance_tally(checks: Sequence[Mapping[str, Any]]) -> str:
    """e.g. ``12 pass, 3 fail, 5 n/a (of 20 gates)``; goals are not counted."""
    gates = [c["passed"] for c in checks if c.get("gate", True)]
    return (
        f"{gates.count(True)} pass, {gates.count(False)} fail, {gates.count(None)} n/a "
        f"(of {len(gates)} gates)"
    )


# ---------------------------------------------------------------- report


def curves(run: Mapping[str, Any], profile: str) -> dict[str, list[CurvePoint]]:
    """Plot points per system label for one load profile."""
    entries = run.get("profiles", {}).get(profile, {}).get("systems", [])
    return {
        entry["label"]: [
            CurvePoint(
                offered_rps=step["summary"]["offered_rps"],
                goodput_rps=step["summary"]["goodput_rps"],
                p99_ms=step["summary"]["good_p99_ms"],
            )
            for step in entry["steps"]
        ]
        for entry in entries
        if entry.get("steps")
    }


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 1)


def _health_cell(health: Mapping[str, Any] | None) -> str:
    if not health or health.get("max_ms") is None:
        return "-"
    return f"{health['serving']}/{health['probes']} @ {health['max_ms']:.0f} ms"


STEP_HEADERS = [
    "system",
    "load",
    "offered/s",
    "goodput/s",
    "p50 ms",
    "p99 ms",
    "refused/s",
    "refusal p99 ms",
    "timeouts/s",
    "errors",
    "wasted CPU %",
    "handler CPU s",
    "tree CPU s",
    "load-gen CPU s",
    "send lag p99 ms",
    "host steal %",
    "health SERVING / max",
]


def _step_row(label: str, step: Mapping[str, Any]) -> list[Cell]:
    summary = step["summary"]
    return [
        label,
        f"{step['multiple']:g}x",
        summary["offered_rps"],
        summary["goodput_rps"],
        summary["good_p50_ms"],
        summary["good_p99_ms"],
        summary["rejected_rps"],
        summary["rejected_p99_ms"],
        summary["deadline"] / summary["window_s"],
        summary["errors"],
        _pct(step.get("wasted_fraction")),
        step["handler"]["cpu_total_s"],
        step["tree_cpu_s"],
        step.get("sender_cpu_s"),
        summary["send_lag_p99_ms"],
        step.get("host_steal_pct"),
        _health_cell(step.get("health")),
    ]


def _share(count: int, total: int) -> float | None:
    return None if not total else round(100 * count / total, 2)


def _load_profile_section(entry: Mapping[str, Any]) -> list[str]:
    capacity = entry.get("capacity", {})
    out = [
        f"## Profile `{entry['name']}`: {entry['describe']}\n",
    ]
    if entry.get("deadline_reason"):
        out.append(f"Deadline: {entry['deadline_reason']}.\n")
    out.append(
        f"Capacity (1x): **{format_cell(capacity.get('rps'))} req/s**, "
        f"{capacity.get('source', '-')} on {capacity.get('system', '-')}.\n"
    )
    ran = [system for system in entry["systems"] if system.get("steps")]
    if not ran:
        return out
    multiples = sorted({step["multiple"] for system in ran for step in system["steps"]})
    out.append(f"### Goodput (req/s) by offered load, `{entry['name']}`\n")
    pivot: list[list[Cell]] = []
    for system in ran:
        row: list[Cell] = [system["label"]]
        for multiple in multiples:
            step = step_at(system["steps"], multiple)
            row.append(None if step is None else step["summary"]["goodput_rps"])
        pivot.append(row)
    out.append(markdown_table(["system", *[f"{m:g}x" for m in multiples]], pivot))
    out.append(f"### All steps, `{entry['name']}`\n")
    rows = [_step_row(system["label"], step) for system in ran for step in system["steps"]]
    out.append(markdown_table(STEP_HEADERS, rows))
    beside = [(system, system["neighbour"]) for system in ran if system.get("neighbour")]
    if beside:
        out.append(
            f"### Beside a CPU-bound neighbour, `{entry['name']}` at 0.5x\n\n"
            "One Python busy loop pinned to one core, at the servers' own niceness, for the "
            "whole step; the 0.5x row above is the same load without it.\n"
        )
        out.append(
            markdown_table(
                [
                    "system",
                    "offered/s",
                    "goodput/s",
                    "refused %",
                    "late or failed %",
                    "refusal p99 ms",
                    "p99 ms",
                    "neighbour CPU s",
                    "health SERVING / max",
                ],
                [
                    [
                        system["label"],
                        step["summary"]["offered_rps"],
                        step["summary"]["goodput_rps"],
                        _share(step["summary"]["rejected"], step["summary"]["sent"]),
                        _share(
                            step["summary"]["deadline"] + step["summary"]["errors"],
                            step["summary"]["sent"],
                        ),
                        step["summary"]["rejected_p99_ms"],
                        step["summary"]["good_p99_ms"],
                        step["neighbour"]["cpu_s"],
                        _health_cell(step.get("health")),
                    ]
                    for system, step in beside
                ],
            )
        )
    return out


def _codes_cell(codes: Mapping[str, int]) -> str:
    return ", ".join(f"{code or 'OK'} x{count}" for code, count in sorted(codes.items())) or "-"


def _burst_section(entry: Mapping[str, Any]) -> list[str]:
    recovery = entry["recovery"]
    out = [
        f"## Profile `burst`: {entry['describe']}\n",
        f"Each burst's calls are sent at once (the senders fire them back to back); "
        f"*finish* is the time from the burst to the end of its last call. After each "
        f"burst, `{recovery['profile']}` calls at {recovery['rps']:g}/s for "
        f"{recovery['seconds']:g} s ({recovery['deadline_ms']:g} ms deadline): did the "
        "server recover?\n",
    ]
    rows: list[list[Cell]] = []
    for system in entry["systems"]:
        for index, burst in enumerate(system.get("bursts", []), start=1):
            b, r = burst["burst"], burst["recovery"]
            rows.append(
                [
                    system["label"],
                    index,
                    b["ok"],
                    b["refused"],
                    b["failed"],
                    b["finish_ms"],
                    _codes_cell(b["codes"]),
                    r["sent"],
                    r["good"],
                    r["rejected"],
                    r["deadline"] + r["errors"],
                    r["good_p99_ms"],
                ]
            )
    if rows:
        out.append(
            markdown_table(
                [
                    "system",
                    "burst",
                    "OK",
                    "refused",
                    "failed",
                    "finish ms",
                    "not OK by code",
                    "then sent",
                    "good",
                    "refused",
                    "late or failed",
                    "p99 ms",
                ],
                rows,
            )
        )
    return out


def _memory_section(run: Mapping[str, Any]) -> list[str]:
    memory = run.get("memory", [])
    if not memory:
        return []
    out = ["## Memory (PSS summed over the process tree, after a warm-up)\n"]
    out.append(
        markdown_table(
            ["configuration", "processes", "processes that served", "PSS MiB", "note"],
            [
                [
                    m["label"],
                    m.get("processes"),
                    m.get("processes_that_replied"),
                    None if m.get("pss_kib") is None else m["pss_kib"] / 1024,
                    m.get("note") or "",
                ]
                for m in memory
            ],
        )
    )
    lines = []
    for family in ("rpckit", "gunicorn"):
        ratio = memory_ratio(run, family=family)
        extra = per_extra_worker_kib(run, family=family)
        if ratio is not None and extra is not None:
            lines.append(
                f"- {family}: 4 workers / 1 worker = **{ratio:.2f}x**, "
                f"**{extra / 1024:.1f} MiB** per extra worker\n"
            )
    out.append("".join(lines))
    return out


def _machine_line(machine: Mapping[str, Any]) -> str:
    return (
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, Linux "
        f"{machine['kernel']}, Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"protobuf {machine['protobuf']}, gunicorn {machine['gunicorn']}, "
        f"gevent {machine['gevent']}, Flask {machine['flask']}.\n"
    )


def render_markdown(run: Mapping[str, Any]) -> str:
    """The whole report as markdown."""
    config = run["config"]
    out = [
        f"# Overload benchmark ({run['mode']} mode)\n",
        f"Profiles: {', '.join(config['profiles'])}. Open-loop Poisson arrivals; each step "
        f"{config['warmup_s']:g} s warm-up + {config['measure_s']:g} s measured; "
        f"{config['senders']} sender processes (nice {config.get('sender_niceness', '-')}) "
        "on the same cores as the servers. 1x is gunicorn+gevent's capacity for the "
        "profile, measured by a ramp in this run. rpckit runs as "
        f"`rpckit serve {' '.join(config.get('rpckit_workers_argv', []))}`; its HTTP shim "
        "(`rpckit serve --http`) is driven by the same HTTP/JSON client as gunicorn, which "
        "sends no deadline rpckit reads: the route's timeout stands in for it.\n",
        _machine_line(run["machine"]),
        f"Command: `{run.get('command', '-')}`.\n",
        "Goodput = calls that returned OK within their deadline, per second. Latencies of "
        "successful calls (p50, p99) are measured from the scheduled send time, so a late "
        "sender counts against them; refusal latency from the actual send (time to refusal). "
        "Timeouts = calls the client gave up on at its deadline. Wasted CPU = handler CPU spent "
        "on calls that finished after their deadline, as a share of all handler CPU. Tree CPU = "
        "all CPU of the server's processes during the step and its drain. Host steal = the "
        "share of the host's CPU time the hypervisor gave to other guests during the step "
        "(/proc/stat): where it is high, the step measured the host, not the system.\n",
    ]
    for entry in run.get("profiles", {}).values():
        if entry.get("kind") == "burst":
            out += _burst_section(entry)
        else:
            out += _load_profile_section(entry)
    out += _memory_section(run)
    checks = run.get("acceptance", [])
    if checks:
        out.append(
            "## Acceptance (issue 12; the targets apply to full mode): "
            f"{acceptance_tally(checks)}\n"
        )
        out.append(
            markdown_table(
                ["check", "value", "target", "result"],
                [
                    [c["name"], c["value"], c["target"], verdict(c["passed"], gate=c["gate"])]
                    for c in checks
                ],
            )
        )
    notes = list(run.get("notes", []))
    for name, entry in run.get("profiles", {}).items():
        notes += [
            f"{name}, {system['label']}: {system['note']}"
            for system in entry.get("systems", [])
            if system.get("note")
        ]
    if notes:
        out.append("## Notes\n")
        out.append("".join(f"- {note}\n" for note in notes))
    return "\n".join(out)

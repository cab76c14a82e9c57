"""Pure results of a bench/balance run: per-policy summaries, acceptance checks, the report.

The run is the JSON document `bench.balance` writes (results.json); `summarize_policy` turns
one policy's request records into its entry. Nothing here does I/O or reads a clock.

Definitions (also written into results.md):

- *capacity* = the smaller of the backends' thread capacity (sum over backends of handler
  threads / service time) and the machine's CPU capacity (its cores over the CPU one P2C call
  costs in backends and sender together, measured in a calibration step before the policies);
- a *miss* is a call that did not return OK within its deadline (client timeout, an OK that
  came too late, a rejection or an error);
- latency percentiles are over the calls that returned OK, measured from the scheduled send
  time (so a late sender counts against them);
- a call *went to* the backend whose pid is in its reply, or in the rpckit load report on its
  error; calls no backend answered are *unattributed*, and the slow-backend check counts them
  as the slow backend's (an upper bound).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness.report import Cell, Check, format_cell, markdown_table, verdict
from bench.harness.stats import Outcome, RequestRecord, percentile, summarize

# The acceptance targets.
MAX_P99_RATIO = 0.2  # P2C's p99 <= 0.2 x round_robin's p99
MAX_MISS_FRACTION = 0.001  # P2C deadline misses < 0.1%
MAX_SLOW_SHARE = 0.03  # share of P2C's calls to the slow backend < 3% (after warm-up)

POLICY_LABELS = {
    "p2c": "rpckit P2C (BalancedChannel)",
    "round_robin": "grpcio round_robin",
    "random": "random backend per call",
}

# Tail points for the plot: the latency below which all but this fraction of calls finished OK.
TAIL_FRACTIONS = tuple(round(m * 10.0**-e, 6) for e in range(1, 5) for m in (7, 5, 3, 2, 1.5, 1))


def nominal_capacity(threads: Sequence[int], service_s: Sequence[float]) -> float:
    """Sum over backends of threads / service time (req/s)."""
    if len(threads) != len(service_s) or not threads:
        raise ValueError("need one thread count and one service time per backend")
    if min(threads) < 1 or min(service_s) <= 0:
        raise ValueError("threads must be >= 1 and service times > 0")
    return sum(t / s for t, s in zip(threads, service_s, strict=True))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def tail_points(
    records: Sequence[RequestRecord], fractions: Sequence[float] = TAIL_FRACTIONS
) -> list[tuple[float, float | None]]:
    """(fraction f, latency ms): all but a share f of the calls returned OK within that latency.

    Calls that did not return OK count as infinitely slow: None when more than f of the calls
    failed. Nearest rank; fractions below 1/len(records) are left out.
    """
    ordered = sorted(r.latency_s if r.outcome is Outcome.OK else math.inf for r in records)
    points: list[tuple[float, float | None]] = []
    for fraction in fractions:
        if not ordered or fraction * len(ordered) < 1:
            continue
        rank = max(0, math.ceil((1 - fraction) * len(ordered)) - 1)
        value = ordered[rank]
        points.append((fraction, None if math.isinf(value) else _ms(value)))
    return points


def _p99_all(records: Sequence[RequestRecord]) -> float | None:
    """p99 over all calls, a call that did not return OK counting as infinitely slow (None)."""
    points = tail_points(records, (0.01,))
    return points[0][1] if points else None


def summarize_policy(
    records: Sequence[RequestRecord],
    *,
    window_s: float,
    backend_of_pid: Mapping[int, int],
    backends: int,
    slow: int,
) -> dict[str, Any]:
    """One policy's entry of the run: load, latency, misses and where the calls went."""
    if not 0 <= slow < backends:
        raise ValueError("slow must index a backend")
    step = summarize(records, window_start_s=0.0, window_end_s=window_s)
    chosen = [r for r in records if 0.0 <= r.scheduled_s < window_s]
    good = [r.latency_s for r in chosen if r.outcome is Outcome.OK]
    by_backend = [0] * backends
    unattributed = 0
    for record in chosen:
        index = backend_of_pid.get(record.pid)
        if index is None:
            unattributed += 1
        else:
            by_backend[index] += 1
    sent = len(chosen)
    misses = sent - len(good)
    return {
        "sent": sent,
        "offered_rps": round(step.offered_rps, 2),
        "good": len(good),
        "goodput_rps": round(step.goodput_rps, 2),
        "p50_ms": step.good_p50_ms,
        "p99_ms": step.good_p99_ms,
        "p999_ms": _ms(percentile(good, 99.9)),
        "max_ms": _ms(max(good, default=None)),
        "misses": misses,
        "miss_fraction": misses / sent if sent else None,
        "deadline": step.deadline,
        "rejected": step.rejected,
        "errors": step.errors,
        "codes": dict(Counter(r.code for r in chosen if r.outcome is not Outcome.OK)),
        "calls_by_backend": by_backend,
        "unattributed": unattributed,
        "slow_share": by_backend[slow] / sent if sent else None,
        "slow_share_upper": (by_backend[slow] + unattributed) / sent if sent else None,
        "send_lag_p99_ms": step.send_lag_p99_ms,
        "send_lag_max_ms": step.send_lag_max_ms,
        "p99_all_ms": _p99_all(chosen),
        "tail": tail_points(chosen),
    }


def _rounds_note(config: Mapping[str, Any]) -> str:
    rounds = config.get("rounds", 1)
    if rounds <= 1:
        return ""
    return (
        f", in {rounds} rounds of {config['measure_s'] / rounds:g} s (each round runs every "
        f"policy in turn, {config.get('lead_in_s', 0):g} s unmeasured first, the order reversed "
        "every other round, so the machine's slow spells weigh on all alike)"
    )


def _policy(run: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for entry in run.get("policies", []):
        if entry["policy"] == name and entry.get("summary"):
            summary: Mapping[str, Any] = entry["summary"]
            return summary
    return None


def _ratio_check(
    p2c: Mapping[str, Any] | None,
    rr: Mapping[str, Any] | None,
    key: str,
    reading: str,
    deadline_ms: float | None,
) -> Check:
    """P2C's p99 over round_robin's, from summary ``key``. With ``deadline_ms``, None in the
    summary means beyond the deadline (more than 1% of the calls failed or came late): P2C's
    tail is then unknown (a fail), round_robin's is > the deadline (an upper bound on the
    ratio). Without it, None means no OK call: no verdict."""
    name = f"P2C p99 / round_robin p99 ({reading})"
    target = f"<= {MAX_P99_RATIO:g}"
    missing = Check(name=name, value="-", target=target, passed=None)
    if p2c is None or rr is None or not p2c.get("sent") or not rr.get("sent"):
        return missing
    mine: float | None = p2c[key]
    theirs: float | None = rr[key]
    if deadline_ms is None:
        if mine is None or theirs is None or theirs <= 0:
            return missing
        ratio = mine / theirs
        value = f"{mine:.1f} / {theirs:.1f} ms = {ratio:.2f}"
        return Check(name=name, value=value, target=target, passed=ratio <= MAX_P99_RATIO)
    theirs_text = f"> {deadline_ms:g}" if theirs is None else f"{theirs:.1f}"
    if mine is None:
        value = f"> {deadline_ms:g} / {theirs_text} ms = ?"
        return Check(name=name, value=value, target=target, passed=False)
    ratio = mine / (deadline_ms if theirs is None else theirs)
    bound = "< " if theirs is None else ""
    value = f"{mine:.1f} / {theirs_text} ms = {bound}{ratio:.2f}"
    return Check(name=name, value=value, target=target, passed=ratio <= MAX_P99_RATIO)


def acceptance(run: Mapping[str, Any]) -> list[Check]:
    """The issue's checks, from the run (the p99 ratio under both readings)."""
    p2c = _policy(run, "p2c")
    rr = _policy(run, "round_robin")
    checks: list[Check] = []
    # Both readings of "p99" must pass. Over OK calls only, a policy that fails its slow calls
    # (round robin sending a saturated backend more than it takes, admission refusing the rest)
    # would look faster than one that serves them; over all calls, a call that failed or came
    # late counts as slower than the deadline.
    checks.append(_ratio_check(p2c, rr, "p99_ms", "OK calls", None))
    checks.append(
        _ratio_check(p2c, rr, "p99_all_ms", "all calls", float(run["config"]["deadline_ms"]))
    )
    if p2c is None or p2c["miss_fraction"] is None:
        checks.append(
            Check(
                name="P2C deadline misses",
                value="-",
                target=f"< {MAX_MISS_FRACTION:.1%}",
                passed=None,
            )
        )
    else:
        miss = p2c["miss_fraction"]
        checks.append(
            Check(
                name="P2C deadline misses",
                value=f"{p2c['misses']}/{p2c['sent']} = {miss:.3%}",
                target=f"< {MAX_MISS_FRACTION:.1%}",
                passed=miss < MAX_MISS_FRACTION,
            )
        )
    share = None if p2c is None else p2c["slow_share_upper"]
    checks.append(
        Check(
            name="P2C calls to the slow backend (after warm-up)",
            value="-" if share is None else f"{share:.2%}",
            target=f"< {MAX_SLOW_SHARE:.0%}",
            passed=None if share is None else share < MAX_SLOW_SHARE,
        )
    )
    return checks


def cpu_capacity(cpu_s: float, calls: int, cores: int) -> float:
    """Calls per second ``cores`` could carry when a call costs ``cpu_s / calls`` CPU seconds."""
    if cpu_s <= 0 or calls < 1 or cores < 1:
        raise ValueError("need cpu_s > 0, calls >= 1 and cores >= 1")
    return cores * calls / cpu_s


def capacity_paragraph(run: Mapping[str, Any]) -> str:
    """How the capacity was found: the backends' threads, and the machine's CPU (calibration)."""
    config = run["config"]
    capacity = run["capacity"]
    threads = config["threads"]
    text = (
        f"Capacity = the smaller of the backends' thread capacity ({threads} handler "
        f"thread{'s' if threads != 1 else ''} each / service time, summed: "
        f"{capacity['threads_rps']:.0f} req/s) and the machine's CPU capacity. The handlers "
        "only sleep, but every call costs CPU in the sender (the P2C client is Python), in "
        "grpc and in the server's admission control, and backends and senders share the "
        f"machine's {run['machine']['cores']} cores. "
    )
    calibration = capacity.get("calibration")
    if calibration is None:
        return text + f"The rate was given (`--rate`): **{run['rate_rps']:.0f} req/s**."
    return text + (
        f"Calibration before the policies ({calibration['policy']} at "
        f"{calibration['rate_rps']:.0f} req/s, measured for {calibration['seconds']:g} s after "
        f"as long unmeasured): a call cost "
        f"{calibration['cpu_ms_per_call']:.2f} ms of CPU in backends and sender together, so the "
        f"cores could carry {calibration['cpu_rps']:.0f} req/s. Capacity "
        f"**{capacity['rps']:.0f} req/s**; offered load {config['load']:.0%} of it = "
        f"**{run['rate_rps']:.0f} req/s**."
    )


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}"


def _all_calls(p99_ms: float | None, sent: int, deadline_ms: float) -> str:
    if not sent:
        return "-"
    return f"> {deadline_ms:g}" if p99_ms is None else f"{p99_ms:.1f}"


def render_markdown(run: Mapping[str, Any]) -> str:
    """results.md for a run (with its acceptance checks computed here)."""
    config = run["config"]
    machine = run["machine"]
    slow = config["slow_backend"]
    lines = [
        f"# Balanced client benchmark ({run['mode']} mode)",
        "",
        f"{config['backends']} backends (`rpckit serve bench.balance.service:servicers`, one "
        f"process each, `--threads {config['threads']}`), handler sleeps "
        f"{config['service_ms']:g} ms; backend #{slow} sleeps "
        f"{config['service_ms'] * config['slow_factor']:g} ms ({config['slow_factor']:g}x "
        f"slower). Offered **{run['rate_rps']:.0f} req/s**, open-loop Poisson arrivals from "
        f"{config['senders']} sender processes (nice {config.get('sender_niceness', '-')}), "
        f"deadline {config['deadline_ms']:g} ms. Per policy: {config['warmup_s']:g} s warm-up "
        f"(unmeasured, same clients), then {config['measure_s']:g} s measured on the same "
        f"arrival schedule{_rounds_note(config)}.",
        "",
        capacity_paragraph(run),
        "",
        "Policies: **p2c** = one `rpckit.BalancedChannel` per sender over all backends (default "
        "config); **round_robin** = one grpcio channel per sender to "
        "`ipv4:127.0.0.1:p1,...` with service config "
        '`{"loadBalancingConfig":[{"round_robin":{}}]}`; **random** = one grpcio channel per '
        "backend per sender, one picked uniformly per call.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, grpcio {machine['grpcio']}, protobuf {machine['protobuf']}"
        f"; load average at the end {machine.get('loadavg_end', '-')}. Backends and senders "
        "share these cores.",
        "",
        "## Results",
        "",
    ]
    headers = [
        "policy",
        "offered/s",
        "goodput/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "p99 all calls ms",
        "deadline misses %",
        "slow-backend share %",
        "unattributed",
        "sender lag p99 ms",
        "CPU used (cores)",
        "other CPU (cores)",
    ]
    rows: list[list[Cell]] = []
    for entry in run.get("policies", []):
        summary = entry.get("summary")
        if not summary:
            rows.append([entry["label"], *(["-"] * (len(headers) - 2)), entry.get("note", "-")])
            continue
        cpu = entry.get("cpu", {})
        rows.append(
            [
                entry["label"],
                summary["offered_rps"],
                summary["goodput_rps"],
                summary["p50_ms"],
                summary["p99_ms"],
                summary["p999_ms"],
                _all_calls(summary.get("p99_all_ms"), summary["sent"], config["deadline_ms"]),
                _pct(summary["miss_fraction"], 3),
                _pct(summary["slow_share"]),
                summary["unattributed"],
                summary["send_lag_p99_ms"],
                cpu.get("cores_used"),
                cpu.get("other_cores"),
            ]
        )
    lines += [markdown_table(headers, rows)]
    lines += [
        "Latencies are of calls that returned OK, from the scheduled send time; p99 all "
        "calls counts every call that did not return OK in time as slower than the deadline. "
        "Deadline misses = calls that did not return OK within the deadline (timeouts, late OKs, "
        "rejections, errors), over calls sent. Slow-backend share = calls answered by the slow "
        "backend (reply pid, or the rpckit load report on an error) over calls sent; "
        "unattributed = calls no backend answered. CPU used = backends' + senders' CPU "
        f"seconds over the measured window, of {machine['cores']} cores; other CPU = what "
        "else the machine ran meanwhile (this runner, other work on the box).",
        "",
        "## Acceptance",
        "",
    ]
    checks = acceptance(run)
    lines.append(
        markdown_table(
            ["check", "value", "target", "result"],
            [[c.name, c.value, c.target, verdict(c.passed)] for c in checks],
        )
    )
    lines += [
        "The slow-backend check counts unattributed calls as the slow backend's.",
        "",
        "## Calls per backend (% of calls sent)",
        "",
    ]
    backends = config["backends"]
    share_headers = ["policy", *[f"#{i}{' (slow)' if i == slow else ''}" for i in range(backends)]]
    share_rows: list[list[Cell]] = []
    for entry in run.get("policies", []):
        summary = entry.get("summary")
        if not summary or not summary["sent"]:
            continue
        sent = summary["sent"]
        share_rows.append(
            [entry["label"], *[format_cell(100 * n / sent) for n in summary["calls_by_backend"]]]
        )
    lines.append(markdown_table(share_headers, share_rows))
    codes = [
        f"- {entry['label']}: "
        + ", ".join(f"{code or 'OK'} x{n}" for code, n in sorted(entry["summary"]["codes"].items()))
        for entry in run.get("policies", [])
        if entry.get("summary") and entry["summary"]["codes"]
    ]
    if codes:
        lines += ["Calls that did not return OK in time, by code:", "", *codes, ""]
    if run.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in run["notes"]], ""]
    if run.get("findings"):
        lines += ["## Findings", "", *[f"- {finding}" for finding in run["findings"]], ""]
    lines += [
        f"![latency tail and calls per backend]({run.get('plot', 'balance.png')})",
        "",
        f"Run: {run['started']}, {run['elapsed_s']} s, `{run['command']}`.",
        "",
    ]
    return "\n".join(lines)

"""Pure parts of bench/overhead: the rounds' order and size, what a round measured, the
medians, the acceptance check and the markdown report. Nothing here does I/O.

A round measures each system once per client, in an order that flips every round, so a
slow spell of the shared machine weighs on both systems alike; a system's calls/s is the
median of its rounds (calls that reached the handler, per second of the client's run).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness.report import Cell, Check, markdown_table, verdict

RPCKIT = "rpckit"
PLAIN = "grpc-plain"
SYSTEMS = (RPCKIT, PLAIN)
# Issue 12: rpckit's calls/s >= 0.85x plain grpcio's (median of alternating rounds), on the
# client that costs least per call (h2load).
MIN_RATIO = 0.85
GATED_CLIENT = "h2load"


def round_order(systems: Sequence[str], round_index: int) -> list[str]:
    """The systems in the order round ``round_index`` measures them: reversed every other."""
    ordered = list(systems)
    return ordered if round_index % 2 == 0 else ordered[::-1]


def calls_per_round(rates: Sequence[float], round_s: float, *, floor: int = 500) -> int:
    """How many calls make a round of about ``round_s`` seconds, from the warm-up's rates
    (their mean, so both systems do the same number of calls); at least ``floor``."""
    if round_s <= 0 or not rates or min(rates) <= 0:
        raise ValueError("need round_s > 0 and positive rates")
    return max(floor, round(statistics.fmean(rates) * round_s))


def settled_count(counts: Sequence[Mapping[str, float]], *, after: float) -> int | None:
    """The calls every process counted, once each process's file was written at or after
    ``after`` (a monotonic time); None while one is older (its count may lag)."""
    if any(entry["at"] < after for entry in counts):
        return None
    return int(sum(entry["calls"] for entry in counts))


def round_row(
    *,
    round_index: int,
    client: str,
    system: str,
    sent: int,
    client_ok: int,
    handled: int,
    elapsed_s: float,
    server_cpu_s: float,
    client_cpu_s: float,
) -> dict[str, Any]:
    """One round of one system under one client.

    ``client_ok``: calls the client counted as successes (h2load: 2xx, which includes gRPC
    errors, their status being in the trailers; the Python client: status OK). ``handled``:
    calls that reached the handler (its counter). The calls sent that never reached it were
    refused or failed; verified means every call sent reached the handler and the client
    counted each a success.
    """
    return {
        "round": round_index,
        "client": client,
        "system": system,
        "sent": sent,
        "client_ok": client_ok,
        "handled": handled,
        "not_handled": sent - handled,
        "verified": handled == sent == client_ok,
        "elapsed_s": round(elapsed_s, 4),
        "calls_per_s": round(handled / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "server_cpu_s": round(server_cpu_s, 4),
        "client_cpu_s": round(client_cpu_s, 4),
    }


def summary(rows: Sequence[Mapping[str, Any]], client: str, system: str) -> dict[str, Any] | None:
    """Median calls/s over the rounds, CPU per call, refusals; None without rounds."""
    mine = [r for r in rows if r["client"] == client and r["system"] == system]
    if not mine:
        return None
    handled = sum(r["handled"] for r in mine)
    rates = [r["calls_per_s"] for r in mine]
    return {
        "rounds": len(mine),
        "median_calls_per_s": round(statistics.median(rates), 1),
        "min_calls_per_s": min(rates),
        "max_calls_per_s": max(rates),
        "server_cpu_us_per_call": round(1e6 * sum(r["server_cpu_s"] for r in mine) / handled, 1)
        if handled
        else None,
        "client_cpu_us_per_call": round(1e6 * sum(r["client_cpu_s"] for r in mine) / handled, 1)
        if handled
        else None,
        "not_handled": sum(r["not_handled"] for r in mine),
        "verified": all(r["verified"] for r in mine),
    }


def ratio(rows: Sequence[Mapping[str, Any]], client: str) -> float | None:
    """rpckit's median calls/s over plain grpcio's, for one client."""
    own, plain = summary(rows, client, RPCKIT), summary(rows, client, PLAIN)
    if own is None or plain is None or not plain["median_calls_per_s"]:
        return None
    return float(own["median_calls_per_s"] / plain["median_calls_per_s"])


def paired_ratios(rows: Sequence[Mapping[str, Any]], client: str) -> list[float]:
    """rpckit / plain grpcio within each round (the two ran back to back)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        if r["client"] == client:
            by_round.setdefault(r["round"], {})[r["system"]] = r["calls_per_s"]
    return [
        round(pair[RPCKIT] / pair[PLAIN], 3)
        for _, pair in sorted(by_round.items())
        if pair.get(RPCKIT) and pair.get(PLAIN)
    ]


def acceptance(run: Mapping[str, Any]) -> list[Check]:
    """Issue 12: rpckit's calls/s >= 0.85x plain grpcio's (h2load, median of the rounds); and,
    for that ratio to mean what it says, every call h2load sent reached rpckit's handler."""
    rows = run.get("rounds", [])
    value = ratio(rows, GATED_CLIENT)
    own = summary(rows, GATED_CLIENT, RPCKIT)
    name = f"{GATED_CLIENT}: rpckit calls/s / plain grpcio's (median of alternating rounds)"
    handled = f"{GATED_CLIENT}: every call reached rpckit's handler"
    if value is None or own is None:
        return [
            Check(name=name, value="-", target=f">= {MIN_RATIO:g}x", passed=None),
            Check(name=handled, value="-", target="0 refused or failed", passed=None),
        ]
    return [
        Check(
            name=name, value=f"{value:.2f}x", target=f">= {MIN_RATIO:g}x", passed=value >= MIN_RATIO
        ),
        Check(
            name=handled,
            value=f"{own['not_handled']} of the calls sent did not",
            target="0 refused or failed",
            passed=own["verified"],
        ),
    ]


def render_markdown(run: Mapping[str, Any]) -> str:
    """The report: the machine, the table of medians, each round, the acceptance."""
    config = run["config"]
    machine = run["machine"]
    rows = run.get("rounds", [])
    out = [
        f"# Overhead benchmark ({run['mode']} mode)\n",
        "A trivial handler (no CPU, no wait: count the call, echo 16 bytes), closed loop, "
        f"1 connection with {config['in_flight']} calls in flight: "
        f"`{run['systems'][RPCKIT]['command']}` against "
        f"`{run['systems'][PLAIN]['command']}`. "
        f"{config['rounds']} rounds of ~{config['round_s']:g} s per system and client, the "
        "order of the systems flipped every round; calls/s counts the calls that reached the "
        "handler (its counter), per second of the client's run, and a row's value is the "
        "median of its rounds. h2load (C) costs little per call; the Python grpcio client, "
        "as the issue first measured with, costs about as much as the server.\n",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, grpcio {machine['grpcio']}, protobuf "
        f"{machine['protobuf']}, {machine.get('h2load', 'h2load -')}. Servers and client "
        "share the cores, unpinned.\n",
        f"Command: `{run.get('command', '-')}`.\n",
    ]
    table: list[list[Cell]] = []
    for client in config["clients"]:
        for system in SYSTEMS:
            s = summary(rows, client, system)
            if s is None:
                continue
            table.append(
                [
                    client,
                    run["systems"][system]["label"],
                    s["median_calls_per_s"],
                    f"{s['min_calls_per_s']:.0f}-{s['max_calls_per_s']:.0f}",
                    s["server_cpu_us_per_call"],
                    s["client_cpu_us_per_call"],
                    s["not_handled"],
                    "yes" if s["verified"] else "NO",
                ]
            )
        r = ratio(rows, client)
        if r is not None:
            paired = paired_ratios(rows, client)
            table.append(
                [
                    client,
                    "rpckit / plain grpcio",
                    f"{r:.2f}x",
                    f"per round {min(paired):.2f}-{max(paired):.2f}x" if paired else "-",
                    None,
                    None,
                    None,
                    "",
                ]
            )
    if table:
        out.append("## Calls per second (median of the rounds)\n")
        out.append(
            markdown_table(
                [
                    "client",
                    "system",
                    "calls/s",
                    "range",
                    "server CPU us/call",
                    "client CPU us/call",
                    "refused or failed",
                    "every call reached the handler",
                ],
                table,
            )
        )
    checks = run.get("acceptance", [])
    if checks:
        out.append("## Acceptance (issue 12; the target applies to full mode)\n")
        out.append(
            markdown_table(
                ["check", "value", "target", "result"],
                [[c["name"], c["value"], c["target"], verdict(c["passed"])] for c in checks],
            )
        )
    if rows:
        out.append("## Every round\n")
        out.append(
            markdown_table(
                [
                    "round",
                    "client",
                    "system",
                    "calls",
                    "handled",
                    "not handled",
                    "seconds",
                    "calls/s",
                    "server CPU s",
                    "client CPU s",
                ],
                [
                    [
                        r["round"] + 1,
                        r["client"],
                        r["system"],
                        r["sent"],
                        r["handled"],
                        r["not_handled"],
                        r["elapsed_s"],
                        r["calls_per_s"],
                        r["server_cpu_s"],
                        r["client_cpu_s"],
                    ]
                    for r in rows
                ],
            )
        )
    notes = run.get("notes", [])
    if notes:
        out.append("## Notes\n")
        out.append("".join(f"- {note}\n" for note in notes))
    return "\n".join(out)

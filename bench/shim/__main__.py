"""python -m bench.shim: the legacy inventory's endpoints through rpckit's HTTP shim vs Flask.

Systems, each confined to the same CPU set (``--server-cpus``, via taskset) and run as one
process per CPU of that set (N):

- ``rpckit-shim``: ``rpckit serve examples.inventory.server:servicers --http ... --http-app
  examples.inventory.server:legacy_http`` (``--workers N`` when N > 1) -- the migrated
  handlers behind the shim on the embedded cheroot server, through admission control
  (Flask only for ``/healthz``);
- ``rpckit-shim-inline``: the same shim calling the servicer without admission control;
- ``gunicorn-gevent``: the legacy Flask app under ``gunicorn -k gevent -w N``;
- ``gunicorn-gthread``: the same under ``gunicorn -k gthread -w N --threads 8``.

First every distinct request of the mix (``bench/shim/mix.py``) is sent once to each fresh
system and the answers compared byte for byte (the shim must reproduce Flask). Then, per
concurrency level, closed-loop runs (``bench/shim/load.py``, senders pinned to
``--client-cpus``) measure throughput, p50 and p99 latency and server CPU per request:
``--rounds`` rounds over all systems, in alternating order, each measuring
``--measure / --rounds`` seconds, so that a slow spell of a shared machine weighs on
every system alike. A row's req/s, p50 and p99 are the median over its rounds of each
round's value (one spoiled round moves them little); the pooled values are reported too.
Writes results.md, results.json and shim.png into --out; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.report import markdown_table
from bench.harness.stats import percentile
from bench.shim.load import LoadResult, fetch, run_closed_loop
from bench.shim.mix import distinct_requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    label: str
    argv: tuple[str, ...]
    ready: procs.ReadyCheck


def _gunicorn_ready(stdout: str, stderr: str) -> str | None:
    del stdout
    marker = "Listening at: http://"
    if marker not in stderr or "Booting worker" not in stderr:
        return None
    return stderr.split(marker, 1)[1].split(maxsplit=1)[0]


def systems(workers: int, threads: int, rpckit_args: tuple[str, ...]) -> list[System]:
    flask = "examples.legacy_inventory.app:create_app()"
    gunicorn = (str(VENV_BIN / "gunicorn"), "-b", "127.0.0.1:0", "-w", str(workers))
    processes = ("--workers", str(workers)) if workers > 1 else ()
    rpckit = (
        str(VENV_BIN / "rpckit"),
        "serve",
        "examples.inventory.server:servicers",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--threads",
        str(threads),
        "--log-level",
        "WARNING",
        *processes,
        *rpckit_args,
    )
    return [
        System(
            "rpckit-shim",
            f"rpckit serve --http --workers {workers} (admission, {threads} handler slots)",
            (*rpckit, "--http-app", "examples.inventory.server:legacy_http"),
            procs.json_line_http_address,
        ),
        System(
            "rpckit-shim-inline",
            f"rpckit serve --http --workers {workers}, no admission control",
            (*rpckit, "--http-app", "bench.shim.apps:inline_http"),
            procs.json_line_http_address,
        ),
        System(
            "gunicorn-gevent",
            f"Flask + gunicorn -k gevent -w {workers}",
            (*gunicorn, "-k", "gevent", flask),
            _gunicorn_ready,
        ),
        System(
            "gunicorn-gthread",
            f"Flask + gunicorn -k gthread -w {workers} --threads 8",
            (*gunicorn, "-k", "gthread", "--threads", "8", flask),
            _gunicorn_ready,
        ),
    ]  # fmt: skip


def _pinned(argv: tuple[str, ...], cpus: str) -> tuple[str, ...]:
    taskset = shutil.which("taskset")
    return argv if taskset is None else (taskset, "-c", cpus, *argv)


def check_identical(addresses: dict[str, str]) -> list[dict[str, Any]]:
    """Each distinct request once per system (fresh), answers compared with the first system."""
    rows = []
    for request in distinct_requests():
        answers = {name: fetch(address, request) for name, address in addresses.items()}
        reference = next(iter(answers.values()))
        rows.append(
            {
                "request": request.name,
                "status": reference[0],
                "identical": all(answer == reference for answer in answers.values()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shim", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/shim/results"))
    parser.add_argument("--server-cpus", default="0", help="CPU list every system runs on")
    parser.add_argument("--client-cpus", default="1", help="CPU list the load senders run on")
    parser.add_argument("--concurrency", default="1,8,32", help="connections per run")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--measure", type=float, default=24.0, help="seconds per row")
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="split each row's measurement into rounds over all systems, in alternating order",
    )
    parser.add_argument("--threads", type=int, default=8, help="rpckit handler threads")
    parser.add_argument("--quick", action="store_true", help="1 s runs at 1 and 8 connections")
    parser.add_argument(
        "--systems",
        default="rpckit-shim,rpckit-shim-inline,gunicorn-gevent,gunicorn-gthread",
        help="comma-separated names",
    )
    parser.add_argument(
        "--rpckit-args", default="", help="extra 'rpckit serve' arguments, e.g. '--gil-switch-ms 5'"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.measure, args.concurrency, args.rounds = 0.5, 1.0, "1,8", 1
    levels = [int(c) for c in args.concurrency.split(",")]
    server_cpus = args.server_cpus
    workers = len(os.sched_getaffinity(0) & _cpu_set(server_cpus)) or 1
    client_cpus = sorted(_cpu_set(args.client_cpus)) or None
    extra = tuple(shlex.split(args.rpckit_args))
    chosen = [s for s in systems(workers, args.threads, extra) if s.name in args.systems.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-shim-logs-"))  # server logs stay out of --out

    addresses: dict[str, str] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    identity: list[dict[str, Any]] = []
    # The byte-for-byte check needs every system up at once, on fresh stores.
    started = [
        procs.SystemProcess(
            s.name, _pinned(s.argv, server_cpus), ready=s.ready, log_dir=logs, cwd=REPO_ROOT
        )
        for s in chosen
    ]
    try:
        for system in started:
            procs.wait_http_ok(system.address, "/healthz", timeout_s=30)
            addresses[system.name] = system.address
        identity = check_identical(addresses)
        procs.progress(
            f"identical answers: {sum(r['identical'] for r in identity)}/{len(identity)}"
        )
        runs = {system.name: [] for system in started}
        for connections in levels:
            # Every system is measured at this level in each round, in alternating order,
            # so a slow spell of the machine weighs on all systems alike.
            parts: dict[str, list[tuple[LoadResult, float]]] = {s.name: [] for s in started}
            for round_index in range(args.rounds):
                order = started if round_index % 2 == 0 else started[::-1]
                for system in order:
                    procs.wait_idle(system.pid, max_cpu_share=0.05, window_s=0.2, timeout_s=10)
                    cpu_before = procs.tree_cpu_seconds(system.pid)
                    result = run_closed_loop(
                        system.address,
                        connections=connections,
                        senders=min(args.senders, connections),
                        warmup_s=args.warmup,
                        measure_s=args.measure / args.rounds,
                        seed=connections * 100 + round_index,
                        cpus=client_cpus,
                    )
                    cpu = procs.tree_cpu_seconds(system.pid) - cpu_before
                    parts[system.name].append((result, cpu))
            for system in started:
                row = _row(connections, parts[system.name])
                runs[system.name].append(row)
                shown = {k: v for k, v in row.items() if k not in ("rounds", "pooled")}
                procs.progress(f"{system.name} c={connections}: {shown}")
    finally:
        for system in started:
            system.stop(timeout_s=20)
    run = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "server_cpus": server_cpus,
        "client_cpus": args.client_cpus,
        "warmup_s": args.warmup,
        "measure_s": args.measure,
        "rounds": args.rounds,
        "rpckit_args": args.rpckit_args,
        "labels": {s.name: s.label for s in chosen},
        "identity": identity,
        "runs": runs,
    }
    (args.out / "results.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(render(run), encoding="utf-8")
    _plot(run, args.out / "shim.png")
    procs.progress(f"wrote {args.out}/results.md, results.json, shim.png (server logs: {logs})")
    return 0


def _row(connections: int, parts: list[tuple[LoadResult, float]]) -> dict[str, Any]:
    """One table row from a system's rounds at one level: (result, server CPU seconds) each.

    req/s, p50 and p99 are the *median over the rounds* of each round's own
    value: the rounds of all systems interleave, and a slow spell of the shared
    machine spoils one round of whichever system ran then, which moves a pooled
    p99 (or mean rate) by more than the systems differ. The pooled values (all
    rounds' calls together) are kept too, under ``pooled``.
    """
    completed = sum(result.completed for result, _ in parts)
    window_s = sum(result.window_s for result, _ in parts)
    latencies = [lat for result, _ in parts for lat in result.latencies_s]
    unexpected: dict[str, int] = {}
    for result, _ in parts:
        for what, count in result.unexpected.items():
            unexpected[what] = unexpected.get(what, 0) + count
    cpu = sum(cpu for _, cpu in parts)
    rounds = [
        {
            "throughput_rps": round(result.throughput_rps, 1),
            "p50_ms": _ms(percentile(result.latencies_s, 50)),
            "p99_ms": _ms(percentile(result.latencies_s, 99)),
        }
        for result, _ in parts
    ]
    return {
        "connections": connections,
        "throughput_rps": _median_of(rounds, "throughput_rps", 1),
        "p50_ms": _median_of(rounds, "p50_ms", 2),
        "p99_ms": _median_of(rounds, "p99_ms", 2),
        "server_cpu_ms_per_request": round(cpu * 1000 / (completed or 1), 3),
        "unexpected": unexpected,
        "pooled": {
            "throughput_rps": round(completed / window_s, 1),
            "p50_ms": _ms(percentile(latencies, 50)),
            "p99_ms": _ms(percentile(latencies, 99)),
        },
        "rounds": rounds,
    }


def _median_of(rounds: list[dict[str, Any]], key: str, digits: int) -> float | None:
    values = [r[key] for r in rounds if r[key] is not None]
    return round(statistics.median(values), digits) if values else None


def _cpu_set(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.update(range(int(low), int(high) + 1))
        elif part.strip():
            cpus.add(int(part))
    return cpus


def _rounds_note(rounds: int) -> str:
    if rounds <= 1:
        return ""
    return (
        f" in {rounds} rounds (each level measured on every system per round, the order"
        " reversed every other round, so the machine's slow spells weigh on all alike);"
        " req/s, p50 and p99 are the median over the rounds of each round's value, and the"
        " acceptance checks use them; the pooled columns count all rounds' calls together,"
        " where one round spoiled by other work on the machine moves the p99"
    )


def _pooled_cells(step: dict[str, Any]) -> list[Any]:
    pooled = step.get("pooled")
    if pooled is None:
        return ["-", "-"]
    return [pooled["throughput_rps"], f"{pooled['p99_ms']:.2f}"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


SHIM = "rpckit-shim"
BASELINES = ("gunicorn-gevent", "gunicorn-gthread")


def acceptance(run: dict[str, Any]) -> list[list[Any]]:
    """The issue's check per level and Flask baseline (pure): the shim's throughput >= 1.0x
    and its p99 no worse. Rows: [check, value, target, PASS/FAIL]."""
    rows: list[list[Any]] = []
    shim = {step["connections"]: step for step in run["runs"].get(SHIM, [])}
    for baseline in BASELINES:
        for step in run["runs"].get(baseline, []):
            mine = shim.get(step["connections"])
            if mine is None:
                continue
            label = f"{step['connections']} conn. vs {run['labels'][baseline]}"
            ratio = mine["throughput_rps"] / step["throughput_rps"]
            rows.append(
                [
                    f"throughput, {label}",
                    f"{mine['throughput_rps']:.0f} / {step['throughput_rps']:.0f} = {ratio:.2f}x",
                    ">= 1.0x",
                    "PASS" if ratio >= 1.0 else "FAIL",
                ]
            )
            rows.append(
                [
                    f"p99, {label}",
                    f"{mine['p99_ms']:.2f} vs {step['p99_ms']:.2f} ms",
                    "no worse",
                    "PASS" if mine["p99_ms"] <= step["p99_ms"] else "FAIL",
                ]
            )
    return rows


def render(run: dict[str, Any]) -> str:
    """The markdown report of a run (pure)."""
    lines = [
        "# bench/shim: the legacy inventory endpoints, rpckit's shim vs Flask under gunicorn\n",
        f"Servers on CPUs `{run['server_cpus']}`, load senders on `{run['client_cpus']}`; "
        f"closed loop, {run['warmup_s']} s warm-up, {run['measure_s']} s measured per row"
        f"{_rounds_note(run.get('rounds', 1))}.\n",
    ]
    same = sum(r["identical"] for r in run["identity"])
    lines.append(
        f"Byte-for-byte check (each distinct request once, fresh systems): "
        f"{same}/{len(run['identity'])} identical across systems.\n"
    )
    pooled = any("pooled" in step for steps in run["runs"].values() for step in steps)
    rows = []
    for name, steps in run["runs"].items():
        for step in steps:
            bad = sum(step["unexpected"].values())
            rows.append(
                [
                    run["labels"][name],
                    step["connections"],
                    step["throughput_rps"],
                    f"{step['p50_ms']:.2f}",
                    f"{step['p99_ms']:.2f}",
                    *(_pooled_cells(step) if pooled else []),
                    step["server_cpu_ms_per_request"],
                    bad,
                ]
            )
    headers = ["system", "connections", "req/s", "p50 ms", "p99 ms"]
    if pooled:
        headers += ["pooled req/s", "pooled p99 ms"]
    headers += ["server CPU ms/req", "not as expected"]
    lines.append(markdown_table(headers, rows))
    notes = []
    for name, steps in run["runs"].items():
        for step in steps:
            codes: dict[str, int] = {}
            for what, count in step["unexpected"].items():
                code = what.rsplit(": ", 1)[1]
                codes[code] = codes.get(code, 0) + count
            if codes:
                shown = ", ".join(f"{code} x{count}" for code, count in sorted(codes.items()))
                notes.append(f"- {run['labels'][name]}, {step['connections']} connections: {shown}")
    if notes:
        lines.append(
            "Answers other than the expected status (HTTP 429 is admission control shedding "
            "a standing queue: more connections than handler threads, closed loop):\n"
        )
        lines.extend(notes)
        lines.append("")
    checks = acceptance(run)
    if checks:
        lines.append(f"## Acceptance ({run['labels'].get(SHIM, SHIM)} against each Flask setup)\n")
        lines.append(markdown_table(["check", "value", "target", "result"], checks))
    machine = run["machine"]
    lines.append(
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, load average at the end "
        f"{machine.get('load_average_at_end')} (other work on the machine shows up as noise)."
    )
    return "\n".join(lines) + "\n"


def _plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for name, steps in run["runs"].items():
        x = [s["connections"] for s in steps]
        left.plot(x, [s["throughput_rps"] for s in steps], marker="o", label=run["labels"][name])
        right.plot(x, [s["p99_ms"] for s in steps], marker="o", label=run["labels"][name])
    left.set(xlabel="connections", ylabel="throughput (req/s)", xscale="log")
    right.set(xlabel="connections", ylabel="p99 latency (ms)", xscale="log")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.legend(fontsize=8)
    figure.suptitle("legacy inventory endpoints: rpckit shim vs Flask + gunicorn")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


if __name__ == "__main__":
    sys.exit(main())

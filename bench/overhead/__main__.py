"""python -m bench.overhead: rpckit's own cost per call against a plain grpcio server.

A trivial handler (no CPU, no wait), closed loop, one connection with 16 calls in flight:
``rpckit serve`` (1 process, defaults) vs ``grpc.server(ThreadPoolExecutor(8))``, measured in
alternating rounds by h2load (C, so the client's own cost does not dominate) and, for
comparison, by a Python grpcio client. Each round's calls are checked against the handler's
call counter (h2load cannot see a gRPC status). Writes results.md, results.json and
overhead.png into --out; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._gen.benchwork.v1 import work_pb2
from bench.harness import procs
from bench.harness.report import publish
from bench.overhead import h2load, plot, results
from bench.overhead.service import read_counts
from bench.overload.handler import STATS_DIR_ENV
from bench.overload.systems import REPO_ROOT, VENV_BIN

METHOD_PATH = "/benchwork.v1.Work/Do"
CLIENTS = ("h2load", "python")
GRPC_THREADS = 8
IN_FLIGHT = 16
# Calls of the unmeasured warm-up run per system and client (it also sizes the rounds).
WARMUP_CALLS = {"h2load": 3000, "python": 1000}
# A client run slower than this many calls/s is cut off by its timeout.
SLOWEST_RPS = 100.0
SETTLE_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mode:
    rounds: int
    round_s: float


QUICK = Mode(rounds=2, round_s=1.0)
FULL = Mode(rounds=6, round_s=5.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python -m bench.overhead --quick                 # < 1 min\n"
            "  python -m bench.overhead --out bench/overhead/results   # full: 6 rounds of 5 s\n"
            "h2load comes with Debian's nghttp2-client package."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of ~1 s: under 1 minute")
    parser.add_argument("--rounds", type=int, help="rounds per system and client (6; quick 2)")
    parser.add_argument("--round-s", type=float, help="seconds per round, about (5; quick 1)")
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=CLIENTS,
        default=list(CLIENTS),
        metavar="NAME",
        help=f"clients, from {', '.join(CLIENTS)} (default: both)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/overhead/results"),
        help="where results.md, results.json, overhead.png go",
    )
    parser.add_argument(
        "--rpckit-args",
        default="",
        metavar="ARGS",
        help="extra flags for rpckit serve, e.g. --rpckit-args='--threads 16' (tuning runs)",
    )
    return parser


@dataclasses.dataclass
class Server:
    """One system under test: how to start it, where its handler counts calls."""

    name: str
    label: str
    command: tuple[str, ...]
    shown: str  # the command as the report shows it
    stats_dir: Path
    process: procs.SystemProcess | None = None

    @property
    def running(self) -> procs.SystemProcess:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process


def _servers(scratch: Path, rpckit_args: Sequence[str]) -> list[Server]:
    rpckit = (str(VENV_BIN / "rpckit"), "serve", "bench.overhead.service:servicers")
    plain = (sys.executable, "-m", "bench.overload.grpc_plain")
    return [
        Server(
            name=results.RPCKIT,
            label="rpckit serve (1 process, defaults)",
            command=(*rpckit, "--grpc", "127.0.0.1:0", *rpckit_args),
            shown=shlex.join(("rpckit", *rpckit[1:], "--grpc", "127.0.0.1:0", *rpckit_args)),
            stats_dir=scratch / "stats-rpckit",
        ),
        Server(
            name=results.PLAIN,
            label=f"grpcio ThreadPoolExecutor({GRPC_THREADS})",
            command=(
                *plain,
                "--grpc",
                "127.0.0.1:0",
                "--threads",
                str(GRPC_THREADS),
                "--app",
                "bench.overhead.service:servicers",
            ),
            shown=f"python -m bench.overload.grpc_plain --threads {GRPC_THREADS} "
            "--app bench.overhead.service:servicers",
            stats_dir=scratch / "stats-grpc-plain",
        ),
    ]


def _start(server: Server, log_dir: Path) -> None:
    server.stats_dir.mkdir(parents=True)
    env = {
        **_base_env(),
        STATS_DIR_ENV: str(server.stats_dir),
    }
    procs.progress(f"starting {server.label}")
    server.process = procs.SystemProcess(
        server.name,
        server.command,
        ready=procs.json_line_address,
        log_dir=log_dir,
        env=env,
        cwd=REPO_ROOT,
    )
    procs.progress(f"{server.name} ready at {server.process.address}")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _handled(server: Server, *, after: float) -> int:
    """Calls the server's handler counted, once its counter has been mirrored after ``after``."""
    give_up_at = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        counts = read_counts(server.stats_dir)
        count = results.settled_count(counts, after=after)
        if count is not None:
            return count
        if time.monotonic() > give_up_at:
            raise RuntimeError(f"{server.name}'s call counter was not written within 5 s")
        time.sleep(0.02)


class Clients:
    """Runs one closed-loop client against a server: h2load or the Python client."""

    def __init__(self, *, body_file: Path, h2load_path: str | None) -> None:
        self._body_file = body_file
        self._h2load = h2load_path

    def run(self, client: str, address: str, calls: int) -> tuple[int, float, float]:
        """(calls the client counted OK, seconds of the run, client CPU seconds)."""
        timeout_s = calls / SLOWEST_RPS + 30
        if client == "h2load":
            if self._h2load is None:
                raise RuntimeError("h2load not found")
            argv = h2load.h2load_argv(
                self._h2load,
                address=address,
                path=METHOD_PATH,
                body_file=self._body_file,
                requests=calls,
                streams=IN_FLIGHT,
            )
            result, cpu_s = h2load.run(argv, timeout_s=timeout_s)
            return result.succeeded, result.elapsed_s, cpu_s
        argv = [
            sys.executable,
            "-m",
            "bench.overhead.pyclient",
            "--address",
            address,
            "--calls",
            str(calls),
            "--in-flight",
            str(IN_FLIGHT),
            "--timeout-s",
            f"{timeout_s:g}",
        ]
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s + 30,
            check=False,
            cwd=REPO_ROOT,
            env=_base_env(),
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the Python client failed: {completed.stderr[-800:]}")
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        # The client's own CPU over its calls (its start-up, importing grpc, left out).
        return int(report["ok"]), float(report["elapsed_s"]), float(report["cpu_s"])


def measure(
    clients: Clients, client: str, server: Server, *, calls: int, round_index: int
) -> dict[str, Any]:
    process = server.running
    procs.wait_idle(process.pid, max_cpu_share=0.05, window_s=0.1, timeout_s=5)
    handled_before = _handled(server, after=time.monotonic())
    cpu_before = procs.tree_cpu_seconds(process.pid)
    client_ok, elapsed_s, client_cpu_s = clients.run(client, process.address, calls)
    handled = _handled(server, after=time.monotonic()) - handled_before
    row = results.round_row(
        round_index=round_index,
        client=client,
        system=server.name,
        sent=calls,
        client_ok=client_ok,
        handled=handled,
        elapsed_s=elapsed_s,
        server_cpu_s=procs.tree_cpu_seconds(process.pid) - cpu_before,
        client_cpu_s=client_cpu_s,
    )
    procs.progress(
        f"{_round_name(round_index)} {client} -> {server.name}: {row['calls_per_s']:.0f} calls/s "
        f"({handled}/{calls} reached the handler, server CPU {row['server_cpu_s']:.2f} s)"
    )
    return row


def _round_name(round_index: int) -> str:
    return "warm-up" if round_index < 0 else f"round {round_index + 1}"


def _h2load_version(path: str | None) -> str:
    if path is None:
        return "h2load -"
    completed = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return completed.stdout.strip().splitlines()[0] if completed.stdout.strip() else "h2load ?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    rounds = mode.rounds if args.rounds is None else args.rounds
    round_s = mode.round_s if args.round_s is None else args.round_s
    if rounds < 1 or round_s <= 0:
        parser.error("--rounds must be >= 1 and --round-s > 0")
    clients_wanted = list(dict.fromkeys(args.clients))
    h2load_path = h2load.find_h2load()
    if "h2load" in clients_wanted and h2load_path is None:
        parser.error(
            "h2load not found: install it (Debian: apt-get install nghttp2-client) "
            "or run with --clients python"
        )
    rpckit_args = tuple(shlex.split(args.rpckit_args))
    started = time.monotonic()
    machine = procs.machine_description(("grpcio", "protobuf"))
    machine["h2load"] = _h2load_version(h2load_path)
    run: dict[str, Any] = {
        "benchmark": "overhead",
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(
            ["python", "-m", "bench.overhead", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": machine,
        "config": {
            "rounds": rounds,
            "round_s": round_s,
            "clients": clients_wanted,
            "in_flight": IN_FLIGHT,
            "connections": 1,
            "grpc_threads": GRPC_THREADS,
            "rpckit_args": list(rpckit_args),
        },
        "systems": {},
        "calls_per_round": {},
        "rounds": [],
        "notes": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch_dir:
        scratch = Path(scratch_dir)
        body_file = scratch / "request.grpc"
        request = work_pb2.DoRequest(cpu_ms=0, wait_ms=0, payload=b"x" * 16)
        body_file.write_bytes(h2load.grpc_frame(request.SerializeToString()))
        servers = _servers(scratch, rpckit_args)
        clients = Clients(body_file=body_file, h2load_path=h2load_path)
        try:
            for server in servers:
                _start(server, scratch / "logs")
                run["systems"][server.name] = {"label": server.label, "command": server.shown}
            by_name = {server.name: server for server in servers}
            for client in clients_wanted:
                rates = []
                for server in servers:
                    warm = measure(
                        clients, client, server, calls=WARMUP_CALLS[client], round_index=-1
                    )
                    rates.append(max(warm["calls_per_s"], 1.0))
                run["calls_per_round"][client] = results.calls_per_round(rates, round_s)
            for round_index in range(rounds):
                for client in clients_wanted:
                    for name in results.round_order(results.SYSTEMS, round_index):
                        run["rounds"].append(
                            measure(
                                clients,
                                client,
                                by_name[name],
                                calls=run["calls_per_round"][client],
                                round_index=round_index,
                            )
                        )
        finally:
            for server in servers:
                if server.process is not None:
                    code = server.process.stop(timeout_s=20)
                    if code != 0:
                        run["notes"].append(f"{server.name} exited with {code} on SIGTERM")
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    run["acceptance"] = [dataclasses.asdict(c) for c in results.acceptance(run)]
    markdown = publish(
        run, args.out, render=results.render_markdown, plot=plot.plot_rounds, png="overhead.png"
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

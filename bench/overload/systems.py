"""The systems under test of bench/overload and how to start each one.

- ``gunicorn``: Flask under ``gunicorn -k gevent -w cores+1`` (HTTP/JSON);
- ``grpc-plain``: ``grpc.server(ThreadPoolExecutor(32))``, one process;
- ``rpckit``: ``rpckit serve bench.overload.service:servicers --grpc 127.0.0.1:0``;
- ``rpckit-workers``: the same with ``--workers cores``.

All serve the same handler (`bench.overload.handler.do_work`) and write their handler CPU
accounting to the ``BENCH_STATS_DIR`` they are given.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from bench.harness import procs
from bench.overload.flask_app import READY_MARKER
from bench.overload.handler import STATS_DIR_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

_GUNICORN_LISTENING = re.compile(r"Listening at: http://(127\.0\.0\.1:\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SystemSpec:
    """How to start one system under test."""

    name: str  # short, for --systems and file names
    label: str  # for tables and plots
    protocol: Literal["grpc", "http"]
    argv: tuple[str, ...]
    ready: procs.ReadyCheck
    health_path: str | None = None  # HTTP path polled after `ready` (HTTP systems)
    # Processes accepting gRPC connections on the one port (SO_REUSEPORT): the senders spread
    # their connections evenly over them, as rpckit's own client does.
    processes: int = 1

    def missing(self) -> str | None:
        """Why this system cannot start here (its executable is missing), else None."""
        executable = Path(self.argv[0])
        return None if executable.exists() else f"{executable} not found"


def gunicorn_ready(workers: int) -> Callable[[str, str], str | None]:
    """Ready when gunicorn printed its address and every worker imported the app."""

    def ready(stdout: str, stderr: str) -> str | None:
        del stdout
        match = _GUNICORN_LISTENING.search(stderr)
        if match is None or stderr.count(READY_MARKER) < workers:
            return None
        return match.group(1)

    return ready


def gunicorn_spec(workers: int) -> SystemSpec:
    return SystemSpec(
        name="gunicorn" if workers == default_gunicorn_workers() else f"gunicorn-w{workers}",
        label=f"Flask + gunicorn -k gevent -w {workers}",
        protocol="http",
        argv=(
            str(VENV_BIN / "gunicorn"),
            "-k",
            "gevent",
            "-w",
            str(workers),
            "-b",
            "127.0.0.1:0",
            "--graceful-timeout",
            "5",
            "--log-level",
            "info",
            "bench.overload.flask_app:create_app()",
        ),
        ready=gunicorn_ready(workers),
        health_path="/healthz",
    )


def grpc_plain_spec(threads: int = 32) -> SystemSpec:
    return SystemSpec(
        name="grpc-plain",
        label=f"grpcio threaded ({threads} threads, 1 process)",
        protocol="grpc",
        argv=(
            sys.executable,
            "-m",
            "bench.overload.grpc_plain",
            "--grpc",
            "127.0.0.1:0",
            "--threads",
            str(threads),
        ),
        ready=procs.json_line_address,
    )


def rpckit_spec(workers: int | None, extra_args: Sequence[str] = ()) -> SystemSpec:
    """rpckit serve, single-process (workers None) or with --workers N (plus ``extra_args``)."""
    argv = [str(VENV_BIN / "rpckit"), "serve", "bench.overload.service:servicers"]
    argv += ["--grpc", "127.0.0.1:0", *extra_args]
    if workers is not None:
        argv += ["--workers", str(workers)]
    name = "rpckit" if workers is None else f"rpckit-w{workers}"
    label = "rpckit (1 process)" if workers is None else f"rpckit --workers {workers}"
    return SystemSpec(
        name=name,
        label=label,
        protocol="grpc",
        argv=tuple(argv),
        ready=procs.json_line_address,
        processes=workers or 1,
    )


def default_gunicorn_workers() -> int:
    """cores + 1, the issue's gunicorn deployment."""
    return (os.cpu_count() or 1) + 1


def overload_systems(rpckit_args: Sequence[str] = ()) -> dict[str, SystemSpec]:
    """The four systems of the overload benchmark, by their --systems name."""
    cores = os.cpu_count() or 1
    return {
        "gunicorn": gunicorn_spec(default_gunicorn_workers()),
        "grpc-plain": grpc_plain_spec(32),
        "rpckit": rpckit_spec(None, rpckit_args),
        "rpckit-workers": dataclasses.replace(
            rpckit_spec(cores, rpckit_args), name="rpckit-workers"
        ),
    }


def start(spec: SystemSpec, *, stats_dir: Path, log_dir: Path) -> procs.SystemProcess:
    """Start a system with its handler accounting in stats_dir; return once it serves."""
    env = dict(os.environ)
    env[STATS_DIR_ENV] = str(stats_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    process = procs.SystemProcess(
        spec.name, spec.argv, ready=spec.ready, log_dir=log_dir, env=env, cwd=REPO_ROOT
    )
    if spec.health_path is not None:
        try:
            procs.wait_http_ok(process.address, spec.health_path, timeout_s=15)
        except BaseException:
            process.stop(timeout_s=10)
            raise
    return process

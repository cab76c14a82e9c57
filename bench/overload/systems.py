"""The systems under test of bench/overload and how to start each one.

- ``gunicorn``: Flask under ``gunicorn -k gevent -w cores+1`` (HTTP/JSON), the baseline;
- ``grpc-plain``: ``grpc.server(ThreadPoolExecutor(32))``, one process;
- ``rpckit``: ``rpckit serve bench.overload.service:servicers --grpc 127.0.0.1:0`` with
  `rpckit_workers_argv` (``--workers auto``: two processes per core);
- ``rpckit-http``: the same handler through the legacy HTTP shim, ``rpckit serve ... --http``
  (`bench.overload.http_app`), driven by the same HTTP/JSON client as gunicorn;
- ``rpckit-default``: ``rpckit serve`` with its default process count (the burst profile's
  subject: issue 12 asks the *default* server to take the burst).

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
from bench.overload import http_app
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
    # their connections evenly over them, as rpckit's own client does. None: count the
    # server's worker processes once it is ready (``--workers auto`` picks the number).
    processes: int | None = 1
    health_probe: bool = False  # probe grpc.health.v1 Check during every step
    # The shim: its route timeout follows the profile's deadline (`http_app`).
    route_timeout: bool = False

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


def rpckit_workers_argv() -> tuple[str, ...]:
    """How bench/overload runs rpckit's processes: the one place to change.

    ``--workers auto``: two processes per usable core, chosen by rpckit as a user's
    deployment would; the runner counts the processes it started.
    """
    return ("--workers", "auto")


def _workers_label(workers_argv: Sequence[str]) -> str:
    if not workers_argv:
        return "serve (defaults)"
    count = workers_argv[-1]
    return "1 process" if count == "1" else f"--workers {count}"


def rpckit_spec(
    workers_argv: Sequence[str], extra_args: Sequence[str] = (), *, name: str = "rpckit"
) -> SystemSpec:
    """rpckit serve with ``workers_argv`` (e.g. ``("--workers", "3")``; empty: one process)
    and then ``extra_args`` (which may override it)."""
    argv = [str(VENV_BIN / "rpckit"), "serve", "bench.overload.service:servicers"]
    argv += ["--grpc", "127.0.0.1:0", *workers_argv, *extra_args]
    single = bool(workers_argv) and workers_argv[-1] == "1"
    return SystemSpec(
        name=name,
        label=f"rpckit {_workers_label(workers_argv)}",
        protocol="grpc",
        argv=tuple(argv),
        ready=procs.json_line_address,
        processes=1 if single else None,
        health_probe=True,
    )


def rpckit_http_spec(workers_argv: Sequence[str], extra_args: Sequence[str] = ()) -> SystemSpec:
    """The handler behind the legacy HTTP shim: rpckit serve --http (the route's timeout
    stands in for the deadline; see `bench.overload.http_app`)."""
    argv = [str(VENV_BIN / "rpckit"), "serve", "bench.overload.service:servicers"]
    argv += ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    argv += ["--http-app", f"{http_app.__name__}:legacy_http", *workers_argv, *extra_args]
    return SystemSpec(
        name="rpckit-http",
        label=f"rpckit HTTP shim {_workers_label(workers_argv)}",
        protocol="http",
        argv=tuple(argv),
        ready=procs.json_line_http_address,
        processes=None,
        route_timeout=True,
    )


def default_gunicorn_workers() -> int:
    """Usable cores + 1, the issue's gunicorn deployment (gunicorn's guidance for its workers)."""
    return len(os.sched_getaffinity(0)) + 1


def overload_systems(rpckit_args: Sequence[str] = ()) -> dict[str, SystemSpec]:
    """The systems of the overload benchmark, by their --systems name."""
    workers = rpckit_workers_argv()
    return {
        "gunicorn": gunicorn_spec(default_gunicorn_workers()),
        "grpc-plain": grpc_plain_spec(32),
        "rpckit": rpckit_spec(workers, rpckit_args),
        "rpckit-http": rpckit_http_spec(workers, rpckit_args),
        "rpckit-default": rpckit_spec((), rpckit_args, name="rpckit-default"),
    }


#: The systems every profile runs unless --systems says otherwise.
DEFAULT_SYSTEMS = ("gunicorn", "grpc-plain", "rpckit", "rpckit-http")


def default_systems(profile: str) -> tuple[str, ...]:
    """The systems a profile runs by default: the burst profile adds ``rpckit serve`` with
    its defaults, the server issue 12's burst check is about."""
    return (*DEFAULT_SYSTEMS, "rpckit-default") if profile == "burst" else DEFAULT_SYSTEMS


def start(
    spec: SystemSpec, *, stats_dir: Path, log_dir: Path, deadline_ms: float | None = None
) -> procs.SystemProcess:
    """Start a system with its handler accounting in stats_dir; return once it serves.

    ``deadline_ms`` is the profile's deadline: a system with a route timeout gets it.
    """
    env = dict(os.environ)
    env[STATS_DIR_ENV] = str(stats_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(http_app.ROUTE_TIMEOUT_ENV, None)
    if spec.route_timeout and deadline_ms is not None:
        env.update(http_app.route_timeout_env(deadline_ms))
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


def serving_processes(spec: SystemSpec, root_pid: int) -> int:
    """How many processes serve the port: the spec's count, or, when the system picks it
    (``processes=None``), the workers under its supervisor (every process of the tree but
    the supervisor; 1 when it runs alone)."""
    if spec.processes is not None:
        return spec.processes
    return max(1, len(procs.process_tree(root_pid)) - 1)

"""A noisy neighbour: one process spinning in pure Python on one core, for a bounded time.

    python -m bench.harness.neighbour --cpu 1 --seconds 30

`Neighbour` starts one beside a system under test and stops it on exit. It runs in the
runner's session and at the runner's niceness, as the system under test does (nice 0 in a
plain run), so the scheduler treats it as one more ordinary process wanting a whole core:
the CPU contention a busy co-tenant, a log shipper or host steal puts on a server whose own
handlers are not the cause.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from bench.harness import procs

READY_LINE = "spinning"
#: The longest a neighbour may run, whatever it is asked (it is also stopped on exit).
MAX_SECONDS = 600.0


def spin(until: float, *, clock: Callable[[], float] = time.monotonic) -> int:
    """Busy-loop in Python until ``clock()`` reaches ``until``; how many rounds it made."""
    rounds = 0
    accumulator = 0
    while clock() < until:
        for step in range(200):
            accumulator += step * step
        rounds += 1
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.harness.neighbour",
        description="Spin on one core for a bounded time (a CPU-bound neighbour process).",
        epilog="example: python -m bench.harness.neighbour --cpu 1 --seconds 30",
    )
    parser.add_argument("--cpu", type=int, required=True, help="the core to spin on")
    parser.add_argument("--seconds", type=float, required=True, help=f"<= {MAX_SECONDS:g}")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu} is not one of this process's CPUs")
    os.sched_setaffinity(0, {args.cpu})
    print(READY_LINE, flush=True)
    spin(time.monotonic() + args.seconds)
    return 0


class Neighbour:
    """Context manager: a spinning neighbour process on ``cpu`` for the block (bounded)."""

    def __init__(
        self,
        *,
        cpu: int,
        max_s: float,
        log_dir: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < max_s <= MAX_SECONDS:
            raise ValueError(f"max_s must be in (0, {MAX_SECONDS:g}]")
        self._argv = (
            sys.executable,
            "-m",
            "bench.harness.neighbour",
            "--cpu",
            str(cpu),
            "--seconds",
            f"{max_s:g}",
        )
        self._log_dir = log_dir
        self._cwd = cwd
        self._env = env
        self._process: procs.SystemProcess | None = None

    def __enter__(self) -> Neighbour:
        self._process = procs.SystemProcess(
            "neighbour",
            self._argv,
            ready=lambda out, err: READY_LINE if READY_LINE in out else None,
            log_dir=self._log_dir,
            env=self._env,
            cwd=self._cwd,
            ready_timeout_s=15,
        )
        return self

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the neighbour is not running")
        return self._process.pid

    def cpu_seconds(self) -> float:
        """CPU the neighbour has used so far."""
        return procs.tree_cpu_seconds(self.pid)

    def niceness(self) -> int:
        return os.getpriority(os.PRIO_PROCESS, self.pid)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.stop(timeout_s=5)
            self._process = None


def neighbour_core() -> int:
    """The core a neighbour takes: the highest of this process's CPUs."""
    return max(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())

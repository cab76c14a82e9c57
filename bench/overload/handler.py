"""The benchmark handler shared by every system under test, with wasted-CPU accounting.

`do_work` burns `cpu_ms` of this thread's CPU in a pure-Python loop (it holds the GIL, like real
handler code), then waits `wait_ms` (a simulated downstream call; `time.sleep`, which gunicorn's
gevent worker monkey-patches into a greenlet switch). It charges the burned CPU to a
`WorkAccounting`: all of it to ``cpu_total_s``, and to ``cpu_wasted_s`` too when the call ended
after its deadline (the client had already given up, so the work was thrown away).

Each process's counters are mirrored to ``$BENCH_STATS_DIR/stats-<pid>.json`` after every call
(one small pwrite), so the file is complete whenever and however the process exits -- SIGTERM,
a forked worker's ``os._exit``, gunicorn's worker shutdown -- and the runner can sum the files
of a process tree between load steps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATS_DIR_ENV = "BENCH_STATS_DIR"
_STATS_FILE_BYTES = 512  # fixed size, padded with spaces: rewritten in place, never truncated


class WorkAccounting:
    """Per-process handler CPU counters (reset in a forked child on its first call)."""

    def __init__(self, stats_dir: Path | None) -> None:
        self._stats_dir = stats_dir
        self._lock = threading.Lock()
        self._pid = 0
        self._fd: int | None = None
        self._cpu_total_s = 0.0
        self._cpu_wasted_s = 0.0
        self._calls = 0
        self._late_calls = 0

    @classmethod
    def from_environment(cls) -> WorkAccounting:
        """Accounting that writes to $BENCH_STATS_DIR when set (in memory only otherwise)."""
        stats_dir = os.environ.get(STATS_DIR_ENV)
        return cls(Path(stats_dir) if stats_dir else None)

    def record(self, *, cpu_s: float, late: bool) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first call in this process (maybe a forked copy)
                self._pid = os.getpid()
                self._fd = None
                self._cpu_total_s = self._cpu_wasted_s = 0.0
                self._calls = self._late_calls = 0
                if self._stats_dir is not None:
                    path = self._stats_dir / f"stats-{self._pid}.json"
                    self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._cpu_total_s += cpu_s
            self._calls += 1
            if late:
                self._cpu_wasted_s += cpu_s
                self._late_calls += 1
            if self._fd is not None:
                data = json.dumps(self._snapshot_locked()).encode()
                os.pwrite(self._fd, data.ljust(_STATS_FILE_BYTES), 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "cpu_total_s": self._cpu_total_s,
            "cpu_wasted_s": self._cpu_wasted_s,
            "calls": self._calls,
            "late_calls": self._late_calls,
        }


def burn_cpu(cpu_s: float) -> float:
    """Spin in pure Python until this thread used cpu_s of CPU; the CPU actually used."""
    start = time.thread_time()
    accumulator = 0
    while time.thread_time() - start < cpu_s:
        for step in range(100):
            accumulator += step * step
    return time.thread_time() - start


def do_work(
    cpu_ms: float,
    wait_ms: float,
    deadline: float | None,
    *,
    accounting: WorkAccounting,
    sleep: Callable[[float], object] | None = None,
) -> None:
    """Burn cpu_ms of CPU, wait wait_ms, account the CPU (wasted if past `deadline`, epoch s).

    `sleep` defaults to ``time.sleep`` looked up at call time (gevent-patched when gevent is).
    """
    if cpu_ms < 0 or wait_ms < 0:
        raise ValueError("cpu_ms and wait_ms must be >= 0")
    # Only the burn is measured: under gevent other greenlets run on this thread while we wait.
    cpu_s = burn_cpu(cpu_ms / 1000) if cpu_ms > 0 else 0.0
    if wait_ms > 0:
        (sleep or time.sleep)(wait_ms / 1000)
    late = deadline is not None and time.time() > deadline
    accounting.record(cpu_s=cpu_s, late=late)


def read_stats_dir(stats_dir: Path) -> list[dict[str, Any]]:
    """The per-process dumps in a stats directory."""
    return read_json_files(stats_dir, "stats-*.json")


def read_json_files(directory: Path, pattern: str) -> list[dict[str, Any]]:
    """The JSON object in each file matching ``pattern``: a file caught mid-write is read
    again (a few times), an empty one (created, nothing written yet) is skipped."""
    dumps: list[dict[str, Any]] = []
    for path in sorted(directory.glob(pattern)):
        for _attempt in range(5):
            text = path.read_text().strip()
            if not text:
                break
            try:
                dumps.append(json.loads(text))
                break
            except ValueError:
                time.sleep(0.01)
    return dumps

"""Systems under test as subprocesses: start, wait until ready, stop; CPU and PSS from /proc.

A system is started in its own process group (same session), with stdout and stderr going to
log files; a `ready` function reads those logs and returns the address once it is serving.
`stop` sends SIGTERM and waits (bounded), then SIGKILLs the group it started if it must.
Process-tree CPU time and PSS are summed over the root and all its descendants.

The /proc parsers (`parse_proc_stat`, `parse_pss_kib`, `descendants`) are pure.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

# Readiness: given (stdout so far, stderr so far), the address once ready, else None.
ReadyCheck = Callable[[str, str], str | None]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pure /proc parsing


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcStat:
    """The fields of /proc/PID/stat the harness uses."""

    pid: int
    ppid: int
    pgrp: int
    cpu_ticks: int  # utime + stime, in clock ticks


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat (the command name may hold spaces and parentheses)."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        raise ValueError("not a /proc/PID/stat line")
    fields = tail.split()
    # tail starts at field 3 (state); ppid is field 4, pgrp 5, utime 14, stime 15 (proc(5)).
    return ProcStat(
        pid=int(head.split("(", 1)[0]),
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def parse_pss_kib(smaps_rollup: str) -> int:
    """The ``Pss:`` line of /proc/PID/smaps_rollup, in KiB."""
    match = re.search(r"^Pss:\s+(\d+) kB", smaps_rollup, re.MULTILINE)
    if match is None:
        raise ValueError("no Pss line in smaps_rollup")
    return int(match.group(1))


@dataclasses.dataclass(frozen=True)
class HostTicks:
    """The host's CPU time so far, all CPUs (/proc/stat's ``cpu`` line), in clock ticks."""

    total: int
    steal: int

    def steal_share(self, later: HostTicks) -> float | None:
        """The share of the CPU time from this reading to ``later`` that the hypervisor
        gave to other guests (steal); None if no time passed."""
        total = later.total - self.total
        return None if total <= 0 else (later.steal - self.steal) / total


def parse_host_ticks(proc_stat: str) -> HostTicks:
    """The ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal ...
    (guest time is already counted in user and nice). ValueError if there is none."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:9]]
            ticks += [0] * (8 - len(ticks))  # kernels before steal time had fewer fields
            return HostTicks(total=sum(ticks), steal=ticks[7])
    raise ValueError("no cpu line in /proc/stat")


def host_ticks() -> HostTicks | None:
    """The host's CPU time so far (None where /proc/stat cannot be read)."""
    text = _read("/proc/stat")
    return None if text is None else parse_host_ticks(text)


def parse_rss_kib(status: str) -> int:
    """The ``VmRSS:`` line of /proc/PID/status, in KiB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise ValueError("no VmRSS line in /proc/PID/status")
    return int(match.group(1))


def descendants(root: int, parent_of: Mapping[int, int]) -> list[int]:
    """root and every process below it, given pid -> ppid (root first, then breadth-first)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    tree = [root]
    for pid in tree:  # grows while iterating: a bounded breadth-first walk (pids are unique)
        tree.extend(sorted(children.get(pid, ())))
    return tree


def announced_address(stdout: str, key: str) -> str | None:
    """The address under ``key`` in the first JSON line on stdout that has it (``rpckit
    serve`` announces ``{"grpc": "HOST:PORT", "http": "HOST:PORT"}``), else None."""
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                address = json.loads(line).get(key)
            except (ValueError, AttributeError):
                continue
            if isinstance(address, str):
                return address
    return None


def json_line_address(stdout: str, stderr: str) -> str | None:
    """Ready check for ``{"grpc": "HOST:PORT"}`` printed on stdout (rpckit serve's contract)."""
    del stderr
    return announced_address(stdout, "grpc")


def json_line_http_address(stdout: str, stderr: str) -> str | None:
    """Ready check for the ``"http"`` address of ``rpckit serve --http``'s announcement."""
    del stderr
    return announced_address(stdout, "http")


# ---------------------------------------------------------------- /proc readers


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process went away meanwhile


def _all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = _read(f"/proc/{entry}/stat")
            if text is not None:
                stats[int(entry)] = parse_proc_stat(text)
    return stats


def process_tree(root: int) -> list[int]:
    """Live pids of root and its descendants."""
    stats = _all_stats()
    if root not in stats:
        return []
    return descendants(root, {pid: stat.ppid for pid, stat in stats.items()})


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of the live process tree under root."""
    stats = _all_stats()
    if root not in stats:
        return 0.0
    tree = descendants(root, {pid: stat.ppid for pid, stat in stats.items()})
    return sum(stats[pid].cpu_ticks for pid in tree) / _CLOCK_TICKS


def tree_pss_kib(root: int) -> int:
    """Total proportional set size of the process tree under root, in KiB."""
    total = 0
    for pid in process_tree(root):
        text = _read(f"/proc/{pid}/smaps_rollup")
        if text is not None:
            total += parse_pss_kib(text)
    return total


def tree_rss_kib(root: int) -> int | None:
    """Total resident set size of the process tree under root, in KiB (None when it is gone)."""
    tree = process_tree(root)
    if not tree:
        return None
    total = 0
    for pid in tree:
        text = _read(f"/proc/{pid}/status")
        if text is not None and "VmRSS:" in text:  # a zombie has no VmRSS line
            total += parse_rss_kib(text)
    return total


def wait_idle(root: int, *, max_cpu_share: float, window_s: float, timeout_s: float) -> bool:
    """Wait until the tree used < max_cpu_share of one core over a window (bounded)."""
    give_up_at = time.monotonic() + timeout_s
    before = tree_cpu_seconds(root)
    while time.monotonic() < give_up_at:
        time.sleep(window_s)
        after = tree_cpu_seconds(root)
        if after - before <= max_cpu_share * window_s:
            return True
        before = after
    return False


def wait_http_ok(address: str, path: str, *, timeout_s: float) -> None:
    """Poll GET path on a loopback HOST:PORT until it answers 200 (bounded)."""
    host, _, port = address.rpartition(":")
    give_up_at = time.monotonic() + timeout_s
    last_error = "no attempt"
    while time.monotonic() < give_up_at:
        conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
            last_error = "status != 200"
        except OSError as exc:
            last_error = repr(exc)
        finally:
            conn.close()
        time.sleep(0.05)
    raise TimeoutError(f"{address}{path} not ready after {timeout_s} s: {last_error}")


# ---------------------------------------------------------------- subprocess lifecycle


class SystemProcess:
    """A running system under test (a context manager that stops it on exit)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: ReadyCheck,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Its own process group (so a stuck tree can be killed as one), but the same
                # session: with the kernel's autogroup scheduling a new session would get its
                # own CPU share, and the load generator's higher priority would not count.
                process_group=0,
            )
        self.pid = self._proc.pid
        try:
            self.address = self._wait_ready(ready, ready_timeout_s)
        except BaseException:
            self.stop(timeout_s=5)
            raise

    def _wait_ready(self, ready: ReadyCheck, timeout_s: float) -> str:
        give_up_at = time.monotonic() + timeout_s
        while time.monotonic() < give_up_at:
            address = ready(self.stdout(), self.stderr())
            if address is not None:
                return address
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._proc.returncode} before it was ready:\n"
                    + self.stderr()[-2000:]
                )
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout_s} s:\n{self.stderr()[-2000:]}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, *, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to timeout_s, else SIGKILL the group. The exit code, None if killed.

        Processes of the tree that outlive a clean exit (orphaned workers) are SIGKILLed too,
        each by pid, after checking it is still in the process group this object started.
        """
        if self._proc.poll() is not None:
            return self._proc.returncode
        tree = process_tree(self.pid)
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            progress(f"{self.name} did not stop within {timeout_s} s: SIGKILL")
            os.killpg(self.pid, signal.SIGKILL)  # the leader is not reaped yet: the group is ours
            self._proc.wait(timeout=10)
            return None
        for pid in tree[1:]:
            text = _read(f"/proc/{pid}/stat")
            if text is not None and parse_proc_stat(text).pgrp == self.pid:
                progress(f"{self.name}: process {pid} outlived its parent: SIGKILL")
                os.kill(pid, signal.SIGKILL)
        return self._proc.returncode

    def __enter__(self) -> SystemProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def machine_description(packages: Sequence[str]) -> dict[str, Any]:
    """The machine and software a run measured: CPU model, cores, kernel, Python, ``packages``."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: version(name) for name in packages},
    }

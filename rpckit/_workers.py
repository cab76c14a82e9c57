"""Multi-process serving: import once, fork N workers on one port, supervise them.

    parent: import the app (no grpc object yet) -> reserve the port -> gc.freeze()
            -> fork N workers -> print the address -> restart crashed workers
            -> on SIGTERM/SIGINT forward it, wait for every worker to drain, exit
    worker: call the factory -> build its own grpc server on the port with
            SO_REUSEPORT -> serve until SIGTERM -> drain -> exit 0

Importing before forking shares the application's code and data pages between
workers (copy-on-write; ``gc.freeze()`` keeps the collector from touching, and
so copying, them). Each worker owns a complete server -- admission queue,
threads, health -- so one process's GIL never limits another's.

SO_REUSEPORT balances *connections*, not requests: a client holding one HTTP/2
connection talks to one worker. Clients should open several connections (the
rpckit client does) or use the worker id in the load report.

The port is reserved by a bound, non-listening socket held by the parent, so
port 0 works and a restarted worker gets the same port back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["WorkerPlan", "reserve_port", "supervise"]

_log = logging.getLogger("rpckit.workers")

#: A worker that dies this many times within CRASH_WINDOW_S is not restarted again.
MAX_CRASHES = 5
CRASH_WINDOW_S = 60.0
READY_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    """What the supervisor needs: how many workers, and what each one runs.

    ``run_worker(index, address, ready)`` runs in the forked child: it must
    build and start the server on ``address`` with SO_REUSEPORT, call
    ``ready()`` once it serves, and return the exit status after it stopped.
    """

    workers: int
    address: str
    run_worker: Callable[[int, str, Callable[[], None]], int]

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def reserve_port(address: str) -> tuple[socket.socket, str]:
    """Bind (without listening) ``host:port`` with SO_REUSEPORT; returns the socket and address.

    Port 0 is resolved to a free port that every worker then shares.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, int(port_text), type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"{shown}:{port}"


@dataclasses.dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int
    started: float


class _Supervisor:
    def __init__(self, plan: WorkerPlan, address: str, reserved: socket.socket) -> None:
        self.plan = plan
        self.address = address
        self.reserved = reserved
        self.workers: dict[int, _Worker] = {}  # by pid
        self.crashes: dict[int, list[float]] = {}
        self.stopping = False
        self.failed = False

    def spawn(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            self._become_worker(index, write_fd)
        os.close(write_fd)
        worker = _Worker(index=index, pid=pid, ready_fd=read_fd, started=time.monotonic())
        self.workers[pid] = worker
        return worker

    def _become_worker(self, index: int, ready_fd: int) -> None:
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            self.reserved.close()

            def ready() -> None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)

            code = self.plan.run_worker(index, self.address, ready)
        except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
            _log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def wait_ready(self, workers: list[_Worker], timeout: float) -> bool:
        pending = {w.ready_fd: w for w in workers}
        give_up = time.monotonic() + timeout
        while pending:
            left = give_up - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select(list(pending), [], [], left)
            for fd in readable:
                data = os.read(fd, 64)
                os.close(fd)
                pending.pop(fd)
                if not data:  # the worker died before it was ready
                    return False
        return True

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            _log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reap_forever(self) -> int:
        exit_code = 0
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    _log.warning("worker %d (pid %d) exited %d", worker.index, pid, code)
                    exit_code = 1
                continue
            exit_code = self._restart(worker, code) or exit_code
        return 1 if self.failed else exit_code

    def _restart(self, worker: _Worker, code: int) -> int:
        now = time.monotonic()
        history = [t for t in self.crashes.get(worker.index, []) if now - t < CRASH_WINDOW_S]
        history.append(now)
        self.crashes[worker.index] = history
        if len(history) > MAX_CRASHES:
            _log.error(
                "worker %d died %d times in %.0f s; stopping the server",
                worker.index,
                len(history),
                CRASH_WINDOW_S,
            )
            self.failed = True
            self.on_signal(signal.SIGTERM, None)
            return 1
        _log.warning(
            "worker %d (pid %d) died (exit %d); starting a new one", worker.index, worker.pid, code
        )
        with contextlib.suppress(OSError):
            os.close(worker.ready_fd)
        self.spawn(worker.index)
        return 0


def supervise(plan: WorkerPlan, *, announce: Callable[[str], None] | None = None) -> int:
    """Run ``plan`` (see the module docstring); returns the exit status for the parent."""
    reserved, address = reserve_port(plan.address)
    supervisor = _Supervisor(plan, address, reserved)
    previous = {
        sig: signal.signal(sig, supervisor.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        gc.collect()
        gc.freeze()
        first = [supervisor.spawn(i) for i in range(plan.workers)]
        if not supervisor.wait_ready(first, READY_TIMEOUT_S):
            _log.error("not every worker became ready; stopping")
            supervisor.failed = True
            supervisor.on_signal(signal.SIGTERM, None)
        else:
            line = {"grpc": address, "workers": plan.workers, "pids": [w.pid for w in first]}
            (announce or _print_line)(json.dumps(line))
        return supervisor.reap_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reserved.close()


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

"""Multi-process serving: import once in a zygote, fork N workers on one port, supervise them.

    supervisor: reserve the port -> become the child subreaper -> fork the zygote
                -> learn the workers' pids from it -> wait until every worker serves
                -> print the address -> restart crashed workers
                -> on SIGTERM/SIGINT forward it, wait for every worker to drain, exit
                -> on SIGHUP forward it (each worker reloads its TLS certificates)
    zygote:     import the app (``plan.preload``) -> gc.freeze() -> malloc_trim(0)
                -> fork N workers -> exit
    worker:     call the factory -> build its own grpc server on the port with
                SO_REUSEPORT -> serve until SIGTERM -> drain -> exit 0

Importing before forking shares the application's code and data pages between
workers (copy-on-write; ``gc.freeze()`` keeps the collector from touching, and
so copying, them). Each worker owns a complete server -- admission queue,
threads, health -- so one process's GIL never limits another's.

The supervisor never imports the app, grpc or protobuf (``rpckit`` loads its
names lazily for this). Were the workers forked from it, it would keep a
private copy of every inherited page that all of them have written since
(refcounts, new objects in freed slots): megabytes with a few workers
(bench/README.md, "Measurements behind the defaults").
The zygote's copies are freed when it exits; its workers are re-parented to
the supervisor (``PR_SET_CHILD_SUBREAPER``), which waits for them as for its
own children. A crashed worker is replaced by a child of the supervisor that
imports the app itself: the replacement shares no app pages with the others.

SO_REUSEPORT balances *connections*, not requests: a client holding one HTTP/2
connection talks to one worker. Clients should open several connections (the
rpckit client does) or use the worker id in the load report.

The port is reserved by a bound, non-listening socket held by the supervisor,
so port 0 works and a restarted worker gets the same port back.

Metrics (``--metrics``) are one endpoint for all workers: they share a
directory of metric files (``rpckit.server._metrics``); when a worker exits the
supervisor removes its load gauges there (:func:`forget_worker_gauges`; its
counters stay: the calls it served still count).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import glob
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType

from rpckit.server._config import ConfigError

__all__ = ["WorkerPlan", "forget_worker_gauges", "freeze_start_up", "reserve_port", "supervise"]

_log = logging.getLogger("rpckit.workers")

#: A worker that dies this many times within CRASH_WINDOW_S is not restarted again.
MAX_CRASHES = 5
CRASH_WINDOW_S = 60.0
#: From forking the zygote until every worker serves (includes importing the app).
READY_TIMEOUT_S = 60.0
#: The zygote's exit status when ``preload`` raised ConfigError (the CLI's usage error).
_EXIT_CONFIG = 2
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: Held around a fork: the stop signals and SIGHUP (forwarded to workers for a reload).
_HELD_SIGNALS = _STOP_SIGNALS | {signal.SIGHUP}


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    """What the supervisor needs: how many workers, and what each one runs.

    ``preload()`` runs in the zygote before it forks the workers (and in a
    replacement worker before it serves): it imports everything a worker will
    use, so the workers share it. It may raise ConfigError, which ``supervise``
    raises again in the supervisor.

    ``run_worker(index, address, ready)`` runs in each worker: it must build
    and start the server on ``address`` with SO_REUSEPORT, call ``ready()``
    once it serves, and return the exit status after it stopped.

    ``on_exit(pid)`` runs in the supervisor after it reaped a worker, whether
    the worker is restarted or not.
    """

    workers: int
    address: str
    preload: Callable[[], None]
    run_worker: Callable[[int, str, Callable[[], None]], int]
    on_exit: Callable[[int], None] | None = None

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


def forget_worker_gauges(directory: str, pid: int) -> None:
    """Remove an exited worker's live gauge files from a shared metrics directory.

    prometheus-client's ``mark_process_dead`` does this; the supervisor imports no
    prometheus-client, so it removes the same files (``gauge_live*_PID.db``) itself.
    """
    for path in glob.glob(os.path.join(glob.escape(directory), f"gauge_live*_{pid}.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def become_subreaper() -> None:
    """Make orphaned descendants this process's children (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def _release_free_heap_pages() -> None:
    """glibc ``malloc_trim(0)``: free pages inside the heap go back to the kernel before the fork.

    A worker allocating there then gets a fresh page instead of a copy of a page the zygote
    image held (measured: bench/README.md, "Measurements behind the defaults").
    """
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if malloc_trim is not None:
        malloc_trim(0)


def freeze_start_up() -> None:
    """Collect, then put every object alive now out of the collector's reach (``gc.freeze``).

    What start-up built lives as long as the process: full collections then walk only what
    serving creates, not every imported object (each full collection stalls every thread;
    measured: bench/README.md, "Measurements behind the defaults"), and forked workers do
    not copy the pages the collector would write.
    """
    gc.collect()
    gc.freeze()


def _flush_stdio() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


@contextlib.contextmanager
def _forking() -> Iterator[None]:
    """Around ``os.fork()``: flush stdio (a child must not write its parent's buffered output
    again) and hold SIGTERM/SIGINT/SIGHUP, so neither side runs a handler meant for the other."""
    _flush_stdio()
    signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)


def _default_stop_signals() -> None:
    """In a new child (signals still blocked): default actions, then let signals in.

    SIGHUP is ignored until the worker installs its reload handler: its default
    action would end the worker, and the supervisor's handler is not the child's.
    """
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)


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
        self.zygote: int | None = None
        self.crashes: dict[int, list[float]] = {}
        self.stopping = False
        self.failed = False

    # ------------------------------------------------------------ start: the zygote

    def start(self, timeout: float) -> list[_Worker]:
        """Fork the zygote, learn its workers' pids, reap it. Raises ConfigError from preload."""
        indices = range(self.plan.workers)
        ready = {index: os.pipe() for index in indices}
        roster_read, roster_write = os.pipe()
        with _forking():
            pid = os.fork()
            if pid == 0:
                os.close(roster_read)
                for read_fd, _ in ready.values():
                    os.close(read_fd)
                self._become_zygote({i: w for i, (_, w) in ready.items()}, roster_write)
            self.zygote = pid
        os.close(roster_write)
        for _, write_fd in ready.values():
            os.close(write_fd)
        give_up = time.monotonic() + timeout
        roster, complete = _read_until_eof(roster_read, give_up)
        if not complete:
            _log.error("the zygote did not fork the workers within %.0f s", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self.zygote = None
        started = time.monotonic()
        workers: list[_Worker] = []
        error = None
        for line in roster.decode().splitlines():
            entry = json.loads(line)
            if "error" in entry:
                error = entry["error"]
                continue
            index = entry["index"]
            worker = _Worker(
                index=index, pid=entry["pid"], ready_fd=ready.pop(index)[0], started=started
            )
            self.workers[worker.pid] = worker
            workers.append(worker)
        for read_fd, _ in ready.values():  # workers the zygote never forked
            os.close(read_fd)
        if error is not None:
            raise ConfigError(error)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or len(workers) < self.plan.workers:
            if not self.stopping:
                _log.error("the zygote exited %d after forking %d workers", code, len(workers))
            self.failed = True
        if self.stopping or self.failed:  # a signal came while the zygote ran, or it failed
            self.on_signal(signal.SIGTERM, None)
        return workers

    def _become_zygote(self, ready_fds: dict[int, int], roster_fd: int) -> None:
        code = 1
        try:
            _default_stop_signals()
            try:
                self.plan.preload()
            except ConfigError as exc:
                os.write(roster_fd, json.dumps({"error": str(exc)}).encode() + b"\n")
                code = _EXIT_CONFIG
                return
            freeze_start_up()
            _release_free_heap_pages()
            for index, ready_fd in ready_fds.items():
                with _forking():  # a stop signal cannot lose a forked worker's pid
                    pid = os.fork()
                    if pid == 0:
                        for fd in (roster_fd, *(f for i, f in ready_fds.items() if i != index)):
                            os.close(fd)
                        self._become_worker(index, ready_fd, preload=False)
                    line = json.dumps({"index": index, "pid": pid}).encode() + b"\n"
                    os.write(roster_fd, line)
            code = 0
        except BaseException:  # noqa: BLE001 - the zygote must never return into the supervisor
            _log.exception("the workers' zygote failed")
        finally:
            _flush_stdio()
            os._exit(code)

    # ------------------------------------------------------------ workers

    def spawn(self, index: int) -> _Worker:
        """A replacement worker: a child of the supervisor that imports the app itself."""
        read_fd, write_fd = os.pipe()
        with _forking():
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                self._become_worker(index, write_fd, preload=True)
            worker = _Worker(index=index, pid=pid, ready_fd=read_fd, started=time.monotonic())
            self.workers[pid] = worker
        os.close(write_fd)
        return worker

    def _become_worker(self, index: int, ready_fd: int, *, preload: bool) -> None:
        code = 1
        try:
            _default_stop_signals()
            self.reserved.close()
            if preload:  # a replacement: it imports the app itself, then freezes as the zygote does
                self.plan.preload()
                freeze_start_up()

            def ready() -> None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)

            code = self.plan.run_worker(index, self.address, ready)
        except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
            _log.exception("worker %d failed", index)
        finally:
            _flush_stdio()
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
        pids = [*self.workers, *([] if self.zygote is None else [self.zygote])]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_hangup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP: every worker reads its TLS certificates again."""
        _log.info("SIGHUP: reloading certificates in %d workers", len(self.workers))
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

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
            if self.plan.on_exit is not None:
                self.plan.on_exit(pid)
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


def _read_until_eof(fd: int, give_up: float) -> tuple[bytes, bool]:
    """The lines written to the pipe ``fd`` until its writers closed it (True) or time ran out."""
    data = b""
    try:
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                return data[: data.rfind(b"\n") + 1], False
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return data, True
                data += chunk
    finally:
        os.close(fd)


def supervise(plan: WorkerPlan, *, announce: Callable[[str], None] | None = None) -> int:
    """Run ``plan`` (see the module docstring); returns the exit status for the supervisor.

    Raises ConfigError when ``plan.preload`` did, OSError when this is not Linux.
    """
    become_subreaper()
    reserved, address = reserve_port(plan.address)
    supervisor = _Supervisor(plan, address, reserved)
    previous = {sig: signal.signal(sig, supervisor.on_signal) for sig in _STOP_SIGNALS}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, supervisor.on_hangup)
    try:
        first = supervisor.start(READY_TIMEOUT_S)
        if supervisor.stopping or supervisor.failed:
            supervisor.failed = True
        elif not supervisor.wait_ready(first, READY_TIMEOUT_S):
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

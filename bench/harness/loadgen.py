"""Open-loop load generator: Poisson arrivals fired on schedule from sender processes.

The schedule is pure (`poisson_schedule`, seeded rng); it is dealt round-robin over sender
processes (the union is still the Poisson process). Each sender fires every request at its
scheduled time *without waiting for replies* (open loop), with a per-request deadline:

- gRPC: several channels per sender (each its own TCP connection, so SO_REUSEPORT spreads
  them over server processes), ``.future()`` calls with ``timeout`` = what is left of the deadline;
- HTTP/JSON: a pool of threads, each with its own keep-alive connection, growing on demand,
  socket timeouts = what is left of the deadline; the deadline is also sent as the header
  ``X-Request-Deadline`` (epoch milliseconds).

Other clients (e.g. one that balances over many backends) plug in with
`LoadGenerator.prepare_client(factory)`: each sender calls the picklable ``factory()`` and drives
the `Client` it returns the same way.

Latency is measured from the *scheduled* start (see `stats`). Everything is bounded: the
schedule by duration and count, every wait by a timeout, and targets must be loopback.

    with LoadGenerator(senders=2) as gen:
        gen.prepare(Target(protocol="grpc", address="127.0.0.1:50051"), work)
        result = gen.run(poisson_schedule(rate_rps=100, duration_s=5, max_requests=1000,
                                          rng=random.Random(1)), deadline_s=0.25)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import faulthandler
import functools
import http.client
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol

from bench.harness.stats import Outcome, RequestRecord, classify_grpc, classify_http

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
WORK_METHOD = "/benchwork.v1.Work/Do"
HTTP_WORK_PATH = "/work"
DEADLINE_HEADER = "X-Request-Deadline"

# How long a sender waits for its connections to be ready (loopback: well under a second).
CONNECT_TIMEOUT_S = 10.0
# Extra time a sender waits, after the last deadline of a step, for calls to report back.
REPLY_GRACE_S = 2.0
# How much longer than a command should take the parent waits for a sender's answer.
ANSWER_SLACK_S = 10.0
# Longest an HTTP client waits for its threads when it is closed.
CLOSE_TIMEOUT_S = 5.0
# Senders ask for this scheduling priority (-10: ahead of the servers they load).
SENDER_NICENESS = -10
SENDER_SWITCH_INTERVAL_S = 0.0005
# A sender that misses a deadline is sent this before it is replaced: it dumps its stacks.
STACK_DUMP_SIGNAL = signal.SIGUSR1


def poisson_schedule(
    *, rate_rps: float, duration_s: float, max_requests: int, rng: random.Random
) -> list[float]:
    """Arrival offsets (s, ascending, within [0, duration_s)) of a Poisson process.

    Gaps are exponential with mean 1/rate_rps; at most max_requests arrivals.
    """
    if rate_rps <= 0 or duration_s <= 0 or max_requests < 0:
        raise ValueError("need rate_rps > 0, duration_s > 0 and max_requests >= 0")
    arrivals: list[float] = []
    at = rng.expovariate(rate_rps)
    while at < duration_s and len(arrivals) < max_requests:
        arrivals.append(at)
        at += rng.expovariate(rate_rps)
    return arrivals


def deal_round_robin(schedule: Sequence[float], parts: int) -> list[list[float]]:
    """Split an ascending schedule into `parts` ascending schedules, dealing like cards."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    return [list(schedule[index::parts]) for index in range(parts)]


def senders_for(peak_rps: float, *, per_sender_rps: float, max_senders: int) -> int:
    """How many sender processes a peak rate needs (at least 1, at most max_senders)."""
    if per_sender_rps <= 0 or max_senders < 1:
        raise ValueError("need per_sender_rps > 0 and max_senders >= 1")
    return max(1, min(max_senders, math.ceil(peak_rps / per_sender_rps)))


def check_loopback(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT``; refuse anything that is not a loopback address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the benchmarks only talk to loopback, not {host!r}")
    return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    """Where the load goes."""

    protocol: Literal["grpc", "http"]
    address: str  # loopback HOST:PORT
    # 4 connections per sender: with 2+ senders, enough for SO_REUSEPORT to spread the load
    # over a few server processes (each channel costs the sender CPU: keep it small).
    channels_per_sender: int = 4
    # Cap on concurrent HTTP requests per sender (one thread + connection each); 1024 covers
    # 3000 req/s x 500 ms deadlines over 2 senders (bench/overload's io profile at 3x). A
    # request that finds every thread busy waits, and its send lag says so.
    max_http_threads: int = 1024
    # gRPC: server processes sharing the port (SO_REUSEPORT). The kernel hashes each connection
    # to one of them, so 4 connections land 2:2 on 2 processes only 3 times in 8 and all on one
    # 1 time in 8; with processes > 1 a sender redials until its connections are spread evenly
    # (by the pid in the replies), as rpckit's BalancedChannel does (worker_redials).
    processes: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http"):
            raise ValueError(f"unknown protocol {self.protocol!r}")
        check_loopback(self.address)
        if self.channels_per_sender < 1 or self.max_http_threads < 1 or self.processes < 1:
            raise ValueError("channels_per_sender, max_http_threads and processes must be >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Work:
    """What each request asks the benchmark handler to do."""

    cpu_ms: float  # pure-Python CPU burn
    wait_ms: float  # simulated downstream wait
    payload_bytes: int = 16  # echoed back

    def __post_init__(self) -> None:
        if self.cpu_ms < 0 or self.wait_ms < 0 or self.payload_bytes < 0:
            raise ValueError("cpu_ms, wait_ms and payload_bytes must be >= 0")


RawRecord = tuple[float, float, str, str, int, float]  # RequestRecord fields, outcome as str


def _to_record(raw: RawRecord) -> RequestRecord:
    scheduled, latency, outcome, code, pid, lag = raw
    return RequestRecord(scheduled, latency, Outcome(outcome), code, pid, lag)


class RunResult(NamedTuple):
    """What one `LoadGenerator.run` produced."""

    records: list[RequestRecord]  # one per scheduled arrival, by scheduled time
    sender_cpu_s: float  # CPU the sender processes used for this run (the load's own cost)


# ---------------------------------------------------------------- parent side


class LoadGenerator:
    """A fixed set of sender processes (spawned, so no grpc state crosses a fork).

    Senders try to raise their scheduling priority (nice SENDER_NICENESS, needs root or
    CAP_SYS_NICE) so that on a small machine they fire on time instead of queueing behind the
    server for a core: they stand in for clients on other machines. `niceness` says what
    they got.
    """

    def __init__(self, *, senders: int, answer_slack_s: float = ANSWER_SLACK_S) -> None:
        if senders < 1 or answer_slack_s <= 0:
            raise ValueError("senders must be >= 1 and answer_slack_s > 0")
        self._answer_slack_s = answer_slack_s
        self._context = multiprocessing.get_context("spawn")
        self.niceness: int | None = None
        self._prepared: tuple[Target, Work] | None = None
        self._commands = itertools.count(1)
        self._conns: list[multiprocessing.connection.Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for index in range(senders):
            conn, proc = self._spawn(index)
            self._conns.append(conn)
            self._procs.append(proc)

    def _spawn(
        self, index: int
    ) -> tuple[multiprocessing.connection.Connection, multiprocessing.process.BaseProcess]:
        parent_end, child_end = self._context.Pipe()
        proc = self._context.Process(
            target=_sender_main, args=(child_end,), name=f"bench-sender-{index}", daemon=True
        )
        proc.start()
        child_end.close()
        return parent_end, proc

    @property
    def senders(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        """The sender processes' pids (e.g. to sample their memory)."""
        return [proc.pid for proc in self._procs if proc.pid is not None]

    @property
    def _prepare_timeout_s(self) -> float:
        return CONNECT_TIMEOUT_S + self._answer_slack_s

    def _send_all(self, kind: str, *args: Any) -> int:
        """Send one command to every sender; its id (replies carry it)."""
        command = next(self._commands)
        for conn in self._conns:
            conn.send((command, kind, *args))
        return command

    def prepare(self, target: Target, work: Work) -> None:
        """Connect every sender to the target (raises RuntimeError if one cannot).

        Preparing for the target and work the senders already have keeps their connections,
        as a long-lived client keeps its own; `forget` makes the next `prepare` connect anew
        (call it when the server at an address changes).
        """
        if self._prepared == (target, work):
            return
        self._prepared = None
        command = self._send_all("prepare", target, work)
        self.niceness = max(self._collect(command, "ready", timeout_s=self._prepare_timeout_s))
        self._prepared = (target, work)

    def forget(self) -> None:
        """The next `prepare` connects anew, even to the same target."""
        self._prepared = None

    def prepare_client(self, factory: ClientFactory) -> None:
        """Give every sender its own client, ``factory()`` called in the sender process.

        For load that `Target` does not describe (e.g. a client-side load balancer over
        many backends); `run` then drives these clients like the built-in ones.
        """
        self._prepared = None
        command = self._send_all("prepare_client", factory)
        self.niceness = max(self._collect(command, "ready", timeout_s=self._prepare_timeout_s))

    def run(self, schedule: Sequence[float], *, deadline_s: float) -> RunResult:
        """Fire `schedule` (offsets in s from a common start); one record per arrival."""
        if deadline_s <= 0:
            raise ValueError("deadline_s must be > 0")
        start_at = time.monotonic() + 0.2  # CLOCK_MONOTONIC is system-wide: one start for all
        command = next(self._commands)
        for conn, part in zip(self._conns, deal_round_robin(schedule, self.senders), strict=True):
            conn.send((command, "run", part, start_at, deadline_s))
        last = schedule[-1] if schedule else 0.0
        replies = self._collect(
            command,
            "records",
            timeout_s=0.2 + last + deadline_s + REPLY_GRACE_S + self._answer_slack_s,
        )
        records = [_to_record(raw) for raws, _ in replies for raw in raws]
        records.sort(key=lambda record: record.scheduled_s)
        return RunResult(records, sum(cpu_s for _, cpu_s in replies))

    def _collect(self, command: int, kind: str, *, timeout_s: float) -> list[Any]:
        """Every sender's reply to ``command`` (replies to earlier commands, come late, are
        dropped). A sender that does not answer in time dumps its threads' stacks to stderr
        and is replaced by a fresh one, then RuntimeError says so."""
        give_up_at = time.monotonic() + timeout_s
        answers: list[tuple[str, Any] | None] = []
        for conn in self._conns:
            answers.append(self._answer(conn, command, give_up_at))
        stuck = [index for index, answer in enumerate(answers) if answer is None]
        if stuck:
            names = ", ".join(self._procs[index].name for index in stuck)
            for index in stuck:
                self._replace(index)
            raise RuntimeError(
                f"{names} did not answer {kind!r} within {timeout_s:.0f} s (stacks on stderr; "
                "a fresh sender took the place of each)"
            )
        replies: list[Any] = []
        for proc, answer in zip(self._procs, answers, strict=True):
            assert answer is not None
            got, payload = answer
            if got != kind:
                raise RuntimeError(f"{proc.name} answered {got!r}, not {kind!r}: {payload!s:.300}")
            replies.append(payload)
        return replies

    @staticmethod
    def _answer(
        conn: multiprocessing.connection.Connection, command: int, give_up_at: float
    ) -> tuple[str, Any] | None:
        """A sender's answer to ``command`` by ``give_up_at`` (earlier answers are dropped)."""
        while conn.poll(max(0.0, give_up_at - time.monotonic())):
            got_command, got, payload = conn.recv()
            if got_command == command:
                return got, payload
        return None

    def _replace(self, index: int) -> None:
        """Stop a stuck sender (after it dumped its stacks) and start a fresh one."""
        proc = self._procs[index]
        if proc.pid is not None and proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, STACK_DUMP_SIGNAL)
            proc.join(timeout=1)  # the dump is written by then; the sender carries on
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._conns[index].close()
        self._conns[index], self._procs[index] = self._spawn(index)
        self._prepared = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_all("close")
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------- sender side


class Client(Protocol):
    """What a sender drives: `fire` each call at its time (never waiting for the reply), then
    `wait_all` for the records of every call fired since the last `wait_all` (bounded)."""

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None: ...
    def wait_all(self, until: float) -> list[RawRecord]: ...
    def close(self) -> None: ...


# Makes a Client inside a sender process. It crosses to the spawned senders by pickling: a
# module-level function, a functools.partial of one, or an instance of a module-level class.
ClientFactory = Callable[[], Client]


def _sender_main(conn: multiprocessing.connection.Connection) -> None:
    """Sender process: prepare / run / close commands from the parent, until close or EOF.

    Each command comes as ``(id, kind, *args)`` and its reply goes back as ``(id, kind,
    payload)``. STACK_DUMP_SIGNAL makes it write every thread's stack to stderr.
    """
    faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)
    client: Client | None = None
    # Not permitted (no root/CAP_SYS_NICE): run at normal priority; the niceness is reported.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, SENDER_NICENESS)
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    # Hand the GIL over sooner (default 5 ms) so the firing thread is not held up by the
    # threads that run the reply callbacks.
    sys.setswitchinterval(SENDER_SWITCH_INTERVAL_S)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            command, kind, *args = message
            if kind == "close":
                return
            if kind in ("prepare", "prepare_client"):
                if client is not None:
                    client.close()
                    client = None
                try:
                    client = _make_client(*args) if kind == "prepare" else args[0]()
                except Exception as exc:
                    what = (
                        f"connect to {args[0].address}"
                        if kind == "prepare"
                        else f"make a client with {args[0]!r}"
                    )
                    conn.send((command, "failed", f"cannot {what}: {exc!r}"))
                else:
                    conn.send((command, "ready", niceness))
            elif kind == "run":
                if client is None:
                    conn.send((command, "failed", "run before prepare"))
                    continue
                schedule, start_at, deadline_s = args
                cpu_before = time.process_time()
                raws = _fire_schedule(client, schedule, start_at, deadline_s)
                conn.send((command, "records", (raws, time.process_time() - cpu_before)))
    finally:
        if client is not None:
            client.close()


def _make_client(target: Target, work: Work) -> Client:
    if target.protocol == "grpc":
        return _GrpcClient(target, work)
    return _HttpClient(target, work)


def _fire_schedule(
    client: Client, schedule: Sequence[float], start_at: float, deadline_s: float
) -> list[RawRecord]:
    for scheduled_s in schedule:
        due = start_at + scheduled_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.fire(scheduled_s, due, deadline_s)
    last_due = start_at + (schedule[-1] if schedule else 0.0)
    return client.wait_all(until=last_due + deadline_s + REPLY_GRACE_S)


class Outstanding:
    """Counts calls in flight; `wait_zero` blocks (bounded) until all have reported."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def add(self) -> None:
        with self._cond:
            self._count += 1

    def done(self) -> None:
        with self._cond:
            self._count -= 1
            if self._count == 0:
                self._cond.notify_all()

    def wait_zero(self, until: float) -> int:
        with self._cond:
            while self._count > 0:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._count

    def collect(self, records: list[RawRecord], until: float) -> list[RawRecord]:
        """Wait (until ``until``) for the calls in flight, then move every record out of
        ``records``; a call that never reported (cannot happen with timeouts set) becomes an
        error record, so no request is lost silently."""
        left = self.wait_zero(until)
        taken = records.copy()
        del records[: len(taken)]  # a straggler's record appended meanwhile stays for later
        return taken + [(0.0, 0.0, Outcome.ERROR.value, "no reply", 0, 0.0)] * left


#: How many connections a sender may redial to spread them over the server's processes.
SPREAD_REDIALS = 64


def even_channels(requested: int, processes: int) -> int:
    """How many connections a sender opens to a server of ``processes`` processes: the
    multiple of ``processes`` nearest ``requested`` (at least one each), so that round robin
    over them, once spread (`spread_plan`), gives every process the same share of the calls.
    4 connections over 3 processes land 2:1:1, and with two senders as 4:2:2 at worst: the
    crowded process then gets half the load, refuses some of it while the others idle, and
    the bench measures the spread instead of the server. rpckit's own client balances calls
    over the processes by their load reports (pure)."""
    if requested < 1 or processes < 1:
        raise ValueError("requested and processes must be >= 1")
    if processes == 1:
        return requested
    return processes * max(1, round(requested / processes))


def spread_plan(pids: Sequence[int], processes: int) -> int | None:
    """Which connection to redial so that ``pids`` (the server process behind each connection)
    spread evenly over ``processes`` processes, or None when they already do: as many distinct
    processes as there can be, each holding ``len(pids) // processes`` connections or one more.
    The one to redial is a connection of the most crowded process (pure)."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    if not pids:
        return None
    counts = Counter(pids)
    low, extra = divmod(len(pids), processes)
    high = low + (1 if extra else 0)
    if (
        len(counts) >= min(len(pids), processes)
        and max(counts.values()) <= high
        and min(counts.values()) >= low
    ):
        return None
    crowded = max(counts, key=lambda pid: counts[pid])
    return max(i for i, pid in enumerate(pids) if pid == crowded)


class FutureCalls:
    """An open-loop gRPC client: each call fired as a grpc future on schedule, with the time
    left of its deadline as timeout, its outcome recorded when it ends.

    Subclasses say which multicallable takes the next call (``_pick``) and which server
    process answered a call (``_pid``).
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self._records: list[RawRecord] = []
        self._outstanding = Outstanding()

    def _pick(self) -> Any:
        raise NotImplementedError

    def _pid(self, future: Any, outcome: Outcome) -> int:
        raise NotImplementedError

    def _describe(self, future: Any, code_name: str) -> str:
        """What a call that did not end OK is recorded under (its code; a subclass may add
        the status message)."""
        del future
        return code_name

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None:
        now = time.monotonic()
        remaining = due + deadline_s - now
        if remaining <= 0:
            self._records.append(
                (scheduled_s, now - due, Outcome.DEADLINE.value, "not sent", 0, now - due)
            )
            return
        call = self._pick()
        self._outstanding.add()
        try:
            future = call.future(self._request, timeout=remaining)
        except BaseException:
            self._outstanding.done()
            raise
        future.add_done_callback(
            functools.partial(self._on_done, scheduled_s, due, deadline_s, now - due)
        )

    def _on_done(
        self, scheduled_s: float, due: float, deadline_s: float, lag: float, future: Any
    ) -> None:
        try:
            latency = time.monotonic() - due
            outcome, code_name = classify_grpc(future.code().name, latency, deadline_s)
            if outcome is not Outcome.OK:
                code_name = self._describe(future, code_name)
            pid = self._pid(future, outcome)
            self._records.append((scheduled_s, latency, outcome.value, code_name, pid, lag))
        finally:
            self._outstanding.done()

    def wait_all(self, until: float) -> list[RawRecord]:
        return self._outstanding.collect(self._records, until)


class _GrpcClient(FutureCalls):
    def __init__(self, target: Target, work: Work) -> None:
        import grpc

        from bench._gen.benchwork.v1 import work_pb2

        super().__init__(
            work_pb2.DoRequest(
                cpu_ms=work.cpu_ms, wait_ms=work.wait_ms, payload=b"x" * work.payload_bytes
            )
        )
        self._grpc = grpc
        self._target = target
        self._dials = 0
        self._channels = [self._dial() for _ in range(target.channels_per_sender)]
        self._calls = [self._method(channel) for channel in self._channels]
        if target.processes > 1:
            self._spread(target.processes)
        self._next = 0

    def _dial(self) -> Any:
        # A local subchannel pool (plus a distinct arg) gives each channel its own TCP
        # connection instead of sharing one per target.
        channel = self._grpc.insecure_channel(
            self._target.address,
            options=[("grpc.use_local_subchannel_pool", 1), ("bench.channel_index", self._dials)],
        )
        self._dials += 1
        self._grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        return channel

    def _method(self, channel: Any) -> Any:
        from bench._gen.benchwork.v1 import work_pb2

        return channel.unary_unary(
            WORK_METHOD,
            request_serializer=work_pb2.DoRequest.SerializeToString,
            response_deserializer=work_pb2.DoResponse.FromString,
        )

    def _spread(self, processes: int) -> None:
        """Redial until the connections are spread evenly over the server's processes."""
        from bench._gen.benchwork.v1 import work_pb2

        probe = work_pb2.DoRequest(cpu_ms=0, wait_ms=0)
        pids = [call(probe, timeout=CONNECT_TIMEOUT_S).pid for call in self._calls]
        for _ in range(SPREAD_REDIALS):
            plan = spread_plan(pids, processes)
            if plan is None:
                return
            self._channels[plan].close()
            self._channels[plan] = self._dial()
            self._calls[plan] = self._method(self._channels[plan])
            pids[plan] = self._calls[plan](probe, timeout=CONNECT_TIMEOUT_S).pid
        raise RuntimeError(
            f"could not spread {len(pids)} connections over {processes} server processes in "
            f"{SPREAD_REDIALS} redials (pids {sorted(pids)}): is the server running that many?"
        )

    def _pick(self) -> Any:
        call = self._calls[self._next % len(self._calls)]
        self._next += 1
        return call

    def _pid(self, future: Any, outcome: Outcome) -> int:
        return int(future.result().pid) if outcome is Outcome.OK else 0

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


class _HttpClient:
    """Thread per in-flight request, each with its own keep-alive connection."""

    def __init__(self, target: Target, work: Work) -> None:
        self._host, self._port = check_loopback(target.address)
        self._max_threads = target.max_http_threads
        self._body = json.dumps(
            {
                "cpu_ms": work.cpu_ms,
                "wait_ms": work.wait_ms,
                "payload": base64.b64encode(b"x" * work.payload_bytes).decode(),
            }
        ).encode()
        # Epoch time of monotonic 0, for the X-Request-Deadline header.
        self._epoch_offset = time.time() - time.monotonic()
        self._jobs: queue.SimpleQueue[tuple[float, float, float, float] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._records: list[RawRecord] = []
        self._outstanding = Outstanding()
        # Open a few connections up front so the first arrivals do not all pay for a connect.
        self._prewarm = [self._connect(CONNECT_TIMEOUT_S) for _ in range(4)]

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        conn.connect()
        return conn

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None:
        lag = time.monotonic() - due
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._max_threads:
                conn = self._prewarm.pop() if self._prewarm else None
                thread = threading.Thread(target=self._worker, args=(conn,), daemon=True)
                self._threads.append(thread)
                thread.start()
            # else: all threads busy; the job waits in the queue and its latency shows it
        self._outstanding.add()
        self._jobs.put((scheduled_s, due, deadline_s, lag))

    def _worker(self, conn: http.client.HTTPConnection | None) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            try:
                conn = self._exchange(conn, *job)
            finally:
                self._outstanding.done()
                with self._lock:
                    self._idle += 1
        if conn is not None:
            conn.close()

    def _exchange(
        self,
        conn: http.client.HTTPConnection | None,
        scheduled_s: float,
        due: float,
        deadline_s: float,
        lag: float,
    ) -> http.client.HTTPConnection | None:
        """One request (retried once if a reused keep-alive connection turned out closed).

        Its lag is measured now, as it leaves: a request that waited in this client for a
        free thread was sent late, and its lag says so.
        """
        lag = max(lag, time.monotonic() - due)
        headers = {
            "Content-Type": "application/json",
            DEADLINE_HEADER: str(round((self._epoch_offset + due + deadline_s) * 1000)),
        }
        for attempt in range(2):
            remaining = due + deadline_s - time.monotonic()
            if remaining <= 0:
                self._record(scheduled_s, due, Outcome.DEADLINE, "not sent", 0, lag)
                return conn
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect(remaining)
                conn.timeout = remaining
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                conn.request("POST", HTTP_WORK_PATH, body=self._body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except TimeoutError:
                self._record(scheduled_s, due, Outcome.DEADLINE, "timeout", 0, lag)
                _discard(conn)
                return None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                _discard(conn)
                conn = None
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection: once more on a fresh one
                self._record(scheduled_s, due, Outcome.ERROR, type(exc).__name__, 0, lag)
                return conn
            except (OSError, http.client.HTTPException) as exc:
                self._record(scheduled_s, due, Outcome.ERROR, type(exc).__name__, 0, lag)
                _discard(conn)
                return None
            latency = time.monotonic() - due
            outcome, code = classify_http(response.status, latency, deadline_s)
            pid = _reply_pid(data) if outcome is Outcome.OK else 0
            self._records.append((scheduled_s, latency, outcome.value, code, pid, lag))
            if response.will_close:
                _discard(conn)
                return None
            return conn
        self._record(scheduled_s, due, Outcome.ERROR, "retry failed", 0, lag)  # not reached
        return conn

    def _record(
        self, scheduled_s: float, due: float, outcome: Outcome, code: str, pid: int, lag: float
    ) -> None:
        self._records.append((scheduled_s, time.monotonic() - due, outcome.value, code, pid, lag))

    def wait_all(self, until: float) -> list[RawRecord]:
        return self._outstanding.collect(self._records, until)

    def close(self) -> None:
        """Stop the threads (each ends after its request, which has a timeout); waits at most
        CLOSE_TIMEOUT_S in all, whatever the number of threads."""
        for _ in self._threads:
            self._jobs.put(None)
        give_up_at = time.monotonic() + CLOSE_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, give_up_at - time.monotonic()))
        for conn in self._prewarm:
            conn.close()


def _discard(conn: http.client.HTTPConnection | None) -> None:
    if conn is not None:
        conn.close()


def _reply_pid(data: bytes) -> int:
    try:
        return int(json.loads(data)["pid"])
    except (ValueError, KeyError, TypeError):
        return 0

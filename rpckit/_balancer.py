"""The balanced channel: one ``grpc.Channel`` over many backends, for generated stubs unchanged.

    channel = rpckit.BalancedChannel(["10.0.0.7:50051", "10.0.0.8:50051"])   # or "dns:///inv:50051"
    stub = inventory_pb2_grpc.InventoryStub(channel)
    stub.GetItem(inventory_pb2.GetItemRequest(sku="A-1"), timeout=2)

This module is the I/O adapter around rpckit's pure policies; it decides
nothing they already decide::

    discovery (_discovery) --> backends --> N grpc channels each (distinct TCP connections)
                                   |            |  one health watch thread per connection
    call --> deadline (_deadline) --> P2C over eligible backends (_p2c), minus ejected (_outlier)
                                   --> least-loaded connection (by server process)
         <-- response + rpckit-load-bin trailer: latency, queue depth, outcome fed back
         on failure: retry_decision / backoff_s / RetryBudget (_retry), on another backend

* **Eligible** backends have a connection whose ``grpc.health.v1.Health/Watch``
  says SERVING. NOT_SERVING, or a watch that breaks, takes the connection out
  of rotation at once, and a NOT_SERVING watch is cancelled right after
  (100 ms), so a draining server is not held by it; the connection is then polled with
  ``Check`` (jittered exponential backoff) until it serves again. A server
  without the health service (UNIMPLEMENTED) is taken as serving.
* **Connections**: ``connections_per_backend`` grpc channels per backend, made
  distinct by ``grpc.use_local_subchannel_pool`` and a per-connection dummy
  argument. A multi-process host (``rpckit serve --workers N``) balances
  connections, not calls, over its processes (SO_REUSEPORT); the load report
  names the process (pid), so a connection that lands on a process another
  connection already reaches is redialed (``worker_redials``), and each call
  goes to the connection whose process has the least work.
* **Feedback**: every response's ``rpckit-load-bin`` trailer (success or
  error; for futures and streams, when they end) updates the server's queue
  depth; unary calls that the server answered without a fault (or that
  timed out) also give a latency sample (streams, which may last for
  minutes, do not; nor do fast failures, which would draw more calls);
  outcomes feed outlier ejection.
* **Retries**, only when safe (see :func:`rpckit._retry.retry_decision`): the
  call never reached a handler (connect failure, a draining server's refusal,
  an admission rejection with ``grpc-retry-pushback-ms``), or the method is
  idempotent (``option idempotency_level`` in its proto, read from protobuf's
  default descriptor pool). Another backend, jittered backoff (or the
  server's pushback), within the caller's deadline and the retry budget.
  Unary-unary calls retry; unary-stream calls retry until their first
  message; client-streaming calls never do (their requests cannot be replayed).
* **Deadlines**: inside an rpckit handler the inbound deadline minus a margin
  is every call's ceiling; an explicit ``timeout`` can only shorten it
  (:func:`rpckit._deadline.outbound_timeout`). One deadline covers all
  attempts of a call.

Threads: one scheduler (re-resolution, delayed retries of futures, closing
retired connections, connectivity callbacks) and one health thread per
connection, all daemons, all stopped and joined by :meth:`BalancedChannel.close`.
All policy state sits behind one lock; no I/O happens under it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpckit._deadline import NO_DEADLINE_S, OUTBOUND_MARGIN_S, outbound_timeout
from rpckit._discovery import Discovery, DnsTarget, Resolver, parse_targets
from rpckit._load import load_from_metadata
from rpckit._outlier import OutlierConfig, OutlierDetector
from rpckit._p2c import BackendLoad, PickerConfig, pick
from rpckit._retry import (
    STATUS_CODE_NAMES,
    AdaptiveThrottle,
    AdaptiveThrottleConfig,
    RetryBudget,
    RetryBudgetConfig,
    backoff_s,
    retry_decision,
)
from rpckit.v1 import load_pb2

__all__ = ["BackendStatus", "BalancedChannel", "BalancedChannelConfig", "ConnectionStatus"]

_log = logging.getLogger("rpckit.client")

PUSHBACK_METADATA_KEY = "grpc-retry-pushback-ms"
"""gRPC's server pushback trailer (proposal A6): milliseconds to wait before a retry."""

_NEVER_SENT_PREFIXES = (
    "failed to connect to all addresses",  # grpc core: no connection to pick (refused, drained)
    "DNS resolution failed",  # grpc core: a host-name target did not resolve
    "empty address list",  # grpc core: the name resolved to nothing
)
"""How grpc core words a call it failed before sending it (checked only without server trailers)."""

_ADMISSION_PREFIX = "rpckit: "
"""rpckit servers start their admission rejections' details with this (see _handlers)."""

_BACKEND_FAULTS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
"""Codes that count against a backend for outlier ejection (the _outlier docstring's list).
Admission rejections (details starting "rpckit: ") are overload, not faults: P2C steers by
the queue depth those servers report instead."""

_OVERLOAD_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
"""Codes that mean the backend did not accept the call (adaptive throttling's "rejects")."""

_IDEMPOTENT_LEVELS = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)

_JOIN_TIMEOUT_S = 5.0
"""close() waits at most this long for each thread (they end in milliseconds once cancelled)."""

_WATCH_CANCEL_DELAY_S = 0.1
"""A watch that said NOT_SERVING is cancelled this long after (the connection is out of
rotation at once). grpcio-health-checking's HealthServicer.set() holds its lock while it
sends to each watcher, and a watch's close callback takes that lock on the server's only
event thread: a cancel arriving in the middle of set() deadlocks that server. 100 ms lets
set() finish; it is nothing next to a drain period."""

_MAX_PIDS_REMEMBERED = 64
"""Per backend, server process ids remembered to spot a new process (bounded across restarts)."""


# ---------------------------------------------------------------- config


def _check_number(name: str, value: float, *, low: float, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"BalancedChannelConfig.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"BalancedChannelConfig.{name} must be finite and {bound}, got {value!r}")


def _check_int(name: str, value: int, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"BalancedChannelConfig.{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"BalancedChannelConfig.{name} must be >= {low}, got {value!r}")


def _check_type(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"BalancedChannelConfig.{name} has the wrong type: {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BalancedChannelConfig:
    """How a :class:`BalancedChannel` balances, checks health, retries and discovers backends.

    Every field is validated on construction; the nested configs carry the
    policies' own documented defaults.
    """

    connections_per_backend: int = 2
    """grpc channels (TCP connections) per backend. 2: reaches both processes of a
    ``--workers 2`` host (with ``worker_redials``) and keeps a backend in rotation
    through one broken connection. DESIGN.md: "several per multi-process host"."""

    worker_redials: int = 10
    """A connection that reaches the same server process as another connection of
    its backend is closed and redialed, up to this many times in a row without
    finding a new process (a new process resets the count). SO_REUSEPORT places
    each connection on a random process, so with two processes a process is
    missed only with probability 2^-10; a single-process host costs this many
    extra connects per extra connection, once."""

    max_attempts: int = 3
    """Attempts per call, the first included. 3: enough to pass one dead and one
    draining backend; the retry budget, not this, bounds the extra load in an
    outage (gRPC's own retry policy caps attempts at 5)."""

    retry_budget: RetryBudgetConfig = dataclasses.field(default_factory=RetryBudgetConfig)
    """Retries may be at most 20% of requests plus 10/s over 10 s (Finagle; DESIGN.md)."""

    adaptive_throttle: AdaptiveThrottleConfig | None = None
    """Client-side adaptive throttling (SRE book, K = 2), or None (the default) for
    none: it fails calls locally, which a caller should opt into."""

    picker: PickerConfig = dataclasses.field(default_factory=PickerConfig)
    """P2C's peak-EWMA parameters (10 s decay, 30 ms start, 2 s report TTL)."""

    outlier: OutlierConfig | None = dataclasses.field(default_factory=OutlierConfig)
    """Outlier ejection (5 consecutive failures or < 80% success over 30 s; at most
    half the backends out), or None to disable it."""

    health_check: bool = True
    """Watch ``grpc.health.v1.Health`` on every connection. False: every
    connection is taken as serving, and only outlier ejection removes backends."""

    health_service: str = ""
    """The service name to watch; "" is the whole server, which an rpckit server
    turns NOT_SERVING when it starts draining."""

    health_backoff_initial_s: float = 0.1
    """First wait before re-checking a connection that is not serving, doubled (with
    jitter) up to ``health_backoff_max_s``. Also grpc's reconnect backoff. 100 ms:
    a restarted backend is found quickly without polling a dead one hard."""

    health_backoff_max_s: float = 5.0
    """Longest wait between checks of a connection that is not serving, so a backend
    back from a restart is in rotation within ~5 s (grpc's own default reaches 120 s)."""

    health_check_timeout_s: float = 2.0
    """Timeout of one ``Health/Check`` while polling. rpckit servers answer health
    from a side pool, so a busy server still answers well within it."""

    wait_for_backend_s: float = 5.0
    """A call that finds no serving backend while some are still connecting (or DNS
    has not answered yet) waits this long at most (within its deadline) for one,
    instead of failing; with none connecting it fails at once (UNAVAILABLE). Like
    grpc's calls on a CONNECTING channel. 5 s covers a first connect and check."""

    resolve_interval_s: float = 30.0
    """DNS targets are re-resolved this often. 30 s: grpc's minimum re-resolution
    period and a common DNS TTL (Kubernetes headless services, Consul)."""

    deadline_margin_s: float = OUTBOUND_MARGIN_S
    """Taken off the inbound deadline for calls made inside a handler (5 ms, _deadline)."""

    idempotent_methods: frozenset[str] = frozenset()
    """Method paths (``/pkg.Service/Method``) to treat as idempotent in addition to
    those whose proto says so (for methods without a descriptor in the pool)."""

    def __post_init__(self) -> None:
        _check_int("connections_per_backend", self.connections_per_backend, low=1)
        _check_int("worker_redials", self.worker_redials, low=0)
        _check_int("max_attempts", self.max_attempts, low=1)
        _check_type("retry_budget", self.retry_budget, RetryBudgetConfig)
        _check_type(
            "adaptive_throttle", self.adaptive_throttle, (AdaptiveThrottleConfig, type(None))
        )
        _check_type("picker", self.picker, PickerConfig)
        _check_type("outlier", self.outlier, (OutlierConfig, type(None)))
        _check_type("health_check", self.health_check, bool)
        _check_type("health_service", self.health_service, str)
        _check_number("health_backoff_initial_s", self.health_backoff_initial_s, low=0, strict=True)
        _check_number(
            "health_backoff_max_s",
            self.health_backoff_max_s,
            low=self.health_backoff_initial_s,
            strict=False,
        )
        _check_number("health_check_timeout_s", self.health_check_timeout_s, low=0, strict=True)
        _check_number("wait_for_backend_s", self.wait_for_backend_s, low=0, strict=False)
        _check_number("resolve_interval_s", self.resolve_interval_s, low=0, strict=True)
        _check_number("deadline_margin_s", self.deadline_margin_s, low=0, strict=False)
        if isinstance(self.idempotent_methods, str):
            raise TypeError("BalancedChannelConfig.idempotent_methods must be a set of paths")
        methods = frozenset(self.idempotent_methods)
        for path in methods:
            if not _is_method_path(path):
                raise ValueError(
                    "BalancedChannelConfig.idempotent_methods: expected /package.Service/Method, "
                    f"got {path!r}"
                )
        object.__setattr__(self, "idempotent_methods", methods)


def _is_method_path(path: object) -> bool:
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    service, sep, name = path[1:].partition("/")
    return bool(sep and service and name and "/" not in name)


# ---------------------------------------------------------------- status snapshot


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionStatus:
    """One connection of a backend, as :meth:`BalancedChannel.backends` saw it."""

    health: str
    """"unknown" (no answer yet), "serving", "not_serving" or "unreachable"."""
    outstanding: int
    """Calls in flight on this connection."""
    worker_pid: int | None
    """The server process that last answered on it (from the load report), if known."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendStatus:
    """One backend, as :meth:`BalancedChannel.backends` saw it."""

    address: str
    serving: bool
    """At least one connection says SERVING: the backend may get new calls."""
    ejected: bool
    """Out of rotation by outlier ejection (or awaiting its probe)."""
    outstanding: int
    """Calls in flight."""
    latency_s: float
    """The peak-EWMA latency estimate P2C uses."""
    connections: tuple[ConnectionStatus, ...]


# ---------------------------------------------------------------- internals


class _Health(enum.Enum):
    UNKNOWN = "unknown"
    SERVING = "serving"
    NOT_SERVING = "not_serving"
    UNREACHABLE = "unreachable"


class _Backend:
    """A backend address: its P2C load and its connections. Guarded by the channel's lock."""

    __slots__ = ("address", "connections", "load", "pids_seen", "redial_misses", "retired")

    def __init__(self, address: str, load: BackendLoad) -> None:
        self.address = address
        self.load = load
        self.connections: list[_Connection] = []
        self.retired = False
        self.pids_seen: set[int] = set()
        self.redial_misses = 0


class _Connection:
    """One grpc channel to a backend. Mutable fields are guarded by the channel's lock."""

    __slots__ = (
        "backend",
        "callables",
        "channel",
        "closed",
        "health",
        "outstanding",
        "pid",
        "queue_depth",
        "reported_at",
        "retired",
        "slot",
        "stop",
        "watch_call",
    )

    def __init__(self, backend: _Backend, slot: int, channel: grpc.Channel, health: _Health):
        self.backend = backend
        self.slot = slot
        self.channel = channel
        self.health = health
        self.outstanding = 0
        self.pid: int | None = None
        self.queue_depth = 0
        self.reported_at: float | None = None
        self.retired = False  # no new calls; closed once the last one ends
        self.closed = False
        self.stop = threading.Event()  # ends the health watch
        self.watch_call: Any = None
        self.callables: dict[tuple[Any, ...], Any] = {}

    def callable(self, method: _Method) -> Any:
        """The grpc multicallable for ``method`` on this connection (cached when hashable)."""
        inner = self.callables.get(method.key) if method.key is not None else None
        if inner is None:
            factory = getattr(self.channel, method.kind)
            inner = factory(
                method.path,
                request_serializer=method.request_serializer,
                response_deserializer=method.response_deserializer,
                _registered_method=method.registered,
            )
            if method.key is not None:
                self.callables[method.key] = inner
        return inner


@dataclasses.dataclass(frozen=True, eq=False)
class _Method:
    kind: str  # the grpc.Channel factory: "unary_unary", "unary_stream", ...
    path: str
    request_serializer: Callable[..., Any] | None
    response_deserializer: Callable[..., Any] | None
    registered: bool
    idempotent: bool
    key: tuple[Any, ...] | None  # the per-connection cache key; None when unhashable


@dataclasses.dataclass(eq=False)
class _Choice:
    """The backend and connection one attempt went to, and when it started."""

    backend: _Backend
    connection: _Connection
    started: float


@dataclasses.dataclass(eq=False)
class _Plan:
    """One logical call: its deadline and the attempts made so far."""

    method: _Method
    deadline: float | None
    wait_for_ready: bool
    attempts: int = 0
    tried: set[str] = dataclasses.field(default_factory=set)

    def attempt_timeout(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


@dataclasses.dataclass(frozen=True)
class _CallOptions:
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None

    def grpc_kwargs(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata,
            "credentials": self.credentials,
            "wait_for_ready": self.wait_for_ready,
            "compression": self.compression,
        }


def _method_key(kind: str, path: str, *parts: Any) -> tuple[Any, ...] | None:
    key = (kind, path, *parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _idempotent_in_pool(path: str) -> bool:
    """Whether the proto declares ``/pkg.Service/Method`` NO_SIDE_EFFECTS or IDEMPOTENT.

    Looked up in protobuf's default descriptor pool, which holds every
    imported ``_pb2`` module (generated stubs import theirs). Unknown: False.
    """
    if not _is_method_path(path):
        return False
    service, _, name = path[1:].partition("/")
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return False
    return method.GetOptions().idempotency_level in _IDEMPOTENT_LEVELS


def _pushback_ms(trailers: Iterable[Any] | None) -> int | None:
    """The ``grpc-retry-pushback-ms`` trailer; -1 (do not retry) when unparseable."""
    for key, value in trailers or ():
        if key == PUSHBACK_METADATA_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            try:
                return int(text)
            except ValueError:
                return -1
    return None


def _reached_handler(details: str, trailers: Sequence[Any]) -> bool | None:
    """False when the failed call certainly never reached a handler; None when unknown.

    Errors grpc core makes up in the client carry no trailers; an rpckit
    server's errors always carry its load report, so a handler relaying a
    downstream "failed to connect" is not mistaken for one.
    """
    if not trailers and details.startswith(_NEVER_SENT_PREFIXES):
        return False
    if details.startswith(_ADMISSION_PREFIX) and any(
        key == PUSHBACK_METADATA_KEY for key, _ in trailers
    ):
        return False  # rejected by admission control, which runs before the handler
    return None


def _status(inner: Any) -> tuple[grpc.StatusCode | None, Sequence[Any], str]:
    """(code, trailing metadata, details) of a finished grpc call or RpcError."""
    try:
        code = inner.code()
        trailers = tuple(inner.trailing_metadata() or ())
        details = inner.details() or ""
    except Exception:  # noqa: BLE001 - a call object in an odd state tells nothing
        return None, (), ""
    return code, trailers, str(details)


# ---------------------------------------------------------------- scheduler


class _Job:
    __slots__ = ("cancelled", "fn", "on_drop")

    def __init__(self, fn: Callable[[], None], on_drop: Callable[[], None] | None) -> None:
        self.fn = fn
        self.on_drop = on_drop
        self.cancelled = False


class _Scheduler:
    """One daemon thread running jobs at their time, in order. Jobs left at close() are dropped
    (their ``on_drop`` runs instead)."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(
        self, delay_s: float, fn: Callable[[], None], on_drop: Callable[[], None] | None = None
    ) -> _Job | None:
        job = _Job(fn, on_drop)
        with self._cond:
            if not self._closed:
                heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._order), job))
                self._cond.notify()
                return job
        if on_drop is not None:
            on_drop()
        return None

    def call_soon(self, fn: Callable[[], None], on_drop: Callable[[], None] | None = None) -> None:
        self.call_later(0.0, fn, on_drop)

    @staticmethod
    def cancel(job: _Job) -> None:
        job.cancelled = True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            dropped = [job for _, _, job in self._heap]
            self._heap.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_TIMEOUT_S)
        for job in dropped:
            if not job.cancelled and job.on_drop is not None:
                _run_safely(job.on_drop)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait_s = self._heap[0][0] - time.monotonic()
                        if wait_s <= 0:
                            break
                        self._cond.wait(wait_s)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._heap)
            if not job.cancelled:
                _run_safely(job.fn)


def _run_safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a callback's bug must not kill the channel's thread
        _log.exception("rpckit balanced channel: background job %r failed", fn)


# ---------------------------------------------------------------- local errors


class _LocalRpcError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A call that failed in the client before any backend saw it (no backend, closed, throttled).

    Like grpcio's own failed calls it is at once the exception, the call and a
    finished future, and iterating it (a failed stream) raises it.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def __str__(self) -> str:
        return f"<rpckit RpcError: status = {self._code}, details = {self._details!r}>"

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[Any, ...]:
        return ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpcio: None without a deadline
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise self


# ---------------------------------------------------------------- the channel


class BalancedChannel(grpc.Channel):
    """A ``grpc.Channel`` that spreads calls over many backends (see the module docstring).

    ``targets`` is one target or a list: ``"host:port"``, ``"[v6]:port"`` or
    ``"dns:///name:port"`` (every A/AAAA record, re-resolved every
    ``resolve_interval_s``). ``resolver`` replaces DNS (``(host, port) ->
    [(address, port)]``), e.g. in tests. ``credentials`` makes every
    connection TLS; ``options`` are extra grpc channel arguments.

    Generated stubs work unchanged, for all four call shapes; unary calls
    support ``__call__``, ``with_call`` and ``future``. Close it (or use it as
    a context manager): it owns threads and connections.
    """

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        config: BalancedChannelConfig | None = None,
        resolver: Resolver | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if config is not None and not isinstance(config, BalancedChannelConfig):
            raise TypeError(f"config must be a BalancedChannelConfig, got {config!r}")
        self._config = config if config is not None else BalancedChannelConfig()
        self._discovery = Discovery(parse_targets(targets), resolver)
        self._credentials = credentials
        self._options = tuple(options)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a backend became usable, or closed
        self._rng = random.Random()  # noqa: S311 - P2C draws and jitter, not secrets
        self._backends: dict[str, _Backend] = {}
        self._open: set[_Connection] = set()
        self._watchers: set[threading.Thread] = set()
        outlier = self._config.outlier
        self._outlier: OutlierDetector[str] | None = (
            OutlierDetector(outlier) if outlier is not None else None
        )
        self._budget = RetryBudget(self._config.retry_budget)
        throttle = self._config.adaptive_throttle
        self._throttle = AdaptiveThrottle(throttle) if throttle is not None else None
        self._slots = itertools.count()
        self._closed = False
        self._closed_event = threading.Event()
        self._resolved = not self._discovery.dynamic
        self._resolution_errors: tuple[str, ...] = ()
        self._subscribers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._connectivity = grpc.ChannelConnectivity.IDLE
        self._scheduler = _Scheduler("rpckit-balancer-scheduler")
        try:
            self._set_addresses(self._discovery.static_addresses())
            if self._discovery.dynamic:
                self._scheduler.call_soon(self._refresh)
        except BaseException:
            self.close()
            raise

    @property
    def config(self) -> BalancedChannelConfig:
        """The configuration in force."""
        return self._config

    # -------------------------------------------------------------- grpc.Channel

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        return _UnaryUnary(
            self,
            self._method(
                "unary_unary", method, request_serializer, response_deserializer, _registered_method
            ),
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:
        return _UnaryStream(
            self,
            self._method(
                "unary_stream",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:
        return _StreamUnary(
            self,
            self._method(
                "stream_unary",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:
        return _StreamStream(
            self,
            self._method(
                "stream_stream",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Call ``callback(state)`` now and on every change, from the channel's thread.

        The state summarises the backends: READY when one is serving,
        CONNECTING while some have not answered yet, TRANSIENT_FAILURE when
        none serves, SHUTDOWN once closed. (Connections are always being
        made, so ``try_to_connect`` changes nothing.)
        """
        del try_to_connect
        with self._lock:
            closed = self._closed
            if not closed:
                self._subscribers.append(callback)
                state = self._connectivity
        if closed:
            _run_safely(functools.partial(callback, grpc.ChannelConnectivity.SHUTDOWN))
        else:
            self._scheduler.call_soon(functools.partial(callback, state))

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def close(self) -> None:
        """Stop every thread, close every connection; calls in flight end CANCELLED. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closed_event.set()
            connections = list(self._open)
            self._open.clear()
            for conn in connections:
                conn.retired = conn.closed = True
            watchers = list(self._watchers)
            subscribers = list(self._subscribers)
            self._subscribers.clear()
            self._connectivity = grpc.ChannelConnectivity.SHUTDOWN
            self._changed.notify_all()
        self._scheduler.close()
        for conn in connections:
            self._stop_watch(conn)
        for conn in connections:
            conn.channel.close()
        current = threading.current_thread()
        for thread in watchers:
            if thread is not current:
                thread.join(_JOIN_TIMEOUT_S)
        for callback in subscribers:
            _run_safely(functools.partial(callback, grpc.ChannelConnectivity.SHUTDOWN))

    def __enter__(self) -> BalancedChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------- introspection

    def backends(self) -> tuple[BackendStatus, ...]:
        """A snapshot of every current backend: health, ejection, load, connections."""
        now = time.monotonic()
        with self._lock:
            ejected = self._outlier.ejected() if self._outlier is not None else frozenset()
            return tuple(
                BackendStatus(
                    address=b.address,
                    serving=bool(self._serving_connections(b)),
                    ejected=b.address in ejected,
                    outstanding=b.load.outstanding,
                    latency_s=b.load.latency_at(now),
                    connections=tuple(
                        ConnectionStatus(
                            health=c.health.value, outstanding=c.outstanding, worker_pid=c.pid
                        )
                        for c in b.connections
                    ),
                )
                for b in self._backends.values()
            )

    # -------------------------------------------------------------- membership

    def _refresh(self) -> None:
        """Resolve the DNS targets (on the scheduler thread) and apply the answer; reschedule."""
        resolution = self._discovery.resolve()
        if resolution.errors:
            _log.warning("rpckit balanced channel: %s", "; ".join(resolution.errors))
        self._set_addresses(resolution.addresses)
        # Only now: a call waiting for the first answer must find its backends in place.
        with self._lock:
            self._resolved = True
            self._resolution_errors = resolution.errors
            self._changed.notify_all()
            state = self._connectivity_changed_locked()
        if state is not None:
            self._notify(state)
        interval = self._config.resolve_interval_s
        if not resolution.addresses:
            interval = min(interval, 1.0)  # nothing to call: ask again soon
        self._scheduler.call_later(interval, self._refresh)

    def _set_addresses(self, addresses: Sequence[str]) -> None:
        """Make the backend set ``addresses``: open new ones, retire removed ones.

        Called from one thread at a time (the constructor, then the scheduler).
        A removed backend takes no new calls; its calls in flight finish, then
        its connections close.
        """
        with self._lock:
            if self._closed:
                return
            known = set(self._backends)
        wanted = list(dict.fromkeys(addresses))
        fresh = [self._new_backend(a) for a in wanted if a not in known]
        with self._lock:
            closed = self._closed
            if not closed:
                for backend in fresh:
                    self._adopt_locked(backend)
                removed = [self._retire_locked(a) for a in known.difference(wanted)]
                self._changed.notify_all()
                state = self._connectivity_changed_locked()
        if closed:
            for backend in fresh:
                for conn in backend.connections:
                    conn.channel.close()
            return
        for backend in removed:
            for conn in backend.connections:
                # Closed now if idle, else when its last call ends (_finish).
                self._stop_watch(conn)
                if conn.closed:
                    conn.channel.close()
        if fresh or removed:
            _log.info(
                "rpckit balanced channel: backends now %s (added %s, removed %s)",
                wanted,
                [b.address for b in fresh],
                [b.address for b in removed],
            )
        if state is not None:
            self._notify(state)

    def _adopt_locked(self, backend: _Backend) -> None:
        self._backends[backend.address] = backend
        self._open.update(backend.connections)
        if self._outlier is not None:
            self._outlier.add(backend.address)
        for conn in backend.connections:
            self._start_watch_locked(conn)

    def _retire_locked(self, address: str) -> _Backend:
        """Take a backend out; its idle connections are marked closed (the caller closes them)."""
        backend = self._backends.pop(address)
        backend.retired = True
        if self._outlier is not None:
            self._outlier.remove(address)
        for conn in backend.connections:
            conn.retired = True
            self._take_closable_locked(conn)
        return backend

    def _new_backend(self, address: str) -> _Backend:
        backend = _Backend(address, BackendLoad(time.monotonic(), self._config.picker))
        backend.connections = [
            self._new_connection(backend) for _ in range(self._config.connections_per_backend)
        ]
        return backend

    def _new_connection(self, backend: _Backend) -> _Connection:
        """A fresh grpc channel to the backend (grpc connects lazily: no I/O here)."""
        slot = next(self._slots)
        args: dict[str, Any] = {
            "grpc.initial_reconnect_backoff_ms": int(self._config.health_backoff_initial_s * 1000),
            "grpc.max_reconnect_backoff_ms": int(self._config.health_backoff_max_s * 1000),
        }
        args.update(self._options)
        # Distinct TCP connections: no subchannel sharing, and a distinct argument per slot.
        args["grpc.use_local_subchannel_pool"] = 1
        args["rpckit.balancer.connection"] = slot
        options = list(args.items())
        if self._credentials is None:
            channel = grpc.insecure_channel(backend.address, options=options)
        else:
            channel = grpc.secure_channel(backend.address, self._credentials, options=options)
        health = _Health.UNKNOWN if self._config.health_check else _Health.SERVING
        return _Connection(backend, slot, channel, health)

    def _replace_connection(self, old: _Connection) -> None:
        """Redial ``old`` (it reached a server process another connection already reaches)."""
        backend = old.backend
        with self._lock:
            if self._closed or backend.retired or old not in backend.connections:
                return
        new = self._new_connection(backend)
        with self._lock:
            if self._closed or backend.retired or old not in backend.connections:
                discard = True
                closable = False
            else:
                discard = False
                backend.connections[backend.connections.index(old)] = new
                self._open.add(new)
                self._start_watch_locked(new)
                closable = self._take_closable_locked(old)
        if discard:
            new.channel.close()
            return
        _log.debug(
            "rpckit balanced channel: %s connection #%d reached an already connected server "
            "process; redialed as #%d",
            backend.address,
            old.slot,
            new.slot,
        )
        self._stop_watch(old)
        if closable:
            self._shut_connection(old)

    def _take_closable_locked(self, conn: _Connection) -> bool:
        """True (once) when a retired connection has no call left: the caller closes it."""
        if conn.retired and conn.outstanding == 0 and not conn.closed:
            conn.closed = True
            self._open.discard(conn)
            return True
        return False

    def _shut_connection(self, conn: _Connection) -> None:
        self._stop_watch(conn)
        conn.channel.close()

    # -------------------------------------------------------------- health

    def _start_watch_locked(self, conn: _Connection) -> None:
        if not self._config.health_check:
            return
        thread = threading.Thread(
            target=self._watch_health,
            args=(conn,),
            name=f"rpckit-balancer-health-{conn.backend.address}#{conn.slot}",
            daemon=True,
        )
        self._watchers.add(thread)
        thread.start()

    def _stop_watch(self, conn: _Connection) -> None:
        conn.stop.set()
        with self._lock:
            call = conn.watch_call
        if call is not None:
            call.cancel()

    def _track_call(self, conn: _Connection, call: Any) -> bool:
        """Record the connection's current health call so it can be cancelled; False if stopping."""
        with self._lock:
            stopping = call is not None and conn.stop.is_set()
            conn.watch_call = None if stopping else call
        if stopping:
            call.cancel()
        return not stopping

    def _watch_health(self, conn: _Connection) -> None:
        """A connection's health thread: Check until SERVING, then Watch; back off when not."""
        config = self._config
        stub = health_pb2_grpc.HealthStub(conn.channel)
        request = health_pb2.HealthCheckRequest(service=config.health_service)
        rng = random.Random()  # noqa: S311 - jitter, not secrets
        delay = config.health_backoff_initial_s
        try:
            while not conn.stop.is_set():
                status = self._check_health(conn, stub, request)
                if status is _Health.SERVING:
                    self._set_health(conn, _Health.SERVING)
                    delay = config.health_backoff_initial_s
                    status = self._follow_watch(conn, stub, request)
                if status is None:
                    _log.info(
                        "rpckit balanced channel: %s serves no grpc.health.v1; taken as serving",
                        conn.backend.address,
                    )
                    self._set_health(conn, _Health.SERVING)
                    return
                if conn.stop.is_set():
                    return
                self._set_health(conn, status)
                if conn.stop.wait(delay * rng.uniform(0.5, 1.0)):
                    return
                delay = min(delay * 2.0, config.health_backoff_max_s)
        except ValueError:
            # grpcio raises ValueError on a closed channel: the connection was shut.
            if not conn.stop.is_set():
                raise
        finally:
            with self._lock:
                self._watchers.discard(threading.current_thread())

    def _check_health(
        self, conn: _Connection, stub: Any, request: health_pb2.HealthCheckRequest
    ) -> _Health | None:
        """One Health/Check. None: the server has no health service (UNIMPLEMENTED)."""
        call = stub.Check.future(request, timeout=self._config.health_check_timeout_s)
        status: _Health | None = _Health.UNREACHABLE
        if self._track_call(conn, call):
            try:
                serving = call.result().status == health_pb2.HealthCheckResponse.SERVING
                status = _Health.SERVING if serving else _Health.NOT_SERVING
            except grpc.FutureCancelledError:
                pass
            except grpc.RpcError as error:
                code = error.code()
                if code is grpc.StatusCode.UNIMPLEMENTED:
                    status = None
                elif code is grpc.StatusCode.NOT_FOUND:
                    status = _Health.NOT_SERVING  # the server does not know this service
            finally:
                self._track_call(conn, None)
        return status

    def _follow_watch(
        self, conn: _Connection, stub: Any, request: health_pb2.HealthCheckRequest
    ) -> _Health | None:
        """Follow a Health/Watch until it says anything but SERVING or breaks; the state it left in.

        On NOT_SERVING the watch is cancelled (after ``_WATCH_CANCEL_DELAY_S``): an open
        watch would hold a draining server's stop for its whole grace period.
        """
        call = stub.Watch(request)
        if not self._track_call(conn, call):
            return _Health.UNREACHABLE
        try:
            for response in call:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    self._set_health(conn, _Health.SERVING)
                else:
                    self._set_health(conn, _Health.NOT_SERVING)
                    conn.stop.wait(_WATCH_CANCEL_DELAY_S)
                    call.cancel()
                    return _Health.NOT_SERVING
            return _Health.UNREACHABLE  # the server ended the watch
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None
            return _Health.UNREACHABLE
        finally:
            self._track_call(conn, None)

    def _set_health(self, conn: _Connection, status: _Health) -> None:
        with self._lock:
            if conn.retired or conn.health is status:
                return
            before = conn.health
            conn.health = status
            if status is _Health.SERVING:
                self._changed.notify_all()
            state = self._connectivity_changed_locked()
        _log.debug(
            "rpckit balanced channel: %s connection #%d %s -> %s",
            conn.backend.address,
            conn.slot,
            before.value,
            status.value,
        )
        if state is not None:
            self._notify(state)

    def _connectivity_changed_locked(self) -> grpc.ChannelConnectivity | None:
        connections = [c for b in self._backends.values() for c in b.connections]
        if self._closed:
            state = grpc.ChannelConnectivity.SHUTDOWN
        elif any(c.health is _Health.SERVING for c in connections):
            state = grpc.ChannelConnectivity.READY
        elif not self._resolved or any(c.health is _Health.UNKNOWN for c in connections):
            state = grpc.ChannelConnectivity.CONNECTING
        else:
            state = grpc.ChannelConnectivity.TRANSIENT_FAILURE
        if state is self._connectivity:
            return None
        self._connectivity = state
        return state

    def _notify(self, state: grpc.ChannelConnectivity) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            self._scheduler.call_soon(functools.partial(callback, state))

    # -------------------------------------------------------------- calls: policy glue

    def _method(
        self,
        kind: str,
        path: str,
        request_serializer: Callable[..., Any] | None,
        response_deserializer: Callable[..., Any] | None,
        registered: bool | None,
    ) -> _Method:
        if not isinstance(path, str):
            raise TypeError(f"method must be a str like /package.Service/Method, got {path!r}")
        return _Method(
            kind=kind,
            path=path,
            request_serializer=request_serializer,
            response_deserializer=response_deserializer,
            registered=bool(registered),
            idempotent=path in self._config.idempotent_methods or _idempotent_in_pool(path),
            key=_method_key(kind, path, request_serializer, response_deserializer, registered),
        )

    def _begin(self, method: _Method, options: _CallOptions) -> _Plan:
        """Start a logical call: its deadline, throttling, and a deposit in the retry budget."""
        if self._closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        now = time.monotonic()
        explicit = options.timeout
        if explicit is not None and explicit > NO_DEADLINE_S:
            explicit = None  # grpcio's "no deadline" (time_remaining() of a call without one)
        effective = outbound_timeout(explicit, now=now, margin_s=self._config.deadline_margin_s)
        with self._lock:
            if self._throttle is not None and self._throttle.should_reject_locally(now, self._rng):
                raise _LocalRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"rpckit: {method.path} rejected in the client by adaptive throttling "
                    "(the backends have been rejecting most calls)",
                )
            self._budget.record_request(now)
        return _Plan(
            method=method,
            deadline=None if effective is None else now + effective,
            wait_for_ready=bool(options.wait_for_ready),
        )

    def _pick(self, plan: _Plan, *, may_wait: bool) -> _Choice:
        """Choose backend and connection for the plan's next attempt, or raise a local error.

        With no serving backend, the first attempt waits while some backend is
        still connecting (``wait_for_backend_s``, within the deadline), or
        until the deadline with ``wait_for_ready``; retries never wait.
        """
        now = time.monotonic()
        wait_until: float | None = None
        if may_wait:
            cap = math.inf if plan.wait_for_ready else now + self._config.wait_for_backend_s
            wait_until = cap if plan.deadline is None else min(cap, plan.deadline)
        with self._lock:
            while True:
                if self._closed:
                    raise _LocalRpcError(
                        grpc.StatusCode.CANCELLED, "rpckit: the channel was closed"
                    )
                now = time.monotonic()
                choice = self._choose_locked(plan, now)
                if choice is not None:
                    plan.attempts += 1
                    plan.tried.add(choice.backend.address)
                    return choice
                if (
                    wait_until is None
                    or now >= wait_until
                    or not (plan.wait_for_ready or self._pending_locked())
                ):
                    break
                self._changed.wait(None if math.isinf(wait_until) else wait_until - now)
            message = self._no_backend_message_locked(plan.method.path)
        if plan.deadline is not None and time.monotonic() >= plan.deadline:
            raise _LocalRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{message} before the deadline"
            )
        raise _LocalRpcError(grpc.StatusCode.UNAVAILABLE, message)

    def _pending_locked(self) -> bool:
        """Whether a backend may still turn up: DNS not answered yet, or a connection unchecked."""
        if not self._resolved:
            return True
        return any(
            c.health is _Health.UNKNOWN for b in self._backends.values() for c in b.connections
        )

    def _no_backend_message_locked(self, path: str) -> str:
        total = len(self._backends)
        serving = sum(1 for b in self._backends.values() if self._serving_connections(b))
        ejected = len(self._outlier.ejected()) if self._outlier is not None else 0
        text = (
            f"rpckit: no backend can take {path}: {serving} of {total} serving, {ejected} "
            f"ejected (targets: {', '.join(self._target_texts())})"
        )
        if self._resolution_errors:
            text += f"; resolution: {'; '.join(self._resolution_errors)}"
        return text

    def _target_texts(self) -> list[str]:
        return [t.text if isinstance(t, DnsTarget) else t.address for t in self._discovery.targets]

    @staticmethod
    def _serving_connections(backend: _Backend) -> list[_Connection]:
        return [c for c in backend.connections if c.health is _Health.SERVING and not c.retired]

    def _choose_locked(self, plan: _Plan, now: float) -> _Choice | None:
        candidates = [b for b in self._backends.values() if self._serving_connections(b)]
        if self._outlier is not None and candidates:
            allowed = set(self._outlier.eligible([b.address for b in candidates], now))
            candidates = [b for b in candidates if b.address in allowed]
        if plan.tried:
            untried = [b for b in candidates if b.address not in plan.tried]
            if untried:
                candidates = untried  # a retry goes to another backend when there is one
        index = pick([b.load for b in candidates], range(len(candidates)), self._rng, now)
        if index is None:
            return None
        backend = candidates[index]
        if self._outlier is not None:
            self._outlier.on_pick(backend.address, now)
        conn = self._pick_connection_locked(backend, now)
        backend.load.start(now)
        conn.outstanding += 1
        return _Choice(backend=backend, connection=conn, started=now)

    def _pick_connection_locked(self, backend: _Backend, now: float) -> _Connection:
        """The serving connection whose server process has the least work (ties at random).

        Work of a process = our calls in flight on every connection reaching it
        + its fresh reported queue depth; a connection whose process is not
        known yet counts only its own calls.
        """
        serving = self._serving_connections(backend)
        if len(serving) == 1:
            return serving[0]
        in_flight: dict[int, int] = {}
        for conn in backend.connections:
            if conn.pid is not None:
                in_flight[conn.pid] = in_flight.get(conn.pid, 0) + conn.outstanding
        queued = self._queue_by_pid_locked(backend, now)

        def work(conn: _Connection) -> int:
            if conn.pid is None:
                return conn.outstanding
            return in_flight[conn.pid] + queued.get(conn.pid, 0)

        least = min(work(c) for c in serving)
        return self._rng.choice([c for c in serving if work(c) == least])

    def _queue_by_pid_locked(self, backend: _Backend, now: float) -> dict[int, int]:
        """Each server process's latest queue depth report younger than the report TTL."""
        latest: dict[int, tuple[float, int]] = {}
        for conn in backend.connections:
            if conn.pid is None or conn.reported_at is None:
                continue
            if now - conn.reported_at > self._config.picker.report_ttl_s:
                continue
            seen = latest.get(conn.pid)
            if seen is None or conn.reported_at > seen[0]:
                latest[conn.pid] = (conn.reported_at, conn.queue_depth)
        return {pid: depth for pid, (_, depth) in latest.items()}

    def _finish(
        self,
        choice: _Choice,
        code: grpc.StatusCode | None,
        trailers: Sequence[Any],
        details: str,
        *,
        unary: bool,
    ) -> None:
        """An attempt ended (``code`` None: without a status, e.g. the request failed to serialize).

        Feeds P2C, the server's load report, outlier ejection and throttling. P2C
        learns latency only from unary calls that the server answered without a
        fault, or that timed out (a peak): a backend failing fast must not look
        fast and draw more calls.
        """
        report = load_from_metadata(trailers) if trailers else None
        now = time.monotonic()
        backend, conn = choice.backend, choice.connection
        with self._lock:
            conn.outstanding -= 1
            answered = code is grpc.StatusCode.OK or report is not None
            if unary and (
                code is grpc.StatusCode.DEADLINE_EXCEEDED
                or (answered and code not in _BACKEND_FAULTS)
            ):
                backend.load.finish(max(0.0, now - choice.started), now)
            else:
                backend.load.abandon()
            redial = report is not None and self._record_report_locked(conn, report, now)
            if code is not None and code is not grpc.StatusCode.CANCELLED:
                if self._outlier is not None:
                    fault = code in _BACKEND_FAULTS and not details.startswith(_ADMISSION_PREFIX)
                    self._outlier.record(backend.address, not fault, now, self._rng)
                if self._throttle is not None:
                    self._throttle.record(code not in _OVERLOAD_CODES, now)
            closable = self._take_closable_locked(conn)
        if closable:
            # Not here: this may be grpc's own callback thread for that channel.
            shut = functools.partial(self._shut_connection, conn)
            self._scheduler.call_soon(shut, on_drop=shut)
        if redial:
            self._scheduler.call_soon(functools.partial(self._replace_connection, conn))

    def _record_report_locked(
        self, conn: _Connection, report: load_pb2.LoadReport, now: float
    ) -> bool:
        """Store a load report; True when ``conn`` should be redialed (see ``worker_redials``)."""
        backend = conn.backend
        pid = int(report.pid) or None
        conn.pid = pid
        conn.queue_depth = int(report.queue_depth)
        conn.reported_at = now
        backend.load.report(sum(self._queue_by_pid_locked(backend, now).values()), now)
        if pid is None:
            return False
        if pid not in backend.pids_seen:
            if len(backend.pids_seen) >= _MAX_PIDS_REMEMBERED:
                backend.pids_seen = {c.pid for c in backend.connections if c.pid is not None}
            backend.pids_seen.add(pid)
            backend.redial_misses = 0
        if conn.retired or backend.retired:
            return False
        # Redial only while another serving connection reaches that process: the backend
        # must never lose its last serving connection to a redial.
        shared = any(
            o is not conn and not o.retired and o.health is _Health.SERVING and o.pid == pid
            for o in backend.connections
        )
        if not shared or backend.redial_misses >= self._config.worker_redials:
            return False
        backend.redial_misses += 1
        conn.retired = True  # no new calls; _replace_connection swaps in a fresh one
        return True

    def _retry_delay(self, plan: _Plan, error: Any) -> float | None:
        """Seconds to wait before retrying ``error``'s call, or None when it must not be retried."""
        code, trailers, details = _status(error)
        if code is None or code.name not in STATUS_CODE_NAMES:
            return None
        pushback = _pushback_ms(trailers)
        now = time.monotonic()
        with self._lock:
            delay = backoff_s(
                plan.attempts,
                self._rng,
                pushback_ms=pushback if pushback is not None and pushback >= 0 else None,
            )
            verdict = retry_decision(
                code=code.name,
                reached_handler=_reached_handler(details, trailers),
                idempotent=plan.method.idempotent,
                pushback_ms=pushback,
                attempts=plan.attempts,
                max_attempts=self._config.max_attempts,
                time_left_s=None if plan.deadline is None else plan.deadline - now,
                backoff_s=delay,
            )
            if not verdict.retry:
                return None
            if not self._budget.try_withdraw(now):
                _log.debug(
                    "rpckit balanced channel: retry of %s denied by the budget", plan.method.path
                )
                return None
        return delay

    def _attempt_ended(self, choice: _Choice, inner: Any) -> None:
        """Done-callback of an asynchronous attempt (future or stream)."""
        code, trailers, details = _status(inner)
        self._finish(choice, code, trailers, details, unary=False)

    # -------------------------------------------------------------- calls: shapes

    def _unary_call(
        self, method: _Method, request: Any, options: _CallOptions
    ) -> tuple[Any, grpc.Call]:
        plan = self._begin(method, options)
        last_error: grpc.RpcError | None = None
        while True:
            try:
                choice = self._pick(plan, may_wait=last_error is None)
            except _LocalRpcError:
                if last_error is not None:
                    raise last_error from None
                raise
            inner = choice.connection.callable(method)
            try:
                response, call = inner.with_call(
                    request, timeout=plan.attempt_timeout(), **options.grpc_kwargs()
                )
            except grpc.RpcError as error:
                code, trailers, details = _status(error)
                self._finish(choice, code, trailers, details, unary=True)
                delay = self._retry_delay(plan, error)
                if delay is None or self._closed_event.wait(delay):
                    raise
                last_error = error
                continue
            except BaseException:
                self._finish(choice, None, (), "", unary=True)
                raise
            code, trailers, details = _status(call)
            self._finish(choice, grpc.StatusCode.OK, trailers, details, unary=True)
            return response, call

    def _client_stream_call(
        self, method: _Method, requests: Iterator[Any], options: _CallOptions
    ) -> tuple[Any, grpc.Call]:
        plan = self._begin(method, options)
        choice = self._pick(plan, may_wait=True)
        inner = choice.connection.callable(method)
        try:
            response, call = inner.with_call(
                requests, timeout=plan.attempt_timeout(), **options.grpc_kwargs()
            )
        except grpc.RpcError as error:
            code, trailers, details = _status(error)
            self._finish(choice, code, trailers, details, unary=False)
            raise
        except BaseException:
            self._finish(choice, None, (), "", unary=False)
            raise
        _, trailers, details = _status(call)
        self._finish(choice, grpc.StatusCode.OK, trailers, details, unary=False)
        return response, call

    def _async_call(
        self, method: _Method, request: Any, options: _CallOptions, *, future: bool
    ) -> Any:
        """Start a call whose end is reported by grpc's done-callback: a stream, or a future."""
        try:
            plan = self._begin(method, options)
            choice = self._pick(plan, may_wait=True)
        except _LocalRpcError as error:
            return error
        inner = choice.connection.callable(method)
        try:
            started = inner.future if future else inner
            call = started(request, timeout=plan.attempt_timeout(), **options.grpc_kwargs())
        except BaseException:
            self._finish(choice, None, (), "", unary=False)
            raise
        call.add_done_callback(functools.partial(self._attempt_ended, choice))
        return call


# ---------------------------------------------------------------- multicallables


def _options(
    timeout: float | None,
    metadata: Any,
    credentials: grpc.CallCredentials | None,
    wait_for_ready: bool | None,
    compression: grpc.Compression | None,
) -> _CallOptions:
    return _CallOptions(timeout, metadata, credentials, wait_for_ready, compression)


class _UnaryUnary(grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: _Method) -> None:
        self._channel = channel
        self._method = method

    def __call__(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._unary_call(self._method, request, options)[0]

    def with_call(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._unary_call(self._method, request, options)

    def future(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return _UnaryFuture(self._channel, self._method, request, options)


class _UnaryStream(grpc.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: _Method) -> None:
        self._channel = channel
        self._method = method

    def __call__(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return _StreamingResponse(self._channel, self._method, request, options)


class _StreamUnary(grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: _Method) -> None:
        self._channel = channel
        self._method = method

    def __call__(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._client_stream_call(self._method, request_iterator, options)[0]

    def with_call(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._client_stream_call(self._method, request_iterator, options)

    def future(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._async_call(self._method, request_iterator, options, future=True)


class _StreamStream(grpc.StreamStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: _Method) -> None:
        self._channel = channel
        self._method = method

    def __call__(  # noqa: PLR0917 - grpcio's multicallable signature
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = _options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._channel._async_call(self._method, request_iterator, options, future=False)


# ---------------------------------------------------------------- future and stream objects


class _UnaryFuture(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A unary call's future across attempts: retries run from grpc's callback and the scheduler.

    ``initial_metadata()`` waits for the call to end (the attempt that counts
    is known only then); everything else behaves like grpcio's future. Like a
    blocking call, a future made while no backend has answered its health
    check yet waits for one (``wait_for_backend_s``) before it is returned.
    """

    def __init__(
        self, channel: BalancedChannel, method: _Method, request: Any, options: _CallOptions
    ) -> None:
        self._channel = channel
        self._method = method
        self._request = request
        self._options = options
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._response: Any = None
        self._error: Any = None
        self._final: Any = None  # the grpc call (or error) that ended it
        self._attempt: Any = None
        self._job: _Job | None = None
        self._last_error: Any = None
        self._done_callbacks: list[Callable[[Any], None]] = []
        self._end_callbacks: list[Callable[[], None]] = []
        self._plan: _Plan | None = None
        try:
            self._plan = channel._begin(method, options)
        except _LocalRpcError as error:
            self._complete(error=error)
            return
        self._start_attempt(may_wait=True)

    def _start_attempt(self, may_wait: bool = False) -> None:
        assert self._plan is not None
        with self._cond:
            if self._done:
                return
            self._job = None
        try:
            choice = self._channel._pick(self._plan, may_wait=may_wait)
        except _LocalRpcError as error:
            self._complete(error=self._last_error if self._last_error is not None else error)
            return
        inner_callable = choice.connection.callable(self._method)
        try:
            inner = inner_callable.future(
                self._request, timeout=self._plan.attempt_timeout(), **self._options.grpc_kwargs()
            )
        except ValueError:  # the channel closed meanwhile
            self._channel._finish(choice, None, (), "", unary=True)
            self._complete(
                error=_LocalRpcError(grpc.StatusCode.CANCELLED, "rpckit: the channel was closed")
            )
            return
        with self._cond:
            self._attempt = inner
            cancelled = self._cancelled
        if cancelled:
            inner.cancel()
        inner.add_done_callback(functools.partial(self._attempt_done, choice))

    def _attempt_done(self, choice: _Choice, inner: Any) -> None:
        code, trailers, details = _status(inner)
        self._channel._finish(choice, code, trailers, details, unary=True)
        if code is grpc.StatusCode.OK:
            self._complete(response=inner.result(), final=inner)
            return
        with self._cond:
            stop = self._done
        assert self._plan is not None
        delay = None if stop else self._channel._retry_delay(self._plan, inner)
        if delay is None:
            self._complete(error=inner)
            return
        self._last_error = inner
        job = self._channel._scheduler.call_later(
            delay, self._start_attempt, on_drop=functools.partial(self._complete, error=inner)
        )
        with self._cond:
            self._job = job

    def _complete(
        self, *, response: Any = None, error: Any = None, final: Any = None, cancelled: bool = False
    ) -> None:
        with self._cond:
            if self._done:
                return
            self._done = True
            self._cancelled = self._cancelled or cancelled
            self._response = response
            self._error = error
            self._final = final if final is not None else error
            done_callbacks, self._done_callbacks = self._done_callbacks, []
            end_callbacks, self._end_callbacks = self._end_callbacks, []
            self._cond.notify_all()
        for fn in done_callbacks:
            _run_safely(functools.partial(fn, self))
        for callback in end_callbacks:
            _run_safely(callback)

    def _wait(self, timeout: float | None) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise grpc.FutureTimeoutError()

    # grpc.Future

    def cancel(self) -> bool:
        with self._cond:
            if self._done:
                return False
            self._cancelled = True
            attempt, job = self._attempt, self._job
        if job is not None:
            _Scheduler.cancel(job)
        self._complete(
            error=_LocalRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"),
            cancelled=True,
        )
        if attempt is not None:
            attempt.cancel()
        return True

    def cancelled(self) -> bool:
        with self._cond:
            return self._cancelled

    def running(self) -> bool:
        with self._cond:
            return not self._done

    def done(self) -> bool:
        with self._cond:
            return self._done

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        if self._error is not None:
            raise self._error
        return self._response

    def exception(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        return self._error

    def traceback(self, timeout: float | None = None) -> Any:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._cond:
            if not self._done:
                self._done_callbacks.append(fn)
                return
        fn(self)

    # grpc.Call

    def initial_metadata(self) -> Any:
        self._wait(None)
        return self._final.initial_metadata()

    def trailing_metadata(self) -> Any:
        self._wait(None)
        return self._final.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        self._wait(None)
        return self._final.code()  # type: ignore[no-any-return]

    def details(self) -> Any:
        self._wait(None)
        return self._final.details()

    def is_active(self) -> bool:
        return not self.done()

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpcio: None without a deadline
        if self._plan is None or self._plan.deadline is None:
            return None
        return max(0.0, self._plan.deadline - time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._cond:
            if self._done:
                return False
            self._end_callbacks.append(callback)
            return True


class _StreamingResponse(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A unary-stream call: iterate it for the responses. Retried (when safe) until the first one.

    Everything else is answered by the current attempt's grpc call object.
    """

    def __init__(
        self, channel: BalancedChannel, method: _Method, request: Any, options: _CallOptions
    ) -> None:
        self._channel = channel
        self._method = method
        self._request = request
        self._options = options
        self._lock = threading.Lock()
        self._received = False
        self._cancelled = False
        self._attempt: Any = None
        self._plan: _Plan | None = None
        try:
            self._plan = channel._begin(method, options)
            self._start(may_wait=True)
        except _LocalRpcError as error:
            self._attempt = error

    def _start(self, *, may_wait: bool) -> None:
        assert self._plan is not None
        choice = self._channel._pick(self._plan, may_wait=may_wait)
        inner_callable = choice.connection.callable(self._method)
        try:
            inner = inner_callable(
                self._request, timeout=self._plan.attempt_timeout(), **self._options.grpc_kwargs()
            )
        except BaseException:
            self._channel._finish(choice, None, (), "", unary=False)
            raise
        inner.add_done_callback(functools.partial(self._channel._attempt_ended, choice))
        with self._lock:
            self._attempt = inner
            cancelled = self._cancelled
        if cancelled:
            inner.cancel()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            attempt = self._attempt
            try:
                message = next(attempt)
            except grpc.RpcError as error:
                if (
                    self._received
                    or self._cancelled
                    or self._plan is None
                    or isinstance(error, _LocalRpcError)
                ):
                    raise
                delay = self._channel._retry_delay(self._plan, error)
                if delay is None or self._channel._closed_event.wait(delay):
                    raise
                try:
                    self._start(may_wait=False)
                except _LocalRpcError:
                    raise error from None
                continue
            self._received = True
            return message

    def next(self) -> Any:
        """grpcio's streaming calls have it too."""
        return self.__next__()

    # grpc.Call / grpc.Future: the current attempt answers.

    def cancel(self) -> bool:
        with self._lock:
            self._cancelled = True
            attempt = self._attempt
        return bool(attempt.cancel())

    def cancelled(self) -> bool:
        return bool(self._attempt.cancelled())

    def running(self) -> bool:
        return bool(self._attempt.running())

    def done(self) -> bool:
        return bool(self._attempt.done())

    def result(self, timeout: float | None = None) -> Any:
        return self._attempt.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._attempt.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._attempt.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._attempt.add_done_callback(lambda _: fn(self))

    def initial_metadata(self) -> Any:
        return self._attempt.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._attempt.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._attempt.code()  # type: ignore[no-any-return]

    def details(self) -> Any:
        return self._attempt.details()

    def is_active(self) -> bool:
        return bool(self._attempt.is_active())

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpcio: None without a deadline
        if self._plan is None or self._plan.deadline is None:
            return None
        return max(0.0, self._plan.deadline - time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._attempt.add_callback(callback))

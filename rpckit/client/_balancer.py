"""The balanced channel: one ``grpc.Channel`` over many backends, for generated stubs unchanged.

    channel = rpckit.BalancedChannel(["10.0.0.7:50051", "10.0.0.8:50051"])   # or "dns:///inv:50051"
    stub = inventory_pb2_grpc.InventoryStub(channel)
    stub.GetItem(inventory_pb2.GetItemRequest(sku="A-1"), timeout=2)

This module is the I/O adapter around rpckit's pure policies; it decides
nothing they already decide::

    discovery (_discovery) --> backends --> N grpc channels each (distinct TCP connections)
                                   |            |  one health watch thread per connection
    call --> attempt engine (_attempts): deadline (_deadline), throttle, budget deposit
                 --> pick: P2C over eligible backends (_p2c), minus ejected (_outlier)
                           --> least-loaded connection (by server process)
                 <-- outcome classified (_feedback) and applied here: latency, queue depth,
                     outlier ejection; on failure a retry (_feedback, _retry), on another backend

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
* **Feedback** (what :func:`rpckit.client._feedback.classify` decides, applied
  by ``_release``): every response's ``rpckit-load-bin`` trailer (success or
  error; for futures and streams, when they end) updates the server's queue
  depth; unary calls that a handler answered without a fault (or that
  timed out) also give a latency sample (streams, which may last for
  minutes, do not; nor do fast failures, which would draw more calls); an
  admission refusal holds the latency estimate (at least the server's
  pushback, no decay), so a shedding backend is not sought; outcomes feed
  outlier ejection.
* **Retries**, decided by the attempt engine, only when safe
  (:func:`rpckit.client._feedback.plan_retry`, :func:`rpckit.client._retry.retry_decision`): the
  call never reached a handler (connect failure, a draining server's refusal,
  an admission rejection with ``grpc-retry-pushback-ms``), or the method is
  idempotent (``option idempotency_level`` in its proto, read from protobuf's
  default descriptor pool). Another backend, jittered backoff (or the
  server's pushback), within the caller's deadline and the retry budget.
  Unary-unary calls retry; unary-stream calls retry until their first
  message; calls with a request stream never do (their requests cannot be replayed).
* **Deadlines**: inside an rpckit handler the inbound deadline minus a margin
  is every call's ceiling; an explicit ``timeout`` can only shorten it
  (:func:`rpckit.core._deadline.outbound_timeout`). One deadline covers all
  attempts of a call.

Threads: one scheduler (re-resolution, delayed retries of futures, closing
retired connections, connectivity callbacks) and one health thread per
connection, all daemons, all stopped and joined by :meth:`BalancedChannel.close`.
The backends' state sits behind one lock (the retry budget and throttle behind
the engine's); no I/O happens under either.

This module holds the channel and its state (backends, connections, picking,
applying feedback). Around it, imported one way only (docs/architecture.md,
"The balanced client: attempts and feedback")::

    _calls            the multicallables, futures and streams stubs get back
    _attempts         the attempt engine they run on; it sees the channel only
                      through ``_ChannelBackends`` (pick, release)
    _config           BalancedChannelConfig, BackendStatus, ConnectionStatus
    _feedback         pure: what an attempt's outcome feeds, whether to retry
    _scheduler        the timer thread
    _backend_health   one connection's Health Check/Watch loop
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import grpc

from rpckit.client._attempts import AttemptEngine, LocalRpcError, Method, Plan
from rpckit.client._backend_health import Health, HealthWatch
from rpckit.client._calls import (
    StreamStream,
    StreamUnary,
    UnaryStream,
    UnaryUnary,
    idempotent_in_pool,
    method_key,
)
from rpckit.client._config import BackendStatus, BalancedChannelConfig, ConnectionStatus
from rpckit.client._discovery import Discovery, DnsTarget, Resolver, parse_targets
from rpckit.client._feedback import Feedback, Latency
from rpckit.client._outlier import OutlierDetector
from rpckit.client._p2c import BackendLoad, pick
from rpckit.client._scheduler import JOIN_TIMEOUT_S, Scheduler, run_safely
from rpckit.client._tracing import AttemptTracer
from rpckit.v1 import load_pb2

__all__ = ["BalancedChannel"]

_log = logging.getLogger("rpckit.client")

_MAX_PIDS_REMEMBERED = 64
"""Per backend, server process ids remembered to spot a new process (bounded across restarts)."""

_REDIAL_ROUND_AFTER_S = (1.0, 60.0)
"""Once ``worker_redials`` redials in a row found no new process, another round is
allowed after the first of these (seconds), doubling up to the second: a worker that
died and was replaced after the search gave up is still found (within seconds), and
a single-process host costs a round a minute at most."""


# ---------------------------------------------------------------- internals


class _Backend:
    """A backend address: its P2C load and its connections. Guarded by the channel's lock."""

    __slots__ = (
        "address",
        "connections",
        "load",
        "pids_seen",
        "redial_misses",
        "redial_pause_s",
        "redial_round_at",
        "retired",
    )

    def __init__(self, address: str, load: BackendLoad) -> None:
        self.address = address
        self.load = load
        self.connections: list[_Connection] = []
        self.retired = False
        self.pids_seen: set[int] = set()
        self.redial_misses = 0
        self.redial_round_at = 0.0  # when the next round of redials may start
        self.redial_pause_s = _REDIAL_ROUND_AFTER_S[0]


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
        "watch",
    )

    def __init__(
        self,
        backend: _Backend,
        slot: int,
        channel: grpc.Channel,
        health: Health,
        watch: HealthWatch,
    ) -> None:
        self.backend = backend
        self.slot = slot
        self.channel = channel
        self.health = health
        self.watch = watch  # its health thread's body, if health checks are on
        self.outstanding = 0
        self.pid: int | None = None
        self.queue_depth = 0
        self.reported_at: float | None = None
        self.retired = False  # no new calls; closed once the last one ends
        self.closed = False
        self.callables: dict[tuple[Any, ...], Any] = {}

    def callable(self, method: Method) -> Any:
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


@dataclasses.dataclass(eq=False)
class _Choice:
    """The backend and connection one attempt went to, and when it started (an engine's Lease)."""

    backend: _Backend
    connection: _Connection
    started: float
    #: With tracing: the tracer and the call's plan; each attempt then runs in its own span.
    traced: tuple[AttemptTracer, Plan] | None = None

    @property
    def address(self) -> str:
        return self.backend.address

    def callable(self, method: Method) -> Any:
        inner = self.connection.callable(method)
        if self.traced is None:
            return inner
        tracer, plan = self.traced
        if plan.trace_context is None:  # the first attempt runs in the caller's thread
            plan.trace_context = tracer.current_context()
        return tracer.wrap(
            inner,
            method=method.path,
            backend=self.backend.address,
            attempt=plan.attempts,
            parent=plan.trace_context,
        )


class _ChannelBackends:
    """The channel as the attempt engine sees it: picks and feedback, nothing else."""

    __slots__ = ("_channel",)

    def __init__(self, channel: BalancedChannel) -> None:
        self._channel = channel

    @property
    def closed(self) -> bool:
        return self._channel._closed

    def pick(self, plan: Plan, *, may_wait: bool) -> _Choice:
        choice = self._channel._pick(plan, may_wait=may_wait)
        if self._channel._tracer is not None:
            choice.traced = (self._channel._tracer, plan)
        return choice

    def release(
        self, lease: Any, feedback: Feedback, report: load_pb2.LoadReport | None, now: float
    ) -> None:
        assert isinstance(lease, _Choice)
        self._channel._release(lease, feedback, report, now)


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
        tracing = self._config.tracing
        self._tracer = AttemptTracer(tracing) if tracing is not None else None
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
        self._slots = itertools.count()
        self._closed = False
        self._closed_event = threading.Event()
        self._resolved = not self._discovery.dynamic
        self._resolution_errors: tuple[str, ...] = ()
        self._subscribers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._connectivity = grpc.ChannelConnectivity.IDLE
        self._scheduler = Scheduler("rpckit-balancer-scheduler")
        self._engine = AttemptEngine(
            _ChannelBackends(self),
            self._config,
            schedule=self._schedule_retry,
            sleep=self._closed_event.wait,
        )
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
        return UnaryUnary(
            self._engine,
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
        return UnaryStream(
            self._engine,
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
        return StreamUnary(
            self._engine,
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
        return StreamStream(
            self._engine,
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
            run_safely(functools.partial(callback, grpc.ChannelConnectivity.SHUTDOWN))
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
                thread.join(JOIN_TIMEOUT_S)
        for callback in subscribers:
            run_safely(functools.partial(callback, grpc.ChannelConnectivity.SHUTDOWN))

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
        health = Health.UNKNOWN if self._config.health_check else Health.SERVING
        watch = HealthWatch(channel, self._config, label=backend.address)
        return _Connection(backend, slot, channel, health, watch)

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
        conn.watch.stop()

    def _watch_health(self, conn: _Connection) -> None:
        """A connection's health thread (see _backend_health)."""
        try:
            conn.watch.run(functools.partial(self._set_health, conn))
        finally:
            with self._lock:
                self._watchers.discard(threading.current_thread())

    def _set_health(self, conn: _Connection, status: Health) -> None:
        with self._lock:
            if conn.retired or conn.health is status:
                return
            before = conn.health
            conn.health = status
            if status is Health.SERVING:
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
        elif any(c.health is Health.SERVING for c in connections):
            state = grpc.ChannelConnectivity.READY
        elif not self._resolved or any(c.health is Health.UNKNOWN for c in connections):
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
    ) -> Method:
        if not isinstance(path, str):
            raise TypeError(f"method must be a str like /package.Service/Method, got {path!r}")
        return Method(
            kind=kind,
            path=path,
            request_serializer=request_serializer,
            response_deserializer=response_deserializer,
            registered=bool(registered),
            idempotent=path in self._config.idempotent_methods or idempotent_in_pool(path),
            key=method_key(kind, path, request_serializer, response_deserializer, registered),
        )

    def _schedule_retry(
        self, delay_s: float, fn: Callable[[], None], on_drop: Callable[[], None]
    ) -> Callable[[], None]:
        """The engine's timer: a future's retry, sent from the scheduler thread."""
        job = self._scheduler.call_later(delay_s, fn, on_drop=on_drop)
        return (lambda: None) if job is None else functools.partial(Scheduler.cancel, job)

    def _pick(self, plan: Plan, *, may_wait: bool) -> _Choice:
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
                    raise LocalRpcError(grpc.StatusCode.CANCELLED, "rpckit: the channel was closed")
                now = time.monotonic()
                choice = self._choose_locked(plan, now)
                if choice is not None:
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
            raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{message} before the deadline")
        raise LocalRpcError(grpc.StatusCode.UNAVAILABLE, message)

    def _pending_locked(self) -> bool:
        """Whether a backend may still turn up: DNS not answered yet, or a connection unchecked."""
        if not self._resolved:
            return True
        return any(
            c.health is Health.UNKNOWN for b in self._backends.values() for c in b.connections
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
        return [c for c in backend.connections if c.health is Health.SERVING and not c.retired]

    def _choose_locked(self, plan: Plan, now: float) -> _Choice | None:
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

    def _release(
        self,
        choice: _Choice,
        feedback: Feedback,
        report: load_pb2.LoadReport | None,
        now: float,
    ) -> None:
        """An attempt ended: apply what the engine's feedback policy (_feedback) made of it.

        P2C latency (a sample, a hold at the pushback, or nothing), the server's
        load report, outlier ejection; a retired connection whose last call
        this was is closed.
        """
        backend, conn = choice.backend, choice.connection
        with self._lock:
            conn.outstanding -= 1
            if feedback.latency is Latency.HOLD:
                backend.load.reject(feedback.hold_s, now)
            elif feedback.latency is Latency.SAMPLE:
                backend.load.finish(max(0.0, now - choice.started), now)
            else:
                backend.load.abandon()
            redial = report is not None and self._record_report_locked(conn, report, now)
            if self._outlier is not None and feedback.outlier_success is not None:
                self._outlier.record(backend.address, feedback.outlier_success, now, self._rng)
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
            backend.redial_pause_s = _REDIAL_ROUND_AFTER_S[0]
        if conn.retired or backend.retired:
            return False
        # Redial only while another serving connection reaches that process: the backend
        # must never lose its last serving connection to a redial.
        shared = any(
            o is not conn and not o.retired and o.health is Health.SERVING and o.pid == pid
            for o in backend.connections
        )
        if not shared or self._config.worker_redials == 0:
            return False
        if backend.redial_misses >= self._config.worker_redials:
            # The search gave up; the processes behind the port may have changed since
            # (a worker killed and replaced), so search again later, less and less often.
            if now < backend.redial_round_at:
                return False
            backend.redial_misses = 0
        backend.redial_misses += 1
        if backend.redial_misses >= self._config.worker_redials:
            backend.redial_round_at = now + backend.redial_pause_s
            backend.redial_pause_s = min(_REDIAL_ROUND_AFTER_S[1], 2 * backend.redial_pause_s)
        conn.retired = True  # no new calls; _replace_connection swaps in a fresh one
        return True

"""The attempt engine: every call of the balanced channel, whatever its shape, goes through it.

One logical call is a :class:`Plan` (its method, deadline, attempts so far, the
backends tried). The engine runs it as (docs/architecture.md, "The balanced
client: attempts and feedback")::

    begin:     deadline (inbound ceiling minus margin), adaptive throttling, budget deposit
    pick:      a backend from the channel (the first attempt may wait for one; retries avoid
               the backends already tried and never wait)
    attempt:   send on that backend's connection (a blocking call, a future, a stream)
    classify:  the outcome -> P2C, load report, outlier ejection, throttling (_feedback)
    retry or finish: _feedback.plan_retry, then the retry budget; wait the delay (jittered
               backoff or the server's pushback) and pick again, or end with the error

The engine decides; :class:`Backends` (the channel) owns backends and connections,
picks and applies feedback under its lock. Three drivers share those steps:

* :meth:`AttemptEngine.call` -- blocking ``__call__``/``with_call`` (unary; client
  streams, which never retry: their requests cannot be replayed);
* :class:`AsyncRun` -- futures: attempts end on grpc's callback thread, retries are
  sent from the channel's scheduler after their delay;
* :class:`StreamRun` -- response streams: a unary-stream call retries until its
  first message, a bidirectional one never.

Clock, sleep and timer are injected (``clock``, ``sleep``, ``schedule``), so the
engine runs under a fake clock in unit tests.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

import grpc

from rpckit.client._config import BalancedChannelConfig
from rpckit.client._feedback import Feedback, Outcome, Shape, classify, observe, plan_retry
from rpckit.client._retry import AdaptiveThrottle, RetryBudget
from rpckit.core._deadline import NO_DEADLINE_S, outbound_timeout
from rpckit.core._wire import PREVIOUS_ATTEMPTS_METADATA_KEY
from rpckit.v1 import load_pb2

__all__ = [
    "AsyncRun",
    "AttemptEngine",
    "Backends",
    "CallOptions",
    "Lease",
    "LocalRpcError",
    "Method",
    "Plan",
    "Schedule",
    "StreamRun",
    "call_status",
]

_log = logging.getLogger("rpckit.client")


# ---------------------------------------------------------------- per-call data


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """A method as a stub asked for it, with what the channel needs to know about it."""

    kind: str  # the grpc.Channel factory: "unary_unary", "unary_stream", ...
    path: str
    request_serializer: Callable[..., Any] | None
    response_deserializer: Callable[..., Any] | None
    registered: bool
    idempotent: bool
    key: tuple[Any, ...] | None  # the per-connection cache key; None when unhashable

    @property
    def shape(self) -> Shape:
        return Shape(self.kind)


@dataclasses.dataclass(eq=False)
class Plan:
    """One logical call: its deadline and the attempts made so far."""

    method: Method
    deadline: float | None
    wait_for_ready: bool
    attempts: int = 0
    tried: set[str] = dataclasses.field(default_factory=set)
    trace_context: Any = None  # with tracing: the context the call began in (its attempts' parent)

    def time_left(self, now: float) -> float | None:
        """Seconds until the deadline (>= 0), None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - now)


@dataclasses.dataclass(frozen=True)
class CallOptions:
    """The keyword arguments of one call, as grpcio's multicallables take them."""

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


def call_status(inner: Any) -> tuple[grpc.StatusCode | None, Sequence[Any], str]:
    """(code, trailing metadata, details) of a finished grpc call or RpcError."""
    try:
        code = inner.code()
        trailers = tuple(inner.trailing_metadata() or ())
        details = inner.details() or ""
    except Exception:  # noqa: BLE001 - a call object in an odd state tells nothing
        return None, (), ""
    return code, trailers, str(details)


class LocalRpcError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[type-arg]
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


def closed_error() -> LocalRpcError:
    return LocalRpcError(grpc.StatusCode.CANCELLED, "rpckit: the channel was closed")


# ---------------------------------------------------------------- the seam to the channel


class Lease(Protocol):
    """One attempt's backend and connection, as the channel handed it out."""

    @property
    def address(self) -> str: ...

    def callable(self, method: Method) -> Any:
        """The grpc multicallable for ``method`` on this attempt's connection."""


class Backends(Protocol):
    """What the engine needs of the channel: picks, and a place to put what attempts taught."""

    @property
    def closed(self) -> bool: ...

    def pick(self, plan: Plan, *, may_wait: bool) -> Lease:
        """A backend for the plan's next attempt, preferring any not in ``plan.tried``.

        Raises :class:`LocalRpcError` when none can take it (UNAVAILABLE, or
        DEADLINE_EXCEEDED once the deadline passed while waiting; CANCELLED if closed).
        """

    def release(
        self, lease: Lease, feedback: Feedback, report: load_pb2.LoadReport | None, now: float
    ) -> None:
        """The lease's attempt ended: apply ``feedback`` and the server's load ``report``."""


Schedule = Callable[[float, Callable[[], None], Callable[[], None]], Callable[[], None]]
"""``schedule(delay_s, fn, on_drop) -> cancel``: run ``fn`` after ``delay_s`` on a timer thread,
or ``on_drop`` if the timer closes first; ``cancel()`` keeps ``fn`` from running."""


# ---------------------------------------------------------------- the engine


class AttemptEngine:
    """Runs the balanced channel's calls: pick, attempt, classify, retry or finish (see above).

    Owns the retry budget and the adaptive throttle (one per channel), behind
    its own lock. ``clock`` is monotonic seconds; ``sleep(s)`` waits and returns
    True when the wait was cut short because the channel closed.
    """

    def __init__(
        self,
        backends: Backends,
        config: BalancedChannelConfig,
        *,
        schedule: Schedule,
        sleep: Callable[[float], bool],
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._backends = backends
        self._config = config
        self._schedule = schedule
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter
        self._lock = threading.Lock()
        self._budget = RetryBudget(config.retry_budget)
        throttle = config.adaptive_throttle
        self._throttle = AdaptiveThrottle(throttle) if throttle is not None else None

    def now(self) -> float:
        return self._clock()

    # -------------------------------------------------------------- the steps

    def begin(self, method: Method, options: CallOptions) -> Plan:
        """Start a logical call: its deadline, throttling, and a deposit in the retry budget."""
        if self._backends.closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        now = self._clock()
        explicit = options.timeout
        if explicit is not None and explicit > NO_DEADLINE_S:
            explicit = None  # grpcio's "no deadline" (time_remaining() of a call without one)
        effective = outbound_timeout(explicit, now=now, margin_s=self._config.deadline_margin_s)
        with self._lock:
            if self._throttle is not None and self._throttle.should_reject_locally(now, self._rng):
                raise LocalRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"rpckit: {method.path} rejected in the client by adaptive throttling "
                    "(the backends have been rejecting most calls)",
                )
            self._budget.record_request(now)
        return Plan(
            method=method,
            deadline=None if effective is None else now + effective,
            wait_for_ready=bool(options.wait_for_ready),
        )

    def pick(self, plan: Plan) -> Lease:
        """The next attempt's backend; only the first attempt may wait for one.

        A retry whose deadline passed while it waited (a timer or a sleep that woke
        late, e.g. on a busy machine) is not sent: it could only time out at once,
        and that would look like a fast answer to P2C. The drivers then end the call
        with the error of its last attempt.
        """
        first = plan.attempts == 0
        if not first and plan.time_left(self._clock()) == 0.0:
            raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "rpckit: deadline passed")
        lease = self._backends.pick(plan, may_wait=first)
        plan.attempts += 1
        plan.tried.add(lease.address)
        return lease

    def send(
        self,
        plan: Plan,
        lease: Lease,
        request: Any,
        options: CallOptions,
        how: Literal["with_call", "future", "call"],
    ) -> Any:
        """Send one attempt: ``how`` is ``"with_call"``, ``"future"`` or ``"call"`` (a stream)."""
        inner = lease.callable(plan.method)
        start = inner if how == "call" else getattr(inner, how)
        kwargs = options.grpc_kwargs()
        if plan.attempts > 1:  # a retry says so, as gRPC's own retries do
            retried = (PREVIOUS_ATTEMPTS_METADATA_KEY, str(plan.attempts - 1))
            kwargs["metadata"] = (*(options.metadata or ()), retried)
        return start(request, timeout=plan.time_left(self._clock()), **kwargs)

    def ended(self, plan: Plan, lease: Lease, inner: Any, *, ok: bool = False) -> Outcome:
        """Classify an ended attempt and feed back (``inner``: its call or error; None: none)."""
        if inner is None:
            outcome = Outcome(code=None)
        else:
            code, trailers, details = call_status(inner)
            if ok:
                code = grpc.StatusCode.OK
            outcome = observe(None if code is None else code.name, trailers, details)
        feedback = classify(outcome, plan.method.shape)
        now = self._clock()
        self._backends.release(lease, feedback, outcome.report, now)
        if self._throttle is not None and feedback.throttle_accepted is not None:
            with self._lock:
                self._throttle.record(feedback.throttle_accepted, now)
        return outcome

    def retry_delay(self, plan: Plan, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt, or None: the call ends with this outcome."""
        now = self._clock()
        with self._lock:
            retry = plan_retry(
                outcome,
                shape=plan.method.shape,
                idempotent=plan.method.idempotent,
                attempts=plan.attempts,
                max_attempts=self._config.max_attempts,
                time_left_s=plan.time_left(now),
                rng=self._rng,
            )
            if not retry.retry:
                return None
            granted = self._budget.try_withdraw(now)  # last: only a retry that happens pays
        if not granted:
            _log.debug(
                "rpckit balanced channel: retry of %s denied by the budget", plan.method.path
            )
            return None
        return retry.delay_s

    # -------------------------------------------------------------- blocking calls

    def call(self, method: Method, request: Any, options: CallOptions) -> tuple[Any, grpc.Call]:
        """A blocking call (unary, or client-streaming): ``(response, call)`` or raise."""
        plan = self.begin(method, options)
        last_error: grpc.RpcError | None = None
        while True:
            try:
                lease = self.pick(plan)
            except LocalRpcError:
                if last_error is not None:
                    raise last_error from None
                raise
            try:
                response, call = self.send(plan, lease, request, options, "with_call")
            except grpc.RpcError as error:
                outcome = self.ended(plan, lease, error)
                delay = self.retry_delay(plan, outcome)
                if delay is None or self._sleep(delay):
                    raise
                last_error = error
                continue
            except BaseException:
                self.ended(plan, lease, None)
                raise
            self.ended(plan, lease, call, ok=True)
            return response, call

    # -------------------------------------------------------------- asynchronous calls

    def start_future(
        self,
        method: Method,
        request: Any,
        options: CallOptions,
        on_done: Callable[[Any, Any, Any, bool], None],
    ) -> AsyncRun:
        """Start a future; ``on_done(response, error, final, cancelled)`` runs once at its end."""
        return AsyncRun(self, method, request, options, on_done)

    def start_stream(self, method: Method, request: Any, options: CallOptions) -> StreamRun:
        """Start a call with a response stream (unary-stream or bidirectional)."""
        return StreamRun(self, method, request, options)

    def schedule(
        self, delay_s: float, fn: Callable[[], None], on_drop: Callable[[], None]
    ) -> Callable[[], None]:
        return self._schedule(delay_s, fn, on_drop)

    def sleep(self, delay_s: float) -> bool:
        return self._sleep(delay_s)


class _Run:
    """What a future's and a stream's runs share: the call, its current attempt, cancellation."""

    def __init__(self, engine: AttemptEngine, request: Any, options: CallOptions) -> None:
        self._engine = engine
        self._request = request
        self._options = options
        self._lock = threading.Lock()
        self._cancelled = False
        self.attempt: Any = None  # the current attempt's grpc call (or the error that ended it)
        self.plan: Plan | None = None

    def _adopt(self, inner: Any) -> None:
        """Make ``inner`` the current attempt; cancel it at once if the call was cancelled."""
        with self._lock:
            self.attempt = inner
            cancelled = self._cancelled
        if cancelled:
            inner.cancel()


class AsyncRun(_Run):
    """A future's attempts: each ends on grpc's callback thread; a retry is sent by the timer.

    ``on_done(response, error, final, cancelled)`` runs exactly once: on success (``final``
    the call that answered), on the last error, on :meth:`cancel`, or when the
    channel closes with a retry pending.
    """

    def __init__(
        self,
        engine: AttemptEngine,
        method: Method,
        request: Any,
        options: CallOptions,
        on_done: Callable[[Any, Any, Any, bool], None],
    ) -> None:
        super().__init__(engine, request, options)
        self._on_done = on_done
        self._done = False
        self._cancel_timer: Callable[[], None] | None = None
        self._last_error: Any = None
        try:
            self.plan = engine.begin(method, options)
        except LocalRpcError as error:
            self._finish(error=error)
            return
        self._next()

    def cancel(self) -> bool:
        """Cancel the call: its pending retry, and its attempt in flight. False once done."""
        with self._lock:
            if self._done:
                return False
            self._cancelled = True
            attempt, cancel_timer = self.attempt, self._cancel_timer
        if cancel_timer is not None:
            cancel_timer()
        self._finish(
            error=LocalRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"),
            cancelled=True,
        )
        if attempt is not None:
            attempt.cancel()
        return True

    def _next(self) -> None:
        plan = self.plan
        assert plan is not None
        with self._lock:
            if self._done:
                return
            self._cancel_timer = None
        first = plan.attempts == 0
        try:
            lease = self._engine.pick(plan)
        except LocalRpcError as error:
            self._finish(error=self._last_error if self._last_error is not None else error)
            return
        try:
            inner = self._engine.send(plan, lease, self._request, self._options, "future")
        except ValueError:  # the connection's channel closed meanwhile
            self._engine.ended(plan, lease, None)
            self._finish(error=closed_error())
            return
        except BaseException as error:
            self._engine.ended(plan, lease, None)
            if first:
                raise  # the caller's thread: e.g. a request its serializer refuses
            self._finish(
                error=LocalRpcError(grpc.StatusCode.INTERNAL, f"rpckit: retry not sent: {error!r}")
            )
            return
        self._adopt(inner)
        inner.add_done_callback(functools.partial(self._attempt_done, lease))

    def _attempt_done(self, lease: Lease, inner: Any) -> None:
        plan = self.plan
        assert plan is not None
        outcome = self._engine.ended(plan, lease, inner)
        if outcome.ok:
            self._finish(response=inner.result(), final=inner)
            return
        with self._lock:
            stop = self._done
        delay = None if stop else self._engine.retry_delay(plan, outcome)
        if delay is None:
            self._finish(error=inner)
            return
        self._last_error = inner
        cancel_timer = self._engine.schedule(
            delay, self._next, functools.partial(self._finish, error=inner)
        )
        with self._lock:
            self._cancel_timer = cancel_timer

    def _finish(
        self, *, response: Any = None, error: Any = None, final: Any = None, cancelled: bool = False
    ) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._on_done(response, error, final if final is not None else error, cancelled)


class StreamRun(_Run):
    """A response stream's attempts; iterate it. Retried (when safe) until its first message.

    Only a unary-stream call retries (its one request can be sent again); the
    current attempt's grpc call answers everything else (:attr:`attempt`).
    """

    def __init__(
        self, engine: AttemptEngine, method: Method, request: Any, options: CallOptions
    ) -> None:
        super().__init__(engine, request, options)
        self._received = False
        try:
            self.plan = engine.begin(method, options)
            self._start()
        except LocalRpcError as error:
            self.attempt = error

    def _start(self) -> None:
        plan = self.plan
        assert plan is not None
        lease = self._engine.pick(plan)
        try:
            inner = self._engine.send(plan, lease, self._request, self._options, "call")
        except BaseException:
            self._engine.ended(plan, lease, None)
            raise
        inner.add_done_callback(functools.partial(self._engine.ended, plan, lease))
        self._adopt(inner)

    def cancel(self) -> bool:
        with self._lock:
            self._cancelled = True
            attempt = self.attempt
        return bool(attempt.cancel())

    def __next__(self) -> Any:
        while True:
            try:
                message = next(self.attempt)
            except grpc.RpcError as error:
                if (
                    self._received
                    or self._cancelled
                    or self.plan is None
                    or isinstance(error, LocalRpcError)
                ):
                    raise
                code, trailers, details = call_status(error)
                outcome = observe(None if code is None else code.name, trailers, details)
                delay = self._engine.retry_delay(self.plan, outcome)
                if delay is None or self._engine.sleep(delay):
                    raise
                try:
                    self._start()
                except LocalRpcError:
                    raise error from None
                continue
            self._received = True
            return message

"""The balanced channel's call objects: what a generated stub gets back from the channel.

* the four multicallables (:class:`UnaryUnary`, :class:`UnaryStream`,
  :class:`StreamUnary`, :class:`StreamStream`), which hand each call to the
  channel's ``_unary_call`` / ``_client_stream_call`` / ``_async_call``;
* ``_UnaryFuture`` (a unary future across retries) and ``_StreamingResponse``
  (a unary-stream call, retried until its first message);
* :class:`LocalRpcError`, a call that failed in the client before any backend
  saw it;
* the per-call data the channel works with: :class:`Method`, :class:`CallOptions`,
  :class:`Plan`, and :func:`call_status`.

The channel decides every pick, retry and piece of feedback; these objects only
drive a call's attempts through it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from rpckit.client._config import is_method_path
from rpckit.client._scheduler import Job, Scheduler, run_safely

if TYPE_CHECKING:
    from rpckit.client._balancer import BalancedChannel, _Choice

__all__ = [
    "CallOptions",
    "LocalRpcError",
    "Method",
    "Plan",
    "StreamStream",
    "StreamUnary",
    "UnaryStream",
    "UnaryUnary",
    "call_status",
    "idempotent_in_pool",
    "method_key",
]

_IDEMPOTENT_LEVELS = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)


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


@dataclasses.dataclass(eq=False)
class Plan:
    """One logical call: its deadline and the attempts made so far."""

    method: Method
    deadline: float | None
    wait_for_ready: bool
    attempts: int = 0
    tried: set[str] = dataclasses.field(default_factory=set)
    trace_context: Any = None  # with tracing: the context the call began in (its attempts' parent)

    def attempt_timeout(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


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


def method_key(kind: str, path: str, *parts: Any) -> tuple[Any, ...] | None:
    key = (kind, path, *parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def idempotent_in_pool(path: str) -> bool:
    """Whether the proto declares ``/pkg.Service/Method`` NO_SIDE_EFFECTS or IDEMPOTENT.

    Looked up in protobuf's default descriptor pool, which holds every
    imported ``_pb2`` module (generated stubs import theirs). Unknown: False.
    """
    if not is_method_path(path):
        return False
    service, _, name = path[1:].partition("/")
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return False
    return method.GetOptions().idempotency_level in _IDEMPOTENT_LEVELS


def call_status(inner: Any) -> tuple[grpc.StatusCode | None, Sequence[Any], str]:
    """(code, trailing metadata, details) of a finished grpc call or RpcError."""
    try:
        code = inner.code()
        trailers = tuple(inner.trailing_metadata() or ())
        details = inner.details() or ""
    except Exception:  # noqa: BLE001 - a call object in an odd state tells nothing
        return None, (), ""
    return code, trailers, str(details)


# ---------------------------------------------------------------- local errors


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


# ---------------------------------------------------------------- multicallables


def _options(
    timeout: float | None,
    metadata: Any,
    credentials: grpc.CallCredentials | None,
    wait_for_ready: bool | None,
    compression: grpc.Compression | None,
) -> CallOptions:
    return CallOptions(timeout, metadata, credentials, wait_for_ready, compression)


class UnaryUnary(grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: Method) -> None:
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


class UnaryStream(grpc.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: Method) -> None:
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


class StreamUnary(grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: Method) -> None:
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


class StreamStream(grpc.StreamStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, channel: BalancedChannel, method: Method) -> None:
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
        self, channel: BalancedChannel, method: Method, request: Any, options: CallOptions
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
        self._job: Job | None = None
        self._last_error: Any = None
        self._done_callbacks: list[Callable[[Any], None]] = []
        self._end_callbacks: list[Callable[[], None]] = []
        self._plan: Plan | None = None
        try:
            self._plan = channel._begin(method, options)
        except LocalRpcError as error:
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
        except LocalRpcError as error:
            self._complete(error=self._last_error if self._last_error is not None else error)
            return
        inner_callable = self._channel._attempt_callable(choice, self._method, self._plan)
        try:
            inner = inner_callable.future(
                self._request, timeout=self._plan.attempt_timeout(), **self._options.grpc_kwargs()
            )
        except ValueError:  # the channel closed meanwhile
            self._channel._finish(choice, None, (), "", unary=True)
            self._complete(
                error=LocalRpcError(grpc.StatusCode.CANCELLED, "rpckit: the channel was closed")
            )
            return
        with self._cond:
            self._attempt = inner
            cancelled = self._cancelled
        if cancelled:
            inner.cancel()
        inner.add_done_callback(functools.partial(self._attempt_done, choice))

    def _attempt_done(self, choice: _Choice, inner: Any) -> None:
        code, trailers, details = call_status(inner)
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
            run_safely(functools.partial(fn, self))
        for callback in end_callbacks:
            run_safely(callback)

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
            Scheduler.cancel(job)
        self._complete(
            error=LocalRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"),
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
        self, channel: BalancedChannel, method: Method, request: Any, options: CallOptions
    ) -> None:
        self._channel = channel
        self._method = method
        self._request = request
        self._options = options
        self._lock = threading.Lock()
        self._received = False
        self._cancelled = False
        self._attempt: Any = None
        self._plan: Plan | None = None
        try:
            self._plan = channel._begin(method, options)
            self._start(may_wait=True)
        except LocalRpcError as error:
            self._attempt = error

    def _start(self, *, may_wait: bool) -> None:
        assert self._plan is not None
        choice = self._channel._pick(self._plan, may_wait=may_wait)
        inner_callable = self._channel._attempt_callable(choice, self._method, self._plan)
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
                    or isinstance(error, LocalRpcError)
                ):
                    raise
                delay = self._channel._retry_delay(self._plan, error)
                if delay is None or self._channel._closed_event.wait(delay):
                    raise
                try:
                    self._start(may_wait=False)
                except LocalRpcError:
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

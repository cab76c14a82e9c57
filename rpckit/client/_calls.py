"""The balanced channel's call objects: what a generated stub gets back from the channel.

* the four multicallables (:class:`UnaryUnary`, :class:`UnaryStream`,
  :class:`StreamUnary`, :class:`StreamStream`), which hand each call to the
  attempt engine (:mod:`rpckit.client._attempts`);
* ``_UnaryFuture`` (a future across its attempts) and ``_StreamingResponse``
  (a call with a response stream), the grpc.Future/grpc.Call faces of the
  engine's :class:`AsyncRun` and :class:`StreamRun`;
* :func:`idempotent_in_pool` and :func:`method_key`, what the channel learns of
  a method when a stub asks for it.

The engine decides every pick, retry and piece of feedback; these objects know
only the engine, never the channel (docs/architecture.md, "The balanced client:
attempts and feedback").
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from rpckit.client._attempts import AttemptEngine, CallOptions, Method
from rpckit.client._config import is_method_path
from rpckit.client._scheduler import run_safely

__all__ = [
    "StreamStream",
    "StreamUnary",
    "UnaryStream",
    "UnaryUnary",
    "idempotent_in_pool",
    "method_key",
]

_IDEMPOTENT_LEVELS = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)


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
    def __init__(self, engine: AttemptEngine, method: Method) -> None:
        self._engine = engine
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
        return self._engine.call(self._method, request, options)[0]

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
        return self._engine.call(self._method, request, options)

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
        return _UnaryFuture(self._engine, self._method, request, options)


class UnaryStream(grpc.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, engine: AttemptEngine, method: Method) -> None:
        self._engine = engine
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
        return _StreamingResponse(self._engine, self._method, request, options)


class StreamUnary(grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, engine: AttemptEngine, method: Method) -> None:
        self._engine = engine
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
        return self._engine.call(self._method, request_iterator, options)[0]

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
        return self._engine.call(self._method, request_iterator, options)

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
        return _UnaryFuture(self._engine, self._method, request_iterator, options)


class StreamStream(grpc.StreamStreamMultiCallable):  # type: ignore[type-arg]
    def __init__(self, engine: AttemptEngine, method: Method) -> None:
        self._engine = engine
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
        return _StreamingResponse(self._engine, self._method, request_iterator, options)


# ---------------------------------------------------------------- future and stream objects


class _UnaryFuture(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A future with one response, across its attempts (driven by :class:`AsyncRun`).

    ``initial_metadata()`` waits for the call to end (the attempt that counts
    is known only then); everything else behaves like grpcio's future. Like a
    blocking call, a future made while no backend has answered its health
    check yet waits for one (``wait_for_backend_s``) before it is returned.
    """

    def __init__(
        self, engine: AttemptEngine, method: Method, request: Any, options: CallOptions
    ) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._response: Any = None
        self._error: Any = None
        self._final: Any = None  # the grpc call (or error) that ended it
        self._done_callbacks: list[Callable[[Any], None]] = []
        self._end_callbacks: list[Callable[[], None]] = []
        self._run = engine.start_future(method, request, options, self._complete)

    def _complete(self, response: Any, error: Any, final: Any, cancelled: bool) -> None:
        with self._cond:
            if self._done:
                return
            self._done = True
            self._cancelled = cancelled
            self._response = response
            self._error = error
            self._final = final
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
        return self._run.cancel()

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
        plan = self._run.plan
        return None if plan is None else plan.time_left(self._engine.now())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._cond:
            if self._done:
                return False
            self._end_callbacks.append(callback)
            return True


class _StreamingResponse(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A call with a response stream: iterate it (driven by :class:`StreamRun`).

    Everything else is answered by the current attempt's grpc call object.
    """

    def __init__(
        self, engine: AttemptEngine, method: Method, request: Any, options: CallOptions
    ) -> None:
        self._engine = engine
        self._run = engine.start_stream(method, request, options)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._run)

    def next(self) -> Any:
        """grpcio's streaming calls have it too."""
        return self.__next__()

    # grpc.Call / grpc.Future: the current attempt answers.

    def cancel(self) -> bool:
        return self._run.cancel()

    def cancelled(self) -> bool:
        return bool(self._run.attempt.cancelled())

    def running(self) -> bool:
        return bool(self._run.attempt.running())

    def done(self) -> bool:
        return bool(self._run.attempt.done())

    def result(self, timeout: float | None = None) -> Any:
        return self._run.attempt.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._run.attempt.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._run.attempt.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._run.attempt.add_done_callback(lambda _: fn(self))

    def initial_metadata(self) -> Any:
        return self._run.attempt.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._run.attempt.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._run.attempt.code()  # type: ignore[no-any-return]

    def details(self) -> Any:
        return self._run.attempt.details()

    def is_active(self) -> bool:
        return bool(self._run.attempt.is_active())

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpcio: None without a deadline
        plan = self._run.plan
        return None if plan is None else plan.time_left(self._engine.now())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._run.attempt.add_callback(callback))

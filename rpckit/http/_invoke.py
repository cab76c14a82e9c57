"""How the legacy HTTP shim runs a gRPC method: in process, through a server, or over a channel.

Three invokers answer one question -- "call this method with this request,
metadata and deadline; what came back?" -- as a :class:`CallOutcome` (the
response or the status, and the metadata):

* :class:`LocalInvoker` without a submitter: the servicer's method runs in the
  calling (WSGI) thread, inside rpckit's handler wrapper (deadline scope,
  cancellation, StatusError mapping, INTERNAL without traceback) -- exactly what
  a gRPC call gets, minus the network;
* :class:`LocalInvoker` with a server's submitter: the same, but through the
  server's admission control, so overload sheds HTTP calls like gRPC ones
  (RESOURCE_EXHAUSTED, pushback). When admission would start the call at once
  (a handler slot free, nothing queued, deadline longer than the method's
  service time) it runs in the WSGI thread, counted in the server's slots and
  load like any call (``run_now``): a thread handoff there and back costs more
  than most handlers. Otherwise it waits in the admission queue and runs on a
  handler thread; the WSGI thread answers at the deadline (504) if it must.
  A call run in the WSGI thread, like one run without a submitter, answers
  when its handler returns: past its deadline that is a 504, and the handler
  sees the deadline (``time_remaining()``, ``rpckit.cancelled()``, outbound
  calls inherit it) so it can stop early;
* :class:`ChannelInvoker`: a real gRPC call over any ``grpc.Channel`` (a plain
  channel, ``rpckit.connect``, or a balanced channel): proxy mode.

Handlers see a :class:`ShimServicerContext`, a ``grpc.ServicerContext`` whose
metadata are the allowlisted request headers and whose deadline is the
request's. Only unary methods are served over HTTP.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from rpckit.core._wire import CRITICALITY_METADATA_KEY, STATUS_DETAILS_METADATA_KEY
from rpckit.http._mapping._routes import Route
from rpckit.http._server._turns import OutsideTurn, QuickCalls
from rpckit.server._admission import Criticality, parse_criticality
from rpckit.server._errors import INTERNAL_MESSAGE
from rpckit.server._executor import CallFacts

__all__ = [
    "CallOutcome",
    "ChannelInvoker",
    "Invoker",
    "LocalInvoker",
    "RunNow",
    "ShimServicerContext",
    "Submit",
]

_log = logging.getLogger("rpckit.http")

Metadata = tuple[tuple[str, str | bytes], ...]

#: Runs ``fn`` under admission control as a call with ``facts``; the future ends when it did.
Submit = Callable[[Callable[[], None], CallFacts], "concurrent.futures.Future[None]"]
#: Runs ``fn`` in the calling thread if admission would start it at once; False: it did not.
RunNow = Callable[[Callable[[], None], CallFacts], bool]

_Metadatum = collections.namedtuple("_Metadatum", ("key", "value"))

#: What ``time_remaining()`` says without a deadline: what grpcio says (~9.2e18 s).
NO_DEADLINE_REMAINING_S = float(2**63)


@dataclasses.dataclass(frozen=True)
class CallOutcome:
    """What one call gave: the response (on OK) or the status, and all its metadata."""

    response: Message | None
    code: grpc.StatusCode
    message: str
    metadata: Metadata = ()

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    def details(self) -> tuple[any_pb2.Any, ...]:
        """The google.rpc detail messages of a failed call (``grpc-status-details-bin``)."""
        for key, value in self.metadata:
            if key == STATUS_DETAILS_METADATA_KEY and isinstance(value, bytes):
                try:
                    return tuple(status_pb2.Status.FromString(value).details)
                except DecodeError:
                    return ()
        return ()


class Invoker:
    """Runs a route's gRPC method (see the module docstring)."""

    def call(
        self,
        route: Route,
        request: Message,
        *,
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
        peer: str,
        outside_turn: OutsideTurn | None = None,
    ) -> CallOutcome:
        """``outside_turn``: the embedded HTTP server's way out of the request's turn
        (:mod:`rpckit.http._server._turns`), to wait or run slow handlers in."""
        raise NotImplementedError


class _Aborted(Exception):  # noqa: N818 - the handler aborted the call; not an error of ours
    """Raised by :meth:`ShimServicerContext.abort` to end the handler, as grpcio does."""


class ShimServicerContext(grpc.ServicerContext):
    """The ``grpc.ServicerContext`` a handler sees when called by the HTTP shim."""

    #: No load-report trailer (rpckit's handler wrapper): nothing reads it over HTTP.
    wants_load_report = False

    def __init__(
        self,
        metadata: Sequence[tuple[str, str]],
        *,
        deadline: float | None,
        clock: Callable[[], float],
        peer: str,
    ) -> None:
        self._metadata = tuple(_Metadatum(k, v) for k, v in metadata)
        self._deadline = deadline
        self._clock = clock
        self._peer = peer
        self._lock = threading.Lock()
        self._active = True
        self._callbacks: list[Callable[[], None]] = []
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._initial: Metadata = ()
        self._trailing: Metadata = ()

    # -- RpcContext

    def is_active(self) -> bool:
        return self._active

    def time_remaining(self) -> float:
        if self._deadline is None:
            return NO_DEADLINE_REMAINING_S
        return max(0.0, self._deadline - self._clock())

    def cancel(self) -> None:
        """The HTTP client is gone or its deadline passed: tell the handler."""
        with self._lock:
            if not self._active:
                return
            self._active = False
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one bad callback must not stop the others
                _log.exception("a cancellation callback failed")

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if not self._active:
                return False
            self._callbacks.append(callback)
            return True

    # -- ServicerContext

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, bytes]:
        return {}

    def set_compression(self, compression: grpc.Compression) -> None:
        """Nothing is compressed between the shim and an in-process handler."""

    def disable_next_message_compression(self) -> None:
        """Nothing is compressed between the shim and an in-process handler."""

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._initial = (*self._initial, *((k, v) for k, v in initial_metadata))

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple((k, v) for k, v in trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        if code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN  # grpcio's rule: abort never ends a call OK
        self._code, self._details = code, details
        raise _Aborted(details)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._trailing = (*self._trailing, *tuple(status.trailing_metadata or ()))
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def outcome(self, response: Message | None) -> CallOutcome:
        """What the call gave, once the handler returned (or aborted)."""
        metadata = (*self._initial, *self._trailing)
        code = self._code or grpc.StatusCode.OK
        if code is grpc.StatusCode.OK and response is None:
            _log.error("a handler returned None without setting a status")
            return CallOutcome(None, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, metadata)
        if code is not grpc.StatusCode.OK:
            return CallOutcome(None, code, self._details, metadata)
        return CallOutcome(response, code, "", metadata)


def criticality_of(metadata: Sequence[tuple[str, str]]) -> Criticality:
    """The ``rpckit-criticality`` of a call's metadata (DEFAULT when absent or unreadable)."""
    for key, value in metadata:
        if key == CRITICALITY_METADATA_KEY:
            try:
                return parse_criticality(value)
            except ValueError:
                return Criticality.DEFAULT
    return Criticality.DEFAULT


class LocalInvoker(Invoker):
    """Servicer methods in process, through rpckit's handler wrapper (module docstring).

    ``handlers`` are wrapped method handlers keyed by full method name
    (``/inventory.v1.Inventory/GetItem``); ``submit`` (a server's admission
    executor) runs them on handler threads, or None runs them in the caller's
    thread. With ``submit``, ``run_now`` (the same executor's) first tries to
    run a call in the caller's thread, admitted at once.
    """

    def __init__(
        self,
        handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
        *,
        submit: Submit | None,
        clock: Callable[[], float],
        run_now: RunNow | None = None,
    ) -> None:
        if run_now is not None and submit is None:
            raise TypeError("run_now needs the submit of the same executor")
        self._handlers = dict(handlers)
        self._submit = submit
        self._run_now = run_now
        self._clock = clock
        self._quick = QuickCalls(clock=clock)  # handler run times, by method

    def call(
        self,
        route: Route,
        request: Message,
        *,
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
        peer: str,
        outside_turn: OutsideTurn | None = None,
    ) -> CallOutcome:
        handler = self._handlers.get(route.grpc_method)
        behavior = None if handler is None else handler.unary_unary
        if behavior is None:
            return CallOutcome(
                None, grpc.StatusCode.UNIMPLEMENTED, f"{route.grpc_method} is not served here"
            )
        if deadline is not None and deadline <= self._clock():
            return CallOutcome(
                None, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before the call started"
            )
        context = ShimServicerContext(metadata, deadline=deadline, clock=self._clock, peer=peer)
        run = _InProcessCall(route.grpc_method, behavior, request, context, self._clock)
        facts = None
        if self._submit is not None:
            facts = CallFacts(
                method=run.method, deadline=deadline, criticality=criticality_of(metadata)
            )
        # Quick lately: run inside the request's turn if it can start at once; else
        # (slow, unknown, or it must queue) step out of the turn for it.
        quick = outside_turn is not None and self._quick.is_quick(run.method)
        failed = None
        if not (quick and self._run_here(run, facts)):
            with outside_turn() if outside_turn is not None else contextlib.nullcontext():
                if not self._run_here(run, facts):
                    assert facts is not None
                    failed = self._through_admission(run, facts)
        if run.seconds is not None:  # the handler finished (not still running past a 504)
            self._quick.record(run.method, run.seconds)
        if failed is not None:
            return failed
        if deadline is not None and self._clock() > deadline and context.code() is None:
            context.cancel()
            return CallOutcome(None, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        return context.outcome(run.response)

    def _run_here(self, run: _InProcessCall, facts: CallFacts | None) -> bool:
        """Run in this thread: without a submitter, or when admission starts it at once."""
        if self._submit is None:
            run()
            return True
        assert facts is not None
        return self._run_now is not None and self._run_now(run, facts)

    def _through_admission(self, run: _InProcessCall, facts: CallFacts) -> CallOutcome | None:
        """Run ``run`` via the server's admission queue; an outcome if it did not finish."""
        assert self._submit is not None
        deadline = facts.deadline
        try:
            future = self._submit(run, facts)
        except RuntimeError:  # the executor was shut down: the server is stopping
            return CallOutcome(None, grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        try:
            future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            run.context.cancel()
            return CallOutcome(None, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        if not run.ran:  # dropped without running: the server shut its pools down
            return CallOutcome(None, grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        return None


class _InProcessCall:
    """One call of a wrapped behaviour with a :class:`ShimServicerContext`; keeps what it gave."""

    def __init__(
        self,
        method: str,
        behavior: Callable[[Any, grpc.ServicerContext], Any],
        request: Message,
        context: ShimServicerContext,
        clock: Callable[[], float],
    ) -> None:
        self.method = method
        self.context = context
        self.ran = False
        self.seconds: float | None = None  # how long the handler ran, once it returned
        self.response: Message | None = None
        self._behavior = behavior
        self._request = request
        self._clock = clock
        # The request's context variables (a guard's identity, a legacy app's request
        # context) reach the handler even when it runs on a server's handler thread.
        self._variables = contextvars.copy_context()

    def __call__(self) -> None:
        self.ran = True
        started = self._clock()
        try:
            self.response = self._variables.run(self._behavior, self._request, self.context)
        except _Aborted:
            pass
        except Exception:  # noqa: BLE001 - the wrapper maps handler errors; this is ours
            _log.exception("calling %s in process failed", self.method)
            self.context.set_code(grpc.StatusCode.INTERNAL)
            self.context.set_details(INTERNAL_MESSAGE)
        finally:
            self.seconds = self._clock() - started


class ChannelInvoker(Invoker):
    """A real gRPC call over ``channel`` for each request: proxy mode (module docstring)."""

    def __init__(self, channel: grpc.Channel, *, clock: Callable[[], float]) -> None:
        self._channel = channel
        self._clock = clock
        self._lock = threading.Lock()
        self._callables: dict[str, grpc.UnaryUnaryMultiCallable[Any, Any]] = {}

    def _callable(self, route: Route) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        with self._lock:
            multi = self._callables.get(route.grpc_method)
            if multi is None:
                response_class = message_factory.GetMessageClass(route.response_descriptor)
                multi = self._channel.unary_unary(
                    route.grpc_method,
                    request_serializer=_serialize,
                    response_deserializer=response_class.FromString,
                )
                self._callables[route.grpc_method] = multi
            return multi

    def call(
        self,
        route: Route,
        request: Message,
        *,
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
        peer: str,
        outside_turn: OutsideTurn | None = None,
    ) -> CallOutcome:
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        try:
            with outside_turn() if outside_turn is not None else contextlib.nullcontext():
                response, call = self._callable(route).with_call(
                    request, timeout=timeout, metadata=tuple(metadata)
                )
        except grpc.RpcError as error:
            if not isinstance(error, grpc.Call):
                return CallOutcome(None, grpc.StatusCode.UNKNOWN, str(error))
            got = (*(error.initial_metadata() or ()), *(error.trailing_metadata() or ()))
            return CallOutcome(None, error.code(), error.details() or "", _pairs(got))
        got = (*(call.initial_metadata() or ()), *(call.trailing_metadata() or ()))
        return CallOutcome(response, grpc.StatusCode.OK, "", _pairs(got))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _pairs(metadata: Iterable[Any]) -> Metadata:
    return tuple((str(k), v) for k, v in metadata)

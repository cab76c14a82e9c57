"""The grpcio internals rpckit relies on, all in one place.

grpcio's sync server offers no hook between "a call arrived" and "a thread
runs its handler", which is exactly where admission control must sit. rpckit
uses these private details of grpcio 1.85 (the dependency is pinned to that
minor series, and the integration tests exercise each of them):

1. ``executor.submit(fn, *args)`` is called with ``args[1]`` the call's
   ``rpc_event`` (method, deadline, metadata) and ``args[2]`` its ``_RPCState``;
2. ``grpc._server._abort(state, call, code, details)`` ends a call with a status
   -- used to reject a queued call without reading its request or taking a
   handler thread, the cheapest refusal grpcio can make;
3. a behaviour's ``experimental_thread_pool`` attribute routes its calls to
   another pool (health checks stay answerable under overload);
4. ``server._state.interceptor_pipeline`` says whether server interceptors wrap
   the handlers (:func:`has_interceptors`);
5. ``rpc_event.call.peer()`` and ``cygrpc.auth_context(call)`` give the peer and
   its TLS identity before a handler runs (:func:`read_peer`, for the auth gate);
6. a call with one request message is submitted as ``(_unary_response_in_pool`` or
   ``_stream_response_in_pool, rpc_event, state, behaviour, request_thunk, ...)``,
   the thunk (the closure ``_unary_request`` makes) starting the message's receive and
   waiting for grpcio's dispatch thread to deliver it (:func:`receive_request_now`
   starts it at admission instead).

A server interceptor (OpenTelemetry's, say) replaces rpckit's behaviour with
its own function, so the attributes of 1 and 3 are gone. Then the method is
read from the call itself (generic, not registered, handlers: see
``rpckit.server._server``) and the executor routes by method name.

If the shapes ever differ, :func:`read_call` returns ``None`` and
:func:`abort_queued` returns ``False``: rpckit then falls back to running the
rejection through the handler wrapper, slower but correct.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import grpc

__all__ = [
    "CallPeer",
    "SubmittedCall",
    "abort_queued",
    "has_interceptors",
    "read_call",
    "read_peer",
    "receive_request_now",
]


class SubmittedCall(NamedTuple):
    """What grpcio's submit arguments say about a call."""

    method: str
    deadline_wall: float  # time.time() seconds; huge when the caller set none
    metadata: Sequence[tuple[str, Any]]


def read_call(args: tuple[Any, ...]) -> SubmittedCall | None:
    """Method, deadline and metadata from grpcio's ``submit`` arguments, if recognisable.

    Registered methods arrive with an empty ``call_details.method``; rpckit's
    handler wrapper (also among the arguments) carries the method name then.
    """
    try:
        rpc_event = args[1]
        details = rpc_event.call_details
        deadline = float(details.deadline)
        metadata = rpc_event.invocation_metadata or ()
        raw = details.method
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    # The behaviour is args[3] for every call shape in grpcio 1.85; look further if not.
    method = getattr(args[3], "rpckit_method", None) if len(args) > 3 else None
    if not isinstance(method, str):
        method = next(
            (a.rpckit_method for a in args if isinstance(getattr(a, "rpckit_method", None), str)),
            None,
        )
    if method is None:
        method = _method_name(raw)
    return SubmittedCall(method, deadline, metadata)


def _method_name(raw: object) -> str:
    """grpcio's ``call_details.method`` (bytes) as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def abort_queued(
    args: tuple[Any, ...],
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: Sequence[tuple[str, str | bytes]],
) -> bool:
    """End a submitted-but-not-started call with ``code``; False if grpcio's shapes differ.

    Safe from any thread, including grpcio's dispatch thread inside ``submit``:
    it takes only the call's own condition and starts one non-blocking batch.
    """
    from grpc import _common as grpc_common
    from grpc import _server as grpc_server

    try:
        rpc_event, state = args[1], args[2]
        call = rpc_event.call
        cy_code = grpc_common.STATUS_CODE_TO_CYGRPC_STATUS_CODE[code]
        abort = grpc_server._abort
    except (AttributeError, IndexError, KeyError, TypeError):
        return False
    if not isinstance(state, grpc_server._RPCState):
        return False
    encoded = details.encode()
    with state.condition:
        if state.statused:
            return True
        state.trailing_metadata = tuple(trailing_metadata)
        state.code = code
        state.details = encoded
        abort(state, call, cy_code, encoded)
    return True


def has_interceptors(server: grpc.Server) -> bool:
    """Whether server interceptors wrap every handler (True when it cannot be told)."""
    state = getattr(server, "_state", None)
    if state is None or not hasattr(state, "interceptor_pipeline"):
        return True
    return state.interceptor_pipeline is not None


class CallPeer(NamedTuple):
    """Who is on the other end of a submitted call: address and TLS auth context."""

    peer: str
    auth_context: Mapping[str, Sequence[bytes]]


def read_peer(args: tuple[Any, ...]) -> CallPeer | None:
    """The peer address and auth context (x509 subject, SANs) from ``submit``'s arguments.

    What ``ServicerContext.peer()`` and ``auth_context()`` read, available before
    the call is admitted (rpckit's auth gate asks here, on the dispatch thread).
    None if grpcio's shapes differ.
    """
    from grpc._cython import cygrpc  # type: ignore[attr-defined]

    try:
        call = args[1].call
        peer = call.peer()
        context = cygrpc.auth_context(call) or {}
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    text = peer.decode("utf-8", "replace") if isinstance(peer, bytes) else str(peer)
    decoded = {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): tuple(v)
        for k, v in context.items()
    }
    return CallPeer(text, decoded)


@functools.cache
def _one_message_thunk_code() -> Any:
    """The code object of the thunk grpcio's ``_unary_request`` returns, or None.

    Found once: it is a constant of ``_unary_request``'s own code, the only nested
    function there.
    """
    from grpc import _server as grpc_server

    code = getattr(getattr(grpc_server, "_unary_request", None), "__code__", None)
    nested = [c for c in getattr(code, "co_consts", ()) if isinstance(c, types.CodeType)]
    return nested[0] if len(nested) == 1 else None


def receive_request_now(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Start receiving the request of a call with one request message; ``submit``'s
    arguments with a thunk that only waits for it, or None (another call shape, a
    call already ended, or grpcio's shapes differ: keep the original arguments).

    grpcio starts the receive in the handler thread, which then sleeps until the
    dispatch thread has processed the message and woken it: one more hand-off of the
    GIL and a wake-up per call, behind a dispatch thread that may be busy. Started at
    admission -- on the dispatch thread, inside ``submit`` -- the message is usually
    there when a handler thread takes the call (bench/README.md, "The request read at
    admission"). Only for calls that start at once: a queued call's message stays in
    grpc core's flow-control window, not read into this process.
    """
    from grpc import _server as grpc_server
    from grpc._cython import cygrpc  # type: ignore[attr-defined]

    try:
        run, rpc_event, state, behavior, thunk, deserializer, *rest = args
        # grpcio's one-message thunk, not a request stream's (both are run by these pools).
        thunk_code = _one_message_thunk_code()
        one_message = thunk_code is not None and getattr(thunk, "__code__", None) is thunk_code
        call = rpc_event.call
        receive_message = grpc_server._receive_message
        token = grpc_server._RECEIVE_MESSAGE_TOKEN
        operation = cygrpc.ReceiveMessageOperation(grpc_server._EMPTY_FLAGS)
        active = grpc_server._is_rpc_state_active
        closed, cancelled = grpc_server._CLOSED, grpc_server._CANCELLED
    except (AttributeError, TypeError, ValueError):
        return None
    one_request = (grpc_server._unary_response_in_pool, grpc_server._stream_response_in_pool)
    if not one_message or run not in one_request or not isinstance(state, grpc_server._RPCState):
        return None
    with state.condition:
        if not active(state):
            return None
        call.start_server_batch((operation,), receive_message(state, call, deserializer))
        cast(Any, state).due.add(token)  # grpcio types the field loosely

    def received() -> Any:
        """The request (None if the call ended without one), as grpcio's thunk returns it."""
        with state.condition:
            while True:
                if state.request is not None:
                    request = state.request
                    state.request = None
                    return request
                if state.client is closed:
                    name = _method_name(rpc_event.call_details.method)
                    details = f'"{name}" requires exactly one request message.'
                    grpc_server._abort(
                        state, call, cygrpc.StatusCode.unimplemented, details.encode()
                    )
                    return None
                if state.client is cancelled or not active(state):
                    return None
                state.condition.wait()

    return (run, rpc_event, state, behavior, received, deserializer, *rest)

"""Outbound channels that carry the inbound deadline and cancellation to the next hop.

``rpckit.connect(target)`` is a grpcio channel whose every call gets, as its
timeout, the deadline of the call being served minus a margin (an explicit
``timeout=`` can only shorten it), and is cancelled when the call being served
ends first (its client cancelled or went away): the next hop stops working for
a caller who has left, as it would on the deadline, but at once. Used inside a
handler, deadline and cancellation therefore cross every hop; used outside one,
it is a plain channel.

grpcio interceptors cannot do the second part: the continuation of a blocking
call blocks, and the call object exists only once it has ended. So the channel
is wrapped, and inside a handler a blocking call is made as a future, hooked to
the inbound call's :class:`~rpckit.core._deadline.CallScope`, and waited on.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import grpc

from rpckit.core._deadline import OUTBOUND_MARGIN_S, current_scope, outbound_timeout

__all__ = ["CancellingChannel", "DeadlineInterceptor", "connect"]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class DeadlineInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Caps each outbound call's timeout by the inbound deadline (minus ``margin_s``)."""

    def __init__(self, *, margin_s: float = OUTBOUND_MARGIN_S) -> None:
        self._margin_s = margin_s

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        timeout = outbound_timeout(details.timeout, now=time.monotonic(), margin_s=self._margin_s)
        return _CallDetails(
            details.method,
            timeout,
            details.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(self._details(details), request_iterator)


def _cancel_with_scope(call: Any) -> Any:
    """Cancel ``call`` (a grpc Future) if the inbound call being served ends first."""
    scope = current_scope()
    if scope is not None:
        unregister = scope.on_cancel(call.cancel)
        call.add_done_callback(lambda _: unregister())
    return call


def _result(future: Any) -> Any:
    """The response, or the RpcError a blocking call raises (CANCELLED once cancelled)."""
    try:
        return future.result()
    except grpc.FutureCancelledError:
        raise future from None  # grpcio's call futures are RpcErrors: code() is CANCELLED


class _UnaryResponse:
    """A multicallable with one response (unary-unary, stream-unary): blocking calls made
    inside a handler go through ``future()`` so the inbound call can cancel them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if current_scope() is None:
            return self._inner(request, *args, **kwargs)
        return _result(_cancel_with_scope(self._inner.future(request, *args, **kwargs)))

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> tuple[Any, grpc.Call]:
        if current_scope() is None:
            return cast("tuple[Any, grpc.Call]", self._inner.with_call(request, *args, **kwargs))
        future = _cancel_with_scope(self._inner.future(request, *args, **kwargs))
        return _result(future), future

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return _cancel_with_scope(self._inner.future(request, *args, **kwargs))


class _StreamResponse:
    """A multicallable with a response stream: the call is also a Future to cancel."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return _cancel_with_scope(self._inner(request, *args, **kwargs))


class CancellingChannel(grpc.Channel):
    """A channel whose calls, made while serving a call, end when that call ends."""

    def __init__(self, inner: grpc.Channel) -> None:
        self._inner = inner

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryResponse(self._inner.unary_unary(method, *args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryResponse(self._inner.stream_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _StreamResponse(self._inner.unary_stream(method, *args, **kwargs))

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _StreamResponse(self._inner.stream_stream(method, *args, **kwargs))

    def subscribe(self, callback: Callable[..., Any], try_to_connect: bool = False) -> None:
        self._inner.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Callable[..., Any]) -> None:
        self._inner.unsubscribe(callback)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> CancellingChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    margin_s: float = OUTBOUND_MARGIN_S,
) -> grpc.Channel:
    """A channel to one ``target`` that propagates the inbound deadline and cancellation.

    Example::

        channel = rpckit.connect("127.0.0.1:50051")
        stub = inventory_pb2_grpc.InventoryStub(channel)
        stub.GetItem(inventory_pb2.GetItemRequest(sku="A-1"))   # timeout inherited in handlers
    """
    if credentials is None:
        channel = grpc.insecure_channel(target, options=list(options))
    else:
        channel = grpc.secure_channel(target, credentials, options=list(options))
    return CancellingChannel(
        grpc.intercept_channel(channel, DeadlineInterceptor(margin_s=margin_s))
    )

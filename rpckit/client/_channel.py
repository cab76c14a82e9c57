"""Outbound channels that carry the inbound deadline to the next hop.

``rpckit.connect(target)`` is a grpcio channel whose every call gets, as its
timeout, the deadline of the call being served minus a margin (an explicit
``timeout=`` can only shorten it). Used inside a handler, a deadline therefore
crosses every hop; used outside one, it is a plain channel.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from rpckit.core._deadline import OUTBOUND_MARGIN_S, outbound_timeout

__all__ = ["DeadlineInterceptor", "connect"]


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


def connect(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    margin_s: float = OUTBOUND_MARGIN_S,
) -> grpc.Channel:
    """A channel to one ``target`` that propagates the inbound deadline.

    Example::

        channel = rpckit.connect("127.0.0.1:50051")
        stub = inventory_pb2_grpc.InventoryStub(channel)
        stub.GetItem(inventory_pb2.GetItemRequest(sku="A-1"))   # timeout inherited in handlers
    """
    if credentials is None:
        channel = grpc.insecure_channel(target, options=list(options))
    else:
        channel = grpc.secure_channel(target, credentials, options=list(options))
    return grpc.intercept_channel(channel, DeadlineInterceptor(margin_s=margin_s))

"""Errors a handler raises on purpose, and how every error reaches the caller.

    Exception
     +-- StatusError          an expected failure with a gRPC status (raise it, or call abort())
     +-- ConfigError          bad configuration or CLI input; the message says what to change
                              (defined in rpckit.server._config, which imports no grpc, so that
                              ``rpckit serve --workers``'s supervisor can raise it)

Anything else a handler raises is a bug: the caller gets ``INTERNAL`` with a
generic message, the traceback goes to the log, never onto the wire.

:class:`StatusError` may carry ``google.rpc`` detail messages (``BadRequest``,
``ErrorInfo``, ``RetryInfo``...), sent as ``grpc-status-details-bin`` through
grpcio-status; :func:`status_details` reads them back on the client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, message
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from rpckit.core._deadline import current_scope
from rpckit.server._config import ConfigError

__all__ = [
    "ConfigError",
    "StatusError",
    "abort",
    "raise_if_cancelled",
    "status_details",
    "to_grpc_status",
]

#: What the caller of a failed handler reads; the details stay in the server log.
INTERNAL_MESSAGE = "internal error; the server logged the details"


class StatusError(Exception):
    """An expected failure: a gRPC code, a message for the caller, optional rich details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        details: Sequence[message.Message] = (),
        trailers: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        if code is grpc.StatusCode.OK:
            raise ValueError("StatusError needs a failure code, not OK")
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.trailers = tuple(trailers)


def abort(
    code: grpc.StatusCode,
    message: str,
    *details: message.Message,
    trailers: Sequence[tuple[str, str | bytes]] = (),
) -> NoReturn:
    """End the current call with ``code`` and ``message`` (and google.rpc ``details``).

    Example::

        from google.rpc import error_details_pb2
        violation = error_details_pb2.BadRequest.FieldViolation(
            field="page_size", description="must be between 1 and 100")
        rpckit.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page_size",
                     error_details_pb2.BadRequest(field_violations=[violation]))
    """
    raise StatusError(code, message, details=details, trailers=trailers)


def raise_if_cancelled() -> None:
    """Stop the current handler if its caller has gone.

    Raises :class:`StatusError` with DEADLINE_EXCEEDED when the inbound deadline
    has passed, CANCELLED when the caller cancelled (or the server is stopping).
    Call it between steps of long work; outside a call it does nothing.
    """
    scope = current_scope()
    if scope is None:
        return
    remaining = scope.time_remaining(time.monotonic())
    if remaining is not None and remaining <= 0:
        raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed; work stopped")
    if scope.is_cancelled():
        raise StatusError(grpc.StatusCode.CANCELLED, "caller cancelled; work stopped")


def to_grpc_status(error: StatusError) -> grpc.Status:
    """The grpc.Status (with ``grpc-status-details-bin`` when details exist) for an error."""
    packed = []
    for detail in error.details:
        any_msg = any_pb2.Any()
        any_msg.Pack(detail)
        packed.append(any_msg)
    proto = status_pb2.Status(
        code=getattr(code_pb2, error.code.name), message=error.message, details=packed
    )
    status = rpc_status.to_status(proto)
    if not error.trailers:
        return status
    return _Status(status.code, status.details, (*status.trailing_metadata, *error.trailers))


class _Status(grpc.Status):
    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str | bytes], ...],
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def status_details(error: grpc.RpcError) -> list[any_pb2.Any]:
    """The google.rpc detail messages (as ``Any``) a failed call carried; [] if none.

    Unpack with ``detail.Unpack(error_details_pb2.BadRequest())``.
    """
    if not isinstance(error, grpc.Call):
        return []
    status = rpc_status.from_call(error)
    return [] if status is None else list(status.details)

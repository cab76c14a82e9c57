"""What rpckit says on the wire besides messages: metadata keys and status conventions.

One home for every name that servers, the HTTP shim and the balanced client must
spell alike; each module imports it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CRITICALITY_METADATA_KEY",
    "LOAD_METADATA_KEY",
    "PREVIOUS_ATTEMPTS_METADATA_KEY",
    "PUSHBACK_METADATA_KEY",
    "REJECTION_DETAILS_PREFIX",
    "STATUS_DETAILS_METADATA_KEY",
    "pushback_from_trailers",
]

CRITICALITY_METADATA_KEY = "rpckit-criticality"
"""Request metadata a client sets to ``sheddable``, ``default`` or ``critical``."""

LOAD_METADATA_KEY = "rpckit-load-bin"
"""Trailer holding the server's serialized ``rpckit.v1.LoadReport``, on every response."""

PREVIOUS_ATTEMPTS_METADATA_KEY = "grpc-previous-rpc-attempts"
"""gRPC's header on a retried attempt (proposal A6): how many attempts of the call came
before it. The balanced client sends it as gRPC's own retries do, so a server or a proxy
can tell the load clients offer (first attempts) from what retries add to it."""

PUSHBACK_METADATA_KEY = "grpc-retry-pushback-ms"
"""gRPC's server pushback trailer (proposal A6): milliseconds to wait before a retry.
rpckit servers send it with every admission rejection."""

STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"
"""gRPC's trailer with a serialized ``google.rpc.Status`` (rich error details)."""

REJECTION_DETAILS_PREFIX = "rpckit: "
"""How an rpckit server starts an admission rejection's details. With the pushback
trailer it tells a client that the call never reached a handler (safe to retry)."""


def pushback_from_trailers(trailers: Iterable[tuple[str, Any]] | None) -> int | None:
    """The ``grpc-retry-pushback-ms`` trailer's value; -1 (do not retry) when unparseable,
    None without one."""
    for key, value in trailers or ():
        if key == PUSHBACK_METADATA_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            try:
                return int(text)
            except ValueError:
                return -1
    return None

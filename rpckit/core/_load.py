"""Load reports: the server's own view of its load, in every response's trailers.

Key ``rpckit-load-bin`` holds a serialized ``rpckit.v1.LoadReport`` (see
``rpckit/_protos/rpckit/v1/load.proto``): queue depth, in-flight calls, workers,
utilization, CoDel pressure and which process answered. The rpckit client
balances on it; anything else can read it with :func:`load_from_metadata`.
(grpcio hides gRPC's standard ORCA trailer from Python clients, hence a key of
our own.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError

from rpckit.core._wire import LOAD_METADATA_KEY
from rpckit.v1 import load_pb2

__all__ = ["LoadReport", "decode_load", "encode_load", "load_from_metadata"]

LoadReport = load_pb2.LoadReport


def encode_load(report: load_pb2.LoadReport) -> tuple[str, bytes]:
    """The trailing-metadata pair for ``report``."""
    return (LOAD_METADATA_KEY, report.SerializeToString())


def decode_load(value: bytes) -> load_pb2.LoadReport | None:
    """Parse a report; ``None`` if the bytes are not one (never raises)."""
    report = load_pb2.LoadReport()
    try:
        report.ParseFromString(value)
    except DecodeError:
        return None
    return report


def load_from_metadata(metadata: Iterable[Any] | None) -> load_pb2.LoadReport | None:
    """Find and parse the load report in a call's trailing metadata, if present.

    Example::

        response, call = stub.GetItem.with_call(request)
        report = rpckit.load_from_metadata(call.trailing_metadata())
    """
    for key, value in metadata or ():
        if key == LOAD_METADATA_KEY and isinstance(value, bytes):
            return decode_load(value)
    return None

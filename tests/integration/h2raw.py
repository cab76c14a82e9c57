"""A raw HTTP/2 gRPC caller for hostile input the grpcio client refuses to send.

grpcio's client checks metadata before sending (ASCII keys and values, a
well-formed ``grpc-timeout``); a hostile peer does not. :func:`raw_call` sends
one request with exactly the headers and body given (h2 with its outbound
checks off) and returns the response's HTTP status, gRPC status and message.
Loopback only, bounded by a socket timeout.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import urllib.parse
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events

__all__ = ["RawReply", "grpc_frame", "raw_call"]


@dataclasses.dataclass(frozen=True)
class RawReply:
    """What came back: HTTP status, ``grpc-status`` (None if absent), ``grpc-message``,
    and whether the stream was reset instead of answered."""

    http_status: int | None
    grpc_status: int | None
    grpc_message: str
    reset: bool


def grpc_frame(payload: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return struct.pack(">?I", False, len(payload)) + payload


def raw_call(
    address: str,
    path: str,
    body: bytes,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    base: Sequence[tuple[bytes, bytes]] | None = None,
    timeout_s: float = 10.0,
    settle: bool = True,
) -> RawReply:
    """POST ``body`` to ``path`` over a fresh connection; ``base`` replaces gRPC's usual headers.

    ``settle``: first wait for the server's SETTINGS to be acknowledged both ways, as
    grpcio's client does (grpc core applies its header limits from then on).
    """
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        raise ValueError(f"raw_call is for loopback servers only, got {address!r}")
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    start: list[tuple[bytes, bytes]] = (
        list(base)
        if base is not None
        else [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode("latin-1")),
            (b":authority", address.encode("ascii")),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    )
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        if settle:
            _settle(sock, conn)
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [*start, *headers], end_stream=not body)
        if body:
            conn.send_data(stream, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        return _read_reply(sock, conn, stream)


def _settle(sock: socket.socket, conn: h2.connection.H2Connection) -> None:
    """Read until the server's SETTINGS arrived and ours were acknowledged."""
    theirs = ours = False
    while not (theirs and ours):
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            theirs = theirs or isinstance(event, h2.events.RemoteSettingsChanged)
            ours = ours or isinstance(event, h2.events.SettingsAcknowledged)
        sock.sendall(conn.data_to_send())


def _read_reply(sock: socket.socket, conn: h2.connection.H2Connection, stream: int) -> RawReply:
    http_status: int | None = None
    grpc_status: int | None = None
    message = ""
    while True:
        data = sock.recv(65536)
        if not data:
            return RawReply(http_status, grpc_status, message, reset=True)
        for event in conn.receive_data(data):
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for key, value in event.headers:
                    if key == b":status":
                        http_status = int(value)
                    elif key == b"grpc-status":
                        grpc_status = int(value)
                    elif key == b"grpc-message":
                        message = urllib.parse.unquote(value.decode("latin-1"))
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                return RawReply(http_status, grpc_status, message, reset=True)
            if isinstance(event, h2.events.ConnectionTerminated):
                return RawReply(http_status, grpc_status, message, reset=True)
            if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                return RawReply(http_status, grpc_status, message, reset=False)
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)

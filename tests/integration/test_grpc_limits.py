"""gRPC limits a server sets by default (README, "Limits"), each seen from a raw HTTP/2 peer
on 127.0.0.1: advertised SETTINGS, metadata size, idle connections closed, ping floods refused."""

from __future__ import annotations

import socket
import time
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from rpckit.server._config import ServerConfig
from rpckit.testing import running
from tests.integration.h2raw import grpc_frame, raw_call
from tests.integration.test_bad_input_grpc import ECHO, EchoShop
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb

BOUND_S = 20.0  # generous: every wait below ends far sooner on a quiet machine


def _connect(address: str) -> tuple[socket.socket, h2.connection.H2Connection]:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=BOUND_S)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _events_until(
    sock: socket.socket, conn: h2.connection.H2Connection, kind: type, *, ping_every_s: float = 0
) -> tuple[Any, float]:
    """Read events until one of ``kind`` (or fail after BOUND_S); returns it and when it came."""
    started = time.monotonic()
    sock.settimeout(ping_every_s or BOUND_S)
    sent = 0
    while time.monotonic() - started < BOUND_S:
        if ping_every_s:
            sent += 1
            conn.ping(sent.to_bytes(8, "big"))
            sock.sendall(conn.data_to_send())
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        assert data, "the server closed the connection without an HTTP/2 GOAWAY"
        for event in conn.receive_data(data):
            if isinstance(event, kind):
                return event, time.monotonic() - started
        sock.sendall(conn.data_to_send())
    raise AssertionError(f"no {kind.__name__} within {BOUND_S} s")


def test_the_server_advertises_its_stream_and_header_limits() -> None:
    config = ServerConfig(drain_s=0.0, max_concurrent_streams=7, max_metadata_bytes=5000)
    with running([EchoShop()], config=config) as live:
        sock, conn = _connect(live.address)
        with sock:
            event, _ = _events_until(sock, conn, h2.events.RemoteSettingsChanged)
        settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
        assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
        assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 5000


def test_defaults_are_set() -> None:
    options = dict(ServerConfig().grpc_options())
    assert options["grpc.max_receive_message_length"] == 4 * 1024 * 1024
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == 16384
    assert options["grpc.max_concurrent_streams"] == 1000
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.http2.max_ping_strikes"] == 2


@pytest.mark.parametrize("limit", [4096, 16384])
def test_metadata_over_the_limit_is_resource_exhausted_and_under_it_is_served(limit: int) -> None:
    valid = grpc_frame(pb.EchoRequest(i32=1).SerializeToString())
    config = ServerConfig(drain_s=0.0, max_metadata_bytes=limit)
    with running([EchoShop()], config=config) as live:
        over = raw_call(live.address, ECHO, valid, headers=[(b"x-big", b"a" * limit)])
        assert over.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "metadata size exceeds" in over.grpc_message
        under = raw_call(live.address, ECHO, valid, headers=[(b"x-big", b"a" * (limit // 2))])
        assert under.grpc_status == 0


def test_an_idle_connection_is_closed_with_goaway() -> None:
    config = ServerConfig(drain_s=0.0, max_connection_idle_s=0.5)
    with running([EchoShop()], config=config) as live:
        sock, conn = _connect(live.address)
        with sock:
            event, after_s = _events_until(sock, conn, h2.events.ConnectionTerminated)
        assert event.additional_data == b"connection idle"  # grpc core's GOAWAY reason
        assert 0.3 < after_s < BOUND_S
        # A channel that was idle as long reconnects on its next call.
        stub_reply = raw_call(live.address, ECHO, grpc_frame(b""))
        assert stub_reply.grpc_status == 0


def test_a_ping_flood_is_answered_with_goaway_too_many_pings() -> None:
    config = ServerConfig(drain_s=0.0, min_client_ping_interval_s=10.0)
    with running([EchoShop()], config=config) as live:
        sock, conn = _connect(live.address)
        with sock:
            event, _ = _events_until(sock, conn, h2.events.ConnectionTerminated, ping_every_s=0.05)
        assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert b"too_many_pings" in (event.additional_data or b"")
        # Other clients are still served.
        assert raw_call(live.address, ECHO, grpc_frame(b"")).grpc_status == 0

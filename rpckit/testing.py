"""Test helpers: a real rpckit server on 127.0.0.1 port 0, in-process.

    from rpckit.testing import running

    def test_get_item():
        with running([Inventory()]) as live:
            stub = inventory_pb2_grpc.InventoryStub(live.channel)
            assert stub.GetItem(GetItemRequest(sku="NUT-M8"), timeout=5).sku == "NUT-M8"

For multi-process or signal behaviour, start ``rpckit serve`` in a subprocess instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import grpc

from rpckit.client._channel import connect
from rpckit.server._admission import AdmissionConfig
from rpckit.server._config import ServerConfig
from rpckit.server._server import Server

__all__ = ["RunningServer", "running"]


@dataclasses.dataclass(frozen=True)
class RunningServer:
    """A started server, its address and a channel to it (closed on exit)."""

    server: Server
    address: str
    channel: grpc.Channel


@contextlib.contextmanager
def running(
    servicers: Sequence[object],
    *,
    config: ServerConfig | None = None,
    admission: AdmissionConfig | None = None,
) -> Iterator[RunningServer]:
    """Serve ``servicers`` on 127.0.0.1:0 for the block; stops without a drain period."""
    server = Server(
        servicers, config=config or ServerConfig(drain_s=0.0, grace_s=5.0), admission=admission
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    channel = connect(f"127.0.0.1:{port}")
    try:
        yield RunningServer(server=server, address=f"127.0.0.1:{port}", channel=channel)
    finally:
        channel.close()
        server.stop(drain_s=0.0)

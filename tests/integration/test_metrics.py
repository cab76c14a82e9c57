"""Prometheus metrics of a real server: counted calls, sheds, gauges, and the scrape endpoint."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from prometheus_client import generate_latest

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.inventory.service import Inventory
from rpckit.server._metrics import ServerMetrics
from rpckit.testing import running
from rpckit.v1 import load_pb2

GET = "/inventory.v1.Inventory/GetItem"


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {prefix!r} in the scrape")


def test_calls_are_counted_by_method_and_code_and_scraped_over_http() -> None:
    config = rpckit.ServerConfig(drain_s=0, metrics_address="127.0.0.1:0")
    with running([Inventory()], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        for _ in range(3):
            stub.GetItem(inventory_pb2.GetItemRequest(sku="NUT-M8"), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.GetItem(inventory_pb2.GetItemRequest(sku="missing"), timeout=5)
        address = live.server.metrics_address
        assert address is not None
        text = _scrape(address)
        # A handler thread leaves in_flight just after grpc sent its reply, so the
        # client may be answered first: the gauge must reach 0 (scraped until it
        # does, within 10 s), not be 0 at once.
        give_up = time.monotonic() + 10
        while _sample(text, "rpckit_in_flight") != 0 and time.monotonic() < give_up:
            text = _scrape(address)
    assert _sample(text, "grpc_server_handled_total", grpc_method=GET, grpc_code="OK") == 3
    assert _sample(text, "grpc_server_handled_total", grpc_method=GET, grpc_code="NOT_FOUND") == 1
    assert _sample(text, "grpc_server_handling_seconds_count", grpc_method=GET) == 4
    assert _sample(text, "rpckit_queue_wait_seconds_count", grpc_method=GET) == 4
    assert _sample(text, "rpckit_queue_depth") == 0
    assert _sample(text, "rpckit_in_flight") == 0


def test_metrics_are_off_by_default() -> None:
    with running([Inventory()]) as live:
        assert live.server.metrics is None
        assert live.server.metrics_address is None


def test_http_requests_answered_unparsed_are_counted_by_reason() -> None:
    """The embedded HTTP server's refusals before parsing (no route, so no method label)
    reach the scrape as ``rpckit_http_refused_unread_total``."""
    metrics = ServerMetrics(load=load_pb2.LoadReport)
    for reason in ("overloaded", "overloaded", "client_gone"):
        metrics.http_refused_unread(reason)
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, "rpckit_http_refused_unread_total", reason="overloaded") == 2
    assert _sample(text, "rpckit_http_refused_unread_total", reason="client_gone") == 1

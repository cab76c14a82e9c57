"""A call that starts at once has its request read at admission (`receive_request_now`):
its worst inputs on a real in-process server -- a unary call that sends no message, one
whose message never comes before it is cancelled, one whose message comes late."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit.testing import running
from tests.integration.counting import CountingInventory

GET_ITEM = "/inventory.v1.Inventory/GetItem"


def _raw_get_item(channel: grpc.Channel) -> Any:
    """GetItem called as if it took a request stream: the client decides how many
    messages it sends (none, or one when it likes)."""
    return channel.stream_unary(
        GET_ITEM,
        request_serializer=inventory_pb2.GetItemRequest.SerializeToString,
        response_deserializer=inventory_pb2.Item.FromString,
    )


def _wait_until_in_flight(server: rpckit.Server, count: int) -> None:
    give_up = time.monotonic() + 20
    while server.load_report().in_flight != count:
        assert time.monotonic() < give_up, f"never {count} calls in flight"
        time.sleep(0.005)


def test_a_unary_call_that_sends_no_message_is_answered_unimplemented() -> None:
    servicer = CountingInventory()
    with running([servicer]) as live:
        with pytest.raises(grpc.RpcError) as failed:
            _raw_get_item(live.channel)(iter(()), timeout=10)
        assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "requires exactly one request message" in (failed.value.details() or "")
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        assert stub.GetItem(inventory_pb2.GetItemRequest(sku="next"), timeout=10).sku == "next"
    assert servicer.calls == 1


def test_a_call_cancelled_before_its_message_runs_no_handler_and_frees_its_slot() -> None:
    servicer = CountingInventory()
    release = threading.Event()

    def never_sends() -> Iterator[inventory_pb2.GetItemRequest]:
        release.wait(timeout=30)
        return
        yield  # a generator that ends without a message

    config = rpckit.ServerConfig(threads=1, adaptive_concurrency=False, drain_s=0)
    with running([servicer], config=config) as live:
        waiting = _raw_get_item(live.channel).future(never_sends(), timeout=30)
        _wait_until_in_flight(live.server, 1)  # started: holds the one slot, awaits its message
        waiting.cancel()
        release.set()
        with pytest.raises(grpc.FutureCancelledError):
            waiting.result(timeout=10)
        _wait_until_in_flight(live.server, 0)
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        assert stub.GetItem(inventory_pb2.GetItemRequest(sku="after"), timeout=10).sku == "after"
    assert servicer.calls == 1  # only "after": the cancelled call's handler never ran


def test_a_message_that_comes_late_is_still_served() -> None:
    servicer = CountingInventory()
    send = threading.Event()

    def late() -> Iterator[inventory_pb2.GetItemRequest]:
        send.wait(timeout=30)
        yield inventory_pb2.GetItemRequest(sku="late")

    with running([servicer]) as live:
        pending = _raw_get_item(live.channel).future(late(), timeout=30)
        _wait_until_in_flight(live.server, 1)  # admitted and reading before the message exists
        send.set()
        assert pending.result(timeout=10).sku == "late"
    assert servicer.calls == 1


def test_a_server_streaming_call_gets_its_one_request_too() -> None:
    with running([CountingInventory()]) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        items = stub.WatchLowStock(inventory_pb2.WatchLowStockRequest(threshold=3), timeout=10)
        assert [item.sku for item in items] == ["low-0", "low-1", "low-2"]


def test_grpcios_one_message_thunk_is_recognised_and_no_other_function_is() -> None:
    """If grpcio's shapes change, the read at admission falls back silently (the
    tests above still pass on grpcio's own thunk); this one says so instead."""
    from grpc import _server as grpc_server

    from rpckit.server._grpc_internals import _one_message_thunk_code

    thunk = grpc_server._unary_request(None, None, None)  # type: ignore[arg-type]
    assert _one_message_thunk_code() is thunk.__code__
    assert _one_message_thunk_code() is not (lambda: None).__code__

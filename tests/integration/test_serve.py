"""`rpckit serve` as a real subprocess: health, reflection, calls, deadlines, drain, errors."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.legacy_inventory.app import DEV_API_TOKEN
from tests.integration.conftest import ROOT, RPCKIT, ServeProcess

Serve = Callable[..., ServeProcess]
INVENTORY = "examples.inventory.server:servicers"


def _stub(channel: grpc.Channel) -> inventory_pb2_grpc.InventoryStub:
    return inventory_pb2_grpc.InventoryStub(channel)


def test_health_check_serving_for_server_and_service(serve: Serve) -> None:
    server = serve(INVENTORY)
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "inventory.v1.Inventory"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_example_service(serve: Serve) -> None:
    server = serve(INVENTORY)
    with server.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert "inventory.v1.Inventory" in services
        assert "grpc.health.v1.Health" in services
        described = database.FindFileContainingSymbol("inventory.v1.Inventory")
        assert described.name == "inventory/v1/inventory.proto"


def test_unary_and_streaming_calls_round_trip(serve: Serve) -> None:
    server = serve(INVENTORY)
    with server.channel() as channel:
        stub = _stub(channel)
        item = stub.GetItem(inventory_pb2.GetItemRequest(sku="NUT-M8"), timeout=5)
        assert (item.sku, item.name, item.price_cents) == ("NUT-M8", "Hex nut M8, zinc", 5)
        created = stub.CreateItem(
            inventory_pb2.CreateItemRequest(
                item=inventory_pb2.Item(sku="Z-1", name="Zed", quantity=1)
            ),
            metadata=(("authorization", f"Bearer {DEV_API_TOKEN}"),),
            timeout=5,
        )
        assert created.sku == "Z-1"
        low = list(stub.WatchLowStock(inventory_pb2.WatchLowStockRequest(threshold=1), timeout=5))
        assert [i.sku for i in low] == [
            "GLOVE-NITRILE-L",
            "SEALANT-CLEAR",
            "TAPE-MEASURE-5M",
            "Z-1",
        ]


def test_rich_error_details_reach_the_client(serve: Serve) -> None:
    server = serve(INVENTORY)
    with server.channel() as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).ListItems(inventory_pb2.ListItemsRequest(page_size=500), timeout=5)
    error = info.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in str(error.details())
    (detail,) = rpckit.status_details(error)
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["page_size"]


def test_short_deadline_ends_deadline_exceeded_and_handler_sees_cancellation(serve: Serve) -> None:
    server = serve()
    # 1 s, not less: the call must reach its handler (a busy machine can take 50 ms to
    # dispatch it, and admission rightly refuses a call whose deadline is gone).
    with server.channel() as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).GetItem(inventory_pb2.GetItemRequest(sku="slow"), timeout=1.0)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    (seen,) = server.wait_for_events("cancel-seen", 1)
    assert seen["cancelled"] is True


def test_deadline_crosses_to_the_next_service(serve: Serve) -> None:
    downstream = serve()
    upstream = serve()
    with upstream.channel() as channel:
        started = time.monotonic()
        reply = _stub(channel).GetItem(
            inventory_pb2.GetItemRequest(sku=f"relay:{downstream.address}"), timeout=2.0
        )
        elapsed_ms = (time.monotonic() - started) * 1000
    own_ms, downstream_ms = reply.price_cents, reply.quantity
    assert 0 < own_ms <= 2000
    assert 0 < downstream_ms <= own_ms, "the next hop must not get a later deadline"
    assert downstream_ms >= 2000 - elapsed_ms - 100  # it inherited the deadline, not a default


def test_no_deadline_means_none_downstream(serve: Serve) -> None:
    downstream = serve()
    upstream = serve()
    with upstream.channel() as channel:
        reply = _stub(channel).GetItem(
            inventory_pb2.GetItemRequest(sku=f"relay:{downstream.address}")
        )
    assert (reply.price_cents, reply.quantity) == (-1, -1)


def test_start_up_objects_are_frozen_out_of_the_collector(serve: Serve) -> None:
    """What start-up built (grpc, protobuf, the app) is left out of full collections."""
    with serve().channel() as channel:
        reply = _stub(channel).GetItem(inventory_pb2.GetItemRequest(sku="gc-frozen"), timeout=5)
    assert reply.quantity > 10_000  # imported modules alone hold tens of thousands of objects


def test_raising_handler_gives_internal_without_traceback(serve: Serve) -> None:
    server = serve()
    with server.channel() as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).GetItem(inventory_pb2.GetItemRequest(sku="boom"), timeout=5)
    error = info.value
    assert error.code() is grpc.StatusCode.INTERNAL
    on_the_wire = str(error.details()) + repr(error.trailing_metadata())
    assert "SECRET-MARKER" not in on_the_wire
    assert "Traceback" not in on_the_wire
    assert server.terminate() == 0
    log = server.stderr()
    assert "Traceback (most recent call last)" in log
    assert "SECRET-MARKER" in log


def test_sigterm_drains_calls_in_flight(serve: Serve) -> None:
    drain, grace, calls = 1.0, 10.0, 20
    server = serve(
        "tests.integration.probe:servicers",
        "--threads",
        "24",
        "--drain",
        str(drain),
        "--grace",
        str(grace),
    )
    channel = server.channel()
    stub = _stub(channel)
    futures = [
        stub.GetItem.future(inventory_pb2.GetItemRequest(sku="hold:1500"), timeout=30)
        for _ in range(calls)
    ]
    server.wait_for_events("started", calls)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)

    health = health_pb2_grpc.HealthStub(channel)
    seen: list[str] = []
    give_up = time.monotonic() + drain + grace + 5
    while time.monotonic() < give_up:
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        except grpc.RpcError as error:
            seen.append(error.code().name)
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                break
        time.sleep(0.02)
    results = [f.result(timeout=30) for f in futures]
    code = server.proc.wait(timeout=drain + grace + 5)
    took = time.monotonic() - signalled
    channel.close()

    assert [r.sku for r in results] == ["hold:1500"] * calls
    assert "NOT_SERVING" in seen
    assert seen.index("NOT_SERVING") < seen.index("UNAVAILABLE")
    assert code == 0
    assert took < drain + grace


def test_open_health_watch_does_not_hold_the_stop(serve: Serve) -> None:
    server = serve(INVENTORY, "--drain", "0.2", "--grace", "30")
    channel = server.channel()
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert list(watch) == []  # the server ended the stream
    assert server.proc.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 10, "the watch held the stop for the grace period"
    channel.close()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "no_such_module:x"], "cannot import 'no_such_module'"),
        (["serve", "examples.inventory.server:nope"], "has no attribute 'nope'"),
        (["serve", "justamodule"], "is not MODULE:FACTORY"),
        (["serve", INVENTORY, "--threads", "0"], "ServerConfig.threads must be >= 1, got 0"),
        (["serve", INVENTORY, "--threads", "many"], "invalid int value"),
        (["serve", INVENTORY, "--grpc", "256.1.1.1:0"], "cannot resolve host '256.1.1.1'"),
        (["serve", INVENTORY, "--grpc", "127.0.0.1"], "expected HOST:PORT"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv: list[str], needle: str) -> None:
    done = subprocess.run(
        [RPCKIT, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]


@pytest.mark.parametrize("verb", [[], ["serve"], ["gen"]])
def test_every_verb_has_help_with_an_example(verb: list[str]) -> None:
    done = subprocess.run(
        [RPCKIT, *verb, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert "usage: rpckit" in done.stdout
    if verb:
        assert "example: rpckit" in done.stdout


def test_port_in_use_is_a_one_line_error(serve: Serve) -> None:
    server = serve(INVENTORY)
    done = subprocess.run(
        [RPCKIT, "serve", INVENTORY, "--grpc", server.address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"rpckit serve: error: --grpc {server.address}: cannot listen there: Address already in use"
    ]

"""Faults: a rolling restart of three backends, and one server restarting under its clients.

Real ``rpckit serve`` processes on 127.0.0.1, bounded load through rpckit's
clients; each test states and asserts failed calls, lost calls and the time
to recover (harness.FaultReport).
"""

from __future__ import annotations

import functools
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit import BalancedChannel
from tests.faults.harness import FAST, CallLoad, wait_for
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
APP = "tests.faults.fault_app:servicers"
GetItem = inventory_pb2.GetItemRequest


def _create(sku: str) -> inventory_pb2.CreateItemRequest:
    return inventory_pb2.CreateItemRequest(item=inventory_pb2.Item(sku=sku))


def answered_by(load: CallLoad, pid: int, since: float) -> bool:
    """Whether process ``pid`` answered one of ``load``'s calls after ``since``."""
    return any(at > since and getattr(reply, "quantity", None) == pid for at, reply in load.answers)


def test_a_rolling_restart_of_three_backends_under_load_fails_no_call(serve: Serve) -> None:
    """SIGTERM each backend in turn and start it again on its port, under load of
    idempotent and non-idempotent calls: 0 failed, 0 lost; each restarted backend
    answers calls again within 15 s of starting."""
    drain = ("--drain", "1.0")
    backends = [serve(APP, *drain) for _ in range(3)]
    with BalancedChannel([b.address for b in backends], config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        wait_for(lambda: sum(b.serving for b in channel.backends()) == 3, "three backends")

        def call(i: int) -> object:
            if i % 2:
                return stub.CreateItem(_create("hold:20"), timeout=20)
            return stub.GetItem(GetItem(sku="hold:20"), timeout=20)

        recoveries = []
        with CallLoad(call, threads=4, max_calls=6000, max_s=120) as load:
            for index, old in enumerate(backends):
                old.proc.send_signal(signal.SIGTERM)
                assert old.proc.wait(timeout=30) == 0
                new = serve(APP, "--grpc", old.address, *drain)
                backends[index] = new
                started = time.monotonic()
                pid = new.proc.pid
                back = wait_for(
                    functools.partial(answered_by, load, pid, started),
                    f"the restarted {old.address} answering calls",
                )
                recoveries.append(back - started)
        report = load.report("rolling restart of 3 backends (SIGTERM, restart)", max(recoveries))
    assert report.failed == Counter(), report
    assert report.lost == 0, report
    assert report.ok > 200, report
    assert report.recover_s is not None
    assert report.recover_s < 15, report


def test_a_server_restart_reconnects_its_clients(serve: Serve) -> None:
    """The only backend stops (SIGTERM) and starts again on its port a moment later.

    BalancedChannel calls made with ``wait_for_ready=True`` (the way to ride out an
    outage) wait for it: 0 failed, 0 lost. Without it a call fails at once while no
    backend is up (UNAVAILABLE: "no backend can take", as grpcio fails fast), and a
    plain ``rpckit.connect`` channel likewise. Both kinds of client answer again
    within 15 s of the new server starting, with no call made to reconnect them.
    """
    server = serve(APP, "--drain", "0.2")
    address = server.address
    with BalancedChannel([address], config=FAST) as balanced, rpckit.connect(address) as plain:
        stub = inventory_pb2_grpc.InventoryStub(balanced)
        plain_stub = inventory_pb2_grpc.InventoryStub(plain)
        assert plain_stub.GetItem(GetItem(sku="warm"), timeout=10).quantity == server.proc.pid

        def call(i: int) -> object:
            return stub.GetItem(GetItem(sku="hold:10"), timeout=30, wait_for_ready=True)

        with CallLoad(call) as load:
            wait_for(lambda: load.answered >= 30, "calls before the restart")
            assert server.terminate() == 0
            for down_stub in (stub, plain_stub):
                down: Any = down_stub.GetItem.future(GetItem(sku="while-down"), timeout=10)
                error = down.exception(timeout=20)
                assert isinstance(error, grpc.RpcError)
                assert error.code() is grpc.StatusCode.UNAVAILABLE, error
            new = serve(APP, "--grpc", address, "--drain", "0.2")
            started = time.monotonic()
            balanced_back = wait_for(
                lambda: answered_by(load, new.proc.pid, started), "BalancedChannel's calls answered"
            )

            def plain_answers() -> bool:
                call: Any = plain_stub.GetItem.future(GetItem(sku="again"), timeout=2)
                error = call.exception(timeout=30)
                if error is None:
                    return bool(call.result().quantity == new.proc.pid)
                reconnecting = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
                assert error.code() in reconnecting, error
                return False

            plain_back = wait_for(plain_answers, "the plain channel reconnected")
            wait_for(lambda: load.answered >= 60, "calls after the restart")
        recover = max(balanced_back, plain_back) - started
        report = load.report("server restart, clients reconnecting", recover)
    assert report.failed == Counter(), report
    assert report.lost == 0, report
    assert report.recover_s is not None
    assert report.recover_s < 15, report

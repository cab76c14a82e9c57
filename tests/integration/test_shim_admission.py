"""The shim on a real rpckit server (in process, 127.0.0.1:0): HTTP calls go through the same
admission control as gRPC calls -- admitted at once, one runs in its HTTP thread in a handler
slot; otherwise it waits in the same queue and runs on a handler thread -- so overload sheds
both; and proxy mode, over a plain grpc channel."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPConnection

import grpc
import pytest
from werkzeug.test import Client, TestResponse

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit.http import Shim
from rpckit.testing import running

#: One handler thread, one queue slot, and CoDel/arrival checks out of the way, so
#: "the queue is full" is the only reason a call is refused here.
ONE_SLOT = rpckit.AdmissionConfig(
    workers=1,
    queue_limit=1,
    admit_within_allowance=False,
    codel_target_s=5.0,
    codel_interval_s=10.0,
)


class Gate(inventory_pb2_grpc.InventoryServicer):
    """GetItem('hold') blocks until the test opens the gate; anything else answers at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)
        self.threads: list[str] = []
        self.skus: list[str] = []

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        self.threads.append(threading.current_thread().name)
        self.skus.append(request.sku)
        if request.sku == "hold":
            self.entered.release()
            self.open.wait(timeout=30)
        return inventory_pb2.Item(sku=request.sku, name="gate")


def wait_for_queue_depth(server: rpckit.Server, depth: int) -> None:
    give_up = time.monotonic() + 10
    while server.load_report().queue_depth != depth:
        assert time.monotonic() < give_up, "the call never reached the admission queue"
        time.sleep(0.002)


def test_http_and_grpc_share_the_admission_queue() -> None:
    gate = Gate()
    config = rpckit.ServerConfig(threads=1, drain_s=0)
    with running([gate], config=config, admission=ONE_SLOT) as live, ThreadPoolExecutor(2) as pool:
        client = Client(Shim(server=live.server))
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        held: Future[TestResponse] = pool.submit(client.get, "/items/hold")
        assert gate.entered.acquire(timeout=20)  # the HTTP call holds the only thread
        queued = stub.GetItem.future(inventory_pb2.GetItemRequest(sku="queued"), timeout=30)
        wait_for_queue_depth(live.server, 1)  # the gRPC call waits behind it

        started = time.monotonic()
        shed = client.get("/items/shed")
        took = time.monotonic() - started
        assert shed.status_code == 503  # admission's refusal: Service Unavailable
        assert json.loads(shed.get_data())["message"].startswith("rpckit: server overloaded")
        assert int(shed.headers["Retry-After"]) >= 1
        assert took < 1.0  # refused at once, not after waiting
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItem(inventory_pb2.GetItemRequest(sku="also-shed"), timeout=10)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        gate.open.set()
        assert held.result(timeout=30).get_data() == (
            b'{"name":"gate","price_cents":0,"quantity":0,"sku":"hold","tags":[]}\n'
        )
        assert queued.result(timeout=30).sku == "queued"
    ran_on = dict(zip(gate.skus, gate.threads, strict=True))
    # A free slot and no queue: the HTTP call ran in its own thread, holding the only slot,
    # so the gRPC call queued behind it and ran on the handler thread.
    assert not ran_on["hold"].startswith("rpckit-handler-")
    assert ran_on["queued"] == "rpckit-handler-0"


def test_http_deadline_expires_in_the_queue_as_504() -> None:
    gate = Gate()
    config = rpckit.ServerConfig(threads=1, drain_s=0)
    with running([gate], config=config, admission=ONE_SLOT) as live, ThreadPoolExecutor(1) as pool:
        client = Client(Shim(server=live.server))
        held = pool.submit(client.get, "/items/hold")
        assert gate.entered.acquire(timeout=20)
        started = time.monotonic()
        late = client.get("/items/late", headers={"X-Request-Timeout": "0.2"})
        took = time.monotonic() - started
        gate.open.set()
        assert held.result(timeout=30).status_code == 200
    assert (late.status_code, json.loads(late.get_data())["code"]) == (504, 4)
    assert 0.15 < took < 2.0
    assert gate.skus == ["hold"]  # the late call never reached the handler


def test_proxy_mode_over_a_plain_channel() -> None:
    gate = Gate()
    with running([gate]) as live, grpc.insecure_channel(live.address) as channel:
        app = Shim(services=["inventory.v1.Inventory"], channel=channel)
        client = Client(app)
        response = client.get("/items/A-1", headers={"X-Request-Timeout": "5"})
        assert response.status_code == 200
        assert json.loads(response.get_data())["sku"] == "A-1"
        missing = client.get("/items")  # ListItems is not implemented by Gate
        assert (missing.status_code, json.loads(missing.get_data())["code"]) == (501, 12)


def test_time_queued_in_the_http_server_counts_against_the_route_timeout() -> None:
    """A request that waited for one of the HTTP server's threads past its timeout is not run:
    its deadline counts from when the server saw it coming, not from when a thread took it."""
    from rpckit.http._server._server import HttpServer

    gate = Gate()
    config = rpckit.ServerConfig(drain_s=0)
    with running([gate], config=config) as live, ThreadPoolExecutor(2) as pool:
        http = HttpServer(
            Shim(server=live.server), "127.0.0.1:0", threads=1, linger_s=0, turn_lease_s=None
        )
        host, port = http.start().rsplit(":", 1)

        def get(path: str, timeout_s: str | None = None) -> tuple[int, bytes]:
            connection = HTTPConnection(host, int(port), timeout=30)
            headers = {} if timeout_s is None else {"X-Request-Timeout": timeout_s}
            try:
                connection.request("GET", path, headers=headers)
                reply = connection.getresponse()
                return reply.status, reply.read()
            finally:
                connection.close()

        try:
            held = pool.submit(get, "/items/hold")  # takes the server's only thread
            assert gate.entered.acquire(timeout=20)
            late = pool.submit(get, "/items/late", "0.2")  # 200 ms to answer
            give_up = time.monotonic() + 10
            while http.waiting < 1:  # it waits for a thread, unseen by admission
                assert time.monotonic() < give_up, "the second request never queued"
                time.sleep(0.002)
            time.sleep(0.3)  # the scenario, not a synchronisation: its client's 200 ms pass
            gate.open.set()
            assert held.result(timeout=20)[0] == 200
            status, body = late.result(timeout=20)
        finally:
            gate.open.set()
            http.stop()
    assert status == 504, body
    assert "late" not in gate.skus, "the handler ran for a request whose client had given up"

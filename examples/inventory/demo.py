"""The Quick start demo: start the inventory service, talk to it, stop it cleanly.

    python -m examples.inventory.demo

Starts ``rpckit serve examples.inventory.server:servicers`` on free ports (gRPC,
and the legacy HTTP/JSON contract through rpckit's shim), then as a client:
checks health, lists services through reflection, gets, lists (with paging),
creates, updates and deletes items, streams low-stock items, gets a rich error,
runs out of deadline on a slow call, reads the server's load report, calls the
same handlers at the old JSON URLs, and finally sends SIGTERM and checks the
server drained and exited 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.legacy_inventory.app import DEV_API_TOKEN

ROOT = Path(__file__).resolve().parents[2]
#: Writes need the legacy app's bearer token, over gRPC as over HTTP.
AUTH = (("authorization", f"Bearer {DEV_API_TOKEN}"),)


def say(step: str, outcome: str) -> None:
    print(f"  {step:<44} {outcome}", flush=True)


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    rpckit_cli = Path(sys.executable).parent / "rpckit"
    argv = [
        str(rpckit_cli),
        "serve",
        "examples.inventory.server:servicers",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--http-app",
        "examples.inventory.server:legacy_http",
        "--drain",
        "0.5",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"server did not start (exit {proc.wait()}); see its log above")
    announced = json.loads(line)
    return proc, announced["grpc"], announced["http"]


def run(address: str) -> None:
    channel = rpckit.connect(address)
    stub = inventory_pb2_grpc.InventoryStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    say("health check", health_pb2.HealthCheckResponse.ServingStatus.Name(status))

    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = [s.name for reply in replies for s in reply.list_services_response.service]
    say("reflection lists", ", ".join(sorted(names)))

    item = stub.GetItem(inventory_pb2.GetItemRequest(sku="CLAMP-F-300"), timeout=5)
    say("GetItem CLAMP-F-300", f"{item.name}: {item.quantity} at {item.price_cents} cents")

    page = stub.ListItems(inventory_pb2.ListItemsRequest(page_size=5), timeout=5)
    nxt = stub.ListItems(
        inventory_pb2.ListItemsRequest(page_size=5, page_token=page.next_page_token), timeout=5
    )
    say(
        "ListItems, two pages of 5",
        f"{page.items[0].sku}..{page.items[-1].sku} then {nxt.items[0].sku}..{nxt.items[-1].sku}",
    )

    new = inventory_pb2.Item(sku="B-100", name="Gadget", quantity=4, price_cents=1999)
    stub.CreateItem(inventory_pb2.CreateItemRequest(item=new), metadata=AUTH, timeout=5)
    new.quantity = 40
    updated = stub.UpdateItem(inventory_pb2.UpdateItemRequest(item=new), metadata=AUTH, timeout=5)
    stub.DeleteItem(inventory_pb2.DeleteItemRequest(sku="B-100"), metadata=AUTH, timeout=5)
    say("Create, Update, Delete B-100 (bearer token)", f"ok (quantity: {updated.quantity})")

    low = [
        i.sku
        for i in stub.WatchLowStock(inventory_pb2.WatchLowStockRequest(threshold=2), timeout=5)
    ]
    say("WatchLowStock <= 2 (server stream)", ", ".join(low))

    try:
        stub.ListItems(inventory_pb2.ListItemsRequest(page_size=500), timeout=5)
    except grpc.RpcError as err:
        bad = error_details_pb2.BadRequest()
        for detail in rpckit.status_details(err):
            detail.Unpack(bad)
        fields = ", ".join(f"{v.field} ({v.description})" for v in bad.field_violations)
        say("ListItems page_size=500", f"{err.code().name}, BadRequest: {fields}")

    started = time.monotonic()
    try:
        stub.PlanRestock(
            inventory_pb2.PlanRestockRequest(threshold=10, work_ms_per_item=50), timeout=0.2
        )
    except grpc.RpcError as err:
        took = (time.monotonic() - started) * 1000
        say(
            "PlanRestock (needs 1 s) with 200 ms deadline", f"{err.code().name} after {took:.0f} ms"
        )

    _, call = stub.GetItem.with_call(inventory_pb2.GetItemRequest(sku="NUT-M6"), timeout=5)
    report = rpckit.load_from_metadata(call.trailing_metadata())
    if report is not None:
        say(
            "load report in trailers",
            f"queue={report.queue_depth} in_flight={report.in_flight} "
            f"workers={report.workers} pid={report.pid}",
        )
    channel.close()


def http_get(http: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{http}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_http(http: str) -> None:
    for path in ("/items/TORCH-BRULEE", "/items/NOPE-1", "/healthz"):
        status, body = http_get(http, path)
        say(f"HTTP GET {path}", f"{status} {body.decode().strip()[:60]}")


def main() -> int:
    print("rpckit demo: the inventory service over gRPC, and at its legacy JSON URLs")
    proc, address, http = start_server()
    say("rpckit serve examples.inventory.server:servicers", f"gRPC {address}, HTTP {http}")
    try:
        run(address)
        run_http(http)
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    say("SIGTERM: drain, then stop", f"exit {code} after {time.monotonic() - started:.1f} s")
    print("demo finished" if code == 0 else "demo FAILED: server exit status was not 0")
    return code


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

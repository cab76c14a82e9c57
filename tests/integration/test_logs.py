"""`rpckit serve --log-format json --call-log --access-log`: logs a pipeline can parse.

A real subprocess: every stderr line is one JSON object; a gRPC call leaves a call-log
line (method, status, peer, duration), an HTTP request through the shim an access-log
line and a call-log line of its own. With --trace (OpenTelemetry's no-op global
provider here: nothing is exported) the lines still parse.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit.observe import JsonFormatter
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
PROBE = "tests.integration.probe:servicers"
GET = "/inventory.v1.Inventory/GetItem"


def _json_lines(server: ServeProcess) -> list[dict[str, Any]]:
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # each line must be JSON


def _wait_for(server: ServeProcess, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        found = [line for line in _json_lines(server) if want(line)]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no such log line in:\n{server.stderr()}")


@pytest.mark.parametrize("trace", [False, True])
def test_json_call_and_access_logs(serve: Serve, trace: bool) -> None:
    args = ["--http", "127.0.0.1:0", "--log-format", "json", "--call-log", "--access-log"]
    server = serve(PROBE, *args, *(["--trace"] if trace else []), "--drain", "0.1")
    with grpc.insecure_channel(server.address) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        stub.GetItem(inventory_pb2.GetItemRequest(sku="deadline"), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.GetItem(inventory_pb2.GetItemRequest(sku="boom"), timeout=10)
    http = server.announcement["http"]
    request = urllib.request.Request(f"http://{http}/items/deadline", headers={"User-Agent": "t/1"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200

    grpc_call = _wait_for(server, lambda line: line.get("status") == "OK" and "peer" in line)
    assert grpc_call["logger"] == "rpckit.server.calls"
    assert grpc_call["method"] == GET
    assert grpc_call["peer"]
    assert grpc_call["duration_ms"] >= 0
    failed = _wait_for(server, lambda line: line.get("status") == "INTERNAL")
    assert failed["method"] == GET
    # The handler's traceback is logged (as a JSON field), never sent.
    crash = _wait_for(server, lambda line: "exception" in line)
    assert "SECRET-MARKER" in crash["exception"]
    access = _wait_for(server, lambda line: line.get("logger") == "rpckit.http.access")
    fields = json.loads(access["message"])
    assert fields["method"] == "GET"
    assert fields["path"] == "/items/deadline"
    assert fields["status"] == 200
    assert fields["user_agent"] == "t/1"
    assert fields["remote"] == "127.0.0.1"
    assert server.terminate() == 0


def test_json_formatter_without_a_span_or_opentelemetry() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    record.method = "/a.B/C"
    # In a fresh context: no span is current whatever other tests left in this thread's.
    line = json.loads(contextvars.Context().run(JsonFormatter().format, record))
    assert line["message"] == "hello world"
    assert line["level"] == "WARNING"
    assert line["method"] == "/a.B/C"
    assert line["trace_id"] == ""
    assert line["ts"].endswith("Z")

"""`rpckit serve --http` as a real subprocess: the legacy contract byte for byte over real HTTP
(cheroot), next to the gRPC port, counted in the metrics, stopped gracefully."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.legacy_inventory.record_golden import headers_that_matter
from tests.integration.conftest import ROOT, RPCKIT, ServeProcess
from tests.legacy.test_golden_replay import load_golden

Serve = Callable[..., ServeProcess]
INVENTORY = "examples.inventory.server:servicers"
LEGACY_HTTP = ("--http", "127.0.0.1:0", "--http-app", "examples.inventory.server:legacy_http")


def request(
    address: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def replay_golden(address: str) -> list[str]:
    """Every golden exchange over real HTTP; the mismatches, described."""
    mismatches = []
    for number, exchange in enumerate(load_golden(), start=1):
        path = exchange["path"] + (f"?{exchange['query']}" if exchange["query"] else "")
        raw = exchange["body"]
        status, headers, body = request(
            address,
            exchange["method"],
            path,
            body=None if raw is None else raw.encode("utf-8"),
            headers=exchange["headers"],
        )
        got = (status, headers_that_matter(headers_as_werkzeug(headers), body), body)
        want = (
            exchange["expected_status"],
            exchange["expected_headers"],
            exchange["expected_body"].encode("utf-8"),
        )
        if got != want:
            mismatches.append(f"line {number} ({exchange['name']}): got {got!r} want {want!r}")
    return mismatches


def headers_as_werkzeug(headers: dict[str, str]) -> Any:
    from werkzeug.datastructures import Headers

    return Headers(list(headers.items()))


def test_golden_traffic_byte_for_byte_over_real_http(serve: Serve) -> None:
    server = serve(INVENTORY, *LEGACY_HTTP, "--metrics", "127.0.0.1:0", "--drain", "0")
    http_address = server.announcement["http"]
    assert len(load_golden()) >= 50
    assert replay_golden(http_address) == []
    with server.channel() as channel:  # the same handlers, the same store, over gRPC
        stub = inventory_pb2_grpc.InventoryStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItem(inventory_pb2.GetItemRequest(sku="ANCHOR-8"), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND  # deleted over HTTP above
    metrics_url = f"http://{server.announcement['metrics']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        scrape = reply.read().decode()
    assert 'grpc_method="/inventory.v1.Inventory/GetItem"' in scrape  # HTTP calls, gRPC metrics
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("rpckit_http_requests_total{")
    )
    assert counted == len(load_golden())
    assert server.terminate() == 0


def test_http_keeps_serving_while_draining_then_stops(serve: Serve) -> None:
    server = serve(INVENTORY, *LEGACY_HTTP, "--drain", "1.0")
    address = server.announcement["http"]
    assert request(address, "GET", "/healthz")[0] == 200
    server.proc.send_signal(signal.SIGTERM)
    status, _, body = request(address, "GET", "/items/NUT-M8")  # within the drain period
    assert (status, json.loads(body)["sku"]) == (200, "NUT-M8")
    assert server.proc.wait(timeout=30) == 0
    with pytest.raises(ConnectionRefusedError):
        request(address, "GET", "/healthz")


def test_default_http_app_is_the_shim_with_gateway_errors(serve: Serve) -> None:
    server = serve(INVENTORY, "--http", "127.0.0.1:0", "--drain", "0")
    address = server.announcement["http"]
    status, _, body = request(address, "GET", "/items/NOPE-1")
    assert (status, json.loads(body)) == (
        404,
        {
            "code": 5,
            "message": "item 'NOPE-1' not found",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                    "resourceType": "item",
                    "resourceName": "NOPE-1",
                }
            ],
        },
    )
    assert request(address, "GET", "/healthz")[0] == 404  # no fallback without --http-app
    assert server.terminate() == 0


def test_http_limit_flags_reach_the_embedded_server(serve: Serve) -> None:
    server = serve(
        INVENTORY,
        "--http", "127.0.0.1:0", "--drain", "0",
        "--http-max-header-field", "100", "--http-max-request-line", "64", "--http-max-body", "10",
    )  # fmt: skip
    address = server.announcement["http"]
    assert request(address, "GET", "/items/NUT-M8", headers={"X-A": "v" * 80})[0] == 200
    assert request(address, "GET", "/items/NUT-M8", headers={"X-A": "v" * 120})[0] == 431
    assert request(address, "GET", "/items/" + "N" * 70)[0] == 414
    assert request(address, "POST", "/items", body=b"x" * 11)[0] == 413
    assert server.terminate() == 0


@pytest.mark.slow
def test_http_with_workers_shares_one_port(serve: Serve) -> None:
    server = serve(INVENTORY, *LEGACY_HTTP, "--workers", "2", "--drain", "0")
    address = server.announcement["http"]
    assert server.announcement["workers"] == 2
    statuses = {request(address, "GET", "/items/NUT-M8")[0] for _ in range(10)}
    assert statuses == {200}
    assert server.terminate() == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--http", "256.1.1.1:0"], "--http 256.1.1.1:0: cannot resolve host '256.1.1.1'"),
        (["--http", "8080"], "--http 8080: expected HOST:PORT"),
        (["--http", "127.0.0.1:0", "--http-app", "nope_module:x"], "cannot import 'nope_module'"),
        (["--http", "127.0.0.1:0", "--http-threads", "0"], "--http-threads must be >= 1"),
        (
            ["--http", "127.0.0.1:0", "--http-max-header-fields", "0"],
            "HttpLimits.header_fields must be >= 1",
        ),
        (
            ["--http", "127.0.0.1:0", "--http-head-timeout", "0"],
            "HttpLimits.head_timeout_s must be > 0",
        ),
    ],
)
def test_http_flag_errors_are_one_line(argv: list[str], needle: str) -> None:
    done = subprocess.run(
        [RPCKIT, "serve", INVENTORY, "--grpc", "127.0.0.1:0", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert needle in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_serve_help_shows_an_http_example() -> None:
    done = subprocess.run(
        [RPCKIT, "serve", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--http 127.0.0.1:8080 --http-app examples.inventory.server:legacy_http" in " ".join(
        done.stdout.split()
    )


def test_embedded_server_lifecycle() -> None:
    from rpckit.http import HttpServer

    def hello(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    server = HttpServer(hello, "127.0.0.1:0", threads=2)
    address = server.start()
    assert request(address, "GET", "/")[::2] == (200, b"hi")
    server.stop()
    assert server.wait(0)
    with pytest.raises(ConnectionRefusedError):
        request(address, "GET", "/")
    bound_only = HttpServer(hello, "127.0.0.1:0")
    bound_only.bind()
    bound_only.stop()  # closes the listening socket and cheroot's threads
    assert bound_only.wait(0)

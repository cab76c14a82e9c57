"""`rpckit serve --workers 3 --metrics HOST:PORT`: one scrape endpoint for every worker.

Real subprocesses: calls go over many connections (SO_REUSEPORT spreads connections
over the workers), every scrape -- whichever worker answers it -- shows the calls of
all workers summed, the load gauges once per live worker, and the shared metric
files are gone when the server stops.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
PROBE = "tests.integration.probe:servicers"
GET = "/inventory.v1.Inventory/GetItem"
CALLS_PER_CONNECTION = 3
MAX_CONNECTIONS = 60


def _calls_by_worker(address: str, connections: int) -> Counter[int]:
    """``connections`` new connections, a few calls on each; the calls answered by worker pid."""
    served: Counter[int] = Counter()
    for i in range(connections):
        options = [("grpc.use_local_subchannel_pool", 1), ("rpckit.test.connection", i)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            for _ in range(CALLS_PER_CONNECTION):
                _, call = stub.GetItem.with_call(
                    inventory_pb2.GetItemRequest(sku="deadline"), timeout=10
                )
                report = rpckit.load_from_metadata(call.trailing_metadata())
                assert report is not None
                served[report.pid] += 1
    return served


def _calls_on_every_worker(address: str, workers: int) -> Counter[int]:
    """Calls over new connections until each of ``workers`` processes answered some (bounded)."""
    served: Counter[int] = Counter()
    for _ in range(MAX_CONNECTIONS // 6):
        served += _calls_by_worker(address, 6)
        if len(served) == workers:
            return served
    raise AssertionError(f"only {len(served)} of {workers} workers answered: {served}")


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def _handled(text: str) -> float:
    """grpc_server_handled_total for GetItem/OK: one summed series, no pid label."""
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{GET}"' in line
    ]
    assert len(lines) == 1, lines
    assert 'grpc_code="OK"' in lines[0]
    assert "pid=" not in lines[0]
    return float(lines[0].rsplit(" ", 1)[1])


def _gauge_series(text: str, name: str) -> dict[str, str]:
    """A per-worker gauge's series: worker label -> pid label."""
    series = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            worker = re.search(r'worker="(\d+)"', line)
            pid = re.search(r'pid="(\d+)"', line)
            assert worker is not None, line
            assert pid is not None, line
            assert worker.group(1) not in series, f"worker {worker.group(1)} twice: {line}"
            series[worker.group(1)] = pid.group(1)
    return series


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR of the test's own for the server, so its metric files can be found."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


@pytest.mark.slow
def test_one_endpoint_sums_the_calls_of_all_workers(serve: Serve, private_tmp: Path) -> None:
    server = serve(PROBE, "--workers", "3", "--metrics", "127.0.0.1:0", "--drain", "0.2")
    metrics = str(server.announcement["metrics"])
    pids = {str(p) for p in server.announcement["pids"]}
    served = _calls_on_every_worker(server.address, 3)
    total = sum(served.values())
    assert {str(p) for p in served} == pids
    # Each scrape is a new connection: any worker may answer it, each sees the sum.
    for _ in range(12):
        text = _scrape(metrics)
        assert _handled(text) == total
        assert _gauge_series(text, "rpckit_in_flight").keys() == {"0", "1", "2"}
        assert set(_gauge_series(text, "rpckit_queue_depth").values()) == pids
    assert len(list(private_tmp.glob("rpckit-metrics-*"))) == 1
    assert server.terminate() == 0
    assert list(private_tmp.glob("rpckit-metrics-*")) == []


@pytest.mark.slow
def test_a_killed_workers_calls_still_count_and_its_gauges_go(
    serve: Serve, private_tmp: Path
) -> None:
    server = serve(PROBE, "--workers", "3", "--metrics", "127.0.0.1:0", "--drain", "0.2")
    metrics = str(server.announcement["metrics"])
    served = _calls_on_every_worker(server.address, 3)
    victim = next(iter(served))
    os.kill(victim, signal.SIGKILL)
    # The supervisor starts a replacement; wait until a scrape shows three live workers
    # again, none of them the victim (bounded). A scrape queued on the victim's listening
    # socket as it died is reset by the kernel: the next one goes to a live worker.
    give_up = time.monotonic() + 30
    series: dict[str, str] = {}
    while time.monotonic() < give_up and (str(victim) in series.values() or len(series) != 3):
        time.sleep(0.05)
        try:
            series = _gauge_series(_scrape(metrics), "rpckit_queue_depth")
        except ConnectionError:
            series = {}
    assert str(victim) not in series.values()
    assert len(series) == 3
    more = _calls_on_every_worker(server.address, 3)
    assert victim not in more
    assert _handled(_scrape(metrics)) == sum(served.values()) + sum(more.values())
    assert server.terminate() == 0
    assert list(private_tmp.glob("rpckit-metrics-*")) == []

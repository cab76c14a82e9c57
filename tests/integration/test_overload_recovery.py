"""Bursts of slow downstream calls, the recovery after them, and a busy neighbour process,
against a default ``rpckit serve`` (a real subprocess on 127.0.0.1:0).

The worst inputs of admission control's estimates and limits: a burst that only waits
(CPU idle) must be served, not shed; afterwards, ordinary calls must be served again at
once (no estimate left over from the burst may refuse them); and another process busy
on a core must not make a lightly loaded server refuse calls.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.integration.conftest import ROOT, ServeProcess

APP = "tests.integration.work_app:servicers"
ORDINARY = "work:5:20"  # 5 ms of CPU, then 20 ms waiting on a "downstream"
ORDINARY_DEADLINE_S = 0.25

pytestmark = pytest.mark.slow


def stubs(
    address: str, connections: int = 4
) -> tuple[list[grpc.Channel], list[grpc.UnaryUnaryMultiCallable[Any, Any]]]:
    """Several connections (each its own TCP connection), as a busy client would open."""
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1), ("n", i)])
        for i in range(connections)
    ]
    return channels, [inventory_pb2_grpc.InventoryStub(c).GetItem for c in channels]


def outcomes(futures: list[grpc.Future[Any]]) -> Counter[str]:
    codes: Counter[str] = Counter()
    for future in futures:
        try:
            future.result(timeout=60)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
    return codes


def burst(
    calls: list[grpc.UnaryUnaryMultiCallable[Any, Any]], count: int, wait_ms: int
) -> Counter[str]:
    """``count`` calls that each wait ``wait_ms`` (no CPU), all sent at once, 10 s deadlines."""
    request = inventory_pb2.GetItemRequest(sku=f"wait:{wait_ms}")
    return outcomes([calls[i % len(calls)].future(request, timeout=10) for i in range(count)])


def open_loop(
    calls: list[grpc.UnaryUnaryMultiCallable[Any, Any]], *, rate: float, seconds: float, seed: int
) -> Counter[str]:
    """Ordinary calls at Poisson arrivals of ``rate``/s for ``seconds`` (bounded), each with
    a 250 ms deadline; OK counts only replies within the deadline."""
    rng = random.Random(seed)
    request = inventory_pb2.GetItemRequest(sku=ORDINARY)
    sent: list[tuple[float, grpc.Future[Any]]] = []
    start = time.monotonic()
    due = start
    while due < start + seconds and len(sent) < 10 * rate * seconds:
        due += rng.expovariate(rate)
        time.sleep(max(0.0, due - time.monotonic()))
        sent.append(
            (
                time.monotonic(),
                calls[len(sent) % len(calls)].future(request, timeout=ORDINARY_DEADLINE_S),
            )
        )
    codes: Counter[str] = Counter()
    for _, future in sent:
        try:
            future.result(timeout=60)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
    return codes


def open_loop_elsewhere(address: str, *, rate: float, seconds: float, seed: int) -> Counter[str]:
    """:func:`open_loop` from a process of its own, so that the test process (its heap,
    threads and GIL) cannot delay the sends it times."""
    code = (
        "import json, sys\n"
        "from tests.integration.test_overload_recovery import open_loop, stubs\n"
        f"channels, calls = stubs({address!r})\n"
        f"print(json.dumps(open_loop(calls, rate={rate}, seconds={seconds}, seed={seed})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return Counter(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def server(serve: Callable[..., ServeProcess]) -> ServeProcess:
    return serve(APP)


def test_a_burst_of_slow_downstream_calls_is_served_not_shed(server: ServeProcess) -> None:
    channels, calls = stubs(server.address)
    try:
        # 20 calls that each wait 800 ms: more than the executor first runs at once (8).
        assert burst(calls, 20, 800) == Counter({"OK": 20})
    finally:
        for channel in channels:
            channel.close()


def served_share(codes: Counter[str]) -> float:
    total = sum(codes.values())
    assert total > 0
    return codes["OK"] / total


def test_ordinary_calls_are_served_again_right_after_a_burst(server: ServeProcess) -> None:
    channels, calls = stubs(server.address)
    try:
        # The metastable lock-out this guards against: 200 calls that wait 800 ms taught
        # an estimate that every later 250 ms call was too short to serve, for good. On a
        # fresh server the burst is all the estimate has seen (the worst case: nothing
        # faster is in its window until a probe ends).
        assert burst(calls, 200, 800) == Counter({"OK": 200})
        after = open_loop_elsewhere(server.address, rate=60, seconds=6, seed=7)
    finally:
        for channel in channels:
            channel.close()
    # The baseline, same server, same run: what this machine serves of the same load now
    # (all of it on a quiet machine; less when other processes take the cores).
    baseline = open_loop_elsewhere(server.address, rate=60, seconds=6, seed=6)
    assert sum(after.values()) > 300
    # <= 1% refused or late -- or, on a machine too busy for that, no worse than the baseline.
    wanted = min(0.99, served_share(baseline) - 0.01)
    assert served_share(after) >= wanted, (baseline, after)


@pytest.fixture
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    """A neighbour process keeping one core busy (a pure-Python loop at nice 0), bounded."""
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass",
        ]
    )
    yield hog
    hog.kill()
    hog.wait(timeout=10)


@pytest.fixture
def plain_server() -> Iterator[str]:
    """The same servicer on a plain grpcio server (a subprocess); yields its address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.work_app"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_a_busy_neighbour_does_not_make_a_lightly_loaded_server_refuse(
    server: ServeProcess, plain_server: str, cpu_hog: subprocess.Popen[bytes]
) -> None:
    """rpckit's overload signal must not read another process's CPU use as its own
    overload: beside the same neighbour it serves >= 99% -- or, on a machine too busy
    for that, as much as a plain grpcio server with no admission control does."""
    for address in (server.address, plain_server):
        open_loop_elsewhere(address, rate=20, seconds=1, seed=1)  # warm up
    # 40/s of 5 ms CPU + 20 ms wait: a fifth of a core, while the hog holds another.
    result = open_loop_elsewhere(server.address, rate=40, seconds=5, seed=2)
    plain = open_loop_elsewhere(plain_server, rate=40, seconds=5, seed=2)
    assert sum(result.values()) > 150
    wanted = min(0.99, served_share(plain) - 0.01)
    assert served_share(result) >= wanted, (result, plain)

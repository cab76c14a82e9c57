"""Fault: one of three backends turns 10x slower under load, then recovers.

P2C over peak-EWMA latency moves traffic away at the first slow replies, and the
estimate decays (PickerConfig.decay_s) so the backend gets traffic back once it is
fast again: the control loop recovers instead of locking it out.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import grpc

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit import BalancedChannel
from tests.faults.harness import FAST, CallLoad, wait_for
from tests.faults.test_restarts import APP, _create
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
GetItem = inventory_pb2.GetItemRequest
WINDOW = 90  # calls: a share is judged over the last this many answers


def share_of(load: CallLoad, pid: int, since: float) -> float | None:
    """``pid``'s share of the last ``WINDOW`` answers after ``since`` (None: too few yet)."""
    recent = [reply for at, reply in load.answers[-WINDOW:] if at > since]
    if len(recent) < WINDOW:
        return None
    mine = sum(1 for r in recent if getattr(r, "quantity", None) == pid)
    return mine / len(recent)


def set_slowness(address: str, factor: int) -> None:
    with grpc.insecure_channel(address) as direct:
        stub = inventory_pb2_grpc.InventoryStub(direct)
        stub.CreateItem(_create(f"slow:{factor}"), timeout=10)


def test_a_backend_slowing_10x_loses_its_traffic_and_wins_it_back(serve: Serve) -> None:
    """Calls of 20 ms on three backends; one turns 10x slower: within 10 s its share
    of the last 90 answers is under 10% (fair: 33%); restored, it is back over 20%
    within 15 s. 0 failed, 0 lost throughout."""
    backends = [serve(APP, "--drain", "0.2") for _ in range(3)]
    slow = backends[0]
    with BalancedChannel([b.address for b in backends], config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        wait_for(lambda: sum(b.serving for b in channel.backends()) == 3, "three backends")
        load = CallLoad(lambda i: stub.GetItem(GetItem(sku="hold:20"), timeout=20), threads=4)
        with load:
            start = time.monotonic()
            wait_for(lambda: (share_of(load, slow.proc.pid, start) or 0) > 0.2, "a fair share")
            set_slowness(slow.address, 10)
            slowed = time.monotonic()

            def moved_away() -> bool:
                share = share_of(load, slow.proc.pid, slowed)
                return share is not None and share < 0.1

            moved = wait_for(moved_away, "traffic moved off the slow backend", timeout=20)
            set_slowness(slow.address, 1)
            restored = time.monotonic()

            def back() -> bool:
                return (share_of(load, slow.proc.pid, restored) or 0) > 0.2

            came_back = wait_for(back, "traffic back on the restored backend", timeout=30)
        report = load.report("1 of 3 backends 10x slower, then restored", came_back - restored)
    print(f"[fault] traffic moved off the slow backend {moved - slowed:.2f} s after it slowed")
    assert moved - slowed < 10
    assert report.failed == Counter(), report
    assert report.lost == 0, report
    assert report.recover_s is not None
    assert report.recover_s < 15, report

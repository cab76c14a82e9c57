"""Admission control and load reports on a real in-process server (127.0.0.1:0)."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit.testing import running


class Gate(inventory_pb2_grpc.InventoryServicer):
    """GetItem('hold') blocks until the test opens the gate; anything else answers at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        if request.sku == "hold":
            self.entered.release()
            self.open.wait(timeout=30)
        return inventory_pb2.Item(sku=request.sku)


def test_sequential_calls_at_low_load_are_never_shed() -> None:
    with running([Gate()]) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        for i in range(300):
            assert (
                stub.GetItem(inventory_pb2.GetItemRequest(sku=f"s{i}"), timeout=10).sku == f"s{i}"
            )


def test_load_report_counts_calls_held_in_handlers() -> None:
    gate = Gate()
    held = 5
    with running([gate], config=rpckit.ServerConfig(threads=8, drain_s=0)) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        futures = [
            stub.GetItem.future(inventory_pb2.GetItemRequest(sku="hold"), timeout=30)
            for _ in range(held)
        ]
        for _ in range(held):
            assert gate.entered.acquire(timeout=20)
        _, call = stub.GetItem.with_call(inventory_pb2.GetItemRequest(sku="probe"), timeout=10)
        report = rpckit.load_from_metadata(call.trailing_metadata())
        gate.open.set()
        assert [f.result(timeout=30).sku for f in futures] == ["hold"] * held
    assert report is not None
    assert report.in_flight == held + 1  # the probe itself is running too
    assert report.workers >= held + 1  # handler threads, made as calls came
    assert report.concurrency_limit >= held + 1
    assert report.queue_depth == 0


def test_full_queue_rejects_at_once_with_pushback() -> None:
    gate = Gate()
    config = rpckit.ServerConfig(threads=2, queue_limit=2, drain_s=0)
    with running([gate], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        running_calls = [
            stub.GetItem.future(inventory_pb2.GetItemRequest(sku="hold"), timeout=30)
            for _ in range(2)
        ]
        for _ in range(2):
            assert gate.entered.acquire(timeout=20)
        queued = [
            stub.GetItem.future(inventory_pb2.GetItemRequest(sku="hold"), timeout=30)
            for _ in range(2)
        ]
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItem(inventory_pb2.GetItemRequest(sku="one-too-many"), timeout=10)
        gate.open.set()
        for future in running_calls:
            assert future.result(timeout=30).sku == "hold"
        for future in queued:  # may have been shed by CoDel while waiting: that is its job
            shed: Any = future.exception(timeout=30)  # type: ignore[call-arg]
            assert shed is None or shed.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    error = info.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in str(error.details())
    trailers = {m.key: m.value for m in error.trailing_metadata()}
    assert int(trailers["grpc-retry-pushback-ms"]) >= 1
    assert rpckit.load_from_metadata(error.trailing_metadata()) is not None


def test_deadline_shorter_than_service_time_is_rejected_without_running() -> None:
    gate = Gate()
    # One probe per 10 s and no free-slot probes, so the second short call below is not
    # a probe of its own.
    admission = rpckit.AdmissionConfig(deadline_probe_s=10.0, deadline_probe_free_burst=0)
    with running([gate], admission=admission) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        for _ in range(2):  # teach the server that 'hold' takes ~0.5 s
            future = stub.GetItem.future(inventory_pb2.GetItemRequest(sku="hold"), timeout=30)
            assert gate.entered.acquire(timeout=20)
            threading.Timer(0.5, gate.open.set).start()
            future.result(timeout=30)
            gate.open.clear()
        # The first call the estimate would refuse runs anyway, once, to measure again
        # (AdmissionConfig.deadline_probe_s); it takes 0.5 s again, past its deadline.
        with pytest.raises(grpc.RpcError) as probe:
            stub.GetItem(inventory_pb2.GetItemRequest(sku="hold"), timeout=0.1)
        assert probe.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert gate.entered.acquire(timeout=20)  # the probe ran
        threading.Timer(0.5, gate.open.set).start()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItem(inventory_pb2.GetItemRequest(sku="hold"), timeout=0.1)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "rpckit:" in str(info.value.details())  # answered by admission, not grpc's timer
    assert not gate.entered.acquire(blocking=False), "the handler ran for a doomed call"


class Burner(inventory_pb2_grpc.InventoryServicer):
    """GetItem burns 20 ms of CPU holding the GIL, like a handler parsing or rendering."""

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        end = time.thread_time() + 0.020
        while time.thread_time() < end:
            sum(range(200))
        return inventory_pb2.Item(sku=request.sku)


def lowest_limit_under_cpu_load(config: rpckit.ServerConfig, *, calls: int) -> int:
    """Drive 12 callers at a CPU-bound handler; the lowest concurrency limit reported."""
    lowest = [config.threads]
    unexpected: list[str] = []  # failures other than shedding (threads cannot assert)
    stop = threading.Event()
    with running([Burner()], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        per_caller = calls // 12

        def caller() -> None:
            for _ in range(per_caller):
                if stop.is_set():
                    return
                try:
                    _, call = stub.GetItem.with_call(
                        inventory_pb2.GetItemRequest(sku="x"), timeout=10
                    )
                except grpc.RpcError as exc:  # shedding is fine here; the limit is the point
                    if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        unexpected.append(f"{exc.code()}: {exc.details()}")
                    continue
                report = rpckit.load_from_metadata(call.trailing_metadata())
                if report is None:
                    unexpected.append("no load report")
                    continue
                lowest[0] = min(lowest[0], report.concurrency_limit)
                if report.concurrency_limit < config.threads:
                    stop.set()

        callers = [threading.Thread(target=caller) for _ in range(12)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in callers)
    assert unexpected == []
    return lowest[0]


def test_cpu_bound_handlers_lower_the_concurrency_limit() -> None:
    """Eight threads burning CPU keep grpc's dispatcher waiting for the GIL: fewer may run."""
    config = rpckit.ServerConfig(threads=8, drain_s=0)
    assert lowest_limit_under_cpu_load(config, calls=3000) < 8


def test_fixed_threads_run_them_all() -> None:
    config = rpckit.ServerConfig(threads=8, drain_s=0, adaptive_concurrency=False)
    assert lowest_limit_under_cpu_load(config, calls=240) == 8


def test_calls_queued_on_one_connection_do_not_use_up_its_streams() -> None:
    """A client sends every call on one connection (grpcio's channel does) and calls keep
    passing through the queue: each must free its HTTP/2 stream when it ends. The queue once
    held dead entries, and through them the calls, until compacted: past the connection's
    stream cap (1,000 by default; 16 here) new calls were refused with REFUSED_STREAM."""
    config = rpckit.ServerConfig(
        threads=1, adaptive_concurrency=False, max_concurrent_streams=16, drain_s=0
    )
    with running([Gate()], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        in_flight = threading.Semaphore(4)
        outcomes: list[str] = []
        depths: list[int] = []

        def done(future: Any) -> None:
            error = future.exception()
            outcomes.append("OK" if error is None else f"{error.code().name}: {error.details()}")
            report = rpckit.load_from_metadata(future.trailing_metadata())
            depths.append(-1 if report is None else report.queue_depth)
            in_flight.release()

        for i in range(200):
            assert in_flight.acquire(timeout=30)
            future = stub.GetItem.future(inventory_pb2.GetItemRequest(sku=f"s{i}"), timeout=30)
            future.add_done_callback(done)
        for _ in range(4):
            assert in_flight.acquire(timeout=30)
    assert outcomes == ["OK"] * 200, sorted(set(outcomes))
    assert max(depths) > 0  # calls did wait in the queue (one ran at a time)

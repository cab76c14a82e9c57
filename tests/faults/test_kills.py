"""Faults: kill -9 of a backend, and of one worker of ``rpckit serve --workers 2``, under load.

Only idempotent calls run here (GetItem, NO_SIDE_EFFECTS), so every call cut off
by the kill may be retried: 0 failed, 0 lost. (What happens to non-idempotent
calls on a killed backend is tests/integration/test_balancer.py's kill -9 test:
exactly those fail, UNAVAILABLE.)
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit import BalancedChannel
from tests.faults.harness import FAST, CallLoad, wait_for
from tests.faults.test_restarts import APP, answered_by
from tests.integration.conftest import ServeProcess
from tests.integration.test_balancer import reach_every_worker

Serve = Callable[..., ServeProcess]
GetItem = inventory_pb2.GetItemRequest
LONG = "hold:3000"


def long_calls_on(server: ServeProcess) -> Counter[int]:
    """Long calls started, by the pid that started them (the events of ``server``'s processes)."""
    return Counter(
        int(str(e["pid"])) for e in server.events() if e["event"] == "started" and e["sku"] == LONG
    )


def test_kill_9_of_a_backend_under_load_fails_no_idempotent_call(serve: Serve) -> None:
    """kill -9 one of three backends while it has calls in flight, then start it again:
    the calls on it are retried elsewhere, the load goes on; it serves again within
    15 s of its restart."""
    backends = [serve(APP, "--drain", "0.2") for _ in range(3)]
    with BalancedChannel([b.address for b in backends], config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        wait_for(lambda: sum(b.serving for b in channel.backends()) == 3, "three backends")
        load = CallLoad(lambda i: stub.GetItem(GetItem(sku="hold:20"), timeout=20), threads=4)
        with load:
            wait_for(lambda: load.answered >= 60, "calls before the kill")
            longs: list[Any] = [
                stub.GetItem.future(GetItem(sku=LONG), timeout=30) for _ in range(9)
            ]
            victim = backends[0]
            wait_for(lambda: sum(long_calls_on(victim).values()) >= 1, "a long call on the victim")
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=30)
            before = load.answered
            wait_for(lambda: load.answered >= before + 100, "calls after the kill")
            new = serve(APP, "--grpc", victim.address, "--drain", "0.2")
            started = time.monotonic()
            back = wait_for(
                lambda: answered_by(load, new.proc.pid, started), "the restarted backend serving"
            )
            replies = [f.result(timeout=40) for f in longs]  # retried on the survivors
        report = load.report("kill -9 of 1 of 3 backends, restarted", back - started)
    assert all(reply.quantity != victim.proc.pid for reply in replies)
    assert report.failed == Counter(), report
    assert report.lost == 0, report
    assert report.recover_s is not None
    assert report.recover_s < 15, report


def test_kill_9_of_a_worker_under_load_fails_no_idempotent_call(serve: Serve) -> None:
    """kill -9 one worker of ``rpckit serve --workers 2`` while it has calls in flight:
    the supervisor starts a replacement, the channel's broken connections are
    redialled and reach it within 20 s; meanwhile every call is served."""
    server = serve(APP, "--workers", "2", "--drain", "0.2")
    try:
        check_worker_kill(server)
    finally:  # SIGTERM: the supervisor stops its workers (a SIGKILL would orphan them)
        assert server.terminate() == 0


def check_worker_kill(server: ServeProcess) -> None:
    workers = set(server.announcement["pids"])
    with BalancedChannel(server.address, config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        reach_every_worker(channel, workers)
        load = CallLoad(lambda i: stub.GetItem(GetItem(sku="hold:20"), timeout=20), threads=4)
        with load:
            wait_for(lambda: load.answered >= 60, "calls before the kill")
            longs: list[Any] = [
                stub.GetItem.future(GetItem(sku=LONG), timeout=30) for _ in range(6)
            ]
            wait_for(lambda: len(long_calls_on(server)) == 2, "long calls on both workers")
            victim = min(workers)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)

            def replacement_answers() -> bool:
                return any(
                    at > killed and getattr(reply, "quantity", victim) not in workers
                    for at, reply in load.answers
                )

            back = wait_for(replacement_answers, "the replacement worker answering calls")
            replies = [f.result(timeout=40) for f in longs]
        report = load.report("kill -9 of 1 of 2 workers", back - killed)
    assert all(reply.quantity != victim for reply in replies)
    assert report.failed == Counter(), report
    assert report.lost == 0, report
    assert report.recover_s is not None
    assert report.recover_s < 20, report

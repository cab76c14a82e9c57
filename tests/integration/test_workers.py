"""`rpckit serve --workers N`: one port, N processes, supervised, drained together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.integration.conftest import ROOT, RPCKIT, ServeProcess

Serve = Callable[..., ServeProcess]
PROBE = "tests.integration.probe:servicers"


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _answers(address: str, sku: str, workers: int = 2) -> dict[int, int]:
    """``sku``'s answer (``quantity``) by the worker pid that gave it, over new connections.

    The kernel spreads connections over the workers by a hash of each one's ports, so any
    fixed number of them can all land on one worker (12 did, once, in CI: 1 run in 2,048).
    Connections are opened until ``workers`` pids have answered, at most 64 (all on one of
    two workers: 1 in 2**63).
    """
    answers: dict[int, int] = {}
    for i in range(64):
        options = [("grpc.use_local_subchannel_pool", 1), ("rpckit.test.connection", i)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            reply, call = stub.GetItem.with_call(inventory_pb2.GetItemRequest(sku=sku), timeout=10)
            report = rpckit.load_from_metadata(call.trailing_metadata())
            assert report is not None
            answers[report.pid] = reply.quantity
        if len(answers) >= workers:
            break
    return answers


def _answering_pids(address: str) -> set[int]:
    return set(_answers(address, "deadline"))


def _announced(server: ServeProcess) -> list[int]:
    children = _children(server.proc.pid)
    assert len(children) == 2
    return sorted(children)


def test_both_workers_serve_one_port_with_several_connections(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "2", "--drain", "0.2")
    workers = _announced(server)
    assert _answering_pids(server.address) == set(workers)
    assert server.terminate() == 0


def _kill_9_and_await_replacement(server: ServeProcess, victim: int) -> set[int]:
    """kill -9 one worker; the workers once the supervisor's replacement serves (bounded)."""
    os.kill(victim, signal.SIGKILL)
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        now = _children(server.proc.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.02)
    replaced = _children(server.proc.pid)
    give_up = time.monotonic() + 30  # the new worker serves once it has bound the port
    while time.monotonic() < give_up and _answering_pids(server.address) != replaced:
        time.sleep(0.05)
    return replaced


def test_kill_9_of_a_worker_is_repaired(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "2", "--drain", "0.2")
    victim, survivor = _announced(server)
    replaced = _kill_9_and_await_replacement(server, victim)
    assert survivor in replaced
    assert victim not in replaced
    assert len(replaced) == 2
    assert _answering_pids(server.address) == replaced
    assert "died (exit -9); starting a new one" in server.stderr()
    assert server.terminate() == 0


def test_sigterm_drains_both_workers(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "2", "--threads", "16", "--drain", "0.5")
    workers = _announced(server)
    channels = [
        grpc.insecure_channel(
            server.address, options=[("grpc.use_local_subchannel_pool", 1), ("rpckit.test.c", i)]
        )
        # The kernel spreads connections over the workers by a hash of each one's ports:
        # with 8 connections all landed on one worker about once in 128 runs; with 24,
        # about once in 8 million.
        for i in range(24)
    ]
    futures = [
        inventory_pb2_grpc.InventoryStub(ch).GetItem.future(
            inventory_pb2.GetItemRequest(sku="hold:1500"), timeout=30
        )
        for ch in channels
    ]
    started = server.wait_for_events("started", len(futures))
    assert {e["pid"] for e in started} == set(workers), "load should reach both workers"
    server.proc.send_signal(signal.SIGTERM)
    results = [f.result(timeout=30) for f in futures]
    assert server.proc.wait(timeout=30) == 0
    for ch in channels:
        ch.close()
    assert all(r.sku == "hold:1500" for r in results)
    log = server.stderr()
    for pid in workers:
        assert f"[{pid}] stopped" in log


def test_workers_auto_runs_two_per_core(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "auto", "--drain", "0")
    expected = 2 * len(os.sched_getaffinity(0))
    assert server.announcement["workers"] == expected
    assert len(server.announcement["pids"]) == expected
    assert server.terminate() == 0


def test_workers_run_at_pythons_switch_interval_unless_given_one(serve: Serve) -> None:
    # Several processes each run few calls: 5 ms, not the single process's rule by call.
    server = serve(PROBE, "--workers", "2", "--drain", "0")
    intervals = _answers(server.address, "switch-us")
    assert set(intervals) == set(_announced(server))
    assert set(intervals.values()) == {5000}, intervals
    assert server.terminate() == 0
    server = serve(PROBE, "--workers", "2", "--gil-switch-ms", "1", "--drain", "0")
    assert set(_answers(server.address, "switch-us").values()) == {1000}
    assert server.terminate() == 0


def test_one_process_starts_at_the_short_interval_of_its_rule(serve: Serve) -> None:
    # No call has ended yet when the first one reads it: short, from the start.
    server = serve(PROBE, "--drain", "0")
    assert set(_answers(server.address, "switch-us", workers=1).values()) == {200}
    assert server.terminate() == 0


def test_announcement_line_names_workers(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "2", "--drain", "0")
    assert server.announcement["workers"] == 2
    assert sorted(server.announcement["pids"]) == _announced(server)
    assert json.dumps(server.announcement)
    assert server.terminate() == 0


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_supervisor_holds_neither_the_app_nor_grpc(serve: Serve) -> None:
    # The workers come from a zygote that imported the app and exited; they were re-parented
    # to the supervisor, which never loaded grpc (so keeps no copy of the pages they write).
    server = serve(PROBE, "--workers", "2", "--drain", "0")
    supervisor = server.proc.pid
    workers = _announced(server)
    assert sorted(server.announcement["pids"]) == workers  # the zygote is gone
    assert all(_parent(pid) == supervisor for pid in workers)
    assert "cygrpc" not in _maps(supervisor)
    assert all("cygrpc" in _maps(pid) for pid in workers)
    assert server.terminate() == 0


def test_a_replacement_worker_imports_the_app_itself_and_serves(serve: Serve) -> None:
    server = serve(PROBE, "--workers", "2", "--drain", "0")
    victim, survivor = _announced(server)
    (replacement,) = _kill_9_and_await_replacement(server, victim) - {survivor}
    assert _answering_pids(server.address) == {survivor, replacement}
    frozen = _answers(server.address, "gc-frozen")  # the zygote's child and the replacement
    assert set(frozen) == {survivor, replacement}
    assert min(frozen.values()) > 10_000, frozen
    assert "cygrpc" not in _maps(server.proc.pid)
    assert server.terminate() == 0


def test_an_app_that_cannot_be_imported_is_a_one_line_error() -> None:
    done = subprocess.run(
        [RPCKIT, "serve", "no_such_module:x", "--grpc", "127.0.0.1:0", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot import 'no_such_module'" in lines[0]

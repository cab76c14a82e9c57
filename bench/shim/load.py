"""Closed-loop HTTP load for bench/shim: C keep-alive connections, each sending the mix in turn.

Closed loop measures what a server sustains (throughput) and what a request costs at that
load (latency percentiles); the connections are spread over sender processes (spawned,
pinned to their own cores when asked) so the client is not the bottleneck. Every loop is
bounded by the run's end time; every socket has a timeout. Loopback only.
"""

from __future__ import annotations

import dataclasses
import http.client
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

from bench.harness.loadgen import check_loopback
from bench.shim.mix import BenchRequest, deal

__all__ = ["LoadResult", "fetch", "run_closed_loop"]

#: Requests dealt per connection; the list is cycled (long enough that cycles do not align).
DEALT_PER_CONNECTION = 4096
SOCKET_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What the measured window saw, over every connection."""

    completed: int
    window_s: float
    latencies_s: list[float]
    unexpected: dict[str, int]  # "name: got status" -> count (wrong status or error)

    @property
    def throughput_rps(self) -> float:
        return self.completed / self.window_s


def fetch(address: str, request: BenchRequest) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    host, port = check_loopback(address)
    conn = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
    try:
        conn.request(request.method, request.path, body=request.body, headers=dict(request.headers))
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _connection_loop(
    address: str, seed: int, measure_from: float, stop_at: float, sink: list[object]
) -> None:
    host, port = check_loopback(address)
    requests = deal(random.Random(seed), DEALT_PER_CONNECTION)
    latencies: list[float] = []
    unexpected: Counter[str] = Counter()
    completed = 0
    conn: http.client.HTTPConnection | None = None
    index = 0
    while time.monotonic() < stop_at:
        request = requests[index % len(requests)]
        index += 1
        current = conn or http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_S)
        conn = None
        started = time.monotonic()
        try:
            current.request(
                request.method, request.path, body=request.body, headers=dict(request.headers)
            )
            reply = current.getresponse()
            reply.read()
            status = reply.status
            if reply.will_close:
                current.close()
            else:
                conn = current
        except (OSError, http.client.HTTPException) as exc:
            current.close()
            status = -1
            unexpected[f"{request.name}: {type(exc).__name__}"] += 1
        ended = time.monotonic()
        if started >= measure_from and ended <= stop_at:
            completed += 1
            latencies.append(ended - started)
            if status not in (request.expected_status, -1):
                unexpected[f"{request.name}: HTTP {status}"] += 1
    if conn is not None:
        conn.close()
    sink.append((completed, latencies, dict(unexpected)))


def _sender(
    address: str,
    connections: int,
    seed: int,
    cpus: Sequence[int] | None,
    measure_from: float,
    stop_at: float,
    out: multiprocessing.connection.Connection,
) -> None:
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    sink: list[object] = []
    threads = [
        threading.Thread(
            target=_connection_loop,
            args=(address, seed * 1000 + i, measure_from, stop_at, sink),
            daemon=True,
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at - time.monotonic()) + SOCKET_TIMEOUT_S + 5)
    out.send(sink)
    out.close()


def run_closed_loop(
    address: str,
    *,
    connections: int,
    senders: int,
    warmup_s: float,
    measure_s: float,
    seed: int,
    cpus: Sequence[int] | None = None,
) -> LoadResult:
    """Drive ``address`` with ``connections`` keep-alive connections over ``senders`` processes."""
    if connections < senders or senders < 1 or measure_s <= 0 or warmup_s < 0:
        raise ValueError("need connections >= senders >= 1, measure_s > 0, warmup_s >= 0")
    context = multiprocessing.get_context("spawn")
    start = time.monotonic() + 1.0  # spawn time; CLOCK_MONOTONIC is system-wide
    measure_from = start + warmup_s
    stop_at = measure_from + measure_s
    pipes = []
    procs = []
    for index in range(senders):
        share = connections // senders + (1 if index < connections % senders else 0)
        parent, child = context.Pipe(duplex=False)
        proc = context.Process(
            target=_sender,
            args=(address, share, seed + index, cpus, measure_from, stop_at, child),
            daemon=True,
        )
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    completed = 0
    latencies: list[float] = []
    unexpected: Counter[str] = Counter()
    for parent, proc in zip(pipes, procs, strict=True):
        if not parent.poll(max(0.0, stop_at - time.monotonic()) + SOCKET_TIMEOUT_S + 30):
            raise RuntimeError(f"sender {proc.name} did not report")
        for done, lat, bad in parent.recv():
            completed += done
            latencies += lat
            unexpected.update(bad)
        proc.join(timeout=10)
    return LoadResult(completed, measure_s, latencies, dict(unexpected))

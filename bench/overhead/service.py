"""The trivial handler of bench/overhead: no CPU, no wait, a call counter.

    rpckit serve bench.overhead.service:servicers --grpc 127.0.0.1:0
    python -m bench.overload.grpc_plain --threads 8 --app bench.overhead.service:servicers

h2load cannot see a gRPC status (it arrives in trailers), so the bench counts the calls
that reached the handler: each process counts in memory (a lock and an add per call) and a
daemon thread, started with the process's first call, mirrors the count every
`FLUSH_INTERVAL_S` to ``$BENCH_STATS_DIR/calls-<pid>.json`` as ``{"pid", "calls", "at"}``
(``at``: CLOCK_MONOTONIC, comparable across processes), so a reader knows a file is at least
as recent as a moment it saw pass.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench._gen.benchwork.v1 import work_pb2, work_pb2_grpc
from bench.overload.handler import STATS_DIR_ENV, read_json_files

FLUSH_INTERVAL_S = 0.05
_FILE_BYTES = 256  # fixed size, padded with spaces: rewritten in place, never truncated


class CallCounter:
    """Calls counted in this process, mirrored to a file by a thread of its own."""

    def __init__(self, stats_dir: Path | None, *, flush_interval_s: float = FLUSH_INTERVAL_S):
        self._stats_dir = stats_dir
        self._flush_interval_s = flush_interval_s
        self._calls = 0
        self._pid = 0
        self._count_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls) -> CallCounter:
        stats_dir = os.environ.get(STATS_DIR_ENV)
        return cls(Path(stats_dir) if stats_dir else None)

    def count(self) -> None:
        """One call."""
        if self._pid != os.getpid():
            self._start_flusher()
        with self._count_lock:
            self._calls += 1

    @property
    def calls(self) -> int:
        return self._calls

    def _start_flusher(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            if self._pid:  # a forked copy: count this process's calls only
                self._calls = 0
            self._pid = os.getpid()
            if self._stats_dir is not None:
                path = self._stats_dir / f"calls-{self._pid}.json"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._thread = threading.Thread(
                    target=self._flush_forever, args=(fd,), name="call-counter", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Write the count a last time and stop mirroring (bounded); a server just exits."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _flush_forever(self, fd: int) -> None:
        try:
            while True:
                closing = self._closed.is_set()
                # The clock first: the count written was reached no earlier than `at`.
                at = time.monotonic()
                data = json.dumps({"pid": self._pid, "calls": self._calls, "at": at}).encode()
                os.pwrite(fd, data.ljust(_FILE_BYTES), 0)
                if closing:
                    return
                self._closed.wait(self._flush_interval_s)
        finally:
            os.close(fd)


class TrivialServicer(work_pb2_grpc.WorkServicer):
    """benchwork.v1.Work with nothing to do: count the call, echo the payload."""

    def __init__(self, counter: CallCounter | None = None) -> None:
        self._counter = counter or CallCounter.from_environment()

    def Do(self, request: work_pb2.DoRequest, context: grpc.ServicerContext) -> work_pb2.DoResponse:
        self._counter.count()
        return work_pb2.DoResponse(pid=os.getpid(), payload=request.payload)


def servicers() -> list[object]:
    """The servicers `rpckit serve` (and grpc_plain's --app) load."""
    return [TrivialServicer()]


def read_counts(stats_dir: Path) -> list[dict[str, Any]]:
    """Every process's latest mirrored count."""
    return read_json_files(stats_dir, "calls-*.json")

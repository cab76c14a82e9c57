"""The backends of bench/balance: ``benchwork.v1.Work/Do`` that only sleeps.

    BENCH_BALANCE_SLOWDOWN=10 rpckit serve bench.balance.service:servicers --grpc 127.0.0.1:0

Each call sleeps the request's ``wait_ms`` times the backend's slowdown (1 unless
``BENCH_BALANCE_SLOWDOWN`` says otherwise, read when ``rpckit serve`` calls `servicers`) and
answers with the serving process's pid, so the client knows which backend served it. Sleeping
holds no CPU, so one 2-core machine can host ten of these.
"""

from __future__ import annotations

import math
import os
import time

import grpc

from bench._gen.benchwork.v1 import work_pb2, work_pb2_grpc

SLOWDOWN_ENV = "BENCH_BALANCE_SLOWDOWN"


class SleepServicer(work_pb2_grpc.WorkServicer):
    """benchwork.v1.Work: sleep ``wait_ms x slowdown``, echo the payload with this pid."""

    def __init__(self, slowdown: float = 1.0) -> None:
        if not math.isfinite(slowdown) or slowdown <= 0:
            raise ValueError(f"slowdown must be finite and > 0, got {slowdown!r}")
        self.slowdown = slowdown

    def Do(self, request: work_pb2.DoRequest, context: grpc.ServicerContext) -> work_pb2.DoResponse:
        time.sleep(max(0.0, request.wait_ms) * self.slowdown / 1000)
        return work_pb2.DoResponse(pid=os.getpid(), payload=request.payload)


def servicers() -> list[object]:
    """The servicers `rpckit serve` loads (slowdown from ``$BENCH_BALANCE_SLOWDOWN``)."""
    return [SleepServicer(float(os.environ.get(SLOWDOWN_ENV, "1")))]

"""The benchmark handler as a plain grpcio servicer (served by rpckit and by grpc_plain).

    rpckit serve bench.overload.service:servicers --grpc 127.0.0.1:0 [--workers N]

The client's deadline arrives the normal gRPC way (``context.time_remaining()``). Behind the
HTTP shim (`bench.overload.http_app`) that is the route's timeout, counted from when the shim
got the request; the client's own deadline comes along as ``x-request-deadline`` metadata
(epoch ms), and the earlier of the two decides whether the work was wasted.
"""

from __future__ import annotations

import os
import time

import grpc

from bench._gen.benchwork.v1 import work_pb2, work_pb2_grpc
from bench.harness.loadgen import DEADLINE_HEADER
from bench.overload.handler import WorkAccounting, do_work

# grpcio reports ~9.2e18 s remaining when the caller set no deadline.
_NO_DEADLINE_S = 1e9
_DEADLINE_KEY = DEADLINE_HEADER.lower()


def call_deadline(
    remaining_s: float | None, metadata: tuple[tuple[str, str | bytes], ...], now: float
) -> float | None:
    """The call's deadline in epoch seconds: the earlier of ``now + remaining_s`` and the
    ``x-request-deadline`` metadata (epoch ms); None when neither says."""
    deadlines = []
    if remaining_s is not None and remaining_s < _NO_DEADLINE_S:
        deadlines.append(now + remaining_s)
    for key, value in metadata:
        if key == _DEADLINE_KEY and isinstance(value, str) and value.isdigit():
            deadlines.append(int(value) / 1000)
    return min(deadlines, default=None)


class WorkServicer(work_pb2_grpc.WorkServicer):
    """benchwork.v1.Work: burn CPU, wait, echo the payload with the serving process's pid."""

    def __init__(self, accounting: WorkAccounting | None = None) -> None:
        self._accounting = accounting or WorkAccounting.from_environment()

    def Do(self, request: work_pb2.DoRequest, context: grpc.ServicerContext) -> work_pb2.DoResponse:
        deadline = call_deadline(
            context.time_remaining(), tuple(context.invocation_metadata() or ()), time.time()
        )
        do_work(request.cpu_ms, request.wait_ms, deadline, accounting=self._accounting)
        return work_pb2.DoResponse(pid=os.getpid(), payload=request.payload)


def servicers() -> list[object]:
    """The servicers `rpckit serve` loads."""
    return [WorkServicer()]

"""The benchmark handler as a plain grpcio servicer (served by rpckit and by grpc_plain).

    rpckit serve bench.overload.service:servicers --grpc 127.0.0.1:0 [--workers N]

The client's deadline arrives the normal gRPC way (``context.time_remaining()``).
"""

from __future__ import annotations

import os
import time

import grpc

from bench._gen.benchwork.v1 import work_pb2, work_pb2_grpc
from bench.overload.handler import WorkAccounting, do_work

# grpcio reports ~9.2e18 s remaining when the caller set no deadline.
_NO_DEADLINE_S = 1e9


class WorkServicer(work_pb2_grpc.WorkServicer):
    """benchwork.v1.Work: burn CPU, wait, echo the payload with the serving process's pid."""

    def __init__(self, accounting: WorkAccounting | None = None) -> None:
        self._accounting = accounting or WorkAccounting.from_environment()

    def Do(self, request: work_pb2.DoRequest, context: grpc.ServicerContext) -> work_pb2.DoResponse:
        remaining = context.time_remaining()
        deadline = (
            time.time() + remaining
            if remaining is not None and remaining < _NO_DEADLINE_S
            else None
        )
        do_work(request.cpu_ms, request.wait_ms, deadline, accounting=self._accounting)
        return work_pb2.DoResponse(pid=os.getpid(), payload=request.payload)


def servicers() -> list[object]:
    """The servicers `rpckit serve` loads."""
    return [WorkServicer()]

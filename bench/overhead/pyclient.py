"""A Python grpcio client for bench/overhead: closed loop, N calls in flight on one channel.

    python -m bench.overhead.pyclient --address 127.0.0.1:50051 --calls 20000 --in-flight 16

Each finished call starts the next until ``--calls`` have been sent; prints one JSON line
``{"calls", "ok", "codes", "elapsed_s", "cpu_s"}``. The issue's own measurement of rpckit's
overhead used such a client; in it the client's Python costs as much as the server's, which
is why the bench's main row uses h2load.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

import grpc

from bench._gen.benchwork.v1 import work_pb2, work_pb2_grpc
from bench.harness.loadgen import CONNECT_TIMEOUT_S, check_loopback

CALL_TIMEOUT_S = 10.0


class ClosedLoop:
    """``in_flight`` chains of calls; each chain sends its next call when one ends."""

    def __init__(self, stub: work_pb2_grpc.WorkStub, *, calls: int, in_flight: int) -> None:
        if calls < 1 or in_flight < 1:
            raise ValueError("calls and in_flight must be >= 1")
        self._stub = stub
        self._request = work_pb2.DoRequest(cpu_ms=0, wait_ms=0, payload=b"x" * 16)
        self._to_send = calls
        self._in_flight = in_flight
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outstanding = 0
        self.codes: Counter[str] = Counter()

    def run(self, *, timeout_s: float) -> float:
        """Send everything (bounded by timeout_s); the seconds it took."""
        started = time.monotonic()
        for _ in range(self._in_flight):
            self._send_next()
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"calls still in flight after {timeout_s:g} s")
        return time.monotonic() - started

    def _send_next(self) -> None:
        with self._lock:
            if self._to_send == 0:
                if self._outstanding == 0:
                    self._done.set()
                return
            self._to_send -= 1
            self._outstanding += 1
        future = self._stub.Do.future(self._request, timeout=CALL_TIMEOUT_S)
        future.add_done_callback(self._on_done)

    def _on_done(self, future: Any) -> None:
        code = future.code().name
        with self._lock:
            self.codes[code] += 1
            self._outstanding -= 1
        self._send_next()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead.pyclient",
        description="Closed-loop Python grpcio client of bench/overhead (one JSON line out).",
        epilog="example: python -m bench.overhead.pyclient --address 127.0.0.1:50051 "
        "--calls 20000 --in-flight 16",
    )
    parser.add_argument("--address", required=True, metavar="HOST:PORT", help="loopback only")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="give up after this")
    args = parser.parse_args(argv)
    try:
        check_loopback(args.address)
    except ValueError as exc:
        parser.error(str(exc))
    with grpc.insecure_channel(args.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        loop = ClosedLoop(
            work_pb2_grpc.WorkStub(channel), calls=args.calls, in_flight=args.in_flight
        )
        cpu_before = time.process_time()
        elapsed_s = loop.run(timeout_s=args.timeout_s)
        cpu_s = time.process_time() - cpu_before
    print(
        json.dumps(
            {
                "calls": args.calls,
                "ok": loop.codes.get("OK", 0),
                "codes": dict(loop.codes),
                "elapsed_s": elapsed_s,
                "cpu_s": cpu_s,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

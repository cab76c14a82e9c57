"""Baseline: a plain grpcio threaded server (one process, ThreadPoolExecutor(32)).

    python -m bench.overload.grpc_plain --grpc 127.0.0.1:0 [--threads 32]

Prints ``{"grpc": "127.0.0.1:PORT"}`` on stdout when serving (the same contract as
``rpckit serve``); on SIGTERM/SIGINT stops with a short grace and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import grpc

from bench._gen.benchwork.v1 import work_pb2_grpc
from bench.harness.loadgen import check_loopback
from bench.overload.service import WorkServicer

STOP_GRACE_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload.grpc_plain",
        description="The plain grpcio baseline of bench/overload.",
        epilog="example: python -m bench.overload.grpc_plain --grpc 127.0.0.1:0 --threads 32",
    )
    parser.add_argument("--grpc", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--threads", type=int, default=32, help="handler threads (default 32)")
    args = parser.parse_args(argv)
    check_loopback(args.grpc)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = grpc.server(
        ThreadPoolExecutor(max_workers=args.threads), options=[("grpc.so_reuseport", 0)]
    )
    work_pb2_grpc.add_WorkServicer_to_server(WorkServicer(), server)
    port = server.add_insecure_port(args.grpc)
    host = args.grpc.rpartition(":")[0]
    server.start()
    print(json.dumps({"grpc": f"{host}:{port}"}), flush=True)
    while not stop_requested.wait(1.0):
        pass
    server.stop(STOP_GRACE_S).wait(STOP_GRACE_S + 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

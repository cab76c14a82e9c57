"""Baseline: a plain grpcio threaded server (one process, ThreadPoolExecutor(32)).

    python -m bench.overload.grpc_plain --grpc 127.0.0.1:0 [--threads 32] [--app MODULE:FACTORY]

``--app`` names the factory of benchwork.v1.Work servicers to serve, as for ``rpckit serve``
(bench/overhead serves its trivial handler this way).

Prints ``{"grpc": "127.0.0.1:PORT"}`` on stdout when serving (the same contract as
``rpckit serve``); on SIGTERM/SIGINT stops with a short grace and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import grpc

from bench._gen.benchwork.v1 import work_pb2_grpc
from bench.harness.loadgen import check_loopback

STOP_GRACE_S = 5.0


def load_servicers(spec: str) -> list[work_pb2_grpc.WorkServicer]:
    """Call ``MODULE:FACTORY`` and return the benchwork.v1.Work servicers it gives."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--app {spec!r}: expected MODULE:FACTORY")
    servicers = list(getattr(importlib.import_module(module_name), attribute)())
    if not servicers or not all(isinstance(s, work_pb2_grpc.WorkServicer) for s in servicers):
        raise ValueError(f"--app {spec!r} gave {servicers!r}, not benchwork.v1.Work servicers")
    return servicers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload.grpc_plain",
        description="The plain grpcio baseline of bench/overload.",
        epilog="example: python -m bench.overload.grpc_plain --grpc 127.0.0.1:0 --threads 32",
    )
    parser.add_argument("--grpc", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--threads", type=int, default=32, help="handler threads (default 32)")
    parser.add_argument(
        "--app",
        default="bench.overload.service:servicers",
        metavar="MODULE:FACTORY",
        help="the benchwork.v1.Work servicers to serve (default: bench/overload's handler)",
    )
    args = parser.parse_args(argv)
    check_loopback(args.grpc)
    try:
        servicers = load_servicers(args.app)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(str(exc))

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = grpc.server(
        ThreadPoolExecutor(max_workers=args.threads), options=[("grpc.so_reuseport", 0)]
    )
    for servicer in servicers:
        work_pb2_grpc.add_WorkServicer_to_server(servicer, server)
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

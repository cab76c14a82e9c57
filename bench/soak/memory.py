"""What a call in flight costs a client's RSS, and what is left once the calls ended.

    python -m bench.soak.memory                 # 1,500 calls in flight, 4 waves, both clients
    python -m bench.soak.memory --calls 500 --waves 2

The soak's senders grow during the burst and keep most of it (bench/README.md, "bench/soak").
This measures why, in one process: it fires ``--calls`` futures at once at servers that hold
each call ``--hold-ms`` (grpc.aio servers in subprocesses, so thousands of calls wait cheaply),
and reads its own RssAnon (/proc/self/status) at the peak, after every call ended and was
dropped, and after ``malloc_trim(0)`` (glibc hands back the free pages it kept). Once through a
plain grpcio channel, then (same process, from where malloc_trim left it) through
``rpckit.BalancedChannel`` over three servers. Waves repeat the peak: a leak grows wave after
wave; memory the allocator keeps from a peak does not.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.harness.loadgen import WORK_METHOD
from bench.harness.report import markdown_table

SERVERS = 3
CALL_TIMEOUT_S = 30.0
SETTLE_S = 0.3  # after the last call ended: grpc's threads finish their bookkeeping


def rss_anon_mib() -> float:
    """This process's anonymous resident memory (heap, arenas), MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _hold_server() -> None:
    """A grpc.aio server on 127.0.0.1:0 answering Work/Do after the request's wait_ms."""
    import grpc

    from bench._gen.benchwork.v1 import work_pb2

    async def do(request: Any, context: Any) -> Any:
        await asyncio.sleep(request.wait_ms / 1000)
        return work_pb2.DoResponse(pid=os.getpid(), payload=request.payload)

    async def serve() -> None:
        server = grpc.aio.server()
        service, method = WORK_METHOD[1:].split("/")
        handler = grpc.unary_unary_rpc_method_handler(
            do,
            request_deserializer=work_pb2.DoRequest.FromString,
            response_serializer=work_pb2.DoResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(json.dumps({"grpc": f"127.0.0.1:{port}"}), flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def _waves(channel: Any, *, calls: int, waves: int, hold_ms: float) -> list[dict[str, Any]]:
    from bench._gen.benchwork.v1 import work_pb2

    call = channel.unary_unary(
        WORK_METHOD,
        request_serializer=work_pb2.DoRequest.SerializeToString,
        response_deserializer=work_pb2.DoResponse.FromString,
    )
    for _ in range(50):  # connections up, lazy imports done
        call(work_pb2.DoRequest(payload=b"x" * 16), timeout=CALL_TIMEOUT_S)
    gc.collect()
    base = rss_anon_mib()
    request = work_pb2.DoRequest(wait_ms=hold_ms, payload=b"x" * 16)
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    rows = []
    for wave in range(waves):
        ended = threading.Semaphore(0)
        futures = [call.future(request, timeout=CALL_TIMEOUT_S) for _ in range(calls)]
        for future in futures:
            future.add_done_callback(lambda _, done=ended: done.release())
        peak = rss_anon_mib()
        for _ in futures:
            ended.acquire(timeout=CALL_TIMEOUT_S)
        codes = Counter(future.code().name for future in futures)
        del futures
        gc.collect()
        time.sleep(SETTLE_S)
        after = rss_anon_mib()
        trim(0)
        rows.append(
            {
                "wave": wave + 1,
                "peak_mib": round(peak - base, 1),
                "kib_per_call": round((peak - base) * 1024 / calls, 1),
                "after_mib": round(after - base, 1),
                "trimmed_mib": round(rss_anon_mib() - base, 1),
                "codes": dict(codes),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak.memory",
        description=__doc__.split("\n\n", 1)[0],
        epilog="example: python -m bench.soak.memory --calls 500 --waves 2",
    )
    parser.add_argument("--calls", type=int, default=1500, help="calls in flight per wave")
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--hold-ms", type=float, default=1000.0, help="how long servers hold")
    parser.add_argument("--hold-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold_server:
        _hold_server()
        return 0
    if args.calls < 1 or args.waves < 1 or not 0 < args.hold_ms < 15000:
        parser.error("need --calls >= 1, --waves >= 1 and 0 < --hold-ms < 15000")
    import grpc

    import rpckit

    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.soak.memory", "--hold-server"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(SERVERS)
    ]
    try:
        addresses = [json.loads(server.stdout.readline())["grpc"] for server in servers]  # type: ignore[union-attr]
        tables = {}
        with grpc.insecure_channel(addresses[0]) as plain:
            tables["grpcio channel"] = _waves(
                plain, calls=args.calls, waves=args.waves, hold_ms=args.hold_ms
            )
        config = rpckit.BalancedChannelConfig(idempotent_methods=frozenset({WORK_METHOD}))
        with rpckit.BalancedChannel(addresses, config=config) as balanced:
            tables["rpckit.BalancedChannel"] = _waves(
                balanced, calls=args.calls, waves=args.waves, hold_ms=args.hold_ms
            )
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
    print(f"{args.calls} calls in flight, held {args.hold_ms:g} ms; RssAnon above the start, MiB")
    print()
    header = ["client", "wave", "peak", "KiB/call", "after", "after malloc_trim", "codes"]
    body = [
        [client, r["wave"], r["peak_mib"], r["kib_per_call"], r["after_mib"], r["trimmed_mib"],
         ", ".join(f"{k} {v}" for k, v in r["codes"].items())]
        for client, rows in tables.items()
        for r in rows
    ]  # fmt: skip
    print(markdown_table(header, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

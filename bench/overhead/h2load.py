"""h2load as a gRPC load client: the request body, the command line, and what it printed.

h2load (nghttp2) is a C HTTP/2 load generator, so on a 2-core machine its own cost per call is
small beside a Python server's. It speaks gRPC's framing if told to: ``POST`` with
``content-type: application/grpc`` and ``te: trailers``, and a body that is one
length-prefixed message (a 0 byte for "not compressed", the length as 4 bytes big-endian,
the serialized request). It does not read trailers, so it counts a gRPC error status as a
2xx success; the bench counts the calls that reached the handler instead (`service`).

`grpc_frame`, `h2load_argv` and `parse_output` are pure; `run` starts the process.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.harness.loadgen import check_loopback

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (uncompressed), 4-byte length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load_argv(
    executable: str,
    *,
    address: str,
    path: str,
    body_file: Path,
    requests: int,
    connections: int = 1,
    streams: int = 16,
) -> list[str]:
    """The command line: ``requests`` calls over ``connections`` with ``streams`` in flight
    on each (closed loop: a finished call starts the next)."""
    check_loopback(address)
    if requests < 1 or connections < 1 or streams < 1:
        raise ValueError("requests, connections and streams must be >= 1")
    headers = [arg for header in GRPC_HEADERS for arg in ("-H", header)]
    return [
        executable,
        "-n",
        str(requests),
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        "-d",
        str(body_file),
        *headers,
        f"http://{address}{path}",
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class H2loadResult:
    """The totals h2load printed."""

    elapsed_s: float  # "finished in ..."
    requests_per_s: float
    done: int  # requests that got a response
    succeeded: int  # 2xx (gRPC errors included: their status is in the trailers)
    failed: int
    errored: int
    timeout: int
    status_2xx: int


_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|us), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_output(text: str) -> H2loadResult:
    """The totals of h2load's report (ValueError naming what is missing)."""
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    status = _STATUS.search(text)
    missing = [
        what
        for what, match in (("finished", finished), ("requests", requests), ("status", status))
        if match is None
    ]
    if finished is None or requests is None or status is None:
        raise ValueError(f"h2load's output has no {', '.join(missing)} line:\n{text[-1000:]}")
    return H2loadResult(
        elapsed_s=float(finished.group(1)) * _UNIT_S[finished.group(2)],
        requests_per_s=float(finished.group(3)),
        done=int(requests.group(3)),
        succeeded=int(requests.group(4)),
        failed=int(requests.group(5)),
        errored=int(requests.group(6)),
        timeout=int(requests.group(7)),
        status_2xx=int(status.group(1)),
    )


def find_h2load() -> str | None:
    """The h2load executable (Debian: package nghttp2-client), or None."""
    return shutil.which("h2load")


def run(argv: Sequence[str], *, timeout_s: float) -> tuple[H2loadResult, float]:
    """Run h2load to completion (bounded); its totals and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(
            f"h2load exited with {completed.returncode}: {completed.stderr[-500:]}"
            f"{completed.stdout[-500:]}"
        )
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_output(completed.stdout), cpu_s

"""Probe a gRPC server's health while a load step runs: does Check stay fast and SERVING?

A background thread calls ``grpc.health.v1.Health/Check`` every ``interval_s``
on its own connection and records (latency, status). Bounded: it stops when
told to, or after ``max_probes``. Loopback addresses only (checked).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence

from bench.harness.loadgen import check_loopback
from bench.harness.stats import percentile


@dataclasses.dataclass(frozen=True)
class HealthSummary:
    probes: int
    serving: int
    p99_ms: float | None
    max_ms: float | None

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def summarize_probes(samples: Sequence[tuple[float, str]]) -> HealthSummary:
    """Pure: (latency seconds, status name) samples -> counts and latency percentiles."""
    latencies = sorted(latency * 1000 for latency, _ in samples)
    return HealthSummary(
        probes=len(samples),
        serving=sum(1 for _, status in samples if status == "SERVING"),
        p99_ms=None if not latencies else round(percentile(latencies, 99.0) or 0.0, 2),
        max_ms=None if not latencies else round(latencies[-1], 2),
    )


class HealthProbe:
    """Context manager: probes ``address`` in a thread for the duration of the block."""

    def __init__(self, address: str, *, interval_s: float = 0.05, max_probes: int = 2000) -> None:
        check_loopback(address)
        self._address = address
        self._interval_s = interval_s
        self._max_probes = max_probes
        self._stop = threading.Event()
        self._samples: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> HealthSummary:
        return summarize_probes(self._samples)

    def _run(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        options = [("grpc.use_local_subchannel_pool", 1), ("bench.health_probe", 1)]
        with grpc.insecure_channel(self._address, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            while not self._stop.is_set() and len(self._samples) < self._max_probes:
                started = time.monotonic()
                try:
                    reply = stub.Check(request, timeout=1.0)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as error:
                    status = error.code().name
                self._samples.append((time.monotonic() - started, status))
                self._stop.wait(self._interval_s)

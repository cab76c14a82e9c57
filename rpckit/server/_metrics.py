"""Prometheus metrics for one server process (opt-in: ``rpckit serve --metrics HOST:PORT``).

Everything lives in a registry owned by the :class:`ServerMetrics` instance --
never prometheus_client's global one -- so two servers in a process (tests) do
not collide. Names follow Prometheus conventions and grpc-ecosystem's
go-grpc-prometheus where one exists:

| metric | type | labels |
|---|---|---|
| ``grpc_server_handled_total`` | counter | ``grpc_method``, ``grpc_code`` |
| ``grpc_server_handling_seconds`` | histogram | ``grpc_method`` |
| ``rpckit_queue_wait_seconds`` | histogram | ``grpc_method`` |
| ``rpckit_shed_total`` | counter | ``grpc_method``, ``reason`` |
| ``rpckit_malformed_requests_total`` | counter | ``grpc_method`` |
| ``rpckit_queue_depth``, ``rpckit_in_flight``, ``rpckit_concurrency_limit`` | gauge | |
| ``rpckit_utilization``, ``rpckit_codel_load`` | gauge | |

prometheus-client is an optional dependency (``pip install rpckit[metrics]``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rpckit.server._errors import ConfigError
from rpckit.v1 import load_pb2

__all__ = ["ServerMetrics"]

#: Latency buckets (seconds): 1 ms to 10 s, dense where RPC deadlines live.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class ServerMetrics:
    """Counters, histograms and load gauges of one server, in their own registry."""

    def __init__(self, load: Callable[[], load_pb2.LoadReport]) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(
                "metrics need prometheus-client: pip install 'rpckit[metrics]'"
            ) from None
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self._handled = prom.Counter(
            "grpc_server_handled_total", "Calls completed, by method and status code.",
            ["grpc_method", "grpc_code"], registry=self.registry,
        )  # fmt: skip
        self._latency = prom.Histogram(
            "grpc_server_handling_seconds", "Time from the handler's start to the response.",
            ["grpc_method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._wait = prom.Histogram(
            "rpckit_queue_wait_seconds", "Time admitted calls waited for a handler thread.",
            ["grpc_method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._shed = prom.Counter(
            "rpckit_shed_total", "Calls rejected by admission control, by reason.",
            ["grpc_method", "reason"], registry=self.registry,
        )  # fmt: skip
        self._malformed = prom.Counter(
            "rpckit_malformed_requests_total",
            "Requests that did not parse (answered INVALID_ARGUMENT), by method.",
            ["grpc_method"], registry=self.registry,
        )  # fmt: skip
        self._load = load
        self._snapshot_lock = threading.Lock()
        for name, doc, field in (
            ("rpckit_queue_depth", "Calls waiting for a handler thread.", "queue_depth"),
            ("rpckit_in_flight", "Calls running in handlers.", "in_flight"),
            (
                "rpckit_concurrency_limit",
                "Handlers allowed to run at once (adapts to GIL contention).",
                "concurrency_limit",
            ),
            ("rpckit_utilization", "Busy share of handler threads, last second.", "utilization"),
            ("rpckit_codel_load", "CoDel pressure, 0 to 100.", "codel_load"),
        ):
            gauge = prom.Gauge(name, doc, registry=self.registry)
            gauge.set_function(self._reader(field))
        self._http: Any = None

    def _reader(self, field: str) -> Callable[[], float]:
        def read() -> float:
            return float(getattr(self._load(), field))

        return read

    def call_done(self, method: str, code: str, seconds: float) -> None:
        self._handled.labels(method, code).inc()
        self._latency.labels(method).observe(seconds)

    def queue_wait(self, method: str, seconds: float) -> None:
        self._wait.labels(method).observe(seconds)

    def shed(self, method: str, reason: str) -> None:
        self._shed.labels(method, reason).inc()

    def malformed(self, method: str) -> None:
        self._malformed.labels(method).inc()

    def serve(self, address: str) -> str:
        """Serve /metrics on ``host:port`` (port 0 picks one); returns the bound address."""
        host, _, port = address.rpartition(":")
        server, _thread = self._prom.start_http_server(int(port), addr=host, registry=self.registry)
        self._http = server
        return f"{host}:{server.server_port}"

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

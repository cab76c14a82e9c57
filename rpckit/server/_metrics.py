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
| ``rpckit_http_refused_unread_total`` | counter | ``reason`` |
| ``rpckit_queue_depth``, ``rpckit_in_flight``, ``rpckit_concurrency_limit`` | gauge | |
| ``rpckit_utilization``, ``rpckit_codel_load`` | gauge | |

prometheus-client is an optional dependency (``pip install rpckit[metrics]``).

**Several worker processes, one endpoint** (``rpckit serve --workers N --metrics
HOST:PORT``): every worker keeps its counters and histograms in files of one
directory the supervisor made for this server (prometheus-client's multiprocess
mode, as gunicorn deployments use it), and every worker serves ``/metrics`` on
the same port with SO_REUSEPORT. Whichever worker answers a scrape reads all
the files: counters and histograms are summed over the workers, the load
gauges keep one series per worker (label ``worker``; a dead worker's series
are removed by the supervisor, see ``rpckit.server._workers``). Multiprocess
mode is process-wide in prometheus-client (an environment variable and the
value class chosen at metric creation): a worker process is a server of its
own, so that is where it is switched on, never in a process that merely
imports rpckit. The shim's legacy-traffic counters are per process and are not
part of the summed endpoint.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from rpckit.server._errors import ConfigError
from rpckit.v1 import load_pb2

__all__ = ["ServerMetrics"]

#: Latency buckets (seconds): 1 ms to 10 s, dense where RPC deadlines live.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: With several workers, how often each writes its load gauges to the shared files.
GAUGE_REFRESH_S = 1.0
#: prometheus-client's switch for multiprocess mode (read when a value is created).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServerMetrics:
    """Counters, histograms and load gauges of one server, in their own registry."""

    def __init__(
        self,
        load: Callable[[], load_pb2.LoadReport],
        *,
        shared_dir: str | None = None,
        worker: int = 0,
    ) -> None:
        """``shared_dir``: the directory this server's worker processes share (see the
        module docstring); ``None`` for a single process. ``worker``: this one's index."""
        try:
            import prometheus_client as prom
            from prometheus_client import multiprocess, values
        except ImportError:
            raise ConfigError(
                "metrics need prometheus-client: pip install 'rpckit[metrics]'"
            ) from None
        self._prom = prom
        if shared_dir is not None:
            os.environ[MULTIPROC_ENV] = shared_dir
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._shared_dir = shared_dir
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
        self._http_unread = prom.Counter(
            "rpckit_http_refused_unread_total",
            "HTTP requests answered before they were parsed (their route unknown): 503 "
            "because the HTTP front end was short of CPU (overloaded), or dropped because "
            "their client had closed (client_gone).",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self._auth_denied = prom.Counter(
            "rpckit_auth_denied_total",
            "Calls refused by the auth policy before admission, by method and status code.",
            ["grpc_method", "grpc_code"], registry=self.registry,
        )  # fmt: skip
        self._load = load
        self._gauges: list[tuple[Any, str]] = []
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
            if shared_dir is None:
                gauge = prom.Gauge(name, doc, registry=self.registry)
                gauge.set_function(self._reader(field))
            else:  # one series per live worker, written by a refresh thread
                shared = prom.Gauge(
                    name, doc, ["worker"], multiprocess_mode="liveall", registry=self.registry
                )
                self._gauges.append((shared.labels(str(worker)), field))
        if shared_dir is None:
            self.scrape_registry = self.registry
        else:
            self.scrape_registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                self.scrape_registry, path=shared_dir
            )
        self._http: WSGIServer | None = None
        self._stop_refresh = threading.Event()
        self._refresher: threading.Thread | None = None

    def _refresh_gauges(self) -> None:
        while True:
            report = self._load()
            for gauge, field in self._gauges:
                gauge.set(float(getattr(report, field)))
            if self._stop_refresh.wait(GAUGE_REFRESH_S):
                return

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

    def http_refused_unread(self, reason: str) -> None:
        """An HTTP request answered before it was parsed (``HttpServer``'s ``on_unread``)."""
        self._http_unread.labels(reason).inc()

    def auth_denied(self, method: str, code: str) -> None:
        """A call the auth policy refused: counted here and as handled with ``code``."""
        self._auth_denied.labels(method, code).inc()
        self.call_done(method, code, 0.0)

    def serve(self, address: str, *, reuse_port: bool = False) -> str:
        """Serve /metrics on ``host:port`` (port 0 picks one); returns the bound address.

        ``reuse_port``: bind with SO_REUSEPORT, so each worker of a server serves the port.
        """
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        server_class = _SERVER_CLASSES[reuse_port, ":" in host]
        app = self._prom.make_wsgi_app(self.scrape_registry)
        server = make_server(host, int(port), app, server_class, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="rpckit-metrics", daemon=True)
        thread.start()
        self._http = server
        if self._gauges:
            self._refresher = threading.Thread(
                target=self._refresh_gauges, name="rpckit-metrics-gauges", daemon=True
            )
            self._refresher.start()
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{server.server_port}"

    def close(self) -> None:
        self._stop_refresh.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """The scrape endpoint: a thread per scrape, never waited for at exit."""

    daemon_threads = True


class _ReusePortServer(_MetricsServer):
    allow_reuse_port = True


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


class _ReusePortServer6(_ReusePortServer):
    address_family = socket.AF_INET6


#: By (reuse_port, IPv6).
_SERVER_CLASSES: dict[tuple[bool, bool], type[_MetricsServer]] = {
    (False, False): _MetricsServer,
    (True, False): _ReusePortServer,
    (False, True): _MetricsServer6,
    (True, True): _ReusePortServer6,
}


class _QuietHandler(WSGIRequestHandler):
    """Scrapes come every few seconds: no access-log line for each."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

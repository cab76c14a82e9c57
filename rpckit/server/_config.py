"""Server configuration: frozen, keyword-only, validated when built.

Every default says where it comes from. ``ServerConfig()`` is a sound
production default for one process on a small machine; ``rpckit serve`` maps
its flags onto these fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rpckit.core._validate import check_int
from rpckit.observe._tracing import Tracing

__all__ = ["ConfigError", "ServerConfig", "TlsConfig"]


class ConfigError(Exception):
    """Configuration or command-line input that cannot work; the message says what to change.

    Part of the tree in ``rpckit.server._errors``; it lives here because this module imports no
    grpc, and ``rpckit serve --workers``'s supervisor must not (see ``rpckit.server._workers``).
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """Server TLS from PEM files; with ``client_ca`` set, clients must present a cert (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for label, path in (("cert", self.cert), ("key", self.key), ("client_ca", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {label} file not found: {path}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How an rpckit server runs.

    Attributes:
        threads: the most handler threads, and calls running at once, per
            process. Threads are made when calls need them and end after 30 s
            idle; a handler waiting on I/O costs a thread, not a core. 256: a
            burst of slow downstream calls is served at once.
        adaptive_concurrency: run fewer calls at once while CPU-bound handlers
            make grpc's dispatch thread wait for the GIL (``rpckit.server._concurrency``:
            from 8, growing fast while the GIL is free); False runs up to
            ``threads`` at once.
        handler_nice: the CPU priority (nice, 0-19) of the handler threads, Linux
            only: above 0, grpc's dispatch thread, the side pool and the
            admission thread get a core before the handlers on a busy machine.
        queue_limit: calls admitted to wait for a thread; beyond it calls are
            rejected at once (RESOURCE_EXHAUSTED with pushback).
        side_threads: threads answering health checks and rejections, so those
            stay fast when every handler thread is busy.
        drain_s: after a stop signal, seconds to keep serving with health
            NOT_SERVING, so balancers (and rpckit clients) move away first.
        grace_s: then, seconds in-flight calls get to finish before they are cancelled.
        health: serve ``grpc.health.v1.Health`` for the server and each service.
        reflection: serve gRPC server reflection (grpcurl, grpc_cli, Postman).
        max_message_bytes: largest message accepted or sent (grpcio's default is 4 MiB).
        keepalive_time_s / keepalive_timeout_s: HTTP/2 pings to find dead peers
            (gRPC's keepalive guide suggests minutes, not seconds, for servers).
        min_client_ping_interval_s: pings from clients more often than this are
            answered with GOAWAY (too_many_pings), protecting the server.
        so_reuseport: share the port between processes; only for multi-process serving.
        tls: serve TLS instead of plaintext.
        max_concurrent_rpcs: grpcio's own hard limit, a backstop behind admission control.
        worker_index: which process of a multi-process server this is (load reports).
        metrics_address: serve Prometheus metrics on this ``host:port`` (port 0
            picks one); ``None`` (the default) serves none. Needs prometheus-client.
        metrics_dir: the directory the worker processes of one multi-process server
            share their metrics in (``rpckit serve --workers``): each then serves the
            sum over all workers on ``metrics_address`` with SO_REUSEPORT
            (``rpckit.server._metrics``). ``None``: this process's metrics alone.
        tracing: a SERVER span per call with the admission outcome and queue wait
            (``rpckit.server._tracing``); health checks and watches only with
            ``trace_background``. None (default): no tracing, OpenTelemetry not imported.
        call_log: one INFO record per call on ``rpckit.server.calls`` (method, status,
            peer, duration, trace and span ids; ``rpckit.server._call_log``), e.g. for
            :class:`rpckit.observe.JsonFormatter`. Off by default.
        interceptors: ``grpc.ServerInterceptor`` objects around every handler, health
            and reflection included (inside any that a patched ``grpc.server`` adds,
            as OpenTelemetry's instrumentation does). rpckit keeps working under any
            that call the handler they wrap.
    """

    threads: int = 256
    adaptive_concurrency: bool = True
    handler_nice: int = 10
    queue_limit: int = 256
    side_threads: int = 2
    drain_s: float = 2.0
    grace_s: float = 10.0
    health: bool = True
    reflection: bool = True
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_s: float = 120.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_interval_s: float = 10.0
    so_reuseport: bool = False
    tls: TlsConfig | None = None
    max_concurrent_rpcs: int | None = None
    worker_index: int = 0
    metrics_address: str | None = None
    metrics_dir: str | None = None
    tracing: Tracing | None = None
    call_log: bool = False
    interceptors: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "threads": self.threads,
            "queue_limit": self.queue_limit,
            "side_threads": self.side_threads,
            "max_message_bytes": self.max_message_bytes,
            "keepalive_time_s": self.keepalive_time_s,
            "keepalive_timeout_s": self.keepalive_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"ServerConfig.{name} must be > 0, got {value!r}")
        for name, value in {"drain_s": self.drain_s, "grace_s": self.grace_s}.items():
            if value < 0:
                raise ValueError(f"ServerConfig.{name} must be >= 0, got {value!r}")
        check_int("ServerConfig", "handler_nice", self.handler_nice, low=0)
        if self.handler_nice > 19:
            raise ValueError(f"ServerConfig.handler_nice must be <= 19, got {self.handler_nice!r}")
        if self.max_concurrent_rpcs is not None and self.max_concurrent_rpcs <= 0:
            raise ValueError("ServerConfig.max_concurrent_rpcs must be > 0 or None")
        if self.worker_index < 0:
            raise ValueError("ServerConfig.worker_index must be >= 0")

    def grpc_options(self) -> list[tuple[str, int | str]]:
        """Channel arguments for grpc.server()."""
        return [
            ("grpc.so_reuseport", 1 if self.so_reuseport else 0),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
            ("grpc.http2.max_ping_strikes", 2),
        ]

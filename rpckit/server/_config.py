"""Server configuration: frozen, keyword-only, validated when built.

Every default says where it comes from. ``ServerConfig()`` is a sound
production default for one process on a small machine; ``rpckit serve`` maps
its flags onto these fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rpckit.core._auth import AuthPolicy
from rpckit.core._validate import check_fields, check_int, check_number
from rpckit.observe._tracing import Tracing
from rpckit.server._switch import SwitchConfig

__all__ = ["ConfigError", "ServerConfig", "TlsConfig"]


class ConfigError(Exception):
    """Configuration or command-line input that cannot work; the message says what to change.

    Part of the tree in ``rpckit.server._errors``; it lives here because this module imports no
    grpc, and ``rpckit serve --workers``'s supervisor must not (see ``rpckit.server._workers``).
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """Server TLS from PEM files; with ``client_ca`` set, clients must present a cert (mTLS).

    The files are read again on SIGHUP (``rpckit serve``; :meth:`rpckit.Server.reload_tls`)
    and when they change: every ``poll_s`` seconds their stat is compared (0: only on
    SIGHUP). 5 s: a rotated certificate (cert-manager, a Kubernetes secret update) is
    served within seconds, for a ``stat`` of three files. A new set that does not load
    is logged and the port keeps the set it has (``rpckit.server._tls``).
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    poll_s: float = 5.0

    def __post_init__(self) -> None:
        check_fields(self)
        if 0 < self.poll_s < 0.05:
            raise ValueError(f"TlsConfig.poll_s must be 0 (off) or >= 0.05 s, got {self.poll_s}")
        for label, path in (("cert", self.cert), ("key", self.key), ("client_ca", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TlsConfig.{label}: file not found: {path}")


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
        max_message_bytes: largest message accepted or sent (grpcio's default is 4 MiB);
            a larger request is answered RESOURCE_EXHAUSTED before any Python runs.
        max_metadata_bytes: largest request metadata (all headers, HPACK-decoded
            sizes) accepted; more is RESOURCE_EXHAUSTED. 16 KiB: grpc core's own hard
            limit, here also the soft one, so the answer does not depend on chance.
        max_concurrent_streams: calls one connection may have open at once (HTTP/2
            SETTINGS_MAX_CONCURRENT_STREAMS); grpc core's default is unlimited. 1000, not
            RFC 9113's floor of 100: grpc core counts a stream until both sides closed it,
            and at 100 a client with 32 calls in flight that the server answered early
            (INVALID_ARGUMENT before reading on) had 2-78% of its calls refused
            (REFUSED_STREAM, seen as UNAVAILABLE; tests/integration/test_bad_input_grpc.py).
        max_connection_idle_s: a connection with no call for this long is closed with
            GOAWAY (clients reconnect on their next call). 300 s frees sockets held by
            clients that went away quietly; grpc core's default is never.
        keepalive_time_s / keepalive_timeout_s: HTTP/2 pings to find dead peers
            (gRPC's keepalive guide suggests minutes, not seconds, for servers).
        min_client_ping_interval_s: pings from clients more often than this are
            answered with GOAWAY (too_many_pings), protecting the server.
        so_reuseport: share the port between processes; only for multi-process serving.
        tls: serve TLS instead of plaintext (certificates reloaded, see :class:`TlsConfig`).
        auth: who may call (:class:`~rpckit.core._auth.AuthPolicy`): asked for every call
            before admission control; a refused call is answered UNAUTHENTICATED or
            PERMISSION_DENIED and costs no queue slot. The HTTP shim built on this
            server (``Shim(server=...)``) applies it to its routes too. None: no check.
        max_concurrent_rpcs: grpcio's own hard limit, a backstop behind admission control.
        worker_index: which process of a multi-process server this is (load reports).
        processes: how many processes serve the port (``rpckit serve --workers`` sets
            it): the overload signal counts a wait for a core as this server's own in
            proportion to these processes' share of the busy CPU.
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
        gil_switch: set Python's GIL switch interval by call: short (0.2 ms) while calls
            hold the CPU for milliseconds, so grpc's dispatch thread gets the GIL soon,
            long (5 ms) while every call is light (``rpckit.server._switch``). The
            interval is process-wide: for a server that owns its process, as ``rpckit
            serve`` does by default. None (the default here): leave it alone.
        interceptors: ``grpc.ServerInterceptor`` objects around every handler, health
            and reflection included (inside any that a patched ``grpc.server`` adds,
            as OpenTelemetry's instrumentation does). rpckit keeps working under any
            that call the handler they wrap.
    """

    threads: int = 256
    adaptive_concurrency: bool = True
    handler_nice: int = 10
    queue_limit: int = 1024
    side_threads: int = 2
    drain_s: float = 2.0
    grace_s: float = 10.0
    health: bool = True
    reflection: bool = True
    max_message_bytes: int = 4 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_concurrent_streams: int = 1000
    max_connection_idle_s: float = 300.0
    keepalive_time_s: float = 120.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_interval_s: float = 10.0
    so_reuseport: bool = False
    tls: TlsConfig | None = None
    auth: AuthPolicy | None = None
    max_concurrent_rpcs: int | None = None
    worker_index: int = 0
    processes: int = 1
    metrics_address: str | None = None
    metrics_dir: str | None = None
    tracing: Tracing | None = None
    call_log: bool = False
    gil_switch: SwitchConfig | None = None
    interceptors: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self)  # types; numbers finite and >= 0
        owner = "ServerConfig"
        ints = ("threads", "queue_limit", "side_threads", "max_message_bytes")
        for name in (*ints, "max_metadata_bytes", "max_concurrent_streams"):
            check_int(owner, name, getattr(self, name), low=1)
        for name in ("keepalive_time_s", "keepalive_timeout_s", "max_connection_idle_s"):
            check_number(owner, name, getattr(self, name), low=0.0, strict=True)
        check_int(owner, "handler_nice", self.handler_nice, low=0, high=19)
        if self.max_concurrent_rpcs is not None:
            check_int(owner, "max_concurrent_rpcs", self.max_concurrent_rpcs, low=1)
        check_int(owner, "processes", self.processes, low=1)
        if self.metrics_address is not None and ":" not in self.metrics_address:
            raise ValueError(
                f"ServerConfig.metrics_address must be host:port, got {self.metrics_address!r}"
            )

    def grpc_options(self) -> list[tuple[str, int | str]]:
        """Channel arguments for grpc.server()."""
        return [
            ("grpc.so_reuseport", 1 if self.so_reuseport else 0),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_connection_idle_ms", int(self.max_connection_idle_s * 1000)),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
            ("grpc.http2.max_ping_strikes", 2),
        ]

"""The embedded HTTP server for the shim: cheroot's threaded WSGI server, with rpckit's lifecycle.

    with HttpServer(shim, "127.0.0.1:0") as http:
        print(http.address)          # "127.0.0.1:40123"

cheroot (CherryPy's server) is pure Python, threaded (no gevent, no monkey
patching, so grpcio keeps working), HTTP/1.1 with keep-alive and chunked
bodies, and maintained. rpckit runs it tuned for many small keep-alive
requests (:mod:`rpckit.http._server._cheroot`: a request thread lingers on its
connection for the next request instead of handing it back to the selector
thread, one ``send`` per small response, more keep-alive connections) and,
for the shim, serves requests in turns in arrival order (:mod:`rpckit.http._server._turns`).
``rpckit serve --http`` runs one next to the gRPC port; a stop keeps serving
for the drain period, then stops accepting and gives requests in flight the
grace period to finish.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rpckit.core._http_limits import HttpLimits
from rpckit.http._server._turns import MAX_LINE_WAIT_S, STANDING_LINE_S, Turns, yields_turns
from rpckit.server._config import TlsConfig
from rpckit.server._errors import ConfigError
from rpckit.server._tls import CertificateReloader

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["DEFAULT_HTTP_THREADS", "DEFAULT_LINGER_S", "DEFAULT_TURN_LEASE_S", "HttpServer"]

#: Request threads. Each waits while its call sits in the server's admission
#: queue, so there must be more of them than handler threads for overload to
#: reach the queue (where CoDel sheds it) instead of piling up in the kernel's
#: accept backlog. 64 = 8 handler threads x 8.
DEFAULT_HTTP_THREADS = 64

#: How long a request thread waits on its keep-alive connection for the next
#: request before handing the connection back to cheroot's selector thread.
#: A busy client's next request comes within a few ms and is then served with
#: no thread handoff; an idle connection costs a waiting thread at most this
#: long. bench/shim's mix on one core, 32 connections, the shim in process on
#: stock cheroot -> lingering 50 ms: 2.4k -> 3.5k req/s, p99 60 -> 32 ms.
DEFAULT_LINGER_S = 0.05

#: Idle keep-alive connections kept open between requests. cheroot's default
#: (10) closes every further client's connection after each request, so from
#: the 11th concurrent client on each request pays a TCP handshake; gunicorn's
#: gevent worker allows 1000 connections.
KEEP_ALIVE_CONNECTIONS = 1000

#: Turns (:mod:`rpckit.http._server._turns`) for apps that yield them around code that
#: may block (the shim): requests are read, answered and written one at a time
#: in arrival order, and a turn held this long lets the next request start too.
#: A request's own work takes well under 1 ms; 20 ms bounds what a slow client
#: or an unexpected wait costs the others. bench/shim (one core): p99 latency
#: 5.7 -> 3.5 ms at 8 connections and 26 -> 12-14 ms at 32, level with gevent's
#: event loop; throughput within noise once quick handlers stay in their turn.
DEFAULT_TURN_LEASE_S = 0.02


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` / ``"[::1]:80"`` -> ``(host, port)``; ValueError if malformed."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {address!r}")
    return host, int(port_text)


class HttpServer:
    """Serve a WSGI app on ``address`` with cheroot until :meth:`stop`.

    ``linger_s``: how long a request thread waits on its keep-alive connection
    for the next request (0: hand it back to the selector at once, as stock
    cheroot does). ``turn_lease_s``: the lease of the turns an app that
    :func:`~rpckit.http._server._turns.yields_turns` is served with; None: no turns.
    ``turn_max_wait_s``, ``turn_standing_s``: the longest wait in line for a turn, and how
    long requests must have been leaving the line before the next are refused 503 (``Turns``).
    ``limits``: what a request may send (:class:`~rpckit.core._http_limits.HttpLimits`;
    default: gunicorn's header limits, a 64 KiB head, 10 s to send it, 10 MiB bodies).
    ``tls``: serve HTTPS with these certificate files (a ``client_ca`` requires client
    certificates), reloaded on :meth:`reload_tls` (SIGHUP) and when the files change
    (:class:`~rpckit.server._config.TlsConfig`); new connections get the new ones.
    ``on_unread``: called with a reason for each request answered before it was parsed:
    ``"overloaded"`` (503 from a standing line of turns, or at the front door) or
    ``"client_gone"`` (dropped: its client had closed); ``rpckit serve`` counts them in
    ``rpckit_http_refused_unread_total``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        address: str,
        *,
        threads: int = DEFAULT_HTTP_THREADS,
        grace_s: float = 10.0,
        reuse_port: bool = False,
        linger_s: float = DEFAULT_LINGER_S,
        turn_lease_s: float | None = DEFAULT_TURN_LEASE_S,
        turn_max_wait_s: float = MAX_LINE_WAIT_S,
        turn_standing_s: float = STANDING_LINE_S,
        limits: HttpLimits | None = None,
        tls: TlsConfig | None = None,
        on_unread: Callable[[str], None] | None = None,
    ) -> None:
        try:
            from rpckit.http._server._cheroot import TunedWsgiServer
        except ImportError:
            raise ConfigError(
                "the embedded HTTP server needs cheroot: pip install 'rpckit[http]'"
            ) from None
        if threads < 1:
            raise ValueError(f"HttpServer threads must be >= 1, got {threads}")
        if not (0 <= linger_s <= 10):
            raise ValueError(f"HttpServer linger_s must be from 0 to 10 seconds, got {linger_s}")
        host, port = split_address(address)
        self._server = TunedWsgiServer(
            (host, port),
            app,
            numthreads=threads,
            linger_s=linger_s,
            # A quarter of the threads never linger: they serve new connections
            # and the ones coming back through the selector.
            max_lingering=threads - max(1, threads // 4) if linger_s > 0 else 0,
            keep_alive_connections=KEEP_ALIVE_CONNECTIONS,
            turns=(
                Turns(lease_s=turn_lease_s, max_wait_s=turn_max_wait_s, standing_s=turn_standing_s)
                if turn_lease_s is not None and yields_turns(app)
                else None
            ),
            limits=limits or HttpLimits(),
            on_unread=on_unread,
            server_name="rpckit",
            shutdown_timeout=math.ceil(grace_s),
            request_queue_size=128,
            reuse_port=reuse_port,
        )
        self._tls: CertificateReloader | None = None
        if tls is not None:
            from rpckit.http._server._tls import ReloadingSSLAdapter

            self._tls = CertificateReloader(tls, port="http")
            self._server.ssl_adapter = ReloadingSSLAdapter(self._tls)
        self._host = host
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.address = ""

    def bind(self) -> str:
        """Bind and listen (port 0 picks one); returns ``host:port``. OSError says why not."""
        with self._lock:
            if not self.address:
                try:
                    self._server.prepare()
                except OSError as exc:
                    raise OSError(f"cannot listen there: {exc.strerror or exc}") from exc
                bound = self._server.bind_addr
                port = bound[1] if isinstance(bound, tuple) else 0
                shown = f"[{self._host}]" if ":" in self._host else self._host
                self.address = f"{shown}:{port}"
            return self.address

    @property
    def waiting(self) -> int:
        """Connections with a request waiting for a request thread (none free)."""
        return int(self._server.requests.qsize) if self._server.requests else 0

    def start(self) -> str:
        """Bind if needed, serve in a background thread; returns the bound ``host:port``."""
        self.bind()
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("HttpServer.start() was already called")
            self._thread = threading.Thread(
                target=self._server.serve, name="rpckit-http", daemon=True
            )
            self._thread.start()
        if self._tls is not None:
            self._tls.start()
        return self.address

    def reload_tls(self) -> bool:
        """Read the TLS files again (SIGHUP); True if new connections get new certificates.
        Unusable files are logged and the current certificates kept (False)."""
        return self._tls.reload() if self._tls is not None else False

    def stop(self, *, drain_s: float = 0.0) -> None:
        """Keep serving ``drain_s`` seconds, then stop accepting; requests in flight get
        the grace period. Safe to call twice, from any thread, or before start()."""
        if drain_s > 0:
            self._stopping.wait(drain_s)  # cut short if another caller stops it now
        with self._lock:
            first = not self._stopping.is_set()
            self._stopping.set()
            thread, bound = self._thread, bool(self.address)
        if not first:
            self._stopped.wait(self._server.shutdown_timeout + 10)
            return
        try:
            if bound:  # prepare() listened and started cheroot's threads: stop them
                self._server.stop()
            if thread is not None:
                thread.join(timeout=self._server.shutdown_timeout + 5)
        finally:
            if self._tls is not None:
                self._tls.close()
            self._stopped.set()

    def drainer(self, drain_s: float) -> _Drainer:
        """Something whose ``stop()`` stops this server after ``drain_s`` (for graceful_exit)."""
        return _Drainer(self, drain_s)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped; False if ``timeout`` passed first."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> HttpServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Drainer:
    def __init__(self, server: HttpServer, drain_s: float) -> None:
        self._server = server
        self._drain_s = drain_s

    def stop(self) -> None:
        self._server.stop(drain_s=self._drain_s)

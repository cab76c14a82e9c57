"""The embedded HTTP server for the shim: cheroot's threaded WSGI server, with rpckit's lifecycle.

    with HttpServer(shim, "127.0.0.1:0") as http:
        print(http.address)          # "127.0.0.1:40123"

cheroot (CherryPy's server) is pure Python, threaded (no gevent, no monkey
patching, so grpcio keeps working), HTTP/1.1 with keep-alive and chunked
bodies, and maintained. ``rpckit serve --http`` runs one next to the gRPC
port; a stop keeps serving for the drain period, then stops accepting and
gives requests in flight the grace period to finish.
"""

from __future__ import annotations

import math
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from rpckit._errors import ConfigError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["DEFAULT_HTTP_THREADS", "HttpServer"]

#: Request threads. Each waits while its call sits in the server's admission
#: queue, so there must be more of them than handler threads for overload to
#: reach the queue (where CoDel sheds it) instead of piling up in the kernel's
#: accept backlog. 64 = 8 handler threads x 8.
DEFAULT_HTTP_THREADS = 64


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` / ``"[::1]:80"`` -> ``(host, port)``; ValueError if malformed."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {address!r}")
    return host, int(port_text)


class HttpServer:
    """Serve a WSGI app on ``address`` with cheroot until :meth:`stop`."""

    def __init__(
        self,
        app: WSGIApplication,
        address: str,
        *,
        threads: int = DEFAULT_HTTP_THREADS,
        grace_s: float = 10.0,
        reuse_port: bool = False,
    ) -> None:
        try:
            from cheroot import wsgi
        except ImportError:
            raise ConfigError(
                "the embedded HTTP server needs cheroot: pip install 'rpckit[http]'"
            ) from None
        if threads < 1:
            raise ValueError(f"HttpServer threads must be >= 1, got {threads}")
        host, port = split_address(address)
        self._server = wsgi.Server(
            (host, port),
            app,
            numthreads=threads,
            server_name="rpckit",
            shutdown_timeout=math.ceil(grace_s),
            request_queue_size=128,
            reuse_port=reuse_port,
        )
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
        return self.address

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

"""TLS for the embedded HTTP server: cheroot's builtin adapter, its context swapped on reload.

The :class:`~rpckit.server._tls.CertificateReloader` reads and checks the
certificate files (on SIGHUP or when they change) and builds an
``ssl.SSLContext``; :class:`ReloadingSSLAdapter` wraps each new connection
with the newest context. A connection keeps the context it was accepted with,
so requests in flight and open keep-alive connections are not disturbed.

The client certificate of an mTLS connection goes into the environ under
:data:`PEER_CERT_ENVIRON_KEY` (``ssl.SSLSocket.getpeercert()``'s dict), where
the shim reads the caller's subject and SANs for its auth policy.
"""

from __future__ import annotations

import ssl
from typing import Any, cast

from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from rpckit.core._auth import PEER_CERT_ENVIRON_KEY
from rpckit.server._tls import CertificateReloader, LoadedCertificates

__all__ = ["ReloadingSSLAdapter"]


class ReloadingSSLAdapter(BuiltinSSLAdapter):
    """cheroot's builtin TLS adapter serving the reloader's newest certificates."""

    def __init__(self, reloader: CertificateReloader) -> None:
        # Not BuiltinSSLAdapter.__init__: it would read the files itself, once.
        Adapter.__init__(self, str(reloader.tls.cert), str(reloader.tls.key))
        self._server_env: dict[str, Any] = {}
        self.context = reloader.current.context
        reloader.subscribe(self._swap)

    def _swap(self, loaded: LoadedCertificates) -> None:
        self.context = loaded.context  # one attribute: wrap() reads it once per connection

    # cheroot's stubs give Adapter.get_environ() no socket; BuiltinSSLAdapter's takes one.
    def get_environ(self, sock: Any) -> Any:  # type: ignore[override]
        environ: dict[str, Any] = cast(Any, super()).get_environ(sock)
        if sock.context.verify_mode != ssl.CERT_NONE:
            cert = sock.getpeercert()
            if cert:
                environ[PEER_CERT_ENVIRON_KEY] = cert
        return environ

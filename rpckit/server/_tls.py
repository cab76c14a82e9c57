"""Server certificates from files, reloaded on SIGHUP or when the files change.

    reloader = CertificateReloader(TlsConfig(cert=..., key=..., poll_s=5.0), port="grpc")
    reloader.subscribe(lambda loaded: ...)   # told of every new set of certificates
    reloader.start()                         # polls the files' stat every poll_s
    reloader.reload()                        # SIGHUP: read them now
    reloader.close()

Both ports use it: the gRPC server hands grpc core a certificate fetcher that
returns the newest set at the next TLS handshake (``grpc.dynamic_ssl_server_credentials``),
and the HTTP server swaps the ``ssl.SSLContext`` new connections are wrapped
with. Connections already open keep their session; no call is dropped.

A new set is taken only whole and valid: the certificate and the client CA
parse, the key matches the certificate, and the files did not change while
they were read (a writer half-way through). Anything else is logged as an error
naming the file and what is wrong, and the port keeps serving the set it has.
A change is retried when the files change again (or on the next SIGHUP), so a
broken file is reported once, not at every poll. No grpc here: the HTTP server
and ``rpckit serve --workers``'s supervisor may import this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from rpckit.server._config import TlsConfig

__all__ = ["CertificateError", "CertificateReloader", "LoadedCertificates", "load_certificates"]

_log = logging.getLogger("rpckit.server.tls")

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


class CertificateError(ValueError):
    """Certificate files that cannot be served; the message names the file and the fault."""


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedCertificates:
    """One consistent set of PEM files as read, and an SSL context built from them."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    version: int

    def same_files(self, other: LoadedCertificates) -> bool:
        return (self.cert, self.key, self.client_ca) == (other.cert, other.key, other.client_ca)


def load_certificates(tls: TlsConfig, *, version: int = 0) -> LoadedCertificates:
    """Read and check ``tls``'s files; :class:`CertificateError` naming the file if unusable."""
    paths = [Path(tls.cert), Path(tls.key), *([Path(tls.client_ca)] if tls.client_ca else [])]
    before = [_read(p) for p in paths]
    cert, key = before[0], before[1]
    client_ca = before[2] if tls.client_ca else None
    _check_certificates(Path(tls.cert), cert)
    if client_ca is not None:
        _check_certificates(Path(tls.client_ca or ""), client_ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise CertificateError(
                f"{tls.key}: the private key does not match the certificate in {tls.cert}"
            ) from None
        raise CertificateError(f"{tls.key}: not a usable PEM private key ({exc.reason})") from None
    except OSError as exc:
        raise CertificateError(f"{tls.key}: cannot read it ({exc.strerror})") from None
    if tls.client_ca is not None:
        context.load_verify_locations(cadata=client_ca.decode("ascii") if client_ca else None)
        context.verify_mode = ssl.CERT_REQUIRED
    if [_read(p) for p in paths] != before:
        raise CertificateError(
            f"{', '.join(map(str, paths))}: changed while being read (a writer still at work?); "
            "kept the certificates in use, will read them again at the next change"
        )
    return LoadedCertificates(cert, key, client_ca, context, version)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read it ({exc.strerror})") from None


def _check_certificates(path: Path, pem: bytes) -> None:
    if _CERT_BEGIN not in pem:
        raise CertificateError(f"{path}: no PEM certificate in it")
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise CertificateError(f"{path}: not a valid PEM certificate ({reason})") from None


class CertificateReloader:
    """The certificates one port serves; reloads them (see the module docstring). Thread-safe."""

    def __init__(self, tls: TlsConfig, *, port: str) -> None:
        self.tls = tls
        self.port = port  # "grpc" or "http", for the log
        self._lock = threading.Lock()
        self._current = load_certificates(tls)
        self._signature = self._stat()
        self._listeners: list[Callable[[LoadedCertificates], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedCertificates:
        return self._current

    def subscribe(self, listener: Callable[[LoadedCertificates], None]) -> None:
        """Call ``listener(loaded)`` with each new set (from the reloading thread)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Poll the files every ``tls.poll_s`` seconds (0: never; SIGHUP still reloads)."""
        if self.tls.poll_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._poll, name=f"rpckit-tls-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def reload(self) -> bool:
        """Read the files now; True if a new set is served (False: unchanged or unusable)."""
        with self._lock:
            self._signature = self._stat()
            try:
                loaded = load_certificates(self.tls, version=self._current.version + 1)
            except CertificateError as exc:
                _log.error("%s port: %s; still serving the previous certificates", self.port, exc)
                return False
            if loaded.same_files(self._current):
                return False
            self._current = loaded
            listeners = list(self._listeners)
        _log.info(
            "%s port: new certificates from %s (version %d) for new connections",
            self.port,
            self.tls.cert,
            loaded.version,
        )
        for listener in listeners:
            try:
                listener(loaded)
            except Exception:  # noqa: BLE001 - one listener must not keep the others stale
                _log.exception("%s port: applying the new certificates failed", self.port)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.tls.poll_s):
            if self._stat() != self._signature:
                self.reload()

    def _stat(self) -> tuple[tuple[int, ...], ...]:
        signature: list[tuple[int, ...]] = []
        for path in (self.tls.cert, self.tls.key, self.tls.client_ca):
            if path is None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                signature.append((-1,))
                continue
            signature.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(signature)

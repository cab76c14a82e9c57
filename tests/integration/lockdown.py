"""Lockdown test helpers: certificates made at run time (trustme), TLS probes, load loops."""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import trustme

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc


def port_of(address: str) -> int:
    """``"127.0.0.1:40123"`` -> 40123."""
    return int(address.rsplit(":", 1)[1])


def write_cert(cert: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    """``cert``'s chain and key as PEM files in ``directory``: (cert path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return cert_path, key_path


def der_of(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode("ascii"))


class RotatingFiles:
    """Certificate files behind a symlinked directory, as a Kubernetes secret volume
    rotates them: both files change in one atomic rename."""

    def __init__(self, root: Path, first: trustme.LeafCert) -> None:
        self.root = root
        self._n = 0
        self.link = root / "current"
        self.cert = self.link / "cert.pem"
        self.key = self.link / "key.pem"
        self.rotate(first)

    def rotate(self, cert: trustme.LeafCert) -> None:
        self._n += 1
        version = self.root / f"v{self._n}"
        write_cert(cert, version)
        staging = self.root / f"staging-{self._n}"
        os.symlink(version.name, staging)
        os.replace(staging, self.link)


def tls_context(*cas: trustme.CA, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """A client context trusting ``cas`` (and presenting ``client``'s certificate)."""
    context = ssl.create_default_context(cadata="".join(ca.cert_pem.bytes().decode() for ca in cas))
    if client is not None:
        client.configure_cert(context)
    return context


def peer_der(port: int, context: ssl.SSLContext, *, alpn: str | None = None) -> bytes:
    """A new TLS connection to 127.0.0.1:``port``: the DER of the certificate the server showed."""
    if alpn is not None:
        context.set_alpn_protocols([alpn])
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def grpc_channel(
    address: str, *cas: trustme.CA, client: trustme.LeafCert | None = None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=b"".join(ca.cert_pem.bytes() for ca in cas),
        private_key=client.private_key_pem.bytes() if client is not None else None,
        certificate_chain=client.cert_chain_pems[0].bytes() if client is not None else None,
    )
    # A channel of its own (not a shared subchannel): each one is a new TLS connection.
    return grpc.secure_channel(
        address,
        credentials,
        options=[
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def get_item(channel: grpc.Channel, *, token: str | None = None, sku: str = "NUT-M8") -> str:
    stub = inventory_pb2_grpc.InventoryStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    reply = stub.GetItem(inventory_pb2.GetItemRequest(sku=sku), timeout=10, metadata=metadata)
    return str(reply.sku)


def https_get(
    port: int, path: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class ClosedLoop:
    """Callers in threads, each making one call after another until stopped or bounded.

    ``call(thread_index, n)`` makes call ``n`` of thread ``thread_index`` and raises on
    failure. Bounded: at most ``max_calls`` per thread and ``max_s`` seconds.
    """

    def __init__(
        self,
        call: Callable[[int, int], None],
        *,
        threads: int = 2,
        max_calls: int = 3000,
        max_s: float = 60.0,
    ) -> None:
        self._call = call
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ok = 0
        self.failures: list[BaseException] = []
        self._deadline = time.monotonic() + max_s
        self._max_calls = max_calls
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, index: int) -> None:
        for n in range(self._max_calls):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            try:
                self._call(index, n)
            except Exception as exc:
                with self._lock:
                    self.failures.append(exc)
            else:
                with self._lock:
                    self.ok += 1

    def __enter__(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def wait_for(self, calls: int, timeout: float = 30.0) -> None:
        """Until ``calls`` more calls succeeded (bounded; fails the test after ``timeout``)."""
        target = self.ok + calls
        give_up = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < give_up, f"only {self.ok} of {target} calls in {timeout} s"
            assert not self.failures, self.failures[:3]
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def tokens_hook(
    tokens: dict[str, set[str]],
) -> Callable[[rpckit.Caller], rpckit.Allow | rpckit.Deny]:
    """A hook allowing each token the methods (``"*"``: all) listed for it."""

    def check(caller: rpckit.Caller) -> rpckit.Allow | rpckit.Deny:
        if caller.token is None:
            return rpckit.Deny.unauthenticated("send 'authorization: Bearer <token>'")
        allowed = tokens.get(caller.token)
        if allowed is None:
            return rpckit.Deny.unauthenticated("unknown token")
        if "*" not in allowed and caller.method not in allowed:
            return rpckit.Deny.permission_denied(f"token may not call {caller.method}")
        return rpckit.Allow(identity=caller.token)

    return check


#: ``rpckit serve --auth tests.integration.lockdown:cli_check`` in the CLI tests.
cli_check = tokens_hook({"admin": {"*"}})

"""TLS on both ports, certificates reloaded without a failed call (real handshakes, trustme).

Certificates are made at run time. Reloads run while a bounded closed loop of
calls goes on: one caller keeps its connection across the swap, the other opens
a new one for each few calls; both must see no failure, and a new connection
must be shown the new certificate (its DER, so serial and issuer).
"""

from __future__ import annotations

import http.client as http_client
import json
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme

import rpckit
from examples.inventory.service import Inventory
from rpckit.http import Shim
from rpckit.http._server._server import HttpServer
from rpckit.testing import running
from tests.integration.lockdown import (
    ClosedLoop,
    RotatingFiles,
    der_of,
    get_item,
    grpc_channel,
    https_get,
    peer_der,
    port_of,
    tls_context,
    wait_until,
    write_cert,
)


@pytest.fixture(scope="module")
def cas() -> tuple[trustme.CA, trustme.CA]:
    """The CA before a rotation and the one after (a new issuer, so a new chain)."""
    return trustme.CA(), trustme.CA()


def _leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def shim_over_tls(
    tmp_path: Path, cas: tuple[trustme.CA, trustme.CA]
) -> Iterator[tuple[HttpServer, RotatingFiles, trustme.LeafCert]]:
    first = _leaf(cas[0])
    files = RotatingFiles(tmp_path, first)
    tls = rpckit.TlsConfig(cert=files.cert, key=files.key, poll_s=0.1)
    with running([Inventory()]) as live:
        http = HttpServer(Shim(server=live.server), "127.0.0.1:0", tls=tls)
        with http:
            yield http, files, first


def test_https_through_the_shim_succeeds_and_plain_http_fails_cleanly(
    shim_over_tls: tuple[HttpServer, RotatingFiles, trustme.LeafCert],
    cas: tuple[trustme.CA, trustme.CA],
) -> None:
    http, _, first = shim_over_tls
    port = port_of(http.address)
    status, _, body = https_get(port, "/items/NUT-M8", tls_context(cas[0]))
    assert status == 200, body
    assert json.loads(body)["sku"] == "NUT-M8"
    assert peer_der(port, tls_context(cas[0])) == der_of(first)

    # Plain HTTP to the TLS port: cheroot's 400 ("speaks HTTPS only") or the connection
    # closed (reset: the request's bytes were left unread), at once, never a hang.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET /items/NUT-M8 HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # A client that does not trust the CA is refused in the handshake...
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/items/NUT-M8", tls_context(cas[1]))
    # ...and the port keeps serving.
    assert https_get(port, "/items/NUT-M8", tls_context(cas[0]))[0] == 200


def test_http_port_reloads_on_file_change_without_a_failed_request(
    shim_over_tls: tuple[HttpServer, RotatingFiles, trustme.LeafCert],
    cas: tuple[trustme.CA, trustme.CA],
) -> None:
    http, files, first = shim_over_tls
    port = port_of(http.address)
    both = tls_context(*cas)
    kept = http_client.HTTPSConnection("127.0.0.1", port, context=both, timeout=10)

    def call(thread: int, n: int) -> None:
        if thread == 0:  # one keep-alive connection across the swap
            kept.request("GET", "/items/NUT-M8")
            response = kept.getresponse()
            status, body = response.status, response.read()
        else:  # a new connection (and handshake) per request
            status, _, body = https_get(port, "/items/NUT-M8", tls_context(*cas))
        assert status == 200, body[:200]

    second = _leaf(cas[1])
    try:
        with ClosedLoop(call, max_calls=2000) as loop:
            loop.wait_for(20)
            files.rotate(second)  # the poll thread sees it within 0.1 s
            wait_until(lambda: peer_der(port, tls_context(*cas)) == der_of(second), "new cert")
            loop.wait_for(20)
    finally:
        kept.close()
    assert loop.failures == []
    assert der_of(second) != der_of(first)
    # Only the new CA is needed from now on.
    assert https_get(port, "/items/NUT-M8", tls_context(cas[1]))[0] == 200


def test_grpc_port_reloads_on_file_change_and_on_request_without_a_failed_call(
    tmp_path: Path, cas: tuple[trustme.CA, trustme.CA]
) -> None:
    first, second, third = _leaf(cas[0]), _leaf(cas[1]), _leaf(cas[0])
    files = RotatingFiles(tmp_path, first)
    tls = rpckit.TlsConfig(cert=files.cert, key=files.key, poll_s=0.1)
    with running([Inventory()], config=rpckit.ServerConfig(drain_s=0, tls=tls)) as live:
        port = port_of(live.address)
        kept = grpc_channel(live.address, *cas)

        def call(thread: int, n: int) -> None:
            if thread == 0:  # one HTTP/2 connection across the swaps
                assert get_item(kept) == "NUT-M8"
            else:  # a new channel, so a new TLS handshake, for each call
                with grpc_channel(live.address, *cas) as fresh:
                    assert get_item(fresh) == "NUT-M8"

        def shown() -> bytes:
            return peer_der(port, tls_context(*cas), alpn="h2")

        try:
            with ClosedLoop(call, max_calls=2000) as loop:
                loop.wait_for(20)
                assert shown() == der_of(first)
                files.rotate(second)  # 1: the files change (polled)
                wait_until(lambda: shown() == der_of(second), "the polled reload")
                loop.wait_for(20)
                # 2: SIGHUP's path, with polling out of the way (same files: no change).
                assert live.server.reload_tls() is False
                files.rotate(third)
                live.server.reload_tls()
                assert shown() == der_of(third)
                loop.wait_for(20)
        finally:
            kept.close()
    assert loop.failures == []


@pytest.mark.parametrize("fault", ["garbage", "mismatched-key", "missing"])
def test_a_broken_reload_keeps_serving_the_old_certificate_and_names_the_file(
    tmp_path: Path,
    cas: tuple[trustme.CA, trustme.CA],
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    first = _leaf(cas[0])
    cert_path, key_path = write_cert(first, tmp_path / "live")
    tls = rpckit.TlsConfig(cert=cert_path, key=key_path, poll_s=0)
    with (
        running([Inventory()], config=rpckit.ServerConfig(drain_s=0, tls=tls)) as live,
        HttpServer(Shim(server=live.server), "127.0.0.1:0", tls=tls) as http,
    ):
        if fault == "garbage":
            cert_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64!\n")
            named = str(cert_path)
        elif fault == "mismatched-key":
            other = _leaf(cas[0])
            key_path.write_bytes(other.private_key_pem.bytes())
            named = f"{key_path}: the private key does not match the certificate in {cert_path}"
        else:
            key_path.unlink()
            named = str(key_path)
        with caplog.at_level(logging.ERROR, logger="rpckit.server.tls"):
            assert live.server.reload_tls() is False
            assert http.reload_tls() is False
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors
        assert all(named in e and "still serving the previous" in e for e in errors), errors
        # Both ports still serve the old certificate to new connections.
        with grpc_channel(live.address, cas[0]) as channel:
            assert get_item(channel) == "NUT-M8"
        assert peer_der(port_of(live.address), tls_context(cas[0]), alpn="h2") == der_of(first)
        assert https_get(port_of(http.address), "/items/NUT-M8", tls_context(cas[0]))[0] == 200
        assert peer_der(port_of(http.address), tls_context(cas[0])) == der_of(first)


def test_a_broken_certificate_at_start_is_a_clear_error(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(b"hello")
    key_path.write_bytes(b"hello")
    tls = rpckit.TlsConfig(cert=cert_path, key=key_path)
    with pytest.raises(ValueError, match=rf"{cert_path}: no PEM certificate in it"):
        rpckit.Server([Inventory()], config=rpckit.ServerConfig(tls=tls))


def test_mtls_on_http_requires_a_client_certificate(
    tmp_path: Path, cas: tuple[trustme.CA, trustme.CA]
) -> None:
    server_cert = _leaf(cas[0])
    client_ca = trustme.CA()
    client = client_ca.issue_cert("billing.example", common_name="billing")
    cert_path, key_path = write_cert(server_cert, tmp_path)
    ca_path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_path))
    tls = rpckit.TlsConfig(cert=cert_path, key=key_path, client_ca=ca_path, poll_s=0)
    with (
        running([Inventory()]) as live,
        HttpServer(Shim(server=live.server), "127.0.0.1:0", tls=tls) as http,
    ):
        port = port_of(http.address)
        assert https_get(port, "/items/NUT-M8", tls_context(cas[0], client=client))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https_get(port, "/items/NUT-M8", tls_context(cas[0]))
        assert https_get(port, "/items/NUT-M8", tls_context(cas[0], client=client))[0] == 200


def test_grpc_without_tls_still_refuses_a_tls_client(cas: tuple[trustme.CA, trustme.CA]) -> None:
    with (
        running([Inventory()]) as live,
        grpc_channel(live.address, cas[0]) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        get_item(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE

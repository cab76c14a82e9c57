"""TLS and mTLS from PEM files, and message size limits, on a real server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.inventory.service import Inventory
from rpckit.testing import running


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server cert for localhost/127.0.0.1 and a client cert."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem",
                 cwd=d)  # fmt: skip
    return d


def _secure(address: str, pki: Path, *, client_cert: bool) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(address, creds)


def _get(channel: grpc.Channel) -> str:
    stub = inventory_pb2_grpc.InventoryStub(channel)
    return stub.GetItem(inventory_pb2.GetItemRequest(sku="NUT-M8"), timeout=10).sku


def test_tls_serves_a_client_that_trusts_the_ca(pki: Path) -> None:
    tls = rpckit.TlsConfig(cert=pki / "server.pem", key=pki / "server.key")
    with running([Inventory()], config=rpckit.ServerConfig(drain_s=0, tls=tls)) as live:
        with _secure(live.address, pki, client_cert=False) as channel:
            assert _get(channel) == "NUT-M8"
        with grpc.insecure_channel(live.address) as plain, pytest.raises(grpc.RpcError) as info:
            _get(plain)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate(pki: Path) -> None:
    tls = rpckit.TlsConfig(
        cert=pki / "server.pem", key=pki / "server.key", client_ca=pki / "ca.pem"
    )
    with running([Inventory()], config=rpckit.ServerConfig(drain_s=0, tls=tls)) as live:
        with _secure(live.address, pki, client_cert=True) as channel:
            assert _get(channel) == "NUT-M8"
        with _secure(live.address, pki, client_cert=False) as channel, pytest.raises(grpc.RpcError):
            _get(channel)


def test_missing_cert_file_is_named() -> None:
    with pytest.raises(ValueError, match=r"TlsConfig.cert: file not found: /nonexistent\.pem"):
        rpckit.TlsConfig(cert=Path("/nonexistent.pem"), key=Path("/nonexistent.key"))


def test_oversized_request_is_refused_and_server_keeps_serving() -> None:
    config = rpckit.ServerConfig(drain_s=0, max_message_bytes=64 * 1024)
    with running([Inventory()], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        big = inventory_pb2.CreateItemRequest(item=inventory_pb2.Item(sku="X", name="x" * 100_000))
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateItem(big, timeout=10)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _get(live.channel) == "NUT-M8"

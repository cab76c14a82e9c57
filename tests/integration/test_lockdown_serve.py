"""`rpckit serve` locked down: TLS on both ports, --auth, and SIGHUP reloads (real processes)."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import trustme

from tests.integration.conftest import ROOT, RPCKIT, ServeProcess
from tests.integration.lockdown import (
    RotatingFiles,
    der_of,
    get_item,
    grpc_channel,
    https_get,
    peer_der,
    port_of,
    tls_context,
    wait_until,
)

Serve = Callable[..., ServeProcess]
PROBE = "tests.integration.probe:servicers"
AUTH = "tests.integration.lockdown:cli_check"


def _locked_down(serve: Serve, files: RotatingFiles, *extra: str) -> ServeProcess:
    tls = ("--tls-cert", str(files.cert), "--tls-key", str(files.key))
    http_tls = ("--http-tls-cert", str(files.cert), "--http-tls-key", str(files.key))
    return serve(
        PROBE, "--http", "127.0.0.1:0", *tls, *http_tls, "--tls-poll", "0", "--auth", AUTH,
        "--drain", "0", *extra,
    )  # fmt: skip


def _shown(server: ServeProcess, cas: tuple[trustme.CA, ...]) -> tuple[bytes, bytes]:
    """The certificates a new connection to each port is shown: (gRPC, HTTP)."""
    grpc_port, http_port = port_of(server.address), port_of(server.announcement["http"])
    return (
        peer_der(grpc_port, tls_context(*cas), alpn="h2"),
        peer_der(http_port, tls_context(*cas)),
    )


@pytest.mark.slow
def test_serve_with_tls_and_auth_reloads_both_ports_on_sighup(serve: Serve, tmp_path: Path) -> None:
    cas = (trustme.CA(), trustme.CA())
    first, second = (ca.issue_cert("localhost", "127.0.0.1") for ca in cas)
    files = RotatingFiles(tmp_path, first)
    server = _locked_down(serve, files)
    http_port = port_of(server.announcement["http"])
    with grpc_channel(server.address, *cas) as channel:
        assert get_item(channel, token="admin", sku="deadline") == "deadline"
        with pytest.raises(grpc.RpcError) as info:
            get_item(channel, sku="deadline")
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    bearer = {"Authorization": "Bearer admin"}
    assert https_get(http_port, "/items/deadline", tls_context(*cas), bearer)[0] == 200
    status, headers, _ = https_get(http_port, "/items/deadline", tls_context(*cas))
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="rpckit"')

    files.rotate(second)  # --tls-poll 0: nothing changes until SIGHUP
    assert _shown(server, cas) == (der_of(first), der_of(first))
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _shown(server, cas) == (der_of(second), der_of(second)), "the reload")
    with grpc_channel(server.address, cas[1]) as channel:
        assert get_item(channel, token="admin", sku="deadline") == "deadline"
    assert server.terminate() == 0
    assert "SIGHUP received" in server.stderr()


@pytest.mark.slow
def test_the_workers_supervisor_forwards_sighup_to_every_worker(
    serve: Serve, tmp_path: Path
) -> None:
    cas = (trustme.CA(), trustme.CA())
    first, second = (ca.issue_cert("localhost", "127.0.0.1") for ca in cas)
    files = RotatingFiles(tmp_path, first)
    server = _locked_down(serve, files, "--workers", "2")
    pids = set(server.announcement["pids"])
    files.rotate(second)
    server.proc.send_signal(signal.SIGHUP)

    def reloaded_in() -> set[int]:
        found = re.findall(r"\[(\d+)\] grpc port: new certificates", server.stderr())
        return {int(pid) for pid in found}

    wait_until(lambda: reloaded_in() == pids, "both workers' reload")
    for _ in range(10):  # new connections, spread over the workers by SO_REUSEPORT
        assert _shown(server, cas) == (der_of(second), der_of(second))
    assert server.proc.poll() is None  # SIGHUP did not end the supervisor
    assert server.terminate() == 0


def _serve_fails(*argv: str) -> str:
    done = subprocess.run(
        [RPCKIT, "serve", PROBE, "--grpc", "127.0.0.1:0", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_lockdown_flags_misused_are_one_line_errors(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    assert "--http-tls-cert needs --http" in _serve_fails(
        "--http-tls-cert", str(cert_path), "--http-tls-key", str(key_path)
    )
    assert "--http-tls-cert and --http-tls-key go together" in _serve_fails(
        "--http", "127.0.0.1:0", "--http-tls-cert", str(cert_path)
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    assert f"{broken}: no PEM certificate in it" in _serve_fails(
        "--tls-cert", str(broken), "--tls-key", str(key_path)
    )
    other_key = tmp_path / "other.key"
    ca.issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    assert "the private key does not match the certificate" in _serve_fails(
        "--tls-cert", str(cert_path), "--tls-key", str(other_key)
    )
    assert "--auth-health and --auth-reflection need --auth" in _serve_fails(
        "--auth-health", "authenticated"
    )
    assert "nothing_here" in _serve_fails("--auth", "tests.integration.lockdown:nothing_here")
    assert "--auth tests.integration.conftest:ROOT: not callable" in _serve_fails(
        "--auth", "tests.integration.conftest:ROOT"
    )

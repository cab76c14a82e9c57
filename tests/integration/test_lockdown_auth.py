"""The auth hook on real servers: gRPC (before admission), the HTTP shim, health, reflection."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.inventory.service import Inventory
from rpckit.http import Shim, guard_identity
from rpckit.http._server._server import HttpServer
from rpckit.testing import running
from tests.integration.lockdown import get_item, grpc_channel, tokens_hook, write_cert

GET = "/inventory.v1.Inventory/GetItem"
TOKENS = {"admin": {"*"}, "reader": {GET}}


def _config(**auth: Any) -> rpckit.ServerConfig:
    policy = rpckit.AuthPolicy(hook=tokens_hook(TOKENS), **auth)
    return rpckit.ServerConfig(drain_s=0, auth=policy, metrics_address="127.0.0.1:0")


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def _denied(server: rpckit.Server, method: str, code: str) -> float:
    assert server.metrics is not None
    value = server.metrics.registry.get_sample_value(
        "rpckit_auth_denied_total", {"grpc_method": method, "grpc_code": code}
    )
    return value or 0.0


def test_grpc_calls_are_allowed_refused_unauthenticated_or_permission_denied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        running([Inventory()], config=_config()) as live,
        grpc.insecure_channel(live.address) as ch,
    ):
        stub = inventory_pb2_grpc.InventoryStub(ch)
        assert get_item(ch, token="admin") == "NUT-M8"
        assert get_item(ch, token="reader") == "NUT-M8"
        with caplog.at_level(logging.INFO, logger="rpckit.server.auth"):
            code, details = _code(lambda: get_item(ch))
        assert (code, details) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "send 'authorization: Bearer <token>'",
        )
        assert any("refused " + GET in r.getMessage() for r in caplog.records)
        code, details = _code(lambda: get_item(ch, token="stolen"))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        create = inventory_pb2.CreateItemRequest(item=inventory_pb2.Item(sku="NEW-1", name="x"))
        code, details = _code(
            lambda: stub.CreateItem(
                create, timeout=10, metadata=(("authorization", "Bearer reader"),)
            )
        )
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert details == "token may not call /inventory.v1.Inventory/CreateItem"
        assert _denied(live.server, GET, "UNAUTHENTICATED") == 2
        assert _denied(live.server, "/inventory.v1.Inventory/CreateItem", "PERMISSION_DENIED") == 1


class _Blocking(inventory_pb2_grpc.InventoryServicer):
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def GetItem(self, request: Any, context: grpc.ServicerContext) -> inventory_pb2.Item:
        if request.sku == "block":
            self.started.set()
            self.release.wait(30)
        return inventory_pb2.Item(sku=request.sku)


def test_a_refused_call_takes_no_admission_slot() -> None:
    """One handler thread, held; refused calls are answered at once and never reach the queue."""
    servicer = _Blocking()
    config = rpckit.ServerConfig(
        drain_s=0,
        threads=1,
        queue_limit=1,
        adaptive_concurrency=False,
        auth=rpckit.AuthPolicy(hook=tokens_hook(TOKENS)),
    )
    with running([servicer], config=config) as live, grpc.insecure_channel(live.address) as ch:
        stub = inventory_pb2_grpc.InventoryStub(ch)
        auth = (("authorization", "Bearer admin"),)
        held = stub.GetItem.future(
            inventory_pb2.GetItemRequest(sku="block"), timeout=30, metadata=auth
        )
        assert servicer.started.wait(10)
        try:
            for _ in range(50):
                assert _code(lambda: get_item(ch))[0] is grpc.StatusCode.UNAUTHENTICATED
            report = live.server.load_report()
            assert (report.in_flight, report.queue_depth) == (1, 0)
        finally:
            servicer.release.set()
        assert held.result(timeout=10).sku == "block"
        assert get_item(ch, token="admin") == "NUT-M8"


@pytest.mark.parametrize("broken", ["raises", "wrong-type"])
def test_a_broken_hook_fails_closed_logs_and_leaks_nothing(
    caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    def hook(caller: rpckit.Caller) -> Any:
        if broken == "raises":
            raise RuntimeError("SECRET-MARKER: the token store is down")
        return "yes"

    config = rpckit.ServerConfig(drain_s=0, auth=rpckit.AuthPolicy(hook=hook))
    with (
        running([Inventory()], config=config) as live,
        grpc.insecure_channel(live.address) as ch,
        caplog.at_level(logging.ERROR, logger="rpckit.server.auth"),
    ):
        code, details = _code(lambda: get_item(ch, token="admin"))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert details == "could not check the caller's credentials (the server logged why)"
    assert "SECRET" not in details
    assert "Traceback" not in details
    failed = [r for r in caplog.records if "the auth hook failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    if broken == "raises":
        assert "SECRET-MARKER" in str(failed[0].exc_info[1])


def _reflect(channel: grpc.Channel, token: str | None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata)
    return [s.name for r in replies for s in r.list_services_response.service]


def test_reflection_is_for_authenticated_callers_and_health_stays_open() -> None:
    with (
        running([Inventory()], config=_config()) as live,
        grpc.insecure_channel(live.address) as ch,
    ):
        assert "inventory.v1.Inventory" in _reflect(ch, "admin")
        code, _ = _code(lambda: _reflect(ch, None))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(ch)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_can_require_auth_and_reflection_can_be_open() -> None:
    config = _config(health="authenticated", reflection="open")
    with running([Inventory()], config=config) as live, grpc.insecure_channel(live.address) as ch:
        assert "inventory.v1.Inventory" in _reflect(ch, None)
        health = health_pb2_grpc.HealthStub(ch)
        request = health_pb2.HealthCheckRequest()
        code, _ = _code(lambda: health.Check(request, timeout=10))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        reply = health.Check(request, timeout=10, metadata=[("authorization", "Bearer admin")])
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_identity_reaches_the_hook_alike_on_both_ports(tmp_path: Path) -> None:
    """The client certificate's subject and SANs, spelled the same by the gRPC port and the shim."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    client = client_ca.issue_cert("billing.example", common_name="billing")
    cert_path, key_path = write_cert(server_ca.issue_cert("localhost", "127.0.0.1"), tmp_path)
    ca_path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_path))
    tls = rpckit.TlsConfig(cert=cert_path, key=key_path, client_ca=ca_path, poll_s=0)
    seen: list[rpckit.Caller] = []

    def hook(caller: rpckit.Caller) -> rpckit.Allow | rpckit.Deny:
        seen.append(caller)
        if caller.cert_subject is not None and caller.cert_subject.startswith("CN=billing,"):
            return rpckit.Allow(identity="billing")
        return rpckit.Deny.permission_denied("not billing")

    config = rpckit.ServerConfig(drain_s=0, tls=tls, auth=rpckit.AuthPolicy(hook=hook))
    from tests.integration.lockdown import https_get, tls_context

    with (
        running([Inventory()], config=config) as live,
        HttpServer(Shim(server=live.server), "127.0.0.1:0", tls=tls) as http,
        grpc_channel(live.address, server_ca, client=client) as ch,
    ):
        assert get_item(ch) == "NUT-M8"
        port = int(http.address.rsplit(":", 1)[1])
        assert https_get(port, "/items/NUT-M8", tls_context(server_ca, client=client))[0] == 200
    grpc_caller, http_caller = seen
    assert (grpc_caller.transport, http_caller.transport) == ("grpc", "http")
    assert grpc_caller.cert_subject == http_caller.cert_subject
    assert grpc_caller.cert_subject is not None
    assert grpc_caller.cert_subject.startswith("CN=billing,")
    assert grpc_caller.cert_sans == http_caller.cert_sans == ("billing.example",)


# ---------------------------------------------------------------- the HTTP shim


@pytest.fixture
def shim_app() -> Iterator[tuple[Any, rpckit.Server]]:
    """A shim built on a server with an auth policy, driven in process through WSGI."""
    with running([Inventory()], config=_config()) as live:
        yield Shim(server=live.server), live.server


def _wsgi_get(
    app: Any, path: str, authorization: str | None = None
) -> tuple[int, dict[str, str], Any]:
    from werkzeug.test import Client

    headers = {"Authorization": authorization} if authorization else {}
    response = Client(app).get(path, headers=headers)
    return response.status_code, dict(response.headers), json.loads(response.data)


def test_http_routes_answer_401_with_a_challenge_403_or_200(
    shim_app: tuple[Any, rpckit.Server],
) -> None:
    app, server = shim_app
    status, headers, body = _wsgi_get(app, "/items/NUT-M8")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="rpckit"'
    assert body["message"] == "send 'authorization: Bearer <token>'"
    status, headers, body = _wsgi_get(app, "/items/NUT-M8", "Bearer stolen")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="rpckit", error="invalid_token"'
    status, headers, body = _wsgi_get(app, "/items", "Bearer reader")
    assert status == 403
    assert "WWW-Authenticate" not in headers
    assert body["message"] == "token may not call /inventory.v1.Inventory/ListItems"
    status, _, body = _wsgi_get(app, "/items/NUT-M8", "Bearer reader")
    assert (status, body["sku"]) == (200, "NUT-M8")
    assert _denied(server, GET, "UNAUTHENTICATED") == 2
    assert _denied(server, "/inventory.v1.Inventory/ListItems", "PERMISSION_DENIED") == 1


def test_http_hook_that_raises_is_a_401_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(caller: rpckit.Caller) -> bool:
        raise KeyError("SECRET-MARKER")

    app = Shim(services=[Inventory()], config=_shim_config(hook))
    with caplog.at_level(logging.ERROR, logger="rpckit.http"):
        status, _, body = _wsgi_get(app, "/items/NUT-M8", "Bearer admin")
    assert status == 401
    assert "SECRET" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    assert any(r.exc_info is not None for r in caplog.records)


def test_the_hooks_identity_reaches_the_handler() -> None:
    seen: list[object] = []

    class Seeing(Inventory):
        def GetItem(self, request: Any, context: Any) -> Any:
            seen.append(guard_identity())
            return super().GetItem(request, context)

    app = Shim(services=[Seeing()], config=_shim_config(tokens_hook(TOKENS)))
    assert _wsgi_get(app, "/items/NUT-M8", "Bearer reader")[0] == 200
    assert seen == ["reader"]


def _shim_config(hook: Any) -> Any:
    from rpckit.http import ShimConfig

    return ShimConfig(auth=rpckit.AuthPolicy(hook=hook))


def test_refusals_still_answer_when_grpcios_shapes_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should grpcio's private abort ever fail, the refusal is answered by the handler wrapper."""
    import rpckit.server._auth_gate as gate

    monkeypatch.setattr(gate, "abort_queued", lambda *args: False)
    ran: list[str] = []

    class Recording(Inventory):
        def GetItem(self, request: Any, context: Any) -> Any:
            ran.append(request.sku)
            return super().GetItem(request, context)

    with (
        running([Recording()], config=_config()) as live,
        grpc.insecure_channel(live.address) as ch,
    ):
        code, details = _code(lambda: get_item(ch, token="stolen"))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        assert get_item(ch, token="admin") == "NUT-M8"
    assert ran == ["NUT-M8"]  # the refused call never reached the servicer

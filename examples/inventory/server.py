"""Entry points for ``rpckit serve``: the servicers, and the legacy HTTP contract in front of them.

gRPC only::

    rpckit serve examples.inventory.server:servicers --grpc 127.0.0.1:50051

gRPC plus the old JSON URLs, byte for byte, through the same admission control;
``/healthz`` and ``/reports/stock`` (not migrated) fall through to the Flask app::

    rpckit serve examples.inventory.server:servicers --grpc 127.0.0.1:50051 \\
        --http 127.0.0.1:8080 --http-app examples.inventory.server:legacy_http
"""

from __future__ import annotations

import hmac
from typing import Any

import rpckit
from examples.inventory.service import WRITE_METHODS, Inventory, check_bearer_token
from examples.legacy_inventory.app import DEV_API_TOKEN, create_app
from rpckit.http import GuardedCall, RouteOptions, Shim, ShimConfig, render_error_object

__all__ = [
    "LEGACY_CONFIG",
    "api_auth",
    "legacy_http",
    "legacy_routes",
    "legacy_shim",
    "servicers",
]

#: The legacy app's error body: {"error": {"code": <HTTP status>, "message": "..."}}.
LEGACY_CONFIG = ShimConfig(error_renderer=render_error_object)


def servicers() -> list[object]:
    """The servicers this service runs (rpckit adds health and reflection)."""
    return [Inventory()]


def api_auth(caller: rpckit.Caller) -> rpckit.Allow | rpckit.Deny:
    """``rpckit serve --auth examples.inventory.server:api_auth``: who may call, on both ports.

    A TLS client certificate (mTLS, ``--tls-client-ca``) or the API token lets a caller
    read; writes need the token. Runs before admission control, for every call.
    """
    token_ok = caller.token is not None and hmac.compare_digest(
        caller.token.encode("utf-8"), DEV_API_TOKEN.encode("utf-8")
    )
    if not token_ok and caller.cert_subject is None:
        return rpckit.Deny.unauthenticated("send 'authorization: Bearer <token>'")
    if caller.method.rsplit("/", 1)[-1] in WRITE_METHODS and not token_ok:
        return rpckit.Deny.permission_denied("writes need the API token")
    return rpckit.Allow(identity=caller.cert_subject or "api-token")


def legacy_routes(inventory: Inventory) -> dict[str, RouteOptions]:
    """Python route options: the writes check the bearer token before the body, as before."""

    def require_token(call: GuardedCall) -> None:
        check_bearer_token(call.metadata, inventory.api_token)

    return {
        f"inventory.v1.Inventory.{method}": RouteOptions(guard=require_token)
        for method in sorted(WRITE_METHODS)
    }


def legacy_shim(inventory: Inventory, **source: Any) -> Shim:
    """The shim for ``inventory`` with the legacy Flask app (same store) as fallback.

    ``source`` picks how calls run (``Shim``'s ``server=`` or ``channel=``); by
    default in process, on the ``inventory`` servicer itself.
    """
    fallback = create_app(inventory.store, config={"INVENTORY_API_TOKEN": inventory.api_token})
    if not source:
        source = {"services": [inventory]}
    return Shim(fallback=fallback, config=LEGACY_CONFIG, routes=legacy_routes(inventory), **source)


def legacy_http(server: rpckit.Server) -> Shim:
    """``--http-app`` factory: the legacy contract served through ``server``'s admission queue."""
    inventory = next(s for s in server.servicers if isinstance(s, Inventory))
    return legacy_shim(inventory, server=server)

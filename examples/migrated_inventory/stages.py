"""The worked migration's stages: one shim factory per stage, Flask behind it for the rest.

Each factory serves ``rpckit serve --http-app`` (given the rpckit server) and
``rpckit migrate diff --new`` / the legacy test suite (given nothing: the
servicer is called in process, on a fresh store)::

    rpckit serve examples.migrated_inventory.server:servicers --grpc 127.0.0.1:50051 \\
        --http 127.0.0.1:8080 --http-app examples.migrated_inventory.stages:stage_3

A stage is the set of RPCs whose routes rpckit answers; every other route of
the proto is kept on the Flask fallback (``rollout_percent=0``), which shares
the servicer's store. ``StockReport`` stays on Flask in every stage: its
``average_price_cents`` is ``null`` for an empty store, which the shim cannot
write yet (migrate/README.md, "What stays").
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from examples.legacy_inventory.app import DEV_API_TOKEN, create_app
from examples.migrated_inventory.service import InventoryLegacy
from rpckit.http import GuardedCall, RouteOptions, Shim, ShimConfig, render_error_object

__all__ = ["STAGES", "servicers", "stage_0", "stage_1", "stage_3", "stage_all"]

SERVICE = "inventory_legacy.v1.InventoryLegacy"
#: The RPCs each stage answers with rpckit, in the order they moved.
STAGES: dict[str, tuple[str, ...]] = {
    "0": (),
    "1": ("GetItem",),
    "3": ("GetItem", "ListItems", "ItemTags"),
    "all": (
        "GetItem", "ListItems", "ItemTags", "Healthz", "CreateRestockPlan", "CreateItem",
        "UpdateItem", "DeleteItem",
    ),
}  # fmt: skip
WRITES = frozenset({"CreateItem", "UpdateItem", "DeleteItem"})
ALL_RPCS = (*STAGES["all"], "StockReport")


def servicers() -> list[object]:
    """For ``rpckit serve``: the migrated servicer."""
    return [InventoryLegacy()]


def _require_token(call: GuardedCall) -> None:
    """The legacy app checked the bearer token before anything else: so does the shim."""
    from examples.inventory.service import check_bearer_token

    check_bearer_token(call.metadata, DEV_API_TOKEN)


def _shim(moved: Collection[str], server: Any = None) -> Shim:
    inventory = (
        next(s for s in server.servicers if isinstance(s, InventoryLegacy))
        if server is not None
        else InventoryLegacy()
    )
    routes = {
        f"{SERVICE}.{rpc}": RouteOptions(
            rollout_percent=100 if rpc in moved else 0,
            guard=_require_token if rpc in WRITES else None,
        )
        for rpc in ALL_RPCS
    }
    fallback = create_app(inventory.store, simulate_work=inventory.simulate_work)
    source: dict[str, Any] = {"server": server} if server is not None else {"services": [inventory]}
    config = ShimConfig(error_renderer=render_error_object)
    return Shim(fallback=fallback, config=config, routes=routes, **source)


def stage_0(server: Any = None) -> Shim:
    """Stage 0: the shim in front, serving nothing itself; it only counts legacy traffic."""
    return _shim(STAGES["0"], server)


def stage_1(server: Any = None) -> Shim:
    """Stage 1: GET /items/<sku> is answered by rpckit."""
    return _shim(STAGES["1"], server)


def stage_3(server: Any = None) -> Shim:
    """Stage 3: the three reads (item, list, tags)."""
    return _shim(STAGES["3"], server)


def stage_all(server: Any = None) -> Shim:
    """Every route rpckit can answer byte for byte today (all but /reports/stock)."""
    return _shim(STAGES["all"], server)

"""Golden contract tests written by `rpckit migrate scan`.

1. Every legacy URL scan saw (path values from the samples, or made up per
   converter) is routed by the shim to the RPC scan proposed for it.
2. The recorded samples replay, in order, to the recorded status and body against
   APP_UNDER_TEST: the legacy app by default; point RPCKIT_CONTRACT_APP at a stage
   (MODULE:FACTORY) to hold the migrated service to the same answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from examples.migrated_inventory._gen.inventory_legacy.v1 import inventory_legacy_pb2
from rpckit.http import Shim
from rpckit.migrate.testing import replay_recorded

LEGACY_APP = "examples.legacy_inventory.app:create_app"
APP_UNDER_TEST = os.environ.get("RPCKIT_CONTRACT_APP", LEGACY_APP)
SAMPLES = [Path(p) for p in ["migrate/example/samples.jsonl"]]

#: (HTTP method, legacy path, the RPC it must reach)
LEGACY_URLS = [
    ("GET", "/items/BOLT-M6-20", "/inventory_legacy.v1.InventoryLegacy/GetItem"),
    ("GET", "/items", "/inventory_legacy.v1.InventoryLegacy/ListItems"),
    ("POST", "/items", "/inventory_legacy.v1.InventoryLegacy/CreateItem"),
    ("PUT", "/items/ANCHOR-8", "/inventory_legacy.v1.InventoryLegacy/UpdateItem"),
    ("DELETE", "/items/ANCHOR-8", "/inventory_legacy.v1.InventoryLegacy/DeleteItem"),
    ("GET", "/items/NUT-M8/tags", "/inventory_legacy.v1.InventoryLegacy/ItemTags"),
    ("POST", "/restock-plans", "/inventory_legacy.v1.InventoryLegacy/CreateRestockPlan"),
    ("GET", "/healthz", "/inventory_legacy.v1.InventoryLegacy/Healthz"),
    ("GET", "/reports/stock", "/inventory_legacy.v1.InventoryLegacy/StockReport"),
]


@pytest.fixture(scope="module")
def router() -> object:
    channel = grpc.insecure_channel("127.0.0.1:9")  # never connected: routing only
    services = [
        inventory_legacy_pb2.DESCRIPTOR.services_by_name["InventoryLegacy"],
    ]
    yield Shim(services=services, channel=channel).router
    channel.close()


@pytest.mark.parametrize(("method", "path", "rpc"), LEGACY_URLS)
def test_legacy_url_reaches_its_rpc(router: object, method: str, path: str, rpc: str) -> None:
    resolution = router.resolve(method, path)  # type: ignore[attr-defined]
    route = getattr(resolution, "route", None)
    assert route is not None, f"{method} {path}: {resolution}"
    assert route.grpc_method == rpc


@pytest.mark.skipif(not all(p.exists() for p in SAMPLES), reason="no samples recorded")
def test_recorded_samples_replay_to_their_answers() -> None:
    report = replay_recorded(SAMPLES, APP_UNDER_TEST)
    assert report.ok, report.render_text()

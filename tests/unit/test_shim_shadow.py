"""Shadow mode, rollout percentages and legacy-traffic counters through the shim (in process).

The migrated Inventory and the legacy Flask app get *different* stores, so the
two sides disagree on purpose (a seeded difference: one item's name) and each
comparison is predictable; the rollout rng is seeded, so which side answers each
request is predictable too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import prometheus_client
import pytest
from werkzeug.test import Client

from examples.inventory.server import LEGACY_CONFIG, legacy_routes
from examples.inventory.service import Inventory
from examples.legacy_inventory.app import create_app
from examples.legacy_inventory.store import InventoryStore, seed_items
from rpckit.http import RouteOptions, ShadowReport, Shim, ShimConfig

GET_ITEM = "inventory.v1.Inventory.GetItem"
RPCKIT_NAME = "Hex nut M8, zinc"
LEGACY_NAME = "Hex nut M8, steel"


def legacy_store_with_a_difference() -> InventoryStore:
    items = [
        dataclasses.replace(i, name=LEGACY_NAME) if i.sku == "NUT-M8" else i for i in seed_items()
    ]
    return InventoryStore(items)


def make_shim(
    options: RouteOptions,
    *,
    seed: int,
    reports: list[ShadowReport] | None = None,
    config: ShimConfig = LEGACY_CONFIG,
) -> Shim:
    inventory = Inventory()
    return Shim(
        services=[inventory],
        fallback=create_app(legacy_store_with_a_difference()),
        config=config,
        routes={**legacy_routes(inventory), GET_ITEM: options},
        rng=random.Random(seed),
        on_shadow=None if reports is None else reports.append,
    )


def expected_primaries(seed: int, percent: float, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["rpckit" if rng.random() * 100 < percent else "fallback" for _ in range(count)]


def test_shadow_logs_the_seeded_difference_and_serves_the_primary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[ShadowReport] = []
    app = make_shim(RouteOptions(shadow=True, rollout_percent=50), seed=7, reports=reports)
    client = Client(app)
    primaries = expected_primaries(7, 50, 6)
    assert set(primaries) == {"rpckit", "fallback"}  # the seed exercises both sides
    caplog.set_level(logging.DEBUG, logger="rpckit.http.shadow")
    names = [json.loads(client.get("/items/NUT-M8").get_data())["name"] for _ in primaries]
    assert names == [RPCKIT_NAME if p == "rpckit" else LEGACY_NAME for p in primaries]
    assert [r.primary for r in reports] == primaries
    for report in reports:
        ours, theirs = (
            (RPCKIT_NAME, LEGACY_NAME) if report.primary == "rpckit" else (LEGACY_NAME, RPCKIT_NAME)
        )
        assert report.as_dict() == {
            "route": "GET /items/{sku}",
            "method": "GET",
            "path": "/items/NUT-M8",
            "primary": report.primary,
            "matched": False,
            "primary_status": 200,
            "shadow_status": 200,
            "difference_count": 1,
            "differences": [{"path": "/name", "primary": ours, "shadow": theirs}],
        }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.shadow for r in warnings] == [r.as_dict() for r in reports]  # type: ignore[attr-defined]
    assert all("shadow mismatch on GET /items/{sku}" in r.getMessage() for r in warnings)


def test_matching_answers_are_counted_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    reports: list[ShadowReport] = []
    app = make_shim(RouteOptions(shadow=True), seed=1, reports=reports)
    client = Client(app)
    for sku in ("NUT-M6", "NOPE-1", "NUT-M8"):
        client.get(f"/items/{sku}")
    assert [(r.path, r.matched, r.primary_status) for r in reports] == [
        ("/items/NUT-M6", True, 200),
        ("/items/NOPE-1", True, 404),  # both sides' 404 bodies are byte-identical
        ("/items/NUT-M8", False, 200),
    ]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    shadow = app.traffic_report()["shadow"]
    assert shadow == [
        {"route": "/items/{sku}", "outcome": "match", "count": 2},
        {"route": "/items/{sku}", "outcome": "mismatch", "count": 1},
    ]


def test_rollout_without_shadow_calls_only_the_chosen_side() -> None:
    app = make_shim(RouteOptions(rollout_percent=30), seed=11)
    client = Client(app)
    primaries = expected_primaries(11, 30, 20)
    names = [json.loads(client.get("/items/NUT-M8").get_data())["name"] for _ in primaries]
    assert names == [RPCKIT_NAME if p == "rpckit" else LEGACY_NAME for p in primaries]
    served = {
        r["served_by"]: r["count"]
        for r in app.traffic_report()["requests"]
        if r["route"] == "/items/{sku}"
    }
    assert served == {"rpckit": primaries.count("rpckit"), "fallback": primaries.count("fallback")}


def test_shadow_sends_the_same_body_to_both_sides() -> None:
    reports: list[ShadowReport] = []
    inventory = Inventory()
    options = RouteOptions(shadow=True, shadow_side_effects=True, rollout_percent=100)
    app = Shim(
        services=[inventory],
        fallback=create_app(InventoryStore()),
        config=LEGACY_CONFIG,
        routes={**legacy_routes(inventory), "inventory.v1.Inventory.PlanRestock": options},
        on_shadow=reports.append,
    )
    response = Client(app).post(
        "/restock-plans", data=b'{"threshold": 1}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert [(r.matched, r.primary_status, r.shadow_status) for r in reports] == [(True, 200, 200)]


def test_traffic_counters_show_exactly_the_requests_sent() -> None:
    config = dataclasses.replace(LEGACY_CONFIG, traffic_report_path="/_rpckit/traffic")
    inventory = Inventory()
    app = Shim(
        services=[inventory],
        fallback=create_app(inventory.store),
        config=config,
        routes=legacy_routes(inventory),
    )
    client = Client(app)
    sent = [
        ("GET", "/items/NUT-M8", "billing/1.0"),
        ("GET", "/items/NUT-M8", "billing/1.0"),
        ("GET", "/items/NOPE-1", "billing/1.0"),
        ("HEAD", "/items/NUT-M8", "curl/8.5"),
        ("DELETE", "/items/NUT-M8", "curl/8.5"),  # no token: 401
        ("GET", "/healthz", "kube-probe/1.29"),
        ("GET", "/nowhere", None),
    ]
    for method, path, agent in sent:
        headers = {} if agent is None else {"User-Agent": agent}
        client.open(path, method=method, headers=headers)
    report = json.loads(client.get("/_rpckit/traffic").get_data())
    assert report == {
        "total": 7,
        "requests": [
            {"route": "(fallback)", "method": "GET", "status": 200, "caller": "kube-probe/1.29",
             "served_by": "fallback", "count": 1},
            {"route": "(fallback)", "method": "GET", "status": 404, "caller": "(unknown)",
             "served_by": "fallback", "count": 1},
            {"route": "/items/{sku}", "method": "DELETE", "status": 401, "caller": "curl/8.5",
             "served_by": "rpckit", "count": 1},
            {"route": "/items/{sku}", "method": "GET", "status": 200, "caller": "billing/1.0",
             "served_by": "rpckit", "count": 2},
            {"route": "/items/{sku}", "method": "GET", "status": 404, "caller": "billing/1.0",
             "served_by": "rpckit", "count": 1},
            {"route": "/items/{sku}", "method": "HEAD", "status": 200, "caller": "curl/8.5",
             "served_by": "rpckit", "count": 1},
        ],
        "shadow": [],
    }  # fmt: skip
    text = prometheus_client.generate_latest(app.metrics_registry()).decode()
    assert (
        'rpckit_http_requests_total{caller="billing/1.0",method="GET",route="/items/{sku}",'
        'served_by="rpckit",status="200"} 2.0'
    ) in text
    samples = [line for line in text.splitlines() if line.startswith("rpckit_http_requests_total")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in samples) == 8  # + the report request


def test_caller_from_a_configured_header() -> None:
    config = dataclasses.replace(LEGACY_CONFIG, caller_header="X-Caller")
    inventory = Inventory()
    app = Shim(services=[inventory], config=config)
    Client(app).get("/items/NUT-M8", headers={"X-Caller": "billing", "User-Agent": "ignored/1"})
    (row,) = app.traffic_report()["requests"]
    assert row["caller"] == "billing"

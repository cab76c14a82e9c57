"""The Flask app itself: its factory, configuration, URL map and golden-file recorder.

These tests are about the legacy implementation, not its HTTP contract, so they
build the app with ``create_app`` directly instead of the parametrized fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from examples.legacy_inventory import app as app_module
from examples.legacy_inventory.app import DEV_API_TOKEN, create_app
from examples.legacy_inventory.record_golden import main as record_golden_main
from examples.legacy_inventory.store import InventoryStore, Item

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


def test_module_creates_no_app_at_import() -> None:
    assert not [name for name, value in vars(app_module).items() if isinstance(value, Flask)]


def test_each_app_has_its_own_seeded_store() -> None:
    first, second = create_app().test_client(), create_app().test_client()
    assert first.delete("/items/NUT-M8", headers=AUTH).status_code == 204
    assert first.get("/items/NUT-M8").status_code == 404
    assert second.get("/items/NUT-M8").status_code == 200


def test_app_serves_the_store_it_is_given() -> None:
    store = InventoryStore([Item(sku="ONLY-1", name="Only")])
    client = create_app(store).test_client()
    expected = (
        b'{"items":[{"name":"Only","price_cents":0,"quantity":0,"sku":"ONLY-1","tags":[]}],'
        b'"next_page_token":""}\n'
    )
    assert client.get("/items").get_data() == expected
    put = client.put("/items/ONLY-1", json={"name": "Renamed", "quantity": 3}, headers=AUTH)
    assert put.status_code == 200
    assert store.get("ONLY-1") == Item(sku="ONLY-1", name="Renamed", quantity=3)


def test_api_token_comes_from_config() -> None:
    client = create_app(config={"INVENTORY_API_TOKEN": "s3cret"}).test_client()
    item = {"sku": "T-1", "name": "t"}
    assert client.post("/items", json=item, headers=AUTH).status_code == 401
    created = client.post("/items", json=item, headers={"Authorization": "Bearer s3cret"})
    assert created.status_code == 201


def test_restock_plan_simulates_work_per_item_examined() -> None:
    pauses: list[float] = []
    client = create_app(simulate_work=pauses.append).test_client()
    response = client.post("/restock-plans", json={"threshold": 1, "work_ms_per_item": 250})
    assert response.status_code == 200
    assert pauses == [0.25] * 20
    pauses.clear()
    assert client.post("/restock-plans", json={"threshold": 1}).status_code == 200
    assert pauses == []


def test_url_map_is_what_the_migration_scanner_will_read() -> None:
    rules = {
        (rule.rule, rule.endpoint, frozenset(rule.methods or ()) - {"HEAD", "OPTIONS"})
        for rule in create_app().url_map.iter_rules()
    }
    assert rules == {
        ("/items/<sku>", "get_item", frozenset({"GET"})),
        ("/items", "list_items", frozenset({"GET"})),
        ("/items", "create_item", frozenset({"POST"})),
        ("/items/<sku>", "update_item", frozenset({"PUT"})),
        ("/items/<sku>", "delete_item", frozenset({"DELETE"})),
        ("/items/<sku>/tags", "item_tags", frozenset({"GET"})),
        ("/restock-plans", "create_restock_plan", frozenset({"POST"})),
        ("/healthz", "healthz", frozenset({"GET"})),
        ("/reports/stock", "stock_report", frozenset({"GET"})),
    }


def test_debug_mode_indents_json_which_is_why_golden_bytes_assume_debug_off() -> None:
    client = create_app(config={"DEBUG": True}).test_client()
    assert client.get("/healthz").get_data() == b'{\n  "status": "ok"\n}\n'


def test_delete_keeps_flasks_default_content_type_on_204() -> None:
    response = create_app().test_client().delete("/items/NUT-M8", headers=AUTH)
    assert response.status_code == 204
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Length" not in response.headers


def test_head_is_answered_for_get_routes_without_a_body() -> None:
    client = create_app().test_client()
    response = client.head("/items/NUT-M8")
    assert (response.status_code, response.get_data()) == (200, b"")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(client.get("/items/NUT-M8").get_data()))


def test_recorder_check_passes_on_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert record_golden_main(["--check"]) == 0
    assert "is current" in capsys.readouterr().out


def test_recorder_writes_the_committed_file(tmp_path: Path) -> None:
    out = tmp_path / "golden.jsonl"
    assert record_golden_main(["--out", str(out)]) == 0
    committed = Path(__file__).with_name("golden_requests.jsonl")
    assert out.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")


def test_recorder_check_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "golden.jsonl"
    out.write_text('{"name": "old"}\n', encoding="utf-8")
    assert record_golden_main(["--out", str(out), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert record_golden_main(["--out", str(tmp_path / "missing.jsonl"), "--check"]) == 1

"""OpenAPI of the legacy contract as served: `rpckit openapi` output validates with a real
validator (openapi-spec-validator), says what goes over the wire, and a bounded schemathesis
run against the shim (migrated handlers, Flask fallback) finds no 5xx."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from examples.inventory.server import legacy_shim
from examples.inventory.service import Inventory
from examples.legacy_inventory.app import DEV_API_TOKEN
from tests.integration.conftest import ROOT, RPCKIT

OPENAPI_ARGV = [
    RPCKIT,
    "openapi",
    "examples.inventory.server:servicers",
    "--http-app",
    "examples.inventory.server:legacy_http",
    "--title",
    "Inventory (legacy)",
]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("openapi") / "openapi.json"
    done = subprocess.run(
        [*OPENAPI_ARGV, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return loaded


def test_rpckit_openapi_validates(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.0 schema
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] == "Inventory (legacy)"


def test_document_describes_the_contract_as_served(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert sorted(paths) == [
        "/items", "/items/{item_sku}", "/items/{sku}", "/items/{sku}/tags", "/restock-plans",
    ]  # fmt: skip
    create = paths["/items"]["post"]
    assert set(create["responses"]) == {"201", "default"}
    assert "Location" in create["responses"]["201"]["headers"]
    assert paths["/items/{sku}"]["delete"]["responses"]["204"] == {"description": "Success"}
    tags = paths["/items/{sku}/tags"]["get"]["responses"]["200"]["content"]["application/json"]
    assert tags["schema"] == {"type": "array", "items": {"type": "string"}}
    listing = paths["/items"]["get"]["parameters"]
    assert [p["name"] for p in listing] == ["page_size", "page_token"]
    schemas = document["components"]["schemas"]
    item_out, item_in = schemas["inventory.v1.Item"], schemas["inventory.v1.Item.Input"]
    assert item_out["required"] == ["sku", "name", "quantity", "price_cents", "tags"]
    assert item_out["properties"]["quantity"]["type"] == "integer"  # int64 as a JSON number
    assert item_in["additionalProperties"] is False  # unknown fields are rejected
    assert schemas["rpckit.Error"]["required"] == ["error"]


def test_openapi_prints_to_stdout_and_refuses_a_non_shim_app() -> None:
    done = subprocess.run(OPENAPI_ARGV, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert json.loads(done.stdout)["paths"]
    bad = subprocess.run(
        [RPCKIT, "openapi", "examples.inventory.server:servicers", "--http-app", "os:getcwd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "os:getcwd" in bad.stderr.strip().splitlines()[-1]


def test_openapi_help_has_an_example() -> None:
    done = subprocess.run(
        [RPCKIT, "openapi", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "example: rpckit openapi examples.inventory.server:servicers" in done.stdout


# ---------------------------------------------------------------- schemathesis

# One shim for the whole run: generated writes pile up in its store, as in production.
_INVENTORY = Inventory(simulate_work=lambda seconds: None)  # restock plans do no real waiting
_SHIM = legacy_shim(_INVENTORY)
SCHEMA = schemathesis.openapi.from_dict(_SHIM.openapi(title="Inventory (legacy)"))
SCHEMA.app = _SHIM
AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


@SCHEMA.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_finds_no_server_error(case: Any) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    case.validate_response(response, checks=[not_a_server_error])

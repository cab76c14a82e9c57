"""The pet store's own test suite, as its team wrote it against ``app.test_client()``,
run twice: on the Flask app, and with every pet route migrated to rpckit behind the shim.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rpckit.http import Shim
from tests.flask_dialect.petstore_app import create_app
from tests.flask_dialect.petstore_shim import migrated_app

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


@pytest.fixture(params=["flask", "shim"])
def app(request: pytest.FixtureRequest) -> Flask:
    factory: Callable[[], Flask] = create_app if request.param == "flask" else migrated_app
    return factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def add(client: FlaskClient, name: str, **extra: object) -> int:
    response = client.post("/pets", json={"name": name, **extra}, headers=ALICE)
    assert response.status_code == 201, response.data
    pet_id = response.get_json()["id"]
    assert isinstance(pet_id, int)
    return pet_id


def test_health(client: FlaskClient) -> None:
    assert client.get("/health").get_json() == {"status": "ok"}


def test_create_returns_the_pet_and_where_it_lives(client: FlaskClient) -> None:
    response = client.post("/pets", json={"name": "rex", "age": 3}, headers=BOB)
    assert response.status_code == 201
    pet = response.get_json()
    assert response.headers["Location"] == f"http://localhost/pets/{pet['id']}"
    assert pet == {
        "id": pet["id"],
        "name": "rex",
        "age": 3,
        "tag": None,
        "owner": "bob",
        "born": "2024-05-01T10:00:09.500000+00:00",
        "url": f"http://localhost/pets/{pet['id']}",
    }


def test_create_needs_a_token(client: FlaskClient) -> None:
    response = client.post("/pets", json={"name": "rex"})
    assert response.status_code == 401
    assert response.get_json() == {"error": {"code": 401, "message": "invalid token"}}


def test_create_needs_exactly_application_json(client: FlaskClient) -> None:
    response = client.post(
        "/pets", data='{"name":"rex"}', content_type="application/json; charset=utf-8",
        headers=ALICE,
    )  # fmt: skip
    assert response.status_code == 415


def test_create_reports_every_field_error(client: FlaskClient) -> None:
    response = client.post("/pets", json={"tag": 7, "age": "three"}, headers=ALICE)
    assert response.status_code == 422
    assert response.get_json() == {
        "errors": {
            "json": {
                "age": ["Not a valid integer."],
                "name": ["Missing data for required field."],
                "tag": ["Not a valid string."],
            }
        }
    }


def test_create_with_malformed_json(client: FlaskClient) -> None:
    response = client.post("/pets", data="{", content_type="application/json", headers=ALICE)
    assert response.status_code == 400
    assert response.get_json() == {"errors": {"json": ["Invalid JSON body."]}}


def test_get_and_list(client: FlaskClient) -> None:
    first, second = add(client, "rex"), add(client, "tom", tag="cat")
    assert client.get(f"/pets/{second}").get_json()["tag"] == "cat"
    listed = client.get("/pets").get_json()
    assert [p["id"] for p in listed] == [first, second]
    assert [p["id"] for p in client.get("/pets?limit=1").get_json()] == [first]


def test_list_limit_must_be_an_integer(client: FlaskClient) -> None:
    response = client.get("/pets?limit=many")
    assert response.status_code == 422
    assert response.get_json() == {"errors": {"query": {"limit": ["Not a valid integer."]}}}


def test_unknown_pet_ids_are_404(client: FlaskClient) -> None:
    add(client, "rex")
    for path in ("/pets/99", "/pets/abc", "/pets/-1", "/pets/1.5"):
        assert client.get(path).status_code == 404, path


def test_update_is_partial_and_ignores_a_non_json_body(client: FlaskClient) -> None:
    pet_id = add(client, "rex", age=3)
    assert client.put(f"/pets/{pet_id}", json={"tag": "dog"}).get_json()["tag"] == "dog"
    unchanged = client.put(f"/pets/{pet_id}", data="age=9", content_type="text/plain")
    assert unchanged.status_code == 200
    assert unchanged.get_json()["age"] == 3
    assert client.put(f"/pets/{pet_id}", json={"age": "x"}).status_code == 422
    assert client.put("/pets/42", json={"age": 1}).status_code == 404


def test_delete(client: FlaskClient) -> None:
    pet_id = add(client, "rex")
    assert client.delete(f"/pets/{pet_id}").status_code == 401
    response = client.delete(f"/pets/{pet_id}", headers=ALICE)
    assert response.status_code == 204
    assert response.data == b""
    assert client.delete(f"/pets/{pet_id}", headers=ALICE).status_code == 404
    assert client.get(f"/pets/{pet_id}").status_code == 404


def test_wrong_methods_are_405(client: FlaskClient) -> None:
    assert client.patch("/pets/1").status_code == 405
    assert client.put("/pets").status_code == 405


def test_cors_headers_on_every_answer(client: FlaskClient) -> None:
    origin = {"Origin": "http://front.example"}
    for response in (client.get("/pets", headers=origin), client.get("/pets/5", headers=origin)):
        assert response.headers["Access-Control-Allow-Origin"] == "http://front.example"
        assert response.headers["Vary"] == "Origin"


def test_every_pet_route_is_served_by_rpckit_when_migrated() -> None:
    """The suite above ran through rpckit's handlers, not through the Flask views."""
    app = migrated_app()
    client = app.test_client()
    add(client, "rex")
    client.get("/pets/1")
    client.get("/pets")
    client.put("/pets/1", json={"age": 2})
    client.delete("/pets/1", headers=ALICE)
    client.get("/health")
    shim = app.wsgi_app
    assert isinstance(shim, Shim)
    served = {(row["route"], row["served_by"]) for row in shim.traffic_report()["requests"]}
    assert {("/pets", "rpckit"), ("/pets/{pet_id}", "rpckit")} <= served
    assert ("(fallback)", "fallback") in served
    assert not any(r == "/pets/{pet_id}" and by == "fallback" for r, by in served)


def test_the_readme_example_is_the_migrated_app() -> None:
    """The README's Flask-dialect block, run as written, serves the pet store as the
    acceptance suites do."""
    from tests.flask_dialect import petstore_shim
    from tests.flask_dialect.petstore_app import PetStore

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The Flask dialect", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None
    scope: dict[str, object] = {
        "PetStore": PetStore,
        "create_app": create_app,
        "PetStoreService": petstore_shim.PetStoreService,
        "bearer_user": petstore_shim.bearer_user,
        "render_like_the_app": petstore_shim.render_like_the_app,
    }
    exec(block.group(1), scope)
    app = scope["app"]
    assert isinstance(app, Flask)
    assert isinstance(app.wsgi_app, Shim)
    assert app.wsgi_app.routes
    created = scope["created"]  # the block's own first call
    assert isinstance(created, TestResponse)
    assert created.status == "201 CREATED"
    assert created.headers["Location"] == "http://localhost/pets/1"
    # The README's options are the acceptance suites' options.
    tested = migrated_app().wsgi_app
    assert isinstance(tested, Shim)
    shown = app.wsgi_app
    assert [shown.settings_for(r) for r in shown.routes] == [
        tested.settings_for(r) for r in tested.routes
    ]

"""Each option of the shim's Flask dialect, in process (werkzeug's test client, no sockets):
every test shows the legacy behaviour with the option and rpckit's own without it, so
it fails if the option stops working.

The app is the pet store of tests/flask_dialect (real Flask, flask-cors, webargs).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from rpckit.http import (
    FLASK_DIALECT,
    RPCKIT_DIALECT,
    Dialect,
    FieldViolation,
    GuardedCall,
    HttpError,
    LegacyProfile,
    RouteOptions,
    Shim,
    ShimConfig,
    guard_identity,
    werkzeug_phrase,
)
from rpckit.http._mapping._converters import converter_accepts, converter_for_field
from rpckit.http._mapping._jsonmap import message_to_obj
from tests.flask_dialect.petstore_app import PetStore, create_app
from tests.flask_dialect.petstore_shim import (
    SERVICE,
    PetStoreService,
    petstore_routes,
    render_like_the_app,
)
from tests.protos._gen.petstore.v1 import petstore_pb2 as pb

ALICE = {"Authorization": "Bearer alice-token"}
JSON = "application/json"


def shimmed(
    dialect: Dialect | None = None,
    *,
    routes: dict[str, RouteOptions] | None = None,
    flask_fallback: bool = True,
    **config: Any,
) -> tuple[Flask, Shim]:
    """The pet store with its pet routes behind a shim; ``dialect=None`` lets it choose."""
    store = PetStore()
    app = create_app(store)
    fallback: Any = app.wsgi_app
    if not flask_fallback:  # the same app, hidden behind a plain WSGI function

        def fallback(environ: Any, start_response: Any) -> Any:
            return app.wsgi_app(environ, start_response)

    shim = Shim(
        services=[PetStoreService(store)],
        fallback=fallback,
        routes={**petstore_routes(), **(routes or {})},
        config=ShimConfig(**{"error_renderer": render_like_the_app, **config}, dialect=dialect),
    )
    app.wsgi_app = shim  # type: ignore[method-assign]
    return app, shim


def with_dialect(**changes: Any) -> Dialect:
    """The Flask dialect with some habits switched to rpckit's own."""
    return dataclasses.replace(FLASK_DIALECT, **changes)


def add_pet(app: Flask) -> None:
    created = app.test_client().post("/pets", json={"name": "rex"}, headers=ALICE)
    assert created.status_code == 201, created.data


def recording(seen: list[HttpError]) -> Any:
    """An error renderer that keeps what it is given (and renders ``{}``)."""

    def render(error: HttpError) -> Any:
        seen.append(error)
        return {}

    return render


# ---------------------------------------------------------------- choosing the dialect


def test_a_flask_fallback_gets_the_flask_dialect_and_anything_else_rpckit_s() -> None:
    assert shimmed()[1].dialect is FLASK_DIALECT
    assert shimmed(flask_fallback=False)[1].dialect is RPCKIT_DIALECT
    assert shimmed(RPCKIT_DIALECT)[1].dialect is RPCKIT_DIALECT


def test_dialect_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="reason_phrases"):
        Dialect(name="x", reason_phrases="loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_headers"):
        Dialect(name="x", timeout_headers=["x-deadline"])
    with pytest.raises(TypeError, match=r"ShimConfig\.dialect"):
        ShimConfig(dialect="flask")  # type: ignore[arg-type]


# ---------------------------------------------------------------- status line and 204


def test_werkzeug_phrases_are_werkzeug_s_for_every_code_it_knows() -> None:
    assert {c: werkzeug_phrase(c) for c in HTTP_STATUS_CODES} == {
        c: p.upper() for c, p in HTTP_STATUS_CODES.items()
    }
    assert werkzeug_phrase(599) == "UNKNOWN"


def test_reason_phrases() -> None:
    app, _ = shimmed(FLASK_DIALECT)
    assert app.test_client().get("/pets/9").status == "404 NOT FOUND"
    app, _ = shimmed(with_dialect(reason_phrases="rfc"))
    assert app.test_client().get("/pets/9").status == "404 Not Found"


def test_no_content_length_on_204() -> None:
    for dialect, expected in ((FLASK_DIALECT, None), (with_dialect(
        content_length_on_no_content=True), "0")):  # fmt: skip
        app, _ = shimmed(dialect)
        add_pet(app)
        response = app.test_client().delete("/pets/1", headers=ALICE)
        assert response.status_code == 204
        assert response.headers.get("Content-Length") == expected


# ---------------------------------------------------------------- the fallback's answers


def test_the_fallbacks_405_is_passed_through_untouched() -> None:
    app, _ = shimmed(FLASK_DIALECT)
    flask_answer = create_app().test_client().patch("/pets/1")
    response = app.test_client().patch("/pets/1")
    assert (response.status, response.data) == (flask_answer.status, flask_answer.data)
    assert "Allow" not in response.headers  # the app's error handler sent none
    app, _ = shimmed(with_dialect(fallback_answers_untouched=False))
    merged = app.test_client().patch("/pets/1")
    assert merged.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PUT"


def test_options_is_the_fallbacks_answer_untouched() -> None:
    headers = {"Origin": "http://a.example", "Access-Control-Request-Method": "POST"}
    app, _ = shimmed(FLASK_DIALECT)
    flask_answer = create_app().test_client().options("/pets", headers=headers)
    response = app.test_client().options("/pets", headers=headers)
    assert sorted(response.headers.items()) == sorted(flask_answer.headers.items())


# ---------------------------------------------------------------- converters


@pytest.mark.parametrize("path", ["/pets/abc", "/pets/-1", "/pets/+1", "/pets/1.0"])
def test_int_converter_refusals_fall_through_to_the_fallback(path: str) -> None:
    app, shim = shimmed(FLASK_DIALECT)
    assert app.test_client().get(path).status_code == 404
    assert shim.traffic_report()["requests"][0]["served_by"] == "fallback"
    app, shim = shimmed(with_dialect(path_converters=False))
    app.test_client().get(path)
    assert shim.traffic_report()["requests"][0]["served_by"] == "rpckit"


def test_an_explicit_converter_per_variable() -> None:
    signed = {f"{SERVICE}.GetPet": RouteOptions(path_converters={"pet_id": "signed_int"})}
    app, shim = shimmed(with_dialect(path_converters=False), routes=signed)
    assert app.test_client().get("/pets/abc").status_code == 404
    assert shim.traffic_report()["requests"][0]["served_by"] == "fallback"
    app.test_client().get("/pets/-1")  # signed: the handler's own 404
    assert ("/pets/{pet_id}", "rpckit") in {
        (r["route"], r["served_by"]) for r in shim.traffic_report()["requests"]
    }
    with pytest.raises(ValueError, match="unknown converter"):
        RouteOptions(path_converters={"pet_id": "integer"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="names no path variable"):
        shimmed(routes={f"{SERVICE}.GetPet": RouteOptions(path_converters={"id": "int"})})


def test_converters_follow_werkzeug() -> None:
    field = pb.GetPetRequest.DESCRIPTOR.fields_by_name["pet_id"]
    assert converter_for_field(field) == "int"
    assert converter_for_field(pb.Pet.DESCRIPTOR.fields_by_name["name"]) == "string"
    assert converter_accepts("int", "12", field)
    assert not any(converter_accepts("int", t, field) for t in ("-1", "+1", "1.0", "", "a"))
    assert not converter_accepts("int", str(2**63), field)  # beyond int64: the view's 404
    assert converter_accepts("signed_int", "-1", field)
    assert converter_accepts("float", "1.5")
    assert not converter_accepts("float", "1")
    assert converter_accepts("uuid", "12345678-1234-1234-1234-123456789abc")
    assert converter_accepts("path", "a/b")
    assert not converter_accepts("string", "a/b")


# ---------------------------------------------------------------- content type and body


def test_strict_content_types_answer_415() -> None:
    app, _ = shimmed()
    client = app.test_client()
    odd = client.post("/pets", data=b'{"name":"a"}', content_type=f"{JSON}; charset=utf-8",
                      headers=ALICE)  # fmt: skip
    assert odd.status_code == 415
    assert client.post("/pets", data=b'{"name":"a"}', headers=ALICE).status_code == 415
    loose = {f"{SERVICE}.CreatePet": dataclasses.replace(
        petstore_routes()[f"{SERVICE}.CreatePet"], content_types=None)}  # fmt: skip
    app, _ = shimmed(routes=loose)
    accepted = app.test_client().post(
        "/pets", data=b'{"name":"a"}', content_type=f"{JSON}; charset=utf-8", headers=ALICE
    )
    assert accepted.status_code == 201


def test_webargs_mode_reads_empty_and_non_json_bodies_as_an_empty_object() -> None:
    app, _ = shimmed()
    add_pet(app)
    client = app.test_client()
    assert client.put("/pets/1", data=b"").status_code == 200
    assert client.put("/pets/1", data=b"x=1", content_type="text/plain").status_code == 200
    json_mode = {f"{SERVICE}.UpdatePet": RouteOptions(body_mode="json")}
    app, _ = shimmed(routes=json_mode)
    add_pet(app)
    client = app.test_client()
    assert client.put("/pets/1", data=b"x=1", content_type="text/plain").status_code == 415


def test_webargs_mode_reports_every_violation_with_location_and_types() -> None:
    seen: list[HttpError] = []

    def renderer(error: HttpError) -> Any:
        seen.append(error)
        return render_like_the_app(error)

    app, _ = shimmed(error_renderer=renderer)
    response = app.test_client().post(
        "/pets", json={"tag": 7, "age": True, "extra": 1}, headers=ALICE
    )
    assert response.status_code == 422
    (error,) = seen
    assert error.route == "POST /pets"
    assert error.violations == (
        FieldViolation(field="extra", description="is not a known field",
                       reason="unknown_fields"),
        FieldViolation(field="tag", description="must be a string", received="integer",
                       expected="string"),
        FieldViolation(field="age", description="must be an integer", received="boolean",
                       expected="integer"),
        FieldViolation(field="name", description="is required", reason="missing"),
    )  # fmt: skip
    assert (error.location, error.received) == ("body", "")
    # json mode: the first violation wins, 400.
    first_only = {
        f"{SERVICE}.CreatePet": dataclasses.replace(
            petstore_routes()[f"{SERVICE}.CreatePet"], body_mode="json", required_fields=None
        )
    }
    app, _ = shimmed(routes=first_only, error_renderer=renderer)
    seen.clear()
    response = app.test_client().post("/pets", json={"tag": 7, "age": True}, headers=ALICE)
    assert response.status_code == 400
    assert [v.field for v in seen[0].violations] == ["tag"]
    assert seen[0].received == "integer"


def test_query_violations_say_query() -> None:
    seen: list[HttpError] = []
    app, _ = shimmed(error_renderer=recording(seen))
    assert app.test_client().get("/pets?limit=lots").status_code == 422
    assert seen[0].violations[0].location == "query"
    assert seen[0].route == "GET /pets"


def test_required_fields_need_webargs_mode() -> None:
    with pytest.raises(ValueError, match="required_fields"):
        shimmed(routes={f"{SERVICE}.GetPet": RouteOptions(required_fields=["name"])})


# ---------------------------------------------------------------- query integers, timeouts


def test_query_integers_read_as_python_did() -> None:
    app, _ = shimmed()
    add_pet(app)
    for query in ("limit=%2B1", "limit=+1", "limit=1_0"):
        assert app.test_client().get(f"/pets?{query}").status_code == 200, query
    strict = {SERVICE: dataclasses.replace(petstore_routes()[SERVICE], query_ints="strict")}
    app, _ = shimmed(routes=strict)
    assert app.test_client().get("/pets?limit=%2B1").status_code == 422
    with pytest.raises(ValueError, match="query_ints"):
        RouteOptions(query_ints="lenient")  # type: ignore[arg-type]
    huge = "9" * 5000  # beyond Python's int() digit limit: refused, not a crash
    assert shimmed(FLASK_DIALECT)[0].test_client().get(f"/pets?limit={huge}").status_code == 422


def test_grpc_timeout_is_read_only_when_opted_in() -> None:
    garbage = {"grpc-timeout": "soon"}
    app, _ = shimmed(FLASK_DIALECT)
    assert app.test_client().get("/pets", headers=garbage).status_code == 200
    app, _ = shimmed(with_dialect(timeout_headers=["x-request-timeout", "grpc-timeout"]))
    assert app.test_client().get("/pets", headers=garbage).status_code == 400


# ---------------------------------------------------------------- Flask's hooks and context


def test_after_request_hooks_run_on_migrated_answers() -> None:
    origin = {"Origin": "http://front.example"}
    app, _ = shimmed(FLASK_DIALECT)
    for response in (app.test_client().get("/pets", headers=origin),
                     app.test_client().get("/pets?limit=x", headers=origin)):  # fmt: skip
        assert response.headers["Access-Control-Allow-Origin"] == "http://front.example"
    app, _ = shimmed(with_dialect(flask_response_hooks=False))
    assert (
        "Access-Control-Allow-Origin" not in app.test_client().get("/pets", headers=origin).headers
    )


def test_handlers_run_in_the_flask_request_context() -> None:
    app, _ = shimmed(FLASK_DIALECT)
    add_pet(app)
    response = app.test_client().get("/pets/1", base_url="https://pets.example:8443/api")
    assert response.get_json()["url"] == "https://pets.example:8443/api/pets/1"
    app, _ = shimmed(with_dialect(flask_request_context=False))
    # The handler's url_for fails outside a request context (logged, a 500).
    assert app.test_client().post("/pets", json={"name": "a"}, headers=ALICE).status_code == 500


def test_a_per_call_context_wraps_guard_handler_and_answer() -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def call_context(environ: Any) -> Iterator[None]:
        entered.append(environ["PATH_INFO"])
        yield
        entered.append("exit")

    app, _ = shimmed(call_context=call_context)
    app.test_client().get("/pets")
    app.test_client().get("/health")  # the fallback's: not a migrated call
    assert entered == ["/pets", "exit"]
    with pytest.raises(TypeError, match="call_context"):
        ShimConfig(call_context=42)  # type: ignore[arg-type]


def test_a_guard_hands_its_identity_to_the_handler() -> None:
    calls: list[object] = []

    def guard(call: GuardedCall) -> object:
        calls.append(call.header("authorization"))
        return {"user": "carol"}

    class Seeing(PetStoreService):
        def ListPets(self, request: Any, context: grpc.ServicerContext) -> Any:
            calls.append(guard_identity())
            return super().ListPets(request, context)

    store = PetStore()
    app = create_app(store)
    app.wsgi_app = Shim(  # type: ignore[method-assign]
        services=[Seeing(store)], fallback=app.wsgi_app,
        routes={f"{SERVICE}.ListPets": RouteOptions(guard=guard)},
    )  # fmt: skip
    app.test_client().get("/pets", headers={"Authorization": "Bearer x"})
    assert calls == ["Bearer x", {"user": "carol"}]  # the guard ran once
    assert guard_identity() is None  # only inside the call


def test_a_guard_refusal_is_the_apps_401() -> None:
    app, _ = shimmed()
    response = app.test_client().delete("/pets/1")
    assert response.status_code == 401
    assert response.get_json() == {"error": {"code": 401, "message": "invalid token"}}


# ---------------------------------------------------------------- header templates


def test_header_templates_use_the_requests_scheme_host_and_script_root() -> None:
    app, _ = shimmed()
    created = app.test_client().post(
        "/pets", json={"name": "a"}, headers=ALICE, base_url="https://h.example:8443/root/"
    )
    assert created.headers["Location"] == "https://h.example:8443/root/pets/1"
    url_root = {f"{SERVICE}.CreatePet": dataclasses.replace(
        petstore_routes()[f"{SERVICE}.CreatePet"],
        response_headers=[("Location", "{$url_root}pets/{id}")])}  # fmt: skip
    app, _ = shimmed(routes=url_root)
    created = app.test_client().post("/pets", json={"name": "a"}, headers=ALICE)
    assert created.headers["Location"] == "http://localhost/pets/1"
    bad = {f"{SERVICE}.CreatePet": RouteOptions(response_headers=[("Location", "{$port}")])}
    with pytest.raises(ValueError, match=r"\{\$port\}"):
        shimmed(routes=bad)


# ---------------------------------------------------------------- JSON profile


def test_datetime_styles() -> None:
    pet = pb.Pet(id=1)
    pet.born.FromJsonString("2024-05-01T10:00:09.500Z")
    assert message_to_obj(pet, LegacyProfile())["born"] == "2024-05-01T10:00:09.500Z"
    iso = message_to_obj(pet, LegacyProfile(datetime_style="isoformat"))["born"]
    assert iso == "2024-05-01T10:00:09.500000+00:00"
    iso_z = message_to_obj(pet, LegacyProfile(datetime_style="isoformat_z"))["born"]
    assert iso_z == "2024-05-01T10:00:09.500000Z"
    pet.born.FromJsonString("2024-05-01T10:00:09Z")
    assert message_to_obj(pet, LegacyProfile(datetime_style="isoformat"))["born"] == (
        "2024-05-01T10:00:09+00:00"
    )
    with pytest.raises(ValueError, match="datetime_style"):
        LegacyProfile(datetime_style="rfc822")  # type: ignore[arg-type]


def test_null_for_unset_optional_fields() -> None:
    pet = pb.Pet(id=1, age=2)
    omitted = message_to_obj(pet, LegacyProfile())
    assert "tag" not in omitted
    assert "born" not in omitted
    nulls = message_to_obj(pet, LegacyProfile(unset_optional="null"))
    assert (nulls["tag"], nulls["born"], nulls["age"]) == (None, None, 2)


def test_status_errors_carry_the_route() -> None:
    seen: list[HttpError] = []
    app, _ = shimmed(error_renderer=recording(seen))
    app.test_client().get("/pets/5")
    assert (seen[0].status, seen[0].route, seen[0].grpc_code) == (
        404, "GET /pets/{pet_id}", grpc.StatusCode.NOT_FOUND,
    )  # fmt: skip


def test_hostile_long_integers_are_refused_not_crashed_on() -> None:
    """Worst input for the integer readers: more digits than Python's int() converts."""
    digits = "9" * 5000
    assert shimmed()[0].test_client().get(f"/pets/{digits}").status_code == 404  # as Flask
    no_converters = shimmed(with_dialect(path_converters=False))[0].test_client()
    assert no_converters.get(f"/pets/{digits}").status_code == 400
    app, _ = shimmed()
    add_pet(app)
    assert app.test_client().put("/pets/1", json={"age": int("9" * 40)}).status_code == 422


def test_a_failing_after_request_hook_is_a_500_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worst input for the response hooks: the app's own hook raises."""
    app, _ = shimmed()

    @app.after_request
    def broken(response: Any) -> Any:
        raise RuntimeError("HOOK-SECRET")

    with caplog.at_level("ERROR"):
        response = app.test_client().get("/pets")
    assert response.status_code == 500
    assert b"HOOK-SECRET" not in response.data
    assert "HOOK-SECRET" in caplog.text


def test_openapi_names_the_exact_content_types() -> None:
    _, shim = shimmed()
    paths = shim.openapi()["paths"]
    assert list(paths["/pets"]["post"]["requestBody"]["content"]) == ["application/json"]
    odd = {f"{SERVICE}.UpdatePet": RouteOptions(content_types=["application/vnd.pets+json"])}
    _, shim = shimmed(routes=odd)
    body = shim.openapi()["paths"]["/pets/{pet_id}"]["put"]["requestBody"]
    assert list(body["content"]) == ["application/vnd.pets+json"]

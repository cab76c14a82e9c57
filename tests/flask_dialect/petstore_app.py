"""A small legacy pet store, written as Flask apps of its kind are: the contract to keep.

Flask 3 with flask-cors (an ``after_request`` hook), webargs + marshmallow for
bodies and query strings (422 with every field's messages; an empty or non-JSON
body reads as ``{}``), ``<int:pet_id>`` rules, a strict content-type check on
``POST /pets`` (415), ``201`` with an absolute ``Location`` from
``url_for(..., _external=True)``, ``204`` on delete, a bearer-token check, and
marshmallow's date-times. ``GET /health`` is never migrated.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from typing import Any

from flask import Flask, abort, g, jsonify, request, url_for
from flask_cors import CORS
from marshmallow import Schema, fields
from webargs.flaskparser import parser
from werkzeug.exceptions import HTTPException

#: Bearer tokens and the users they name.
TOKENS = {"alice-token": "alice", "bob-token": "bob"}

#: When every pet of a store is born: half a second past, so the fraction shows.
BORN = datetime.datetime(2024, 5, 1, 10, 0, 9, 500000, tzinfo=datetime.UTC)


@dataclasses.dataclass
class Pet:
    id: int
    name: str
    tag: str | None
    age: int | None
    born: datetime.datetime
    owner: str


class PetStore:
    """The app's model, shared by the Flask views and the rpckit handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pets: dict[int, Pet] = {}
        self._next = 1

    def add(self, *, name: str, tag: str | None, age: int | None, owner: str) -> Pet:
        with self._lock:
            pet = Pet(self._next, name, tag, age, BORN, owner)
            self._pets[pet.id] = pet
            self._next += 1
            return pet

    def get(self, pet_id: int) -> Pet | None:
        with self._lock:
            return self._pets.get(pet_id)

    def listed(self, limit: int | None) -> list[Pet]:
        with self._lock:
            pets = sorted(self._pets.values(), key=lambda p: p.id)
        return pets if limit is None else pets[:limit]

    def remove(self, pet_id: int) -> bool:
        with self._lock:
            return self._pets.pop(pet_id, None) is not None


class PetSchema(Schema):
    id = fields.Int()
    name = fields.Str()
    tag = fields.Str(allow_none=True)
    age = fields.Int(allow_none=True)
    born = fields.DateTime()
    owner = fields.Str()
    url = fields.Function(lambda pet: url_for("get_pet", pet_id=pet.id, _external=True))


class NewPetSchema(Schema):
    name = fields.Str(required=True)
    tag = fields.Str()
    age = fields.Int(strict=True)


class PetUpdateSchema(Schema):
    name = fields.Str()
    tag = fields.Str()
    age = fields.Int(strict=True)


class ListArgs(Schema):
    limit = fields.Int()


def user_from_token() -> str:
    """The caller's name from ``Authorization: Bearer ...``; 401 otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = TOKENS.get(token) if scheme == "Bearer" else None
    if user is None:
        abort(401, "invalid token")
    return user


def create_app(store: PetStore | None = None) -> Flask:
    app = Flask(__name__)
    CORS(app)
    pets = store or PetStore()
    app.extensions["petstore"] = pets
    dump = PetSchema()

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        data = getattr(error, "data", None) or {}
        if "messages" in data:  # webargs: every field's messages, by location
            return jsonify({"errors": data["messages"]}), error.code, data.get("headers") or {}
        return jsonify({"error": {"code": error.code, "message": error.description}}), error.code

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/pets")
    def list_pets() -> Any:
        args = parser.parse(ListArgs(), request, location="query")
        return jsonify(dump.dump(pets.listed(args.get("limit")), many=True))

    @app.post("/pets")
    def create_pet() -> Any:
        g.user = user_from_token()
        if request.content_type != "application/json":
            abort(415, "expected Content-Type: application/json")
        data = parser.parse(NewPetSchema(), request, location="json")
        pet = pets.add(name=data["name"], tag=data.get("tag"), age=data.get("age"), owner=g.user)
        location = url_for("get_pet", pet_id=pet.id, _external=True)
        return jsonify(dump.dump(pet)), 201, {"Location": location}

    @app.get("/pets/<int:pet_id>")
    def get_pet(pet_id: int) -> Any:
        pet = pets.get(pet_id)
        if pet is None:
            abort(404, f"pet {pet_id} not found")
        return jsonify(dump.dump(pet))

    @app.put("/pets/<int:pet_id>")
    def update_pet(pet_id: int) -> Any:
        pet = pets.get(pet_id)
        if pet is None:
            abort(404, f"pet {pet_id} not found")
        data = parser.parse(PetUpdateSchema(), request, location="json")
        for key, value in data.items():
            setattr(pet, key, value)
        return jsonify(dump.dump(pet))

    @app.delete("/pets/<int:pet_id>")
    def delete_pet(pet_id: int) -> Any:
        user_from_token()
        if not pets.remove(pet_id):
            abort(404, f"pet {pet_id} not found")
        return "", 204

    return app

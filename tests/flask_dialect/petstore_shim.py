"""The pet store's routes moved to rpckit: handlers on the app's own model, the shim in front.

Everything the contract needs is configuration: the Flask dialect (on by default
in front of a Flask app), the legacy JSON profile (marshmallow's date-times and
nulls), webargs body mode with the required fields, the strict content type, the
absolute ``Location``, the bearer-token guard handing the user to the handler,
and an error renderer that words errors as the app's error handler and webargs did.
"""

from __future__ import annotations

import datetime
from typing import Any

import grpc
from flask import Flask, url_for
from google.protobuf import empty_pb2, timestamp_pb2

import rpckit
from rpckit.http import (
    FieldViolation,
    GuardedCall,
    HttpError,
    LegacyProfile,
    RouteOptions,
    Shim,
    ShimConfig,
    guard_identity,
)
from tests.flask_dialect.petstore_app import TOKENS, Pet, PetStore, create_app
from tests.protos._gen.petstore.v1 import petstore_pb2 as pb
from tests.protos._gen.petstore.v1 import petstore_pb2_grpc as pb_grpc

SERVICE = "petstore.v1.PetStore"

#: webargs' location names, by the shim's.
WEBARGS_LOCATIONS = {"body": "json", "query": "query", "path": "view_args", "header": "headers"}

#: marshmallow's messages for what the shim finds.
MARSHMALLOW_TYPE_MESSAGES = {
    "integer": "Not a valid integer.",
    "string": "Not a valid string.",
    "number": "Not a valid number.",
    "boolean": "Not a valid boolean.",
}


def marshmallow_message(violation: FieldViolation) -> str:
    if violation.reason == "missing":
        return "Missing data for required field."
    if violation.reason == "unknown_fields":
        return "Unknown field."
    return MARSHMALLOW_TYPE_MESSAGES.get(violation.expected, "Invalid value.")


def render_like_the_app(error: HttpError) -> Any:
    """The app's error handler's body, and webargs' for field errors."""
    if error.violations:
        errors: dict[str, dict[str, list[str]]] = {}
        for violation in error.violations:
            where = errors.setdefault(WEBARGS_LOCATIONS[violation.location], {})
            where.setdefault(violation.field, []).append(marshmallow_message(violation))
        return {"errors": errors}
    if error.reason == "malformed_json":
        return {"errors": {"json": ["Invalid JSON body."]}}
    return {"error": {"code": error.status, "message": error.message}}


def bearer_user(call: GuardedCall) -> str:
    """The app's token check, run once: the user is the handler's ``guard_identity()``."""
    scheme, _, token = (call.header("authorization") or "").partition(" ")
    user = TOKENS.get(token) if scheme == "Bearer" else None
    if user is None:
        raise rpckit.StatusError(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
    return user


class PetStoreService(pb_grpc.PetStoreServicer):
    """The pet routes as gRPC handlers, on the app's own ``PetStore``."""

    def __init__(self, store: PetStore) -> None:
        self._store = store

    @staticmethod
    def _message(pet: Pet) -> pb.Pet:
        born = timestamp_pb2.Timestamp()
        born.FromDatetime(pet.born.astimezone(datetime.UTC).replace(tzinfo=None))
        message = pb.Pet(
            id=pet.id,
            name=pet.name,
            born=born,
            owner=pet.owner,
            # Inside the app's request context (the Flask dialect), as the view was.
            url=url_for("get_pet", pet_id=pet.id, _external=True),
        )
        if pet.tag is not None:
            message.tag = pet.tag
        if pet.age is not None:
            message.age = pet.age
        return message

    def _found(self, pet_id: int) -> Pet:
        pet = self._store.get(pet_id)
        if pet is None:
            raise rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"pet {pet_id} not found")
        return pet

    def ListPets(
        self, request: pb.ListPetsRequest, context: grpc.ServicerContext
    ) -> pb.ListPetsResponse:
        limit = request.limit if request.HasField("limit") else None
        return pb.ListPetsResponse(pets=[self._message(p) for p in self._store.listed(limit)])

    def CreatePet(self, request: pb.CreatePetRequest, context: grpc.ServicerContext) -> pb.Pet:
        owner = guard_identity()
        assert isinstance(owner, str)
        new = request.pet
        pet = self._store.add(
            name=new.name,
            tag=new.tag if new.HasField("tag") else None,
            age=new.age if new.HasField("age") else None,
            owner=owner,
        )
        return self._message(pet)

    def GetPet(self, request: pb.GetPetRequest, context: grpc.ServicerContext) -> pb.Pet:
        return self._message(self._found(request.pet_id))

    def UpdatePet(self, request: pb.UpdatePetRequest, context: grpc.ServicerContext) -> pb.Pet:
        pet = self._found(request.pet_id)
        for field in ("name", "tag", "age"):
            if request.pet.HasField(field):
                setattr(pet, field, getattr(request.pet, field))
        return self._message(pet)

    def DeletePet(
        self, request: pb.GetPetRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if not self._store.remove(request.pet_id):
            raise rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"pet {request.pet_id} not found")
        return empty_pb2.Empty()


#: marshmallow's date-times and nulls, Flask's jsonify bytes otherwise.
PETSTORE_PROFILE = LegacyProfile(
    datetime_style="isoformat", unset_optional="null", unknown_fields="reject"
)


def petstore_routes() -> dict[str, RouteOptions]:
    """Every pet route's options: the whole contract, as configuration."""
    return {
        SERVICE: RouteOptions(json=PETSTORE_PROFILE, strict_types=True, query_ints="python"),
        f"{SERVICE}.CreatePet": RouteOptions(
            guard=bearer_user,
            content_types=["application/json"],
            body_mode="webargs",
            required_fields=["name"],
            success_status=201,
            response_headers=[("Location", "{$scheme}://{$host}{$script_root}/pets/{id}")],
        ),
        f"{SERVICE}.ListPets": RouteOptions(body_mode="webargs"),
        f"{SERVICE}.UpdatePet": RouteOptions(body_mode="webargs"),
        f"{SERVICE}.DeletePet": RouteOptions(guard=bearer_user, success_status=204),
    }


def migrated_app(store: PetStore | None = None) -> Flask:
    """The pet store with every pet route answered by rpckit, the rest by Flask."""
    pets = store or PetStore()
    app = create_app(pets)
    app.wsgi_app = Shim(  # type: ignore[method-assign]
        services=[PetStoreService(pets)],
        fallback=app.wsgi_app,
        routes=petstore_routes(),
        config=ShimConfig(error_renderer=render_like_the_app),
    )
    return app

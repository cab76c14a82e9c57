"""Flask apps built to be scanned: blueprints, converters, methods, error handlers, factories."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

from flask import Blueprint, Flask, Response, jsonify, render_template_string, request
from flask.views import MethodView
from werkzeug.routing import BaseConverter, IntegerConverter


class SkuConverter(BaseConverter):
    """An app's own converter: upper-case SKUs."""

    regex = r"[A-Z0-9-]+"


class EvenConverter(IntegerConverter):
    """A custom converter built on int."""


class UserOut(TypedDict):
    id: int
    name: str
    email: str | None


@dataclasses.dataclass
class NewUser:
    name: str
    admin: bool


class NotAllowedError(Exception):
    pass


def _shop_blueprint() -> Blueprint:
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.route("/products/<sku:sku>")
    def get_product(sku: str) -> Response:
        return jsonify(sku=sku, price=1.5)

    @shop.route("/products", methods=["GET", "POST"])
    def products() -> Response:
        if request.method == "POST":
            return jsonify(request.get_json()), 201  # type: ignore[return-value]
        limit = request.args.get("limit", type=int)
        return jsonify(items=[], limit=limit)

    @shop.route("/orders/<int:order_id>/lines/<int(min=1):line>", methods=["GET", "DELETE"])
    def order_line(order_id: int, line: int) -> Response:
        return jsonify(order=order_id, line=line)

    @shop.route("/files/<path:name>")
    def file_meta(name: str) -> Response:
        return jsonify(name=name)

    @shop.route("/even/<even:n>")
    def even(n: int) -> Response:
        return jsonify(n=n)

    @shop.route("/report/<uuid:rid>.csv")
    def report_csv(rid: str) -> Response:
        return jsonify(rid=str(rid))

    @shop.errorhandler(NotAllowedError)
    def not_allowed(exc: NotAllowedError) -> tuple[Response, int]:
        return jsonify(error="no"), 403

    return shop


class ItemAPI(MethodView):
    def get(self, item_id: int) -> Response:
        return jsonify(id=item_id)

    def put(self, item_id: int) -> Response:
        return jsonify(request.get_json())

    def delete(self, item_id: int) -> tuple[str, int]:
        return "", 204


def create_shop_app() -> Flask:
    """Fixture app 1: a shop with a blueprint, custom converters, a MethodView, handlers."""
    app = Flask("shop_fixture")
    app.url_map.converters["sku"] = SkuConverter
    app.url_map.converters["even"] = EvenConverter
    app.register_blueprint(_shop_blueprint())
    app.add_url_rule("/items/<int:item_id>", view_func=ItemAPI.as_view("item"))

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[Response, int]:
        return jsonify(error="not found"), 404

    @app.route("/pages/", defaults={"page": 1}, strict_slashes=False)
    @app.route("/pages/<int:page>")
    def pages(page: int) -> Response:
        return jsonify(page=page)

    return app


def create_portal_app() -> Flask:
    """Fixture app 2: JSON with type hints, and an HTML, a form and a streaming route."""
    app = Flask("portal_fixture")
    users = Blueprint("users", __name__)

    @users.get("/users/<int:user_id>")
    def get_user(user_id: int) -> UserOut:
        return {"id": user_id, "name": "x", "email": None}

    @users.post("/users")
    def create_user(body: NewUser) -> UserOut:
        return {"id": 1, "name": body.name, "email": None}

    app.register_blueprint(users)

    @app.route("/")
    def home() -> str:
        return render_template_string("<h1>{{ title }}</h1>", title="home")

    @app.route("/login", methods=["POST"])
    def login() -> Response:
        return jsonify(user=request.form["user"])

    @app.route("/events")
    def events() -> Response:
        def generate() -> Iterator[str]:
            yield "data: 1\n\n"

        return Response(generate(), mimetype="text/event-stream")

    @app.route("/upload", methods=["POST"])
    def upload() -> Response:
        return jsonify(size=len(request.files["f"].read()))

    app.register_error_handler(NotAllowedError, lambda exc: (jsonify(error="no"), 403))
    return app


def create_things_app(*, rename: bool = False) -> Flask:
    """For diff: a random id in every answer (noise), ``name`` (``title`` with ``rename``)."""
    app = Flask("things_fixture")

    @app.get("/things/<int:n>")
    def thing(n: int) -> Any:
        key = "title" if rename else "name"
        return jsonify({"id": str(uuid.uuid4()), key: f"t{n}", "n": n})

    @app.post("/things")
    def create() -> Any:
        return jsonify(request.get_json()), 201

    return app


def create_renamed_things_app() -> Flask:
    """:func:`create_things_app` with ``name`` renamed ``title``: a seeded difference."""
    return create_things_app(rename=True)


def create_broken_app() -> Flask:
    """A factory that raises, as a misconfigured app does."""
    raise RuntimeError("DATABASE_URL is not set")

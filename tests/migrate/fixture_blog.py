"""A Flask blog whose views load and dump marshmallow schemas, built to be scanned.

The schemas are reached every way a view reaches one: a module-level instance,
a factory-local one (a closure), a class called with ``many=True``, a class
view's attribute (``self.schema``). ``PostSchema`` nests an author, a schema
nested in itself (``parent``), ``data_key``, ``load_only`` / ``dump_only``,
nullable, map and list fields.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from flask.views import MethodView
from marshmallow import Schema, fields


class AuthorSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class PostSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = fields.String(required=True)
    body = fields.String(required=True, data_key="content")
    tags = fields.List(fields.String())
    draft = fields.Boolean(load_default=False)
    score = fields.Float()
    views = fields.Dict(keys=fields.String(), values=fields.Integer())
    published_at = fields.DateTime(allow_none=True)
    author = fields.Nested(AuthorSchema, dump_only=True)
    parent = fields.Nested("PostSchema", dump_only=True)  # by name: marshmallow's registry
    edit_token = fields.String(load_only=True)
    extra = fields.Raw()


class SignatureSchema(Schema):
    """A schema that cannot be built without arguments: no hint, no crash."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret


post_schema = PostSchema()
POST: dict[str, Any] = {
    "id": 1,
    "title": "t",
    "body": "b",
    "tags": ["x"],
    "draft": False,
    "score": 0.5,
    "views": {"2024-01": 3},
    "published_at": None,
    "author": {"id": 7, "name": "ann"},
}


class PostAPI(MethodView):
    schema = PostSchema()

    def get(self, post_id: int) -> Any:
        return self.schema.dump({**POST, "id": post_id})

    def put(self, post_id: int) -> Any:
        data = self.schema.load(request.get_json())
        return self.schema.dump({**POST, **data, "id": post_id})


def create_blog_app() -> Flask:
    app = Flask("blog_fixture")
    posts = Blueprint("posts", __name__, url_prefix="/posts")
    author_schema = AuthorSchema()  # a closure of the views below

    @posts.get("")
    def list_posts() -> Response:
        return jsonify(PostSchema(many=True).dump([POST]))

    @posts.post("")
    def create_post() -> Any:
        data = post_schema.load(request.get_json())
        return post_schema.dump({**POST, **data}), 201

    @posts.get("/<int:post_id>/author")
    def post_author(post_id: int) -> Any:
        return author_schema.dump(POST["author"])

    @posts.post("/<int:post_id>/sign")
    def sign(post_id: int) -> Any:
        payload = json.loads(request.get_data())  # json.loads: not a schema
        errors = SignatureSchema(secret="k").validate(payload)  # a class that needs arguments
        return jsonify(signed=not errors)

    posts.add_url_rule("/<int:post_id>", view_func=PostAPI.as_view("post"))
    app.register_blueprint(posts)
    return app

"""marshmallow schemas as JSON shapes, and the view calls that point scan at them."""

from __future__ import annotations

import json
from typing import Any

from rpckit.migrate._evidence import read_view_source
from rpckit.migrate._infer import Shape, classify
from rpckit.migrate._marshmallow import schema_shape
from rpckit.migrate._routes_in import SchemaUse
from tests.migrate.fixture_blog import AuthorSchema, PostSchema, SignatureSchema


def _shape(candidate: Any, side: str, *, many: bool = False) -> Shape:
    found = schema_shape(candidate, side=side, many=many)
    assert found is not None
    return found[0]


def _field(shape: Shape, key: str) -> Shape:
    found = shape.field(key)
    assert found is not None, key
    return found


def test_request_side_reads_load_fields_by_data_key_with_required_and_types() -> None:
    shape = _shape(PostSchema(), "request")
    assert [key for key, _ in shape.fields] == [
        "title", "content", "tags", "draft", "score", "views", "published_at", "edit_token",
        "extra",
    ]  # fmt: skip
    kinds = {key: classify(s).name for key, s in shape.fields}
    assert kinds == {
        "title": "string",
        "content": "string",  # data_key: the JSON name, not the attribute
        "tags": "repeated",
        "draft": "bool",
        "score": "double",
        "views": "map",
        "published_at": "string",  # nullable (allow_none): a Value in the proto
        "edit_token": "string",
        "extra": "value",  # Raw: anything
    }
    assert not shape.optional("title")
    assert shape.optional("draft")
    assert classify(_field(shape, "published_at")).nullable


def test_response_side_reads_dump_fields_nested_and_cuts_a_cycle() -> None:
    shape = _shape(PostSchema, "response")  # a class: built once, as the view would
    keys = [key for key, _ in shape.fields]
    assert "edit_token" not in keys  # load_only
    assert keys[:2] == ["id", "title"]  # dump_only id is there
    author = _field(shape, "author")
    assert [key for key, _ in author.fields] == ["id", "name"]
    assert classify(_field(author, "id")).name == "int64"
    parent = classify(_field(shape, "parent"))  # PostSchema inside PostSchema
    assert (parent.name, parent.why) == ("value", "declared with a type scan cannot map")


def test_many_on_the_call_or_the_instance_is_an_array_of_objects() -> None:
    for shape in (
        _shape(AuthorSchema, "response", many=True),
        _shape(AuthorSchema(many=True), "response"),
    ):
        kind = classify(shape)
        assert kind.name == "repeated"
        assert kind.element is not None
        assert [key for key, _ in kind.element.fields] == ["id", "name"]


def test_what_is_not_a_buildable_schema_gives_no_hint() -> None:
    for candidate in (json, None, object(), SignatureSchema, "PostSchema", dict):
        assert schema_shape(candidate, side="request") is None, candidate


def test_view_source_names_the_schema_calls_and_their_side() -> None:
    source = """
def view(post_id):
    data = schemas.post.load(request.get_json())
    raw = json.loads(request.get_data())
    self.schema.validate(data)
    return jsonify(PostSchema(many=True).dump(items)), 200
"""
    assert read_view_source(source).schemas == (
        SchemaUse("schemas.post", "request"),
        SchemaUse("self.schema", "request"),
        SchemaUse("PostSchema", "response", many=True),
    )

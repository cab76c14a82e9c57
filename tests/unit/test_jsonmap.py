"""rpckit.http._mapping._jsonmap: the legacy JSON profile, byte for byte against Flask, and back."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import flask
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.core._descriptors import descriptor_of
from rpckit.http._mapping import _jsonmap as jsonmap
from rpckit.http._mapping._jsonmap import (
    JsonError,
    LegacyProfile,
    dumps,
    field_to_obj,
    json_to_message,
    loads,
    message_to_json,
    message_to_obj,
)
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb

BIG = 2**53 + 1  # the first integer a double cannot hold


def rich_item() -> pb.Item:
    item = pb.Item(
        id="i-1",
        display_name="Café ☕ 𝄞",
        quantity=BIG,
        serial=2**64 - 1,
        rank=-7,
        votes=3,
        delta=-(2**63),
        checksum=42,
        price=9.99,
        weight=0.1,
        active=True,
        blob=b"\x00\xff",
        color=pb.COLOR_GREEN,
        tags=["b", "a"],
        counts=[1, -BIG],
        palette=[pb.COLOR_RED, pb.COLOR_BLUE],
        stock={"x": 2**62, "y": 0},
        labels={3: "three", -1: "minus"},
        team_id=BIG,
        note="",
        sku_code="S-1",
    )
    item.address.city = "Zürich"
    item.address.geo.lat = 47.37
    item.history.add(street="Main", city="Bern")
    item.addresses["home"].city = "Basel"
    item.attributes.update({"n": 5, "f": 1.5, "list": [1, "two", None, True], "nested": {"k": 0}})
    item.extra.string_value = "free"
    item.created_at.FromJsonString("2024-01-31T12:00:00.5Z")
    item.parent_id.value = -BIG
    item.ttl.FromJsonString("1.5s")
    return item


# ---------------------------------------------------------------- profile


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"field_names": "camel"}, ValueError),
        ({"enum_style": "label"}, ValueError),
        ({"unknown_fields": "drop"}, ValueError),
        ({"indent": -1}, ValueError),
        ({"indent": True}, TypeError),  # a bool is not an int (rpckit.core._validate)
        ({"separators": (",",)}, ValueError),
        ({"separators": [",", ":"]}, ValueError),
        ({"sort_keys": 1}, TypeError),
    ],
)
def test_profile_rejects_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="LegacyProfile"):
        LegacyProfile(**kwargs)


def test_profile_is_frozen_keyword_only_and_comparable() -> None:
    assert LegacyProfile() == LegacyProfile()
    assert hash(LegacyProfile(indent=2)) == hash(LegacyProfile(indent=2))
    with pytest.raises(TypeError):
        LegacyProfile("proto")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        LegacyProfile().sort_keys = False  # type: ignore[misc]


# ---------------------------------------------------------------- output


def test_default_profile_output_bytes() -> None:
    msg = pb.Book(name="shelves/1/books/2", title="Ünïcode")
    assert message_to_json(msg) == b'{"name":"shelves/1/books/2","title":"\\u00dcn\\u00efcode"}\n'


def test_int64_are_exact_numbers_beyond_2_pow_53() -> None:
    obj = message_to_obj(rich_item())
    assert obj["quantity"] == BIG
    assert isinstance(obj["quantity"], int)
    assert obj["serial"] == 2**64 - 1
    assert obj["delta"] == -(2**63)
    assert obj["counts"] == [1, -BIG]
    assert obj["stock"] == {"x": 2**62, "y": 0}
    assert obj["team_id"] == BIG
    assert obj["parent_id"] == -BIG  # Int64Value wrapper
    assert b'"quantity":9007199254740993' in message_to_json(rich_item())


def test_int64_as_strings_when_asked() -> None:
    obj = message_to_obj(rich_item(), LegacyProfile(int64_as_number=False))
    assert obj["quantity"] == str(BIG)
    assert obj["counts"] == ["1", str(-BIG)]
    assert obj["parent_id"] == str(-BIG)
    assert obj["rank"] == -7


def test_field_names_proto_and_json() -> None:
    item = pb.Item(display_name="d", sku_code="s", user_id="u")
    proto = message_to_obj(item)
    assert {"display_name", "sku_code", "user_id"} <= proto.keys()
    camel = message_to_obj(item, LegacyProfile(field_names="json"))
    assert {"displayName", "SKU", "userId"} <= camel.keys()
    assert "display_name" not in camel


def test_defaults_emitted_or_omitted() -> None:
    item = pb.Item(id="x")
    full = message_to_obj(item)
    assert full["quantity"] == 0
    assert full["tags"] == []
    assert full["stock"] == {}
    assert full["color"] == "COLOR_UNSPECIFIED"
    assert full["blob"] == ""
    # Fields with presence appear only when set, with or without emit_defaults.
    for absent in ("address", "note", "user_id", "team_id", "created_at", "parent_id"):
        assert absent not in full
    assert message_to_obj(item, LegacyProfile(emit_defaults=False)) == {"id": "x"}
    assert message_to_obj(pb.Item(note=""), LegacyProfile(emit_defaults=False)) == {"note": ""}


def test_enum_style() -> None:
    item = pb.Item(color=pb.COLOR_BLUE, palette=[pb.COLOR_RED])
    assert message_to_obj(item)["color"] == "COLOR_BLUE"
    numbers = message_to_obj(item, LegacyProfile(enum_style="number"))
    assert numbers["color"] == 3
    assert numbers["palette"] == [1]


def test_struct_whole_numbers() -> None:
    item = pb.Item()
    item.attributes.update({"count": 5, "ratio": 0.5, "huge": 1e20, "list": [2, 2.5]})
    assert message_to_obj(item)["attributes"] == {
        "count": 5,
        "ratio": 0.5,
        "huge": 1e20,
        "list": [2, 2.5],
    }
    assert isinstance(message_to_obj(item)["attributes"]["count"], int)
    as_floats = message_to_obj(item, LegacyProfile(struct_whole_numbers_as_int=False))
    assert isinstance(as_floats["attributes"]["count"], float)


def test_unsorted_keys_follow_declaration_order() -> None:
    item = pb.Item(sku_code="s", id="i", quantity=1)
    item.address.city = "c"
    profile = LegacyProfile(sort_keys=False, emit_defaults=False)
    assert list(message_to_obj(item, profile)) == ["id", "quantity", "address", "sku_code"]
    assert message_to_json(item, profile) == (
        b'{"id":"i","quantity":1,"address":{"city":"c"},"sku_code":"s"}\n'
    )
    full = message_to_obj(pb.Address(city="c"), LegacyProfile(sort_keys=False))
    assert list(full) == ["street", "city"]


def test_well_known_types_as_json_format() -> None:
    item = rich_item()
    obj = message_to_obj(item)
    assert obj["created_at"] == "2024-01-31T12:00:00.500Z"
    assert obj["ttl"] == "1.500s"
    assert obj["extra"] == "free"
    assert message_to_obj(empty_pb2.Empty()) == {}
    assert message_to_obj(wrappers_pb2.UInt64Value(value=2**64 - 1)) == 2**64 - 1
    assert message_to_obj(struct_pb2.Value(number_value=3)) == 3
    assert message_to_json(struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=True)])) == (
        b"[true]\n"
    )


def test_unrenderable_message_is_a_value_error() -> None:
    item = pb.Item()
    item.extra.number_value = float("nan")
    with pytest.raises(ValueError, match=r"shimtest\.v1\.Item"):
        message_to_obj(item)


def test_field_to_obj_gives_top_level_arrays_and_values() -> None:
    resp = pb.ListItemsResponse(items=[pb.Item(id="a"), pb.Item(id="b")])
    items = field_to_obj(resp, "items")
    assert [i["id"] for i in items] == ["a", "b"]
    assert dumps(field_to_obj(pb.ListItemsResponse(), "items")) == b"[]\n"
    omit = LegacyProfile(emit_defaults=False)
    assert field_to_obj(pb.ListItemsResponse(), "items", omit) == []
    assert field_to_obj(pb.ListItemsResponse(), "next_page_token", omit) == ""
    assert field_to_obj(pb.EchoRequest(tags=["x"]), "tags") == ["x"]
    assert field_to_obj(pb.Item(), "address") is None
    assert field_to_obj(pb.Item(quantity=BIG), "quantity") == BIG
    with pytest.raises(ValueError, match="no field 'nope'"):
        field_to_obj(resp, "nope")


def test_dumps_knobs() -> None:
    obj = {"b": [1, {"é": None}], "a": True}
    assert dumps(obj) == b'{"a":true,"b":[1,{"\\u00e9":null}]}\n'
    plain = LegacyProfile(sort_keys=False, separators=None, trailing_newline=False)
    assert dumps(obj, plain) == json.dumps(obj).encode()
    raw = LegacyProfile(ensure_ascii=False, trailing_newline=False)
    assert dumps(obj, raw) == '{"a":true,"b":[1,{"é":null}]}'.encode()
    indented = LegacyProfile(indent=2, separators=None)
    assert dumps({"a": [1]}, indented) == b'{\n  "a": [\n    1\n  ]\n}\n'


# ---------------------------------------------------------------- Flask byte equality


@pytest.fixture(scope="module")
def flask_app() -> flask.Flask:
    return flask.Flask("legacy")


def flask_bytes(app: flask.Flask, obj: Any, *, debug: bool = False) -> bytes:
    app.debug = debug
    with app.app_context():
        return flask.jsonify(obj).get_data()


def legacy_view_output() -> dict[str, Any]:
    """What the old Flask view returned for rich_item(): a plain dict."""
    return {
        "id": "i-1",
        "display_name": "Café ☕ 𝄞",
        "quantity": BIG,
        "serial": 2**64 - 1,
        "rank": -7,
        "votes": 3,
        "delta": -(2**63),
        "checksum": 42,
        "price": 9.99,
        "weight": 0.1,
        "active": True,
        "blob": "AP8=",
        "color": "COLOR_GREEN",
        "tags": ["b", "a"],
        "counts": [1, -BIG],
        "palette": ["COLOR_RED", "COLOR_BLUE"],
        "stock": {"x": 2**62, "y": 0},
        "labels": {"3": "three", "-1": "minus"},
        "address": {"street": "", "city": "Zürich", "geo": {"lat": 47.37, "lng": 0.0}},
        "history": [{"street": "Main", "city": "Bern"}],
        "team_id": BIG,
        "attributes": {"n": 5, "f": 1.5, "list": [1, "two", None, True], "nested": {"k": 0}},
        "extra": "free",
        "created_at": "2024-01-31T12:00:00.500Z",
        "parent_id": -BIG,
        "note": "",
        "addresses": {"home": {"street": "", "city": "Basel"}},
        "ttl": "1.500s",
        "sku_code": "S-1",
    }


def test_reproduces_a_legacy_views_jsonify_bytes(flask_app: flask.Flask) -> None:
    assert message_to_json(rich_item()) == flask_bytes(flask_app, legacy_view_output())


def test_reproduces_flask_debug_mode_bytes(flask_app: flask.Flask) -> None:
    profile = LegacyProfile(indent=2, separators=None)
    expected = flask_bytes(flask_app, legacy_view_output(), debug=True)
    assert b"\n  " in expected
    assert message_to_json(rich_item(), profile) == expected


def test_top_level_array_matches_flask(flask_app: flask.Flask) -> None:
    resp = pb.ListItemsResponse(items=[rich_item(), pb.Item(id="2")])
    items = field_to_obj(resp, "items")
    assert dumps(items) == flask_bytes(flask_app, items)
    assert dumps(items).startswith(b"[{")


# ---------------------------------------------------------------- strategies

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
int64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from([BIG, -BIG, 2**63 - 1, -(2**63)])
)
uint64 = st.integers(0, 2**64 - 1)
doubles = st.floats(allow_nan=False)
# protobuf's json_format prints float32's largest finite value as 3.4028235e+38 (shortest
# float32 repr), which is above FLT_MAX as a double, and then refuses to parse it back ("Float
# value too large"): a protobuf limitation, not the profile's. Every other float32 round-trips.
FLOAT32_MAX = 3.4028234663852886e38
floats32 = st.floats(width=32, allow_nan=False).filter(lambda f: abs(f) != FLOAT32_MAX)
# 7: an unknown value of an open enum.
colors = st.sampled_from([0, 1, 2, 3, 7]).map(pb.Color.ValueType)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def addresses(draw: st.DrawFn) -> pb.Address:
    address = pb.Address(street=draw(text), city=draw(text))
    if draw(st.booleans()):
        address.geo.lat = draw(doubles)
        address.geo.lng = draw(doubles)
    return address


@st.composite
def items(draw: st.DrawFn) -> pb.Item:
    item = pb.Item(
        id=draw(text),
        display_name=draw(text),
        quantity=draw(int64),
        serial=draw(uint64),
        rank=draw(int32),
        votes=draw(uint32),
        delta=draw(int64),
        checksum=draw(uint64),
        price=draw(doubles),
        weight=draw(floats32),
        active=draw(st.booleans()),
        blob=draw(st.binary(max_size=8)),
        color=draw(colors),
        tags=draw(st.lists(text, max_size=3)),
        counts=draw(st.lists(int64, max_size=3)),
        palette=draw(st.lists(colors, max_size=3)),
        stock=draw(st.dictionaries(text, int64, max_size=3)),
        labels=draw(st.dictionaries(int32, text, max_size=3)),
        sku_code=draw(text),
    )
    if draw(st.booleans()):
        item.address.CopyFrom(draw(addresses()))
    item.history.extend(draw(st.lists(addresses(), max_size=2)))
    for key, address in draw(st.dictionaries(text, addresses(), max_size=2)).items():
        item.addresses[key].CopyFrom(address)
    owner = draw(st.sampled_from(["none", "user", "team"]))
    if owner == "user":
        item.user_id = draw(text)
    elif owner == "team":
        item.team_id = draw(int64)
    if draw(st.booleans()):
        item.attributes.update(draw(st.dictionaries(text, json_values, max_size=3)))
    if draw(st.booleans()):
        json_to_value(draw(json_values), item.extra)
    if draw(st.booleans()):
        item.created_at.seconds = draw(st.integers(-62135596800, 253402300799))
        item.created_at.nanos = draw(st.integers(0, 999_999_999))
    if draw(st.booleans()):
        item.parent_id.value = draw(int64)
    if draw(st.booleans()):
        item.note = draw(text)
    if draw(st.booleans()):
        seconds = draw(st.integers(-315576000000, 315576000000))
        nanos = draw(st.integers(0, 999_999_999))
        item.ttl.seconds, item.ttl.nanos = seconds, (-nanos if seconds < 0 else nanos)
    return item


def json_to_value(obj: Any, value: struct_pb2.Value) -> None:
    holder = struct_pb2.Struct()
    holder.update({"v": obj})
    value.CopyFrom(holder.fields["v"])


PROFILES = [
    LegacyProfile(),
    LegacyProfile(
        field_names="json",
        int64_as_number=False,
        emit_defaults=False,
        enum_style="number",
        struct_whole_numbers_as_int=False,
        sort_keys=False,
        ensure_ascii=False,
        indent=1,
        separators=None,
        trailing_newline=False,
        unknown_fields="reject",
    ),
]


def same(a: pb.Item, b: pb.Item) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@settings(deadline=None, max_examples=150, derandomize=True)
@given(item=items(), profile=st.sampled_from(PROFILES))
def test_round_trip_is_lossless(item: pb.Item, profile: LegacyProfile) -> None:
    data = message_to_json(item, profile)
    back = json_to_message(data, pb.Item, profile)
    assert same(back, item), data


@settings(deadline=None, max_examples=60, derandomize=True)
@given(item=items())
def test_flask_jsonify_bytes_equal_for_generated_items(item: pb.Item) -> None:
    app = flask.Flask("generated")
    obj = message_to_obj(item)
    with app.app_context():
        assert flask.jsonify(obj).get_data() == message_to_json(item)


@settings(deadline=None, max_examples=100, derandomize=True)
@given(value=st.one_of(int64, uint64))
def test_big_integers_survive_the_trip(value: int) -> None:
    item = pb.Item(quantity=value if value < 2**63 else 0, serial=max(value, 0))
    data = message_to_json(item)
    assert str(item.quantity).encode() in data
    assert str(item.serial).encode() in data
    assert same(json_to_message(data, pb.Item), item)


# ---------------------------------------------------------------- input


def test_parses_both_spellings_and_all_number_forms() -> None:
    data = {
        "displayName": "camel",
        "sku_code": "proto",
        "quantity": str(BIG),
        "serial": 2**64 - 1,
        "rank": 5.0,
        "color": "COLOR_RED",
        "palette": [2, "COLOR_BLUE"],
        "stock": {"a": BIG},
        "labels": {"7": "seven"},
        "teamId": "12",
    }
    item = json_to_message(data, pb.Item)
    assert item.display_name == "camel"
    assert item.sku_code == "proto"
    assert item.quantity == BIG
    assert item.serial == 2**64 - 1
    assert item.rank == 5
    assert item.color == pb.COLOR_RED
    assert list(item.palette) == [2, 3]
    assert item.stock["a"] == BIG
    assert item.labels[7] == "seven"
    assert item.WhichOneof("owner") == "team_id"
    assert item.team_id == 12
    item2 = json_to_message(b'{"SKU": "json_name", "user_id": "u"}', pb.Item)
    assert item2.sku_code == "json_name"
    assert item2.user_id == "u"


def test_parses_well_known_types() -> None:
    item = json_to_message(
        {
            "created_at": "2024-01-31T12:00:00Z",
            "ttl": "2s",
            "parent_id": BIG,
            "attributes": {"a": [1, {"b": None}]},
            "extra": None,
        },
        pb.Item,
    )
    assert item.created_at.seconds == 1706702400
    assert item.ttl.seconds == 2
    assert item.parent_id.value == BIG
    b_value = item.attributes.fields["a"].list_value.values[1].struct_value.fields["b"]
    assert b_value.WhichOneof("kind") == "null_value"
    assert item.extra.WhichOneof("kind") == "null_value"
    ts = json_to_message(b'"1970-01-01T00:00:01Z"', timestamp_pb2.Timestamp)
    assert ts.seconds == 1
    assert json_to_message(b"[1, 2]", struct_pb2.ListValue).values[1].number_value == 2
    assert json_to_message(b"{}", empty_pb2.Empty) == empty_pb2.Empty()
    assert json_to_message(b'"3s"', duration_pb2.Duration).seconds == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'{"id": "a",}',
            "Expecting property name enclosed in double quotes: line 1 column 12 (char 11)",
        ),
        (b'{"id": "a" "b"}', "Expecting ',' delimiter: line 1 column 12 (char 11)"),
        (b'{\n  "id": \n}', "Expecting value: line 3 column 1 (char 11)"),
        (b"", "Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_malformed_json_reports_the_position(data: bytes, message: str) -> None:
    with pytest.raises(JsonError) as caught:
        json_to_message(data, pb.Item)
    assert str(caught.value) == message
    assert caught.value.fields == ()
    assert caught.value.pos == int(message.rsplit("char ", 1)[1].rstrip(")"))
    assert caught.value.lineno is not None
    assert caught.value.colno is not None


def test_undecodable_body() -> None:
    with pytest.raises(JsonError, match="not valid Unicode"):
        loads(b'{"id": "\xff"}')


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (
            {"quantity": "many"},
            "quantity",
            'expected an integer from -9223372036854775808 to 9223372036854775807, got "many"',
        ),
        (
            {"rank": 2**31},
            "rank",
            "expected an integer from -2147483648 to 2147483647, got 2147483648",
        ),
        ({"rank": 1.5}, "rank", "expected an integer"),
        ({"votes": -1}, "votes", "expected an integer from 0 to 4294967295"),
        ({"active": "yes"}, "active", 'expected true or false, got "yes"'),
        ({"price": "cheap"}, "price", 'expected a number, got "cheap"'),
        ({"id": 5}, "id", "expected a string, got 5"),
        ({"color": "PINK"}, "color", "expected one of COLOR_UNSPECIFIED, COLOR_RED"),
        ({"tags": "a"}, "tags", 'expected a JSON array, got "a"'),
        ({"tags": ["a", 1]}, "tags[1]", "expected a string, got 1"),
        ({"counts": [1, None]}, "counts[1]", "got null"),
        ({"stock": {"a": "x"}}, "stock[a]", 'got "x"'),
        ({"stock": []}, "stock", "expected a JSON object, got []"),
        ({"labels": {"x": "y"}}, "labels[x]", "map key: expected an integer from -2147483648"),
        ({"address": "Main St"}, "address", 'expected a JSON object, got "Main St"'),
        ({"address": []}, "address", "expected a JSON object, got []"),
        ({"address": {"geo": {"lat": "N"}}}, "address.geo.lat", 'expected a number, got "N"'),
        ({"history": [{}, {"geo": 1}]}, "history[1].geo", "expected a JSON object, got 1"),
        ({"history": [None]}, "history[0]", "expected a JSON object, got null"),
        ({"addresses": {"h": {"city": 1}}}, "addresses[h].city", "expected a string, got 1"),
        ({"created_at": "yesterday"}, "created_at", "expected an RFC 3339 timestamp string"),
        ({"ttl": 5}, "ttl", 'expected a duration string such as "1.5s", got 5'),
        ({"parent_id": "x"}, "parent_id", "expected an integer from -9223372036854775808"),
        ({"attributes": [1]}, "attributes", "expected a JSON object, got [1]"),
        ({"user_id": "u", "teamId": 3}, "teamId", "only one field of oneof 'owner' may be set"),
        ({"displayName": "a", "SKU": {"x": 1}}, "SKU", "expected a string"),
    ],
)
def test_wrong_types_name_the_field_path(data: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(JsonError) as caught:
        json_to_message(data, pb.Item)
    assert caught.value.fields == (path,)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_top_level_must_be_an_object() -> None:
    for data in (b"[]", b"3", b'"x"', b"null"):
        with pytest.raises(JsonError, match="expected a JSON object"):
            json_to_message(data, pb.Item)
    with pytest.raises(JsonError, match="expected an integer"):
        json_to_message(b'"x"', wrappers_pb2.Int64Value)


def test_unknown_fields_rejected_all_named() -> None:
    data = {
        "id": "ok",
        "colour": "red",
        "address": {"city": "c", "zip": 1},
        "history": [{}, {"geo": {"alt": 3}}],
        "addresses": {"home": {"floor": 2}},
        "attributes": {"anything": "goes"},
    }
    with pytest.raises(JsonError) as caught:
        json_to_message(data, pb.Item, LegacyProfile(unknown_fields="reject"))
    assert caught.value.fields == (
        "colour",
        "address.zip",
        "history[1].geo.alt",
        "addresses[home].floor",
    )
    assert str(caught.value) == (
        "unknown fields: colour, address.zip, history[1].geo.alt, addresses[home].floor"
    )
    with pytest.raises(JsonError, match=r"^x: unknown field$"):
        json_to_message({"x": 1}, pb.Item, LegacyProfile(unknown_fields="reject"))


def test_unknown_fields_ignored_but_known_ones_kept() -> None:
    data = {"id": "ok", "colour": "red", "history": [{"city": "c", "zip": 1}]}
    item = json_to_message(data, pb.Item)  # default: ignore, as a Flask view did
    assert item.id == "ok"
    assert item.history[0].city == "c"
    assert data["history"] == [{"city": "c", "zip": 1}]  # the caller's object is untouched
    # An unknown enum *value* is a wrong value, not an unknown field.
    with pytest.raises(JsonError, match="color"):
        json_to_message({"color": "PINK"}, pb.Item)


def test_deep_nesting_is_refused() -> None:
    value: Any = "leaf"
    for _ in range(150):
        value = {"v": value}
    with pytest.raises(JsonError, match="deep"):
        json_to_message({"attributes": value}, pb.Item)
    with pytest.raises(JsonError) as caught:
        json_to_message({"attributes": value}, pb.Item)
    assert caught.value.fields == ("attributes",)
    assert caught.value.reason == "nested deeper than 100 levels"


# ---------------------------------------------------------------- output, direct path

# message_to_obj renders plain message types directly, without json_format; the result must be
# what json_format.MessageToDict plus the legacy adjustments give, for every profile.


def _plain_types() -> tuple[Any, Any]:  # classes built at run time: no static fields to check
    """A proto3 message with every field shape the direct path renders, built at run time."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="rpckit_test_direct.proto", package="direct", syntax="proto3"
    )
    color = fd.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"]):
        color.value.add(name=name, number=number)
    field = descriptor_pb2.FieldDescriptorProto
    sub = fd.message_type.add(name="Sub")
    sub.field.add(name="x", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    sub.field.add(name="ys", number=2, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    plain = fd.message_type.add(name="Plain")
    scalars = [
        ("s", field.TYPE_STRING),
        ("b", field.TYPE_BOOL),
        ("i32", field.TYPE_INT32),
        ("u32", field.TYPE_UINT32),
        ("i64", field.TYPE_INT64),
        ("u64", field.TYPE_UINT64),
        ("s64", field.TYPE_SINT64),
        ("d", field.TYPE_DOUBLE),
        ("long_name", field.TYPE_STRING),
    ]
    number = 0
    for number, (name, kind) in enumerate(scalars, start=1):
        plain.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    plain.field.add(
        name="color", number=20, type=field.TYPE_ENUM, type_name=".direct.Color",
        label=field.LABEL_OPTIONAL,
    )  # fmt: skip
    plain.field.add(
        name="colors", number=21, type=field.TYPE_ENUM, type_name=".direct.Color",
        label=field.LABEL_REPEATED,
    )  # fmt: skip
    plain.field.add(name="ds", number=22, type=field.TYPE_DOUBLE, label=field.LABEL_REPEATED)
    plain.field.add(
        name="sub", number=23, type=field.TYPE_MESSAGE, type_name=".direct.Sub",
        label=field.LABEL_OPTIONAL,
    )  # fmt: skip
    plain.field.add(
        name="subs", number=24, type=field.TYPE_MESSAGE, type_name=".direct.Sub",
        label=field.LABEL_REPEATED,
    )  # fmt: skip
    plain.oneof_decl.add(name="choice")
    plain.field.add(
        name="a", number=25, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL, oneof_index=0
    )
    plain.field.add(
        name="n", number=26, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL, oneof_index=0
    )
    plain.oneof_decl.add(name="_opt")
    plain.field.add(
        name="opt", number=27, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL,
        oneof_index=1, proto3_optional=True,
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("direct.Plain")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("direct.Sub")),
    )


Plain, Sub = _plain_types()

any_doubles = st.one_of(st.floats(), st.sampled_from([-0.0, 0.0, math.inf, -math.inf, math.nan]))


@st.composite
def plains(draw: st.DrawFn) -> Any:  # a dynamic message class: no static attributes
    msg: Any = Plain(
        s=draw(text), b=draw(st.booleans()), i32=draw(int32), u32=draw(uint32),
        i64=draw(int64), u64=draw(uint64), s64=draw(int64), d=draw(any_doubles),
        long_name=draw(text), color=draw(st.sampled_from([0, 1, 2, 9])),
        colors=draw(st.lists(st.sampled_from([0, 1, 2]), max_size=3)),
        ds=draw(st.lists(any_doubles, max_size=3)),
    )  # fmt: skip
    if draw(st.booleans()):
        msg.sub.x = draw(text)
        msg.sub.ys.extend(draw(st.lists(int64, max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        msg.subs.add(x=draw(text), ys=draw(st.lists(int64, max_size=2)))
    choice = draw(st.sampled_from(["none", "a", "n"]))
    if choice == "a":
        msg.a = draw(text)
    elif choice == "n":
        msg.n = draw(int64)
    if draw(st.booleans()):
        msg.opt = draw(text)
    return msg


def through_json_format(msg: Message, profile: LegacyProfile) -> bytes:
    """What message_to_json gave before the direct path (json_format for every type)."""
    direct = jsonmap._direct_plan
    jsonmap._direct_plan = lambda desc, profile: None
    try:
        return message_to_json(msg, LegacyProfile(**profile_settings(profile)))
    finally:
        jsonmap._direct_plan = direct


def profile_settings(profile: LegacyProfile) -> dict[str, Any]:
    return {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.init}


ALL_PROFILES = [
    *PROFILES,
    LegacyProfile(int64_as_number=False),
    LegacyProfile(field_names="json", sort_keys=False),
    LegacyProfile(emit_defaults=False, enum_style="number"),
]


def test_plain_types_take_the_direct_path_and_others_do_not() -> None:
    for profile in ALL_PROFILES:
        cases: list[tuple[type[Message], bool]] = [
            (Plain, True),
            (pb.Address, True),
            (pb.Item, False),  # maps, bytes, floats
            (pb.Event, False),  # Struct
        ]
        for message_class, direct in cases:
            desc = descriptor_of(message_class)
            assert (jsonmap._direct_plan(desc, profile) is not None) is direct, desc.full_name


@settings(deadline=None, max_examples=300, derandomize=True)
@given(msg=plains(), profile=st.sampled_from(ALL_PROFILES))
def test_direct_path_renders_what_json_format_does(msg: Message, profile: LegacyProfile) -> None:
    assert message_to_json(msg, profile) == through_json_format(msg, profile)


@settings(deadline=None, max_examples=100, derandomize=True)
@given(address=addresses(), profile=st.sampled_from(ALL_PROFILES))
def test_direct_path_for_nested_doubles(address: pb.Address, profile: LegacyProfile) -> None:
    assert message_to_json(address, profile) == through_json_format(address, profile)


def test_direct_path_edge_values() -> None:
    for msg in (
        Plain(),
        Plain(d=-0.0),
        Plain(d=math.nan, ds=[math.inf]),
        Plain(color=9),  # unknown number of an open enum: json_format renders it
        Plain(sub=Sub()),  # an empty but set message
        Plain(n=0),  # a oneof member set to its default
        Plain(opt=""),  # a proto3 optional set to its default
    ):
        for profile in ALL_PROFILES:
            assert message_to_json(msg, profile) == through_json_format(msg, profile), msg

"""rpckit.core._descriptors: the descriptor facts the mapping, routes, OpenAPI and shim share."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor, struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.any_pb2 import Any as AnyMessage

from rpckit.core._descriptors import (
    INT_RANGES,
    FieldPathError,
    descriptor_of,
    fields_on_path,
    is_map,
    is_plain_message,
    is_text_settable,
    is_wrapper,
    message_type_of,
)
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb

ITEM = descriptor_of(pb.Item)
LIST = descriptor_of(pb.ListItemsRequest)


@pytest.mark.parametrize(
    ("desc", "name", "expected"),
    [
        (ITEM, "stock", True),  # map<string, int64>
        (ITEM, "addresses", True),  # map<string, Address>
        (ITEM, "address", False),  # a message
        (ITEM, "id", False),
        (LIST, "tag", False),  # repeated string
        (LIST, "examples", False),  # repeated message
    ],
)
def test_is_map(desc: descriptor.Descriptor, name: str, *, expected: bool) -> None:
    assert is_map(desc.fields_by_name[name]) is expected


@pytest.mark.parametrize(
    ("message", "plain", "text", "wrapper"),
    [
        (pb.Item, True, False, False),
        (timestamp_pb2.Timestamp, False, True, False),
        (struct_pb2.Struct, False, True, False),
        (AnyMessage, False, False, False),
        (wrappers_pb2.Int32Value, False, True, True),
        (wrappers_pb2.StringValue, False, True, True),
    ],
)
def test_message_kinds(message: type, *, plain: bool, text: bool, wrapper: bool) -> None:
    desc = descriptor_of(message)
    assert (is_plain_message(desc), is_text_settable(desc), is_wrapper(desc)) == (
        plain,
        text,
        wrapper,
    )


def test_message_type_of_a_scalar_is_a_type_error_naming_it() -> None:
    assert message_type_of(ITEM.fields_by_name["address"]).full_name == "shimtest.v1.Address"
    with pytest.raises(TypeError, match=r"shimtest\.v1\.Item\.id is not a message field"):
        message_type_of(ITEM.fields_by_name["id"])


def test_fields_on_path_walks_nested_singular_messages() -> None:
    fields = fields_on_path(LIST, "filter.price.min")
    assert [f.full_name for f in fields] == [
        "shimtest.v1.ListItemsRequest.filter",
        "shimtest.v1.Filter.price",
        "shimtest.v1.PriceRange.min",
    ]


def test_json_names_only_when_asked() -> None:
    assert [f.name for f in fields_on_path(LIST, "filter.minQuantity", json_names=True)] == [
        "filter",
        "min_quantity",
    ]
    assert fields_on_path(LIST, "pageSize", json_names=True)[0].name == "page_size"
    with pytest.raises(FieldPathError) as missing:
        fields_on_path(LIST, "pageSize")
    assert (missing.value.owner, missing.value.name, missing.value.missing) == (
        "shimtest.v1.ListItemsRequest",
        "pageSize",
        True,
    )


@pytest.mark.parametrize(
    ("dotted", "owner", "name", "missing", "message"),
    [
        (
            "filter.nope",
            "shimtest.v1.Filter",
            "nope",
            True,
            "shimtest.v1.Filter has no field 'nope' (in 'filter.nope')",
        ),
        (
            "page_size.x",
            "shimtest.v1.ListItemsRequest",
            "page_size",
            False,
            "'page_size' in 'page_size.x' is not a singular message field",
        ),
        (
            "examples.id",  # repeated message: which element?
            "shimtest.v1.ListItemsRequest",
            "examples",
            False,
            "'examples' in 'examples.id' is not a singular message field",
        ),
        ("", "shimtest.v1.ListItemsRequest", "", True, "has no field ''"),
    ],
)
def test_fields_on_path_says_where_it_breaks(
    dotted: str, owner: str, name: str, *, missing: bool, message: str
) -> None:
    with pytest.raises(FieldPathError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        fields_on_path(LIST, dotted)
    assert (e.value.owner, e.value.name, e.value.missing, e.value.dotted) == (
        owner,
        name,
        missing,
        dotted,
    )
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("name", ["i32", "i64", "u64"])
def test_int_ranges_are_what_protobuf_accepts(name: str) -> None:
    field = descriptor_of(pb.EchoRequest).fields_by_name[name]
    low, high = INT_RANGES[field.cpp_type]
    message = pb.EchoRequest()
    for value in (low, high):
        setattr(message, name, value)
        assert getattr(message, name) == value
    for value in (low - 1, high + 1):
        with pytest.raises(ValueError, match="out of range"):
            setattr(message, name, value)

"""Shape inference from JSON samples: the corpus cases and properties (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.migrate._infer import classify, conforms, infer, is_map, merge, observe

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)

CORPUS: list[Any] = [
    {"id": 1, "name": "a", "tags": ["x"], "owner": {"id": 7}, "note": None, "big": 2**63},
    {"id": 2, "name": "b", "tags": [], "owner": {"id": 8}, "note": "hi", "big": 5},
    {"id": 3, "name": "c", "tags": ["y", "z"], "owner": {"id": 9}, "big": 2**64 - 1,
     "stock": {"BOLT-M6": 3, "NUT-M8": 0}},
]  # fmt: skip


def test_corpus_fields_types_optionality() -> None:
    shape = infer(CORPUS)
    assert classify(shape).name == "object"
    assert classify(shape.field("id")).name == "int64"  # type: ignore[arg-type]
    assert classify(shape.field("tags")).name == "repeated"  # type: ignore[arg-type]
    assert classify(shape.field("owner")).name == "object"  # type: ignore[arg-type]
    note = classify(shape.field("note"))  # type: ignore[arg-type]
    assert note.name == "string"
    assert note.nullable
    assert classify(shape.field("big")).name == "uint64"  # type: ignore[arg-type]
    assert classify(shape.field("stock")).name == "map"  # type: ignore[arg-type]
    assert shape.optional("note")
    assert shape.optional("stock")
    assert not shape.optional("id")


def test_ints_beyond_64_bits_and_mixed_kinds_become_value() -> None:
    assert classify(infer([2**64])).name == "value"
    assert classify(infer([-(2**63) - 1])).name == "value"
    assert classify(infer([1, "1"])).name == "value"
    assert classify(infer([1, 2.5])).name == "double"
    assert classify(infer([None, None])).why == "only null was seen"
    assert classify(infer([[[1]]])).name == "value"  # arrays of arrays


def test_maps_vs_objects() -> None:
    assert not is_map(infer([{"a": 1, "b": 2}, {"a": 3, "b": 4}]))
    assert is_map(infer([{"(untagged)": 1}]))
    rows = [{f"u{i}": i} for i in range(5)]  # keys vary, never all present, values alike
    assert is_map(infer(rows))
    assert not is_map(infer([{"a": 1, "b": "x", "c": 1, "d": 1}, {"a": 2}]))


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON, min_size=1, max_size=6))
def test_every_sample_conforms_to_the_inferred_shape(values: list[Any]) -> None:
    shape = infer(values)
    assert all(conforms(v, shape) for v in values)
    assert shape.count == len(values)


@settings(max_examples=200, deadline=None)
@given(JSON, JSON)
def test_merge_is_commutative_up_to_key_order(a: Any, b: Any) -> None:
    one, two = merge(observe(a), observe(b)), merge(observe(b), observe(a))
    assert one.kinds == two.kinds
    assert one.count == two.count
    assert (one.int_min, one.int_max) == (two.int_min, two.int_max)
    assert dict(one.fields).keys() == dict(two.fields).keys()
    assert classify(one).name == classify(two).name

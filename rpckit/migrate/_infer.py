"""What recorded JSON values look like: a shape merged from samples, and the proto type it asks for.

Pure, no I/O. :func:`observe` describes one JSON value; :func:`merge` joins
two descriptions; :func:`infer` folds a sequence of values. A :class:`Shape`
keeps what a proto type needs to know and nothing else:

* which JSON kinds were seen (``null``, ``bool``, ``int``, ``float``,
  ``string``, ``array``, ``object``; ``any`` where a declaration leaves the
  type open) and how many values;
* the range of the integers (int64 or uint64, or neither);
* for arrays, the merged shape of every element;
* for objects, the merged shape of each key in first-seen order, and how many
  objects there were, so a key seen in fewer objects than that is optional.

:func:`classify` turns a shape into a :class:`Kind`: a scalar, an object
(a message), a map, a repeated value, or ``value`` (``google.protobuf.Value``)
when the samples disagree (mixed kinds, nulls only, integers beyond 64 bits,
arrays of arrays). ``nullable`` marks a value that was sometimes ``null``.

An object is a map, not a message (:func:`is_map`), when one of its keys is
not a proto identifier (``"BOLT-M6"``, ``"(untagged)"``, ``"42"``), or when
its keys look like data: at least :data:`MAP_MIN_KEYS` distinct keys, none
present in every object, all values of one kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any, Literal

__all__ = [
    "ANY_JSON",
    "INT64_MAX",
    "INT64_MIN",
    "MAP_MIN_KEYS",
    "UINT64_MAX",
    "Kind",
    "Shape",
    "array_of",
    "classify",
    "conforms",
    "infer",
    "is_identifier",
    "is_map",
    "json_kind",
    "map_of",
    "merge",
    "object_of",
    "observe",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

#: Distinct keys an object needs, all optional and alike, before its keys count as data.
MAP_MIN_KEYS = 4

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

JsonKind = Literal["null", "bool", "int", "float", "string", "array", "object"]


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the values seen at one JSON position had in common (module docstring)."""

    kinds: frozenset[str] = frozenset()
    count: int = 0
    int_min: int | None = None
    int_max: int | None = None
    items: Shape | None = None
    fields: tuple[tuple[str, Shape], ...] = ()
    objects: int = 0

    def field(self, name: str) -> Shape | None:
        """The merged shape under key ``name``, if any object had it."""
        return next((shape for key, shape in self.fields if key == name), None)

    def optional(self, name: str) -> bool:
        """True when ``name`` was missing from some of the objects."""
        shape = self.field(name)
        return shape is None or shape.count < self.objects


#: Python types of decoded JSON and their kind; ``bool`` before ``int``, which it subclasses.
_JSON_KINDS: tuple[tuple[type, JsonKind], ...] = (
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_kind(value: Any) -> JsonKind:
    """The JSON kind of a decoded value. ``TypeError`` for anything JSON cannot hold."""
    if value is None:
        return "null"
    for python_type, kind in _JSON_KINDS:
        if isinstance(value, python_type):
            return kind
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def observe(value: Any) -> Shape:
    """The shape of one decoded JSON value. ``TypeError`` for anything JSON cannot hold."""
    kind = json_kind(value)
    if kind == "int":
        return Shape(kinds=frozenset({kind}), count=1, int_min=value, int_max=value)
    if kind == "array":
        items: Shape | None = None
        for element in value:
            seen = observe(element)
            items = seen if items is None else merge(items, seen)
        return Shape(kinds=frozenset({kind}), count=1, items=items)
    if kind == "object":
        fields = []
        for key, element in value.items():
            if not isinstance(key, str):
                raise TypeError(f"a JSON object key is a str, not {type(key).__name__}")
            fields.append((key, observe(element)))
        return Shape(kinds=frozenset({kind}), count=1, fields=tuple(fields), objects=1)
    return Shape(kinds=frozenset({kind}), count=1)


def merge(a: Shape, b: Shape) -> Shape:
    """Both shapes in one: kinds, counts and ranges joined; keys merged in first-seen order."""
    items = a.items if b.items is None else b.items if a.items is None else merge(a.items, b.items)
    merged = dict(a.fields)
    for key, shape in b.fields:
        merged[key] = merge(merged[key], shape) if key in merged else shape
    return Shape(
        kinds=a.kinds | b.kinds,
        count=a.count + b.count,
        int_min=_extreme(min, a.int_min, b.int_min),
        int_max=_extreme(max, a.int_max, b.int_max),
        items=items,
        fields=tuple(merged.items()),
        objects=a.objects + b.objects,
    )


def _extreme(pick: Any, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    result: int = pick(a, b)
    return result


#: A value a declaration leaves open (a type scan cannot map): ``google.protobuf.Value``.
ANY_JSON = Shape(kinds=frozenset({"any"}), count=1)


def array_of(items: Shape) -> Shape:
    """The shape of arrays whose elements have shape ``items`` (for declared types)."""
    return Shape(kinds=frozenset({"array"}), count=1, items=items)


def map_of(values: Shape) -> Shape:
    """The shape of objects whose keys are data and whose values have shape ``values``."""
    return Shape(kinds=frozenset({"object"}), count=1, fields=(("(any key)", values),), objects=2)


def object_of(fields: Iterable[tuple[str, Shape | None, bool]]) -> Shape:
    """The shape of objects with these ``(key, shape or None if unknown, required)`` fields.

    Built as if two objects were seen, a required key in both and an optional
    one in one, so :meth:`Shape.optional` tells them apart.
    """
    shaped = tuple(
        (key, dataclasses.replace(shape or ANY_JSON, count=2 if required else 1))
        for key, shape, required in fields
    )
    return Shape(kinds=frozenset({"object"}), count=1, fields=shaped, objects=2)


def infer(values: Iterable[Any]) -> Shape:
    """The merged shape of every value (an empty ``Shape`` for none)."""
    shape = Shape()
    for value in values:
        shape = merge(shape, observe(value))
    return shape


def is_identifier(key: str) -> bool:
    """Whether ``key`` can be a proto field name as it is (so the legacy JSON name is kept)."""
    return _IDENTIFIER.fullmatch(key) is not None


def is_map(shape: Shape) -> bool:
    """Whether an object shape's keys are data (a ``map<string, V>``), not field names."""
    if not shape.fields:
        return False
    if not all(is_identifier(key) for key, _ in shape.fields):
        return True
    if len(shape.fields) < MAP_MIN_KEYS:
        return False
    if any(not shape.optional(key) for key, _ in shape.fields):
        return False
    value_kinds = {_main_kind(s) for _, s in shape.fields}
    return len(value_kinds) == 1 and None not in value_kinds


def _main_kind(shape: Shape) -> str | None:
    kinds = shape.kinds - {"null"}
    if kinds == {"int", "float"}:
        return "float"
    return next(iter(kinds)) if len(kinds) == 1 else None


@dataclasses.dataclass(frozen=True)
class Kind:
    """The proto-level answer for a shape.

    ``name`` is one of ``bool``, ``int64``, ``uint64``, ``double``, ``string``,
    ``object`` (a message over ``shape.fields``), ``map`` (values in ``element``),
    ``repeated`` (elements in ``element``), ``value`` (``google.protobuf.Value``).
    ``why`` says why a shape became ``value``; ``nullable`` that null was seen.
    """

    name: str
    nullable: bool = False
    element: Shape | None = None
    why: str = ""


#: The proto scalar for each JSON scalar kind (integers are sized by :func:`_integer`).
_SCALARS = {"bool": "bool", "string": "string", "float": "double"}


def classify(shape: Shape) -> Kind:
    """The proto type a shape asks for (module docstring)."""
    nullable = "null" in shape.kinds
    kinds = shape.kinds - {"null"}
    if kinds == {"int", "float"}:
        kinds = frozenset({"float"})
    why = _why_open(kinds, nullable)
    if why:
        return Kind("value", nullable, why=why)
    (kind,) = kinds
    if kind == "int":
        return _integer(shape, nullable)
    if kind == "array":
        return _array(shape, nullable)
    if kind == "object":
        return _map(shape, nullable) if is_map(shape) else Kind("object", nullable)
    return Kind(_SCALARS[kind], nullable)


def _why_open(kinds: frozenset[str], nullable: bool) -> str:
    """Why non-null ``kinds`` leave a value open (``google.protobuf.Value``); "" if they do not."""
    if not kinds:
        return "only null was seen" if nullable else "nothing seen"
    if "any" in kinds:
        return "declared with a type scan cannot map"
    if len(kinds) > 1:
        return "mixed JSON types: " + ", ".join(sorted(kinds))
    return ""


def _array(shape: Shape, nullable: bool) -> Kind:
    """``repeated`` over the elements' shape, or ``value`` for arrays of arrays or mixed ones."""
    element = shape.items
    if element is not None:
        inner = classify(element)
        if inner.name in ("repeated", "value") or inner.nullable:
            why = "arrays of arrays" if inner.name == "repeated" else "mixed or null elements"
            return Kind("value", nullable, why=why)
    return Kind("repeated", nullable, element=element)


def _map(shape: Shape, nullable: bool) -> Kind:
    """``map`` over the merged values of an object whose keys are data, or ``value``."""
    values = Shape()
    for _, field_shape in shape.fields:
        values = merge(values, field_shape)
    inner = classify(values)
    if inner.name in ("repeated", "map", "value") or inner.nullable:
        return Kind("value", nullable, why="map values that are lists, maps, mixed or null")
    return Kind("map", nullable, element=values)


def _integer(shape: Shape, nullable: bool) -> Kind:
    low = shape.int_min if shape.int_min is not None else 0
    high = shape.int_max if shape.int_max is not None else 0
    if low >= INT64_MIN and high <= INT64_MAX:
        return Kind("int64", nullable)
    if low >= 0 and high <= UINT64_MAX:
        return Kind("uint64", nullable)
    return Kind("value", nullable, why=f"integers beyond 64 bits ({low}..{high})")


def conforms(value: Any, shape: Shape) -> bool:
    """Whether ``value`` fits ``shape``: kinds, integer range, elements and keys (no new keys)."""
    seen = observe(value)
    if not seen.kinds <= shape.kinds:
        return False
    if seen.int_min is not None and (
        shape.int_min is None
        or shape.int_max is None
        or not shape.int_min <= seen.int_min <= seen.int_max <= shape.int_max  # type: ignore[operator]
    ):
        return False
    if isinstance(value, list):
        return all(shape.items is not None and conforms(v, shape.items) for v in value)
    if isinstance(value, dict):
        for key, element in value.items():
            field = shape.field(key)
            if field is None or not conforms(element, field):
                return False
    return True

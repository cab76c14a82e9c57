"""``scan``'s marshmallow adapter: the JSON shape a view's schema loads or dumps.

A view that calls ``item_schema.load(request.get_json())`` or returns
``ItemSchema(many=True).dump(items)`` declares its request body and its
response; scan reads the schema rather than guess from samples alone. Per
field, by its class: ``Integer`` -> int, ``Float``/``Number`` -> float,
``Boolean`` -> bool, ``String`` (``Email``, ``Url``, ``UUID``...), ``DateTime``
(``Date``, ``Time``...; not timestamps), ``Enum`` by name, ``IP`` and
``Decimal(as_string=True)`` -> string, ``List`` -> array, ``Nested`` -> object
(array with ``many``), ``Dict`` -> map. Anything else (``Raw``, ``Method``,
``Function``, ``Pluck``, ``Tuple``, a plain ``Decimal``, a schema nested in
itself) is left open: ``google.protobuf.Value``. ``data_key`` is the JSON name,
``required`` tells required from optional, ``allow_none`` adds null;
``load_only`` fields are left out of responses and ``dump_only`` ones out of
requests (marshmallow's own ``load_fields``/``dump_fields``).

marshmallow is never imported here: a schema can only come from an app that
imported it already.
"""

from __future__ import annotations

import sys
from typing import Any

from rpckit.migrate._infer import Shape, array_of, map_of, merge, object_of, observe

__all__ = ["schema_shape"]

_TIMESTAMPS = frozenset({"timestamp", "timestamp_ms"})
#: Field classes (of ``marshmallow.fields``) and a value each writes, subclasses first.
_SCALARS = (("Boolean", False), ("Integer", 0), ("Number", 0.5), ("String", ""), ("IP", ""))


def schema_shape(candidate: Any, *, side: str, many: bool = False) -> tuple[Shape, str] | None:
    """What the schema ``candidate`` (an instance or a class) reads or writes, and its name.

    ``side`` is ``"request"`` (what ``load`` accepts) or ``"response"`` (what
    ``dump`` returns); ``many`` (or the instance's own ``many``) makes it an
    array. None when ``candidate`` is not a marshmallow schema.
    """
    marshmallow = sys.modules.get("marshmallow")
    if marshmallow is None:
        return None
    schema = _instance(candidate, marshmallow.Schema)
    if schema is None:
        return None
    shape = _schema(schema, side, (type(schema),))
    if many or getattr(schema, "many", False):
        shape = array_of(shape)
    return shape, type(schema).__name__


def _instance(candidate: Any, schema_type: type) -> Any:
    """``candidate`` if it is a schema, a new one if it is a schema class, else None."""
    if isinstance(candidate, schema_type):
        return candidate
    if isinstance(candidate, type) and issubclass(candidate, schema_type):
        try:
            return candidate()
        except (TypeError, ValueError):  # a schema that needs arguments: no hint
            return None
    return None


def _schema(schema: Any, side: str, path: tuple[type, ...]) -> Shape:
    declared = schema.load_fields if side == "request" else schema.dump_fields
    return object_of(
        (field.data_key or name, _field(field, side, path), bool(field.required))
        for name, field in declared.items()
    )


def _field(field: Any, side: str, path: tuple[type, ...]) -> Shape | None:
    """A field's shape (None: left open), null added when it allows none."""
    shape = _field_kind(field, side, path)
    if shape is not None and field.allow_none:
        shape = merge(shape, observe(None))
    return shape


def _field_kind(field: Any, side: str, path: tuple[type, ...]) -> Shape | None:
    fields = sys.modules["marshmallow.fields"]
    if isinstance(field, fields.Pluck):  # a Nested that writes one of its fields
        return None
    if isinstance(field, fields.Nested):
        return _nested(field, side, path)
    if isinstance(field, fields.List):
        inner = _field(field.inner, side, path)
        return None if inner is None else array_of(inner)
    if isinstance(field, fields.Dict):
        values = None if field.value_field is None else _field(field.value_field, side, path)
        return None if values is None else map_of(values)
    return _scalar(field, fields)


def _nested(field: Any, side: str, path: tuple[type, ...]) -> Shape | None:
    try:
        schema = field.schema  # resolves names and lambdas through marshmallow's registry
    except (NameError, TypeError, ValueError):  # RegistryError is a NameError
        return None
    if type(schema) in path:  # a schema nested in itself: an open value breaks the cycle
        return None
    shape = _schema(schema, side, (*path, type(schema)))
    return array_of(shape) if getattr(field, "many", False) or schema.many else shape


def _scalar(field: Any, fields: Any) -> Shape | None:
    """Scalars by field class (``Decimal`` before the ``Number`` it subclasses)."""
    if _is(field, fields, "Decimal"):
        return observe("") if field.as_string else None  # a Decimal object: its JSON varies
    if _is(field, fields, "DateTime"):  # Date, Time, NaiveDateTime, AwareDateTime too
        return None if getattr(field, "format", None) in _TIMESTAMPS else observe("")
    if _is(field, fields, "Enum"):
        return None if field.by_value else observe("")
    for class_name, written in _SCALARS:
        if _is(field, fields, class_name):
            return observe(written)
    return None


def _is(field: Any, fields: Any, class_name: str) -> bool:
    """``isinstance`` by name: ``Enum`` and ``IP`` are missing from older marshmallows."""
    return isinstance(field, getattr(fields, class_name, ()))

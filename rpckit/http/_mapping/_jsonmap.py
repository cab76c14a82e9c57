"""The legacy JSON profile: protobuf messages <-> the JSON an old Flask service spoke.

protobuf's ``json_format`` implements ProtoJSON (lowerCamel names, int64 as
strings, defaults omitted). A Flask service that is being migrated spoke
something else: its dict keys as written (``snake_case``), Python ints as JSON
numbers however large, every key present, and ``flask.jsonify``'s bytes
(sorted keys, ASCII escapes, compact separators, a trailing newline).
:class:`LegacyProfile` describes that dialect; this module converts with
``json_format`` (``MessageToDict`` / ``ParseDict``) and applies the profile's
differences on the decoded objects. No JSON is parsed or printed by hand:
``json.loads`` / ``json.dumps`` do the text, as they did in the Flask app.

Pure functions, no I/O::

    profile = LegacyProfile()                      # flask.jsonify's bytes
    body = message_to_json(item, profile)          # b'{"id":"a1","quantity":3}\\n'
    items = field_to_obj(resp, "items", profile)   # response_body -> top-level array
    req = json_to_message(raw_body, CreateItemRequest, profile)

Errors: malformed JSON, wrong types and unknown fields raise :class:`JsonError`
(a ``ValueError``) naming the position or every field path concerned; the HTTP
shim answers 400 with it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, cast

from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from rpckit.core._descriptors import (
    INT_RANGES,
    SPECIAL_JSON_TYPES,
    descriptor_of,
    is_map,
    is_plain_message,
    is_wrapper,
    message_type_of,
)
from rpckit.core._validate import check_fields

__all__ = [
    "JsonError",
    "LegacyProfile",
    "dumps",
    "field_to_obj",
    "json_to_message",
    "loads",
    "message_to_json",
    "message_to_obj",
]

_M = TypeVar("_M", bound=Message)

_FD = descriptor.FieldDescriptor

#: Nesting limit for request JSON, the same as json_format.ParseDict's default.
MAX_DEPTH = 100

#: Doubles are exact integers up to 2**53; beyond that a "whole" double is a rounding artefact.
_EXACT_INT_LIMIT = 2**53

_INT64_TYPES = frozenset({_FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT64})
_INT64_WRAPPERS = frozenset({"google.protobuf.Int64Value", "google.protobuf.UInt64Value"})
_STRUCT_TYPES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
# ParseDict wraps most failures in ParseError; a top-level well-known type can leak the others.
_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError)


class JsonError(ValueError):
    """Request JSON that cannot become the message: bad syntax, a wrong type, unknown fields.

    Attributes:
        reason: what is wrong, without the field path.
        fields: every field path concerned, as the client spelled them
            (``item.tags[2]``, ``labels[k]``); empty for syntax errors and for
            the document as a whole.
        lineno, colno, pos: where a syntax error is (1-based line and column,
            0-based character offset), as ``json.JSONDecodeError`` reports them;
            ``None`` for other errors.
    """

    def __init__(
        self,
        reason: str,
        *,
        fields: Sequence[str] = (),
        lineno: int | None = None,
        colno: int | None = None,
        pos: int | None = None,
    ) -> None:
        self.reason = reason
        self.fields = tuple(fields)
        self.lineno = lineno
        self.colno = colno
        self.pos = pos
        located = len(self.fields) == 1 and self.fields[0]
        super().__init__(f"{self.fields[0]}: {reason}" if located else reason)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyProfile:
    """How one legacy service spelled its JSON. The defaults reproduce a Flask 3 app.

    Attributes:
        field_names: ``"proto"`` emits the .proto field names (``display_name``):
            legacy Python services emit their dict keys as written, and the
            migrate tool names fields after them. ``"json"`` emits each field's
            ``json_name`` (lowerCamel unless the .proto sets ``json_name``).
            Input accepts both spellings either way (as json_format does).
        int64_as_number: 64-bit integers as JSON numbers (default) instead of
            ProtoJSON's strings: a Python service emitted ints as numbers. Values
            beyond 2**53 stay exact (``9007199254740993``), as Python's ``json``
            printed them; a JavaScript client reading them rounds, as it did
            before the migration. Input accepts numbers and strings either way.
        emit_defaults: emit fields holding their default (``0``, ``""``, ``[]``,
            ``{}``, the zero enum), as a Python dict had every key (default).
            Fields with presence (messages, ``optional``, oneof members) are
            emitted only when set, with or without this flag (json_format's rule).
        enum_style: ``"name"`` (``"COLOR_RED"``, default) or ``"number"`` (``1``).
            Input accepts both either way.
        unknown_fields: ``"ignore"`` (default) drops request keys the message
            lacks, as a Flask view reading ``data["x"]`` ignored the rest;
            ``"reject"`` fails with a :class:`JsonError` naming every unknown path.
        struct_whole_numbers_as_int: ``google.protobuf.Struct``/``Value`` hold every
            number as a double; emit the whole ones below 2**53 as ints (``5``,
            not ``5.0``), as the legacy dict that held an ``int`` did (default).
        sort_keys, ensure_ascii, indent, separators, trailing_newline: the bytes,
            as ``json.dumps`` arguments. The defaults are Flask 3's
            ``jsonify`` outside debug mode (``DefaultJSONProvider``: sorted keys,
            ``\\uXXXX`` escapes, ``(",", ":")``, one ``"\\n"`` at the end). Flask in
            debug mode: ``indent=2, separators=None``. Plain ``json.dumps``
            (Django's ``JsonResponse``): ``sort_keys=False, separators=None,
            trailing_newline=False``. With ``sort_keys=False`` object keys follow
            the .proto declaration order (map and Struct keys: protobuf's order).
            ``separators=None`` means json's default for the indent.
        datetime_style: how ``google.protobuf.Timestamp`` values are written.
            ``"protojson"`` (default): ``2024-05-01T10:00:09.500Z`` (0, 3, 6 or 9
            fraction digits). ``"isoformat"``: Python's ``datetime.isoformat()``
            of an aware UTC datetime, ``2024-05-01T10:00:09.500000+00:00`` (six
            digits, none when zero), as ``jsonify`` of ``.isoformat()`` and
            marshmallow's ``DateTime()`` wrote them. ``"isoformat_z"``: the same
            with ``Z`` for ``+00:00`` (``...09.500000Z``), as a schema that
            formats UTC with ``Z`` did. Nanoseconds beyond the microsecond are
            dropped (a datetime had none). Input accepts ProtoJSON's forms.
        unset_optional: ``"omit"`` (default) leaves out fields with presence
            (``optional`` scalars, messages) that are not set; ``"null"`` emits
            them as ``null``, as a schema dumping an attribute holding None did.
            Members of a real ``oneof`` stay omitted.
    """

    field_names: Literal["proto", "json"] = "proto"
    int64_as_number: bool = True
    emit_defaults: bool = True
    enum_style: Literal["name", "number"] = "name"
    unknown_fields: Literal["reject", "ignore"] = "ignore"
    struct_whole_numbers_as_int: bool = True
    sort_keys: bool = True
    ensure_ascii: bool = True
    indent: int | None = None
    separators: tuple[str, str] | None = (",", ":")
    trailing_newline: bool = True
    datetime_style: Literal["protojson", "isoformat", "isoformat_z"] = "protojson"
    unset_optional: Literal["omit", "null"] = "omit"
    # Per-profile memos of per-message-type lookups (derived data, not configuration).
    _plans: dict[descriptor.Descriptor, _Plan] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _input_names: dict[descriptor.Descriptor, dict[str, descriptor.FieldDescriptor]] = (
        dataclasses.field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    )
    _direct: dict[descriptor.Descriptor, _DirectPlan | None] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        check_fields(self)  # the flags, the choices, indent
        if self.separators is not None and (
            not isinstance(self.separators, tuple)
            or len(self.separators) != 2
            or not all(isinstance(s, str) for s in self.separators)
        ):
            raise ValueError(
                "LegacyProfile.separators must be None or a pair of strings, "
                f"not {self.separators!r}"
            )

    def output_name(self, field: descriptor.FieldDescriptor) -> str:
        """The key this profile emits for ``field``."""
        return field.name if self.field_names == "proto" else field.json_name


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the output pass does to one message type's dict (see ``_LegacyOutput``)."""

    fields: dict[str, descriptor.FieldDescriptor]  # output key -> field
    order: tuple[str, ...]  # declaration order of the output keys


_DEFAULT_PROFILE = LegacyProfile()


# ---------------------------------------------------------------- output


def message_to_obj(msg: Message, profile: LegacyProfile | None = None) -> Any:
    """The decoded JSON value (dict, or list/str/... for some well-known types) of ``msg``.

    Raises ``ValueError`` when the message has no JSON form (a NaN in a
    ``Struct``, an unknown value of a closed enum): a bug in the handler.
    """
    profile = profile or _DEFAULT_PROFILE
    direct = _direct_plan(descriptor_of(msg), profile)
    if direct is not None:
        try:
            return direct.render(msg)
        except _NotDirect:
            pass  # a value only json_format knows how to render (an unknown enum number)
    try:
        obj = json_format.MessageToDict(
            msg,
            always_print_fields_with_no_presence=profile.emit_defaults,
            preserving_proto_field_name=profile.field_names == "proto",
            use_integers_for_enums=profile.enum_style == "number",
        )
    except (json_format.Error, ValueError) as exc:
        raise ValueError(f"cannot render {msg.DESCRIPTOR.full_name} as JSON: {exc}") from exc
    return _LegacyOutput(profile).message(obj, descriptor_of(msg))


def field_to_obj(msg: Message, field_name: str, profile: LegacyProfile | None = None) -> Any:
    """The decoded JSON value of one top-level field: what ``response_body`` sends.

    A repeated field gives a list (the legacy top-level array), a map a dict.
    An unset field with presence (message, ``optional``) gives ``None``
    (JSON ``null``); other unset fields give their default even when the
    profile omits defaults, since the body cannot be absent.
    """
    profile = profile or _DEFAULT_PROFILE
    desc = descriptor_of(msg)
    field = desc.fields_by_name.get(field_name)
    if field is None:
        raise ValueError(f"{desc.full_name} has no field {field_name!r}")
    key = profile.output_name(field)
    obj = message_to_obj(msg, profile)
    if key in obj:
        return obj[key]
    if field.has_presence:
        return None
    defaults = message_to_obj(msg.__class__(), dataclasses.replace(profile, emit_defaults=True))
    return defaults[key]


def dumps(obj: Any, profile: LegacyProfile | None = None) -> bytes:
    """``obj`` as the profile's JSON bytes (UTF-8)."""
    profile = profile or _DEFAULT_PROFILE
    text = json.dumps(
        obj,
        sort_keys=profile.sort_keys,
        ensure_ascii=profile.ensure_ascii,
        indent=profile.indent,
        separators=profile.separators,
    )
    if profile.trailing_newline:
        text += "\n"
    return text.encode("utf-8")


def message_to_json(msg: Message, profile: LegacyProfile | None = None) -> bytes:
    """``dumps(message_to_obj(msg, profile), profile)``."""
    return dumps(message_to_obj(msg, profile), profile)


class _LegacyOutput:
    """Turns json_format's ProtoJSON dict into the profile's dialect, in place.

    int64 strings become ints, whole Struct numbers become ints, and (when keys
    are not sorted) object keys follow the .proto declaration order. Any
    contents are left as json_format made them.
    """

    def __init__(self, profile: LegacyProfile) -> None:
        self._profile = profile
        self._int64 = profile.int64_as_number
        self._struct_ints = profile.struct_whole_numbers_as_int
        self._reorder = not profile.sort_keys
        self._datetime = profile.datetime_style
        self._nulls = profile.unset_optional == "null"

    def _plan(self, desc: descriptor.Descriptor) -> _Plan:
        plans = self._profile._plans
        plan = plans.get(desc)
        if plan is None:
            fields = {self._profile.output_name(f): f for f in desc.fields}
            plan = _Plan(fields=fields, order=tuple(fields))
            plans[desc] = plan
        return plan

    def message(self, obj: Any, desc: descriptor.Descriptor) -> Any:
        full_name = desc.full_name
        if full_name in _INT64_WRAPPERS:
            return int(obj) if self._int64 and isinstance(obj, str) else obj
        if full_name in _STRUCT_TYPES:
            return _whole_numbers_to_int(obj) if self._struct_ints else obj
        if full_name == _TIMESTAMP and self._datetime != "protojson" and isinstance(obj, str):
            return _isoformat(obj, z=self._datetime == "isoformat_z")
        if full_name in SPECIAL_JSON_TYPES or not isinstance(obj, dict):
            return obj
        plan = self._plan(desc)
        for key, value in obj.items():
            field = plan.fields.get(key)
            if field is not None and value is not None:
                obj[key] = self._field(field, value)
        if self._nulls:
            for key, field in plan.fields.items():
                if key not in obj and _optional_alone(field):
                    obj[key] = None
        if self._reorder:
            return {key: obj[key] for key in plan.order if key in obj}
        return obj

    def _field(self, field: descriptor.FieldDescriptor, value: Any) -> Any:
        if is_map(field):
            value_field = message_type_of(field).fields_by_name["value"]
            return {k: self._single(value_field, v) for k, v in value.items()}
        if field.is_repeated:
            return [self._single(field, v) for v in value]
        return self._single(field, value)

    def _single(self, field: descriptor.FieldDescriptor, value: Any) -> Any:
        if field.cpp_type == _FD.CPPTYPE_MESSAGE:
            return self.message(value, message_type_of(field))
        if self._int64 and field.cpp_type in _INT64_TYPES and isinstance(value, str):
            return int(value)
        return value


# ---------------------------------------------------------------- output, direct

# What message_to_obj gives, computed straight from the message for message types made
# only of plain fields: the same dict as json_format.MessageToDict followed by
# _LegacyOutput, at a fraction of the cost (no intermediate dict, no second walk).
# The shim renders every response; tests/unit/test_jsonmap.py checks both ways agree.

_SAME = 0  # string, bool, 32-bit integers, doubles: json_format's value as is (finite doubles)
_INT64 = 1  # int64 family: a number, or ProtoJSON's string
_ENUM = 2  # by name (a table) or number
_MESSAGE = 3  # a plain nested message: its own plan
_DOUBLE = 4  # double: NaN and infinities become json_format's strings

_DIRECT_CPP_TYPES = {
    _FD.CPPTYPE_STRING: _SAME,
    _FD.CPPTYPE_BOOL: _SAME,
    _FD.CPPTYPE_INT32: _SAME,
    _FD.CPPTYPE_UINT32: _SAME,
    _FD.CPPTYPE_INT64: _INT64,
    _FD.CPPTYPE_UINT64: _INT64,
    _FD.CPPTYPE_DOUBLE: _DOUBLE,
    _FD.CPPTYPE_ENUM: _ENUM,
    _FD.CPPTYPE_MESSAGE: _MESSAGE,
}


class _NotDirect(Exception):  # noqa: N818 - control flow: render this message with json_format
    """A value the direct path does not render (json_format decides: number or error)."""


class _DirectField:
    __slots__ = ("attr", "default", "enum_names", "key", "kind", "plan", "presence", "repeated")

    def __init__(self, field: descriptor.FieldDescriptor, key: str, kind: int) -> None:
        self.key = key
        self.attr = field.name
        self.kind = kind
        self.repeated = field.is_repeated
        self.presence = field.has_presence
        self.default = None if self.repeated or kind == _MESSAGE else field.default_value
        self.enum_names: dict[int, str] | None = None
        self.plan: _DirectPlan | None = None


class _DirectPlan:
    """How to render one message type directly (built by :func:`_direct_plan`)."""

    def __init__(self, profile: LegacyProfile) -> None:
        self.fields: list[_DirectField] = []
        self._all = profile.emit_defaults
        self._int64_as_number = profile.int64_as_number
        self._enum_names = profile.enum_style == "name"

    def render(self, msg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        emit_all = self._all
        for field in self.fields:
            value = getattr(msg, field.attr)
            # Strings, bools and 32-bit integers are their own JSON value: no call for them.
            same = field.kind == _SAME
            if field.repeated:
                if value or emit_all:
                    out[field.key] = list(value) if same else [self._value(field, v) for v in value]
            elif field.presence:
                if msg.HasField(field.attr):
                    out[field.key] = value if same else self._value(field, value)
            elif emit_all or value != field.default or _negative_zero(field, value):
                out[field.key] = value if same else self._value(field, value)
        return out

    def _value(self, field: _DirectField, value: Any) -> Any:
        kind = field.kind
        if kind == _SAME:
            return value
        if kind == _INT64:
            return value if self._int64_as_number else str(value)
        if kind == _MESSAGE:
            assert field.plan is not None
            return field.plan.render(value)
        if kind == _DOUBLE:
            if math.isfinite(value):
                return value
            raise _NotDirect
        if not self._enum_names:
            return value
        assert field.enum_names is not None
        name = field.enum_names.get(value)
        if name is None:
            raise _NotDirect
        return name


def _negative_zero(field: _DirectField, value: Any) -> bool:
    """A -0.0 double equals its 0.0 default, but protobuf counts it as set (other bits)."""
    return field.kind == _DOUBLE and value == 0.0 and math.copysign(1.0, value) < 0


def _direct_plan(desc: descriptor.Descriptor, profile: LegacyProfile) -> _DirectPlan | None:
    """The direct plan of ``desc`` under ``profile``; None when json_format must render it.

    Direct: fields of string, bool, integer, double, enum (values without
    options; not NullValue) and plain nested message types, singular or
    repeated. Not direct: maps, bytes, floats, well-known types, extensions.
    """
    memo = profile._direct
    if desc in memo:
        return memo[desc]
    if profile.unset_optional == "null":
        memo[desc] = None  # the output pass adds the nulls
        return None
    memo[desc] = None  # while building: a recursive type is rendered by json_format
    plan = _DirectPlan(profile)
    ok = is_plain_message(desc) and not desc.extension_ranges
    for field in desc.fields if ok else ():
        kind = _DIRECT_CPP_TYPES.get(field.cpp_type)
        if kind is None or field.type == _FD.TYPE_BYTES or is_map(field):
            ok = False
            break
        direct = _DirectField(field, profile.output_name(field), kind)
        if kind == _MESSAGE:
            direct.plan = _direct_plan(message_type_of(field), profile)
            ok = direct.plan is not None
        elif kind == _ENUM:
            enum = field.enum_type
            assert enum is not None
            ok = enum.full_name != "google.protobuf.NullValue" and not any(
                v.has_options for v in enum.values
            )
            direct.enum_names = {v.number: v.name for v in enum.values}
        if not ok:
            break
        plan.fields.append(direct)
    memo[desc] = plan if ok else None
    return memo[desc]


_TIMESTAMP = "google.protobuf.Timestamp"
_PROTOJSON_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?Z"
)


def _isoformat(text: str, *, z: bool) -> str:
    """ProtoJSON's ``...09.5Z`` as ``datetime.isoformat()`` wrote it: ``...09.500000+00:00``."""
    matched = _PROTOJSON_TIME.fullmatch(text)
    if matched is None:  # json_format always writes UTC with Z; keep anything else
        return text
    seconds, fraction = matched.groups()
    micro = (fraction or "")[:6].ljust(6, "0")
    zone = "Z" if z else "+00:00"
    return f"{seconds}.{micro}{zone}" if int(micro) else f"{seconds}{zone}"


def _optional_alone(field: descriptor.FieldDescriptor) -> bool:
    """A singular field with presence outside a real oneof (``optional`` or a message)."""
    if field.is_repeated or not field.has_presence:
        return False
    oneof = field.containing_oneof
    return oneof is None or (len(oneof.fields) == 1 and oneof.name == "_" + field.name)


def _whole_numbers_to_int(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_INT_LIMIT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _whole_numbers_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_to_int(v) for v in value]
    return value


# ---------------------------------------------------------------- input


def loads(data: bytes | bytearray | str) -> Any:
    """Decode JSON text as ``flask.Request.get_json`` does (``json.loads``).

    Raises :class:`JsonError` with the line, column and offset of a syntax error.
    """
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise JsonError(str(exc), lineno=exc.lineno, colno=exc.colno, pos=exc.pos) from None
    except UnicodeDecodeError as exc:
        raise JsonError(
            f"the body is not valid Unicode text ({exc.reason} at byte {exc.start})", pos=exc.start
        ) from None
    except RecursionError:
        raise JsonError("JSON nested too deeply") from None


def json_to_message(data: Any, message_class: type[_M], profile: LegacyProfile | None = None) -> _M:
    """Parse request JSON into a new ``message_class``.

    ``data`` is either raw JSON (``bytes``/``bytearray``) or an already decoded
    JSON value (dict, list, str, ...). Field names may be the proto or the JSON
    spelling; enums a name or a number; integers numbers or strings. Unknown
    keys follow ``profile.unknown_fields``; an unknown enum name is a wrong
    value, not an unknown field, either way. Raises :class:`JsonError`.
    """
    profile = profile or _DEFAULT_PROFILE
    obj = loads(data) if isinstance(data, bytes | bytearray) else data
    msg = message_class()
    desc = descriptor_of(msg)
    if is_plain_message(desc) and not isinstance(obj, dict):
        raise JsonError(f"expected a JSON object, got {_describe(obj)}", fields=("",))
    reader = _RequestReader(profile)
    unknown: list[str] = []
    reader.scan_unknown(obj, desc, "", unknown, prune=False)
    if unknown:
        if profile.unknown_fields == "reject":
            if len(unknown) == 1:
                raise JsonError("unknown field", fields=unknown)
            raise JsonError(f"unknown fields: {', '.join(unknown)}", fields=unknown)
        obj = reader.scan_unknown(obj, desc, "", [], prune=True)
    try:
        json_format.ParseDict(obj, msg, max_recursion_depth=MAX_DEPTH)
    except _PARSE_ERRORS as exc:
        located = reader.locate_error(obj, message_class, "")
        if located is None:
            raise JsonError(_innermost(exc)) from None
        path, reason = located
        raise JsonError(reason, fields=(path,)) from None
    return msg


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _RequestReader:
    """Walks request JSON along the message types: unknown keys, and where a parse failed."""

    def __init__(self, profile: LegacyProfile) -> None:
        self._profile = profile
        self._depth = 0

    def names(self, desc: descriptor.Descriptor) -> dict[str, descriptor.FieldDescriptor]:
        """Request key -> field: json_name or proto name (json_name first, as json_format)."""
        memo = self._profile._input_names
        names = memo.get(desc)
        if names is None:
            names = {f.name: f for f in desc.fields}
            names.update((f.json_name, f) for f in desc.fields)
            memo[desc] = names
        return names

    def scan_unknown(
        self, obj: Any, desc: descriptor.Descriptor, path: str, unknown: list[str], *, prune: bool
    ) -> Any:
        """Collect the paths of keys ``desc`` lacks into ``unknown``.

        With ``prune``, also return a copy of ``obj`` without them. Walks plain
        message fields only; Struct/Value/Any contents are json_format's business.
        """
        if not isinstance(obj, dict) or not is_plain_message(desc):
            return obj
        if self._depth >= MAX_DEPTH:
            raise JsonError(f"nested deeper than {MAX_DEPTH} levels", fields=(path,))
        self._depth += 1
        try:
            names = self.names(desc)
            kept: dict[str, Any] = {}
            for key, value in obj.items():
                field = names.get(key)
                where = _join(path, key)
                if field is None:
                    unknown.append(where)
                elif prune:
                    kept[key] = self._scan_field(field, value, where, unknown, prune=prune)
                else:
                    self._scan_field(field, value, where, unknown, prune=prune)
            return kept if prune else obj
        finally:
            self._depth -= 1

    def _scan_field(
        self,
        field: descriptor.FieldDescriptor,
        value: Any,
        where: str,
        unknown: list[str],
        *,
        prune: bool,
    ) -> Any:
        if field.cpp_type != _FD.CPPTYPE_MESSAGE or value is None:
            return value
        sub = message_type_of(field)
        if is_map(field):
            value_field = sub.fields_by_name["value"]
            if value_field.cpp_type != _FD.CPPTYPE_MESSAGE or not isinstance(value, dict):
                return value
            value_desc = message_type_of(value_field)
            return {
                k: self._scan_object(v, value_desc, f"{where}[{k}]", unknown, prune=prune)
                for k, v in value.items()
            }
        if field.is_repeated:
            if not isinstance(value, list):
                return value
            return [
                self._scan_object(v, sub, f"{where}[{i}]", unknown, prune=prune)
                for i, v in enumerate(value)
            ]
        return self._scan_object(value, sub, where, unknown, prune=prune)

    def _scan_object(
        self, obj: Any, desc: descriptor.Descriptor, path: str, unknown: list[str], *, prune: bool
    ) -> Any:
        """``scan_unknown`` for a value that must be a JSON object (a plain message's).

        json_format accepts a list there (it iterates it as keys): refuse it here.
        """
        if is_plain_message(desc) and not isinstance(obj, dict):
            raise JsonError(f"expected a JSON object, got {_describe(obj)}", fields=(path,))
        return self.scan_unknown(obj, desc, path, unknown, prune=prune)

    def locate_error(
        self, obj: Any, message_class: type[Message], path: str
    ) -> tuple[str, str] | None:
        """The first field ``ParseDict`` refuses, as ``(path, reason)``; None if none does.

        Runs only after a failed parse, so it may be slow: it parses field by
        field (element by element for lists and maps) to pin the error down.
        """
        desc = descriptor_of(message_class)
        if not is_plain_message(desc):
            failure = _parse_failure(message_class, obj)
            if failure is None:
                return None
            if "too deep" in failure:
                return path, f"nested deeper than {MAX_DEPTH} levels"
            return path, f"expected {_expected_message(desc)}, got {_describe(obj)}"
        if not isinstance(obj, dict):
            return path, f"expected a JSON object, got {_describe(obj)}"
        if self._depth >= MAX_DEPTH:
            return path, f"nested deeper than {MAX_DEPTH} levels"
        self._depth += 1
        try:
            return self._locate_in_fields(obj, message_class, path)
        finally:
            self._depth -= 1

    def _locate_in_fields(
        self, obj: dict[str, Any], message_class: type[Message], path: str
    ) -> tuple[str, str] | None:
        names = self.names(descriptor_of(message_class))
        oneofs_seen: dict[str, str] = {}
        for key, value in obj.items():
            field = names.get(key)
            if field is None or value is None:
                continue
            where = _join(path, key)
            oneof = field.containing_oneof
            if oneof is not None:
                if oneof.name in oneofs_seen:
                    return where, (
                        f"{oneofs_seen[oneof.name]!r} is set too; only one field of "
                        f"oneof {oneof.name!r} may be set"
                    )
                oneofs_seen[oneof.name] = key
            if is_map(field):
                found = self._locate_in_map(message_class, field, key, value, where)
            elif field.is_repeated:
                found = self._locate_in_list(field, value, where)
            else:
                found = self._locate_in_value(field, value, where)
            if found is not None:
                return found
        return None

    def _locate_in_map(
        self,
        message_class: type[Message],
        field: descriptor.FieldDescriptor,
        key: str,
        value: Any,
        where: str,
    ) -> tuple[str, str] | None:
        if not isinstance(value, dict):
            return where, f"expected a JSON object, got {_describe(value)}"
        entry = message_type_of(field)
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for k, v in value.items():
            if _parses(message_class, {key: {k: v}}):
                continue
            at = f"{where}[{k}]"
            found = self._locate_in_value(value_field, v, at)
            return found or (at, f"map key: expected {_expected(key_field)}, got {_describe(k)}")
        return None

    def _locate_in_list(
        self, field: descriptor.FieldDescriptor, value: Any, where: str
    ) -> tuple[str, str] | None:
        if not isinstance(value, list):
            return where, f"expected a JSON array, got {_describe(value)}"
        for i, item in enumerate(value):
            found = self._locate_in_value(field, item, f"{where}[{i}]")
            if found is not None:
                return found
        return None

    def _locate_in_value(
        self, field: descriptor.FieldDescriptor, value: Any, where: str
    ) -> tuple[str, str] | None:
        """The error for one value of ``field``: the field's, a list element's, a map value's."""
        if field.cpp_type == _FD.CPPTYPE_MESSAGE:
            sub = message_type_of(field)
            if value is None and sub.full_name != "google.protobuf.Value":
                return where, f"expected {_expected_message(sub)}, got null"
            return self.locate_error(value, message_factory.GetMessageClass(sub), where)
        holder = message_factory.GetMessageClass(cast(descriptor.Descriptor, field.containing_type))
        if value is not None and _parses(
            holder, {field.name: [value] if field.is_repeated else value}
        ):
            return None
        return where, f"expected {_expected(field)}, got {_describe(value)}"


def _parse_failure(message_class: type[Message], obj: Any) -> str | None:
    """Why ParseDict refuses ``obj`` (its innermost message), or None if it does not."""
    try:
        json_format.ParseDict(obj, message_class(), max_recursion_depth=MAX_DEPTH)
    except _PARSE_ERRORS as exc:
        return _innermost(exc)
    return None


def _parses(message_class: type[Message], obj: Any) -> bool:
    return _parse_failure(message_class, obj) is None


_EXPECTED_BY_CPP_TYPE = {
    _FD.CPPTYPE_DOUBLE: "a number",
    _FD.CPPTYPE_FLOAT: "a number",
    _FD.CPPTYPE_BOOL: "true or false",
    _FD.CPPTYPE_STRING: "a string",
}
_EXPECTED_BY_MESSAGE_TYPE = {
    "google.protobuf.Timestamp": 'an RFC 3339 timestamp string such as "2024-01-31T12:00:00Z"',
    "google.protobuf.Duration": 'a duration string such as "1.5s"',
    "google.protobuf.FieldMask": 'a field mask string such as "name,address.city"',
    "google.protobuf.ListValue": "a JSON array",
    "google.protobuf.Value": "a JSON value",
    "google.protobuf.Any": 'a JSON object with "@type"',
}


def _expected(field: descriptor.FieldDescriptor) -> str:
    """What a JSON value of ``field`` must look like, in words."""
    cpp = field.cpp_type
    if cpp in INT_RANGES:
        low, high = INT_RANGES[cpp]
        return f"an integer from {low} to {high}"
    if cpp == _FD.CPPTYPE_ENUM and field.enum_type is not None:
        names = [v.name for v in field.enum_type.values]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"one of {shown} (or its number)"
    if cpp == _FD.CPPTYPE_MESSAGE:
        return _expected_message(message_type_of(field))
    if field.type == _FD.TYPE_BYTES:
        return "a base64 string"
    return _EXPECTED_BY_CPP_TYPE.get(cpp, "a JSON value")


def _expected_message(desc: descriptor.Descriptor) -> str:
    if is_wrapper(desc):
        return _expected(desc.fields_by_name["value"])
    return _EXPECTED_BY_MESSAGE_TYPE.get(desc.full_name, "a JSON object")


def _describe(value: Any, limit: int = 40) -> str:
    """A short JSON rendering of a client's value for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _innermost(exc: BaseException) -> str:
    """The text of the deepest cause, without json_format's trailing `` at Type.path``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).rstrip(".")
    head, sep, _ = text.rpartition(" at ")
    return head if sep else text

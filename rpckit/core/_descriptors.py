"""Facts about protobuf descriptors that the JSON mapping, routes, OpenAPI and the shim share.

Pure functions over descriptors (protobuf only, no grpc): which fields are maps,
which messages ProtoJSON writes in a form of their own, which ones a path or
query parameter can set from text, the range of each integer type, and the
walk along a dotted field path (``filter.price.min``).
"""

from __future__ import annotations

from typing import cast

from google.protobuf import descriptor
from google.protobuf.message import Message

__all__ = [
    "INT_RANGES",
    "SPECIAL_JSON_TYPES",
    "TEXT_MESSAGE_TYPES",
    "WRAPPERS_FILE",
    "FieldPathError",
    "descriptor_of",
    "fields_on_path",
    "is_map",
    "is_plain_message",
    "is_text_settable",
    "is_wrapper",
    "message_type_of",
]

_FD = descriptor.FieldDescriptor

#: The file of the wrapper types (``google.protobuf.Int32Value``...): JSON is the wrapped value.
WRAPPERS_FILE = "google/protobuf/wrappers.proto"

#: Well-known types whose ProtoJSON form is not an object of their fields.
SPECIAL_JSON_TYPES = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.ListValue",
        "google.protobuf.Struct",
        "google.protobuf.Timestamp",
        "google.protobuf.Value",
    }
)

#: Message types a path or query parameter can set from text (grpc-gateway's list), besides
#: the wrappers.
TEXT_MESSAGE_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
    }
)

#: ``(lowest, highest)`` value of each integer C++ type.
INT_RANGES = {
    _FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    _FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def descriptor_of(msg: Message | type[Message]) -> descriptor.Descriptor:
    """The message descriptor of a message or message class (typed for mypy)."""
    return cast(descriptor.Descriptor, msg.DESCRIPTOR)


def message_type_of(field: descriptor.FieldDescriptor) -> descriptor.Descriptor:
    """The message type of a message-typed field."""
    sub = field.message_type
    if sub is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return sub


def is_map(field: descriptor.FieldDescriptor) -> bool:
    """Whether ``field`` is a ``map<K, V>`` (a repeated field of a map-entry message)."""
    sub = field.message_type
    return sub is not None and sub.has_options and sub.GetOptions().map_entry


def is_wrapper(desc: descriptor.Descriptor) -> bool:
    """Whether ``desc`` is one of the wrapper types (``google.protobuf.StringValue``...)."""
    return desc.file.name == WRAPPERS_FILE


def is_plain_message(desc: descriptor.Descriptor) -> bool:
    """A message whose JSON is an object of its fields (not a ProtoJSON special case)."""
    return desc.full_name not in SPECIAL_JSON_TYPES and not is_wrapper(desc)


def is_text_settable(desc: descriptor.Descriptor) -> bool:
    """Whether a path or query parameter can set a message of type ``desc`` from text."""
    return desc.full_name in TEXT_MESSAGE_TYPES or is_wrapper(desc)


class FieldPathError(ValueError):
    """A dotted field path that does not lead through the message.

    Attributes:
        owner: the full name of the message where the walk stopped.
        name: the path element at fault.
        dotted: the whole path.
        missing: True when ``owner`` has no field ``name``; False when ``name``
            is a field but not a singular message, so nothing is inside it.
    """

    def __init__(self, owner: str, name: str, dotted: str, *, missing: bool) -> None:
        self.owner = owner
        self.name = name
        self.dotted = dotted
        self.missing = missing
        if missing:
            super().__init__(f"{owner} has no field {name!r} (in {dotted!r})")
        else:
            super().__init__(f"{name!r} in {dotted!r} is not a singular message field")


def fields_on_path(
    desc: descriptor.Descriptor, dotted: str, *, json_names: bool = False
) -> tuple[descriptor.FieldDescriptor, ...]:
    """The fields along ``dotted`` (``filter.price.min``) from message ``desc``, outermost first.

    Each element is a field's proto name, or with ``json_names`` also its
    ``json_name`` (``pageSize``; the proto name wins where both match). Every
    element but the last must be a singular message field. Raises
    :class:`FieldPathError` saying where the path breaks.
    """
    fields: list[descriptor.FieldDescriptor] = []
    current = desc
    names = dotted.split(".")
    for i, name in enumerate(names):
        field = current.fields_by_name.get(name)
        if field is None and json_names:
            field = next((f for f in current.fields if f.json_name == name), None)
        if field is None:
            raise FieldPathError(current.full_name, name, dotted, missing=True)
        fields.append(field)
        if i < len(names) - 1:
            if field.cpp_type != _FD.CPPTYPE_MESSAGE or field.is_repeated:
                raise FieldPathError(current.full_name, name, dotted, missing=False)
            current = message_type_of(field)
    return tuple(fields)

"""OpenAPI 3 of the legacy contract as the shim serves it: paths, parameters, bodies, statuses.

Built from the routes (``google.api.http`` rules) and each route's resolved
settings, so the document says what goes over the wire, not what ProtoJSON
would say: field names in the profile's spelling, int64 as integers when the
profile sends numbers, enums as names or numbers, every field ``required`` in
responses when defaults are emitted, ``additionalProperties: false`` when
unknown fields are rejected, top-level arrays for ``response_body``, the
success status (201, 204...) with its headers (``Location``), and the error
body of the shim's renderer for everything else. Pure: descriptors in, a
JSON-ready dict out (``rpckit openapi`` prints it).

Not representable in OpenAPI, hence left out: custom HTTP methods (``PURGE``),
bare path wildcards that bind no field (``/v1/ping/*``), and HEAD/OPTIONS
(answered for every GET route / path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf import descriptor

from rpckit.core._descriptors import (
    fields_on_path,
    is_map,
    is_text_settable,
    is_wrapper,
    message_type_of,
)
from rpckit.http._mapping._jsonmap import LegacyProfile
from rpckit.http._mapping._routes import Route

__all__ = ["OPENAPI_VERSION", "OpenApiRoute", "ServedSettings", "openapi_document"]

OPENAPI_VERSION = "3.0.3"

_FD = descriptor.FieldDescriptor
_OPERATIONS = ("get", "put", "post", "delete", "patch")
#: How deep query parameters reach into nested messages (``filter.price.min`` is depth 3).
MAX_QUERY_DEPTH = 3

_INT_SCHEMAS: dict[int, dict[str, Any]] = {
    _FD.CPPTYPE_INT32: {
        "type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1,
    },
    _FD.CPPTYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    _FD.CPPTYPE_INT64: {
        "type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1,
    },
    _FD.CPPTYPE_UINT64: {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
}  # fmt: skip
_SIMPLE_SCHEMAS: dict[int, dict[str, Any]] = {
    _FD.CPPTYPE_DOUBLE: {"type": "number", "format": "double"},
    _FD.CPPTYPE_FLOAT: {"type": "number", "format": "float"},
    _FD.CPPTYPE_BOOL: {"type": "boolean"},
}
_INT64_CPP = frozenset({_FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT64})

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Empty": {"type": "object", "properties": {}},
}


class ServedSettings(Protocol):
    """What the document needs of a route's resolved settings (the shim's ``RouteSettings``).

    A protocol, so that this pure module does not import the shim's options module.
    """

    @property
    def json(self) -> LegacyProfile: ...
    @property
    def strict_types(self) -> bool: ...
    @property
    def success_status(self) -> int: ...
    @property
    def response_headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def content_types(self) -> tuple[str, ...] | None: ...


@dataclasses.dataclass(frozen=True)
class OpenApiRoute:
    """One served route with its resolved settings."""

    route: Route
    settings: ServedSettings


def openapi_document(
    routes: Sequence[OpenApiRoute],
    *,
    title: str,
    version: str,
    error_schema: dict[str, Any],
) -> dict[str, Any]:
    """The OpenAPI 3.0 document (a JSON-ready dict) for ``routes``."""
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for item in routes:
        route = item.route
        verb = route.http_method.lower()
        if verb not in _OPERATIONS or _has_bare_wildcards(route):
            continue
        path = _openapi_path(route)
        entry = paths.setdefault(path, {})
        if verb in entry:
            continue  # two templates render to one OpenAPI path: the first one wins
        entry[verb] = builder.operation(item, _operation_id(route, operation_ids))
    components: dict[str, Any] = {"schemas": builder.schemas}
    components["schemas"]["rpckit.Error"] = error_schema
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "The legacy JSON-over-HTTP contract served by rpckit's HTTP shim.",
        },
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def _has_bare_wildcards(route: Route) -> bool:
    covered: set[int] = set()
    for var in route.template.variables:
        covered.update(range(var.start, var.end))
    return any(
        seg.kind != "literal" and i not in covered for i, seg in enumerate(route.template.segments)
    )


def _openapi_path(route: Route) -> str:
    template = route.template
    parts: list[str] = []
    index = 0
    variables = {v.start: v for v in template.variables}
    while index < len(template.segments):
        var = variables.get(index)
        if var is not None:
            parts.append("{" + _path_parameter_name(var.field_path) + "}")
            index = max(var.end, index + 1)
            continue
        segment = template.segments[index]
        parts.append(segment.literal)
        index += 1
    path = "/" + "/".join(parts)
    if template.trailing_slash and parts:
        path += "/"
    if template.verb:
        path += ":" + template.verb
    return path


def _path_parameter_name(field_path: str) -> str:
    """``item.sku`` -> ``item_sku``: tools read ``{a.b}`` in a path as attribute access."""
    return field_path.replace(".", "_")


def _operation_id(route: Route, taken: set[str]) -> str:
    service, _, method = route.grpc_method[1:].partition("/")
    base = f"{service.rsplit('.', 1)[-1]}_{method}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


class _Builder:
    """Accumulates component schemas (one per message, direction and dialect)."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._names: dict[tuple[str, str, tuple[object, ...]], str] = {}

    # -- operations

    def operation(self, item: OpenApiRoute, operation_id: str) -> dict[str, Any]:
        route, settings = item.route, item.settings
        profile = settings.json
        service = route.grpc_method[1:].partition("/")[0]
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [service],
            "summary": route.grpc_method,
            "parameters": [
                *self._path_parameters(route, profile),
                *self._query_parameters(route, profile, settings.strict_types),
            ],
            "responses": self._responses(route, settings),
        }
        if not operation["parameters"]:
            del operation["parameters"]
        if route.body:
            schema = self._body_schema(route, settings)
            # The exact Content-Type values a strict route takes (415 otherwise), or JSON.
            media = settings.content_types or ("application/json",)
            operation["requestBody"] = {
                "required": settings.strict_types,
                "content": {m: {"schema": schema} for m in media},
            }
        return operation

    def _responses(self, route: Route, settings: ServedSettings) -> dict[str, Any]:
        success: dict[str, Any] = {"description": "Success"}
        if settings.success_status != 204:
            if route.response_body:
                field = route.response_descriptor.fields_by_name[route.response_body]
                schema = self._field_schema(field, settings.json, output=True, strict=False)
            else:
                schema = self._message_ref(
                    route.response_descriptor, settings.json, output=True, strict=False
                )
            success["content"] = {"application/json": {"schema": schema}}
        if settings.response_headers:
            success["headers"] = {
                name: {"schema": {"type": "string"}, "description": f"`{template}`"}
                for name, template in settings.response_headers
            }
        error = {
            "description": "Error (routing, request, or the call's gRPC status mapped to HTTP)",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/rpckit.Error"}}
            },
        }
        return {str(settings.success_status): success, "default": error}

    def _body_schema(self, route: Route, settings: ServedSettings) -> dict[str, Any]:
        strict = settings.strict_types
        if route.body == "*":
            return self._message_ref(
                route.request_descriptor, settings.json, output=False, strict=strict
            )
        field = route.request_descriptor.fields_by_name[route.body]
        return self._field_schema(field, settings.json, output=False, strict=strict)

    def _path_parameters(self, route: Route, profile: LegacyProfile) -> list[dict[str, Any]]:
        params = []
        for var in route.template.variables:
            leaf = fields_on_path(route.request_descriptor, var.field_path)[-1]
            schema = self._scalar_schema(leaf, profile, text=True)
            if schema.get("type") == "string":
                schema = {**schema, "minLength": 1}
            params.append(
                {
                    "name": _path_parameter_name(var.field_path),
                    "in": "path",
                    "required": True,
                    "schema": schema,
                    "description": f"request field `{var.field_path}`",
                }
            )
        return params

    def _query_parameters(
        self, route: Route, profile: LegacyProfile, strict: bool
    ) -> list[dict[str, Any]]:
        if route.body == "*":
            return []
        bound = set(route.bound_paths)
        params: list[dict[str, Any]] = []
        self._collect_query(
            route.request_descriptor, (), bound=bound, profile=profile, params=params, seen=set()
        )
        return params

    def _collect_query(
        self,
        desc: descriptor.Descriptor,
        prefix: tuple[str, ...],
        *,
        bound: set[tuple[str, ...]],
        profile: LegacyProfile,
        params: list[dict[str, Any]],
        seen: set[str],
    ) -> None:
        if desc.full_name in seen or len(prefix) >= MAX_QUERY_DEPTH:
            return
        for field in desc.fields:
            path = (*prefix, field.name)
            if any(path[: len(b)] == b for b in bound) or is_map(field):
                continue
            sub = field.message_type
            if sub is not None and sub.full_name in _WELL_KNOWN and not is_text_settable(sub):
                continue  # Any, Empty: nothing a query parameter can say
            if sub is not None and not is_text_settable(sub):
                if not field.is_repeated:
                    self._collect_query(
                        sub,
                        path,
                        bound=bound,
                        profile=profile,
                        params=params,
                        seen={*seen, desc.full_name},
                    )
                continue
            schema = self._scalar_schema(field, profile, text=True)
            if field.is_repeated:
                schema = {"type": "array", "items": schema}
            params.append(
                {
                    "name": ".".join(path),
                    "in": "query",
                    "required": False,
                    "schema": schema,
                    **({"style": "form", "explode": True} if field.is_repeated else {}),
                }
            )

    # -- schemas

    def _message_ref(
        self, desc: descriptor.Descriptor, profile: LegacyProfile, *, output: bool, strict: bool
    ) -> dict[str, Any]:
        special = _special(desc)
        if special is not None:
            return special
        variant = (
            profile.field_names,
            profile.int64_as_number,
            profile.enum_style,
            profile.emit_defaults if output else profile.unknown_fields == "reject" and strict,
        )
        key = (desc.full_name, "out" if output else "in", variant)
        name = self._names.get(key)
        if name is None:
            base = desc.full_name if output else f"{desc.full_name}.Input"
            name, n = base, 1
            while name in self.schemas:
                n += 1
                name = f"{base}.v{n}"
            self._names[key] = name
            self.schemas[name] = {}  # placeholder: recursive messages refer to it
            self.schemas[name] = self._message_schema(desc, profile, output=output, strict=strict)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message_schema(
        self, desc: descriptor.Descriptor, profile: LegacyProfile, *, output: bool, strict: bool
    ) -> dict[str, Any]:
        properties = {}
        required = []
        for field in desc.fields:
            name = profile.output_name(field)
            properties[name] = self._field_schema(field, profile, output=output, strict=strict)
            if output and profile.emit_defaults and not field.has_presence:
                required.append(name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if not output and strict and profile.unknown_fields == "reject":
            schema["additionalProperties"] = False
        return schema

    def _field_schema(
        self,
        field: descriptor.FieldDescriptor,
        profile: LegacyProfile,
        *,
        output: bool,
        strict: bool,
    ) -> dict[str, Any]:
        if is_map(field):
            value = message_type_of(field).fields_by_name["value"]
            return {
                "type": "object",
                "additionalProperties": self._single_schema(
                    value, profile, output=output, strict=strict
                ),
            }
        single = self._single_schema(field, profile, output=output, strict=strict)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single_schema(
        self,
        field: descriptor.FieldDescriptor,
        profile: LegacyProfile,
        *,
        output: bool,
        strict: bool,
    ) -> dict[str, Any]:
        if field.cpp_type == _FD.CPPTYPE_MESSAGE:
            return self._message_ref(message_type_of(field), profile, output=output, strict=strict)
        return self._scalar_schema(field, profile, text=False)

    def _scalar_schema(
        self, field: descriptor.FieldDescriptor, profile: LegacyProfile, *, text: bool
    ) -> dict[str, Any]:
        """A scalar's schema; ``text`` for path/query parameters (always their JSON-ish form)."""
        cpp = field.cpp_type
        if cpp == _FD.CPPTYPE_MESSAGE:
            return dict(_special(message_type_of(field)) or {"type": "string"})
        if cpp in _INT_SCHEMAS:
            as_string = cpp in _INT64_CPP and not profile.int64_as_number and not text
            return (
                {"type": "string", "pattern": "^-?[0-9]+$"}
                if as_string
                else dict(_INT_SCHEMAS[cpp])
            )
        if cpp == _FD.CPPTYPE_ENUM and field.enum_type is not None:
            if profile.enum_style == "number" and not text:
                return {"type": "integer", "enum": [v.number for v in field.enum_type.values]}
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if field.type == _FD.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return dict(_SIMPLE_SCHEMAS.get(cpp, {"type": "string"}))


def _special(desc: descriptor.Descriptor) -> dict[str, Any] | None:
    """The schema of a message with its own JSON form (well-known types, wrappers)."""
    known = _WELL_KNOWN.get(desc.full_name)
    if known is not None:
        return dict(known)
    if is_wrapper(desc):
        value = desc.fields_by_name["value"]
        base = _Builder()._scalar_schema(value, LegacyProfile(), text=False)
        return {**base, "nullable": True}
    return None

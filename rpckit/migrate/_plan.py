"""``scan``'s planner: legacy routes and samples in, proto services, RPCs and messages out. Pure.

Per Flask endpoint and method, one RPC (every rule of the endpoint a binding
of it), or the reason the route stays on the fallback. Each RPC's request
message holds the path variables (typed by converter: int -> int64, float ->
double, anything else -> string), the query parameters (from the view's
source and the samples) and the JSON body; its response is what the 2xx
samples or type hints show, or ``google.protobuf.Value`` so nothing is lost.

Messages come from JSON shapes (:mod:`rpckit.migrate._infer`). Objects of one
structure are one message, named after the best hint: the singular of the
key that holds them (``items`` -> ``Item``) before ``<Rpc>Response``. A
request body whose keys all belong to a response message is that message
(``body: "item"``), and a path variable naming one of its fields binds it
(``/items/{item.sku}``), as hand-written protos do. Field numbers and
reviewed integer types come from the previous run's proto (``previous``);
removed fields are reserved. The output is :class:`ProtoFile` data for
:mod:`rpckit.migrate._render`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from rpckit.core._validate import check_fields
from rpckit.migrate._infer import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    Shape,
    classify,
    infer,
    is_identifier,
    merge,
)
from rpckit.migrate._routes_in import AppFacts, LegacyRoute, PathVar
from rpckit.migrate._samples import Exchange, is_json_type

__all__ = [
    "EMPTY",
    "VALUE",
    "Binding",
    "FieldSpec",
    "MessageSpec",
    "PlanOptions",
    "Previous",
    "ProtoFile",
    "RouteReport",
    "RpcSpec",
    "ScanPlan",
    "ServiceSpec",
    "plan",
]

VALUE = "google.protobuf.Value"
STRUCT = "google.protobuf.Struct"
EMPTY = "google.protobuf.Empty"
LIST_VALUE = "google.protobuf.ListValue"

_VAR = re.compile(r"<(?:[^<>:]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_PCHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]*")
_QUERY_INT = re.compile(r"-?[0-9]{1,18}")
_VERBS = {"GET": "Get", "POST": "Create", "PUT": "Update", "PATCH": "Patch", "DELETE": "Delete"}
_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "int64": (INT64_MIN, INT64_MAX),
    "sint64": (INT64_MIN, INT64_MAX),
    "sfixed64": (INT64_MIN, INT64_MAX),
    "uint64": (0, UINT64_MAX),
    "fixed64": (0, UINT64_MAX),
}
#: Response headers a route's answer carries anyway (never turned into templates).
_ORDINARY_HEADERS = frozenset(
    {"content-type", "content-length", "date", "server", "connection", "vary", "transfer-encoding"}
)


# ---------------------------------------------------------------- output data


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One field as rendered: ``[label] type name = number;`` and a trailing comment."""

    name: str
    type: str
    number: int
    label: str = ""
    comment: str = ""


@dataclasses.dataclass(frozen=True)
class MessageSpec:
    name: str
    fields: tuple[FieldSpec, ...]
    reserved_numbers: tuple[int, ...] = ()
    reserved_names: tuple[str, ...] = ()
    comment: str = ""


@dataclasses.dataclass(frozen=True)
class Binding:
    """One ``google.api.http`` pattern: method (lower case), path, body, response_body."""

    method: str
    path: str
    body: str = ""
    response_body: str = ""


@dataclasses.dataclass(frozen=True)
class RpcSpec:
    name: str
    request: str
    response: str
    bindings: tuple[Binding, ...]
    idempotency: str = ""
    success_status: int = 200
    response_headers: tuple[tuple[str, str], ...] = ()
    comment: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    name: str
    rpcs: tuple[RpcSpec, ...]
    strict_json: bool = False
    max_body_bytes: int | None = None
    comment: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProtoFile:
    """One ``.proto``: its path under the proto root, package, service and messages."""

    path: str
    package: str
    service: ServiceSpec
    messages: tuple[MessageSpec, ...]
    imports: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RouteReport:
    """What scan says about one route and method: the RPC it became, or why not."""

    method: str
    rule: str
    endpoint: str
    view: str
    rpc: str = ""
    service: str = ""
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sample_path: str = ""
    samples: int = 0

    @property
    def migratable(self) -> bool:
        return not self.blockers


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    files: tuple[ProtoFile, ...]
    routes: tuple[RouteReport, ...]
    app_notes: tuple[str, ...]
    error_renderer: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """How scan names and shapes its output.

    Attributes:
        package: proto package (``inventory_legacy.v1``).
        app_service: the service name for routes outside blueprints.
        split: ``blueprint`` (one .proto per blueprint) or ``app`` (one).
        strict_json: the service's JSON profile rejects unknown fields and
            checks types as a hand-written view did (``REJECT_UNKNOWN``,
            ``strict_types``).
    """

    package: str
    app_service: str
    split: str = "blueprint"
    strict_json: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if self.split not in ("blueprint", "app"):
            raise ValueError(f"PlanOptions.split must be 'blueprint' or 'app', got {self.split!r}")


#: Message name -> field name -> (number, type) from the proto scan wrote last time.
Previous = Mapping[str, Mapping[str, tuple[int, str]]]


# ---------------------------------------------------------------- names


def camel(text: str) -> str:
    """``create_restock_plan`` / ``restock-plans`` -> ``CreateRestockPlan`` / ``RestockPlans``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    out = "".join(w[:1].upper() + w[1:] for w in words)
    if not out or not out[0].isalpha():
        out = "X" + out
    return out


def snake(text: str) -> str:
    """``PlanRestock`` -> ``plan_restock``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower()


def singular(word: str) -> str:
    """A plain English singular, enough for collection keys (``items``, ``categories``)."""
    lower = word.lower()
    if lower.endswith("ies") and len(word) > 3:
        return word[:-3] + ("Y" if word[-3].isupper() else "y")
    if lower.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


# ---------------------------------------------------------------- types


#: A message structure as :class:`_Book` keys it: its sorted ``(name, TypeRef, label)``
#: fields, or ``(("__wrapper__", rpc), field)`` for a response's wrapper message.
StructKey = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class TypeRef:
    """A field's type before names are given: scalar, well-known, message (by structure), map."""

    kind: str  # "scalar" | "wkt" | "message" | "map"
    name: str = ""
    struct: StructKey | None = None
    value: TypeRef | None = None


_EMPTY_LIST = TypeRef("wkt", LIST_VALUE)


@dataclasses.dataclass
class _Field:
    name: str
    type: TypeRef
    label: str  # "" | "optional" | "repeated"
    note: str = ""
    low: int | None = None
    high: int | None = None


@dataclasses.dataclass
class _Struct:
    fields: list[_Field]
    hints: list[tuple[int, int, str]]  # (priority, order, name)
    order: list[str] | None = None  # preferred field order (a request body's key order)


class _Book:
    """Message structures seen so far, deduplicated; named and numbered at the end."""

    def __init__(self) -> None:
        self.structs: dict[StructKey, _Struct] = {}
        self._seen = 0
        self.notes: list[str] = []

    def hint(self, key: StructKey, priority: int, name: str) -> None:
        self._seen += 1
        self.structs[key].hints.append((priority, self._seen, name))

    def object_type(self, shape: Shape, hint: str, priority: int, where: str) -> TypeRef:
        fields = [self.field(key, s, shape.optional(key), where) for key, s in shape.fields]
        key = tuple(sorted((f.name, f.type, f.label) for f in fields))
        key = self._alike(key)
        if key not in self.structs:
            self.structs[key] = _Struct(fields=fields, hints=[])
        self.hint(key, priority, hint)
        return TypeRef("message", struct=key)

    def _alike(self, key: StructKey) -> StructKey:
        """An existing structure ``key`` fits, where only empty lists were seen (else ``key``)."""
        if key in self.structs or not any(t == _EMPTY_LIST for _, t, _ in key):
            return key
        for other in self.structs:
            if len(other) == len(key) and all(
                a[0] == b[0] and (a[1:] == b[1:] or (a[1] == _EMPTY_LIST and b[2] == "repeated"))
                for a, b in zip(key, other, strict=True)
            ):
                return other
        return key

    def field(self, key: str, shape: Shape, optional: bool, where: str) -> _Field:
        """The field for JSON key ``key`` of the object at ``where`` (a path, for messages)."""
        kind = classify(shape)
        if kind.name == "value" or kind.nullable:
            why = kind.why if kind.name == "value" else "null was seen"
            return _Field(key, TypeRef("wkt", VALUE), "", f"google.protobuf.Value: {why}")
        if kind.name == "repeated":
            return self._repeated_field(key, kind.element, f"{where}.{key}")
        if kind.name == "map":
            assert kind.element is not None
            inner = self.element_type(kind.element, camel(singular(key)), f"{where}.{key}")
            return _Field(key, TypeRef("map", value=inner), "", "keys are data: a map")
        if kind.name == "object":
            return self._object_field(key, shape, f"{where}.{key}")
        label = "optional" if optional else ""
        return _Field(key, TypeRef("scalar", kind.name), label, "", shape.int_min, shape.int_max)

    def _repeated_field(self, key: str, element: Shape | None, path: str) -> _Field:
        if element is None:
            return _Field(key, _EMPTY_LIST, "", "only empty lists were seen")
        inner = self.element_type(element, camel(singular(key)), path)
        return _Field(key, inner, "repeated", "", element.int_min, element.int_max)

    def _object_field(self, key: str, shape: Shape, path: str) -> _Field:
        if not shape.fields:
            return _Field(key, TypeRef("wkt", STRUCT), "", "only empty objects were seen")
        return _Field(key, self.object_type(shape, camel(key), 0, path), "", "")

    def element_type(self, shape: Shape, hint: str, where: str) -> TypeRef:
        kind = classify(shape)
        if kind.name == "object":
            if not shape.fields:
                return TypeRef("wkt", STRUCT)
            return self.object_type(shape, hint, 0, where)
        if kind.name in ("repeated", "map", "value") or kind.nullable:
            return TypeRef("wkt", VALUE)
        return TypeRef("scalar", kind.name)


# ---------------------------------------------------------------- path templates


def template_for(rule: str, variables: Sequence[PathVar], *, prefix: str = "") -> str:
    """The google.api.http path for a Werkzeug rule; ``ValueError`` says why there is none."""
    by_name = {v.name: v for v in variables}
    segments = rule.split("/")
    out = []
    for index, segment in enumerate(segments):
        found = list(_VAR.finditer(segment))
        if not found:
            if not _PCHARS.fullmatch(segment):
                raise ValueError(f"segment {segment!r} has characters a URL template cannot hold")
            out.append(quote(segment, safe="-._~!$&'()*+,;=:@%"))
            continue
        if len(found) > 1 or found[0].group(0) != segment:
            raise ValueError(
                f"segment {segment!r} mixes a variable with text: google.api.http binds whole "
                "segments"
            )
        var = by_name.get(found[0].group(1))
        field = prefix + found[0].group(1)
        if var is not None and var.base == "path":
            if index != len(segments) - 1:
                raise ValueError(
                    f"<path:{var.name}> is not the last segment: google.api.http allows '**' "
                    "only at the end"
                )
            out.append(f"{{{field}=**}}")
        else:
            out.append(f"{{{field}}}")
    return "/".join(out) or "/"


def _sample_path(route: LegacyRoute) -> str:
    """A legacy URL for ``route`` with made-up path values of the right kind."""
    values = {
        "int": "7",
        "float": "1.5",
        "path": "a/b",
        "uuid": "8f14e45f-ceea-467f-a8f1-0b9e6a6b1c2d",
    }

    def fill(match: re.Match[str]) -> str:
        var = next((v for v in route.variables if v.name == match.group(1)), None)
        if var is None:
            return "x"
        if var.converter == "any" and var.args:
            return var.args.split(",")[0].strip().strip("'\"")
        return values.get(var.converter, values.get(var.base, "x"))

    return _VAR.sub(fill, route.rule)


# ---------------------------------------------------------------- planning


@dataclasses.dataclass
class _Rpc:
    """An RPC being planned (names of messages still structural)."""

    name: str
    service: str
    routes: list[LegacyRoute]
    method: str
    request_fields: list[_Field]
    body: str
    request_struct: StructKey | None
    response: TypeRef
    response_body: str
    success_status: int
    response_headers: list[tuple[str, str]]
    notes: list[str]
    var_prefix: str = ""


def plan(
    routes: Sequence[LegacyRoute],
    samples: Mapping[tuple[str, str], Sequence[Exchange]],
    facts: AppFacts,
    options: PlanOptions,
    previous: Previous | None = None,
) -> ScanPlan:
    """The scan plan (module docstring). ``samples`` are keyed by ``(endpoint, method)``."""
    previous = previous or {}
    book = _Book()
    reports: list[RouteReport] = []
    planned: list[_Rpc] = []
    groups: dict[tuple[str, str], list[LegacyRoute]] = {}
    for route in routes:
        for method in route.methods:
            groups.setdefault((route.endpoint, method), []).append(route)
    taken: dict[str, set[str]] = {}
    for (endpoint, method), group in groups.items():
        seen = samples.get((endpoint, method), ())
        primary = group[0]
        service = _service_name(primary, options)
        blockers = _blockers(group, method, seen)
        report = RouteReport(
            method=method,
            rule=primary.rule,
            endpoint=endpoint,
            view=primary.view,
            sample_path=_first_path(seen) or _sample_path(primary),
            samples=len(seen),
        )
        if blockers:
            reports.append(dataclasses.replace(report, blockers=tuple(blockers)))
            continue
        name = _rpc_name(endpoint, method, primary, taken.setdefault(service, set()))
        rpc = _response_part(book, group, seen, name=name, service=service, method=method)
        planned.append(rpc)
        reports.append(dataclasses.replace(report, rpc=name, service=service))
    for rpc in planned:  # requests after every response: a body may be a response message
        _request_part(book, rpc, samples.get((rpc.routes[0].endpoint, rpc.method), ()))
    names = _name_structs(book, planned)
    files = _files(book, planned, names=names, facts=facts, options=options, previous=previous)
    notes_by_rpc = {(r.service, r.name): r.notes for r in planned}
    reports = [
        dataclasses.replace(r, notes=tuple(notes_by_rpc.get((r.service, r.rpc), ())))
        if r.rpc
        else r
        for r in reports
    ]
    return ScanPlan(
        files=files,
        routes=tuple(reports),
        app_notes=tuple(_app_notes(facts, routes)),
        error_renderer=_error_renderer(samples),
    )


def _first_path(seen: Sequence[Exchange]) -> str:
    ok = [e for e in seen if 200 <= e.status < 300]
    return (ok or list(seen))[0].path if seen else ""


def _service_name(route: LegacyRoute, options: PlanOptions) -> str:
    if options.split == "blueprint" and route.blueprint:
        return camel(route.blueprint.split(".")[-1])
    return options.app_service


def _rpc_name(endpoint: str, method: str, route: LegacyRoute, taken: set[str]) -> str:
    base = camel(endpoint.rsplit(".", maxsplit=1)[-1])
    if len(route.methods) > 1:  # one view, several RPCs: the verb tells them apart
        verb = _VERBS.get(method, camel(method.lower()))
        if method == "GET" and not route.variables:
            verb = "List"
        base = verb + base
    name = base
    counter = 2
    while name in taken:
        name = f"{base}{counter}"
        counter += 1
    taken.add(name)
    return name


def _blockers(group: Sequence[LegacyRoute], method: str, seen: Sequence[Exchange]) -> list[str]:
    blockers: list[str] = []
    for route in group:
        blockers += list(route.evidence.blockers)
        if route.host_or_subdomain:
            blockers.append(f"host or subdomain rule ({route.host_or_subdomain}): not routable")
        try:
            template_for(route.rule, route.variables)
        except ValueError as exc:
            blockers.append(f"path {route.rule}: {exc}")
    for exchange in seen:
        if not 200 <= exchange.status < 300:
            continue
        request_type = (exchange.header("Content-Type") or "").split(";")[0].strip().lower()
        if request_type == "application/x-www-form-urlencoded" and exchange.body:
            blockers.append("form: samples send form-encoded bodies")
        if request_type.startswith("multipart/"):
            blockers.append("multipart: samples upload multipart bodies")
        disposition = (exchange.response_header("Content-Disposition") or "").lower()
        if disposition.startswith("attachment"):
            blockers.append("file download: samples answer Content-Disposition: attachment")
        response_type = exchange.response_header("Content-Type")
        if exchange.response_body and not is_json_type(response_type):
            media = (response_type or "no Content-Type").split(";")[0]
            kind = "html" if "html" in media else "non-JSON"
            blockers.append(f"{kind}: samples answer {media}")
        if any(n.startswith("streamed") for n in exchange.notes):
            blockers.append("streaming: samples were streamed")
    return list(dict.fromkeys(blockers))  # unique, in order


def _ok_json(seen: Sequence[Exchange], side: str) -> list[Any]:
    values = []
    for exchange in seen:
        if not 200 <= exchange.status < 300:
            continue
        ok, value = exchange.response_json() if side == "response" else exchange.request_json()
        if ok:
            values.append(value)
    return values


def _response_part(
    book: _Book,
    group: list[LegacyRoute],
    seen: Sequence[Exchange],
    *,
    name: str,
    service: str,
    method: str,
) -> _Rpc:
    """An RPC's response side: success status, response message, headers, notes on the rules."""
    primary = group[0]
    notes: list[str] = []
    ok = [e for e in seen if 200 <= e.status < 300]
    success = _success_status(primary, ok, notes)
    response, response_body = _response_type(book, name, primary, ok, success=success, notes=notes)
    headers = _header_templates(ok, book, response, notes)
    notes += _rule_notes(group)
    return _Rpc(
        name=name,
        service=service,
        routes=list(group),
        method=method,
        request_fields=[],
        body="",
        request_struct=None,
        response=response,
        response_body=response_body,
        success_status=success,
        response_headers=headers,
        notes=notes,
    )


def _success_status(primary: LegacyRoute, ok: Sequence[Exchange], notes: list[str]) -> int:
    """The status the shim answers with: the samples' usual 2xx, else the view's, else 200."""
    statuses = Counter(e.status for e in ok)
    success = statuses.most_common(1)[0][0] if statuses else 0
    if not success and primary.evidence.statuses and len(primary.methods) == 1:
        success = primary.evidence.statuses[0]
    if len(statuses) > 1:
        notes.append(f"mixed success statuses {sorted(statuses)}: the shim sends one ({success})")
    success = success or 200
    if success not in (200, 201, 202, 204):
        notes.append(f"success status {success} is not one the shim sends; 200 is used")
        success = 200
    return success


def _response_type(
    book: _Book,
    name: str,
    primary: LegacyRoute,
    ok: Sequence[Exchange],
    *,
    success: int,
    notes: list[str],
) -> tuple[TypeRef, str]:
    """The response message and its ``response_body`` field ("" for the whole message)."""
    values = _ok_json(ok, "response")
    shape = infer(values)
    hint = primary.response_hint
    if hint is not None:
        shape = merge(hint, shape) if values else hint
    if success == 204 or (ok and not values and all(not e.response_body for e in ok)):
        return TypeRef("wkt", EMPTY), ""
    if not shape.count:
        notes.append("no samples or type hints for the response: google.protobuf.Value")
        field = _Field("body", TypeRef("wkt", VALUE), "", "any JSON")
        return _wrapper(book, name, field), "body"
    kind = classify(shape)
    if kind.name == "object" and shape.fields:
        return book.object_type(shape, f"{name}Response", 1, f"{name}:response"), ""
    if kind.name == "repeated":
        notes.append("top-level JSON array: response_body")
    field = book.field("items" if kind.name == "repeated" else "body", shape, False, name)
    return _wrapper(book, name, field), field.name


def _rule_notes(group: Sequence[LegacyRoute]) -> list[str]:
    """What the rules ask that the proto cannot say: defaults, converters' checks, slashes."""
    notes = []
    for route in group:
        if route.defaults:
            pairs = ", ".join(f"{k}={v}" for k, v in route.defaults)
            notes.append(f"rule {route.rule} sets defaults ({pairs}): the handler sees 0/'' unset")
        notes.extend(route.hint_notes)
        notes += [_converter_note(var) for var in route.variables]
    if not group[0].strict_slashes:
        notes.append("strict_slashes=False on this rule: ShimConfig(strict_slashes=False)")
    return [note for note in notes if note]


def _converter_note(var: PathVar) -> str:
    """What the shim does not check about a path variable's converter ("" when nothing)."""
    if not var.builtin:
        return (
            f"<{var.converter}:{var.name}> is the app's own converter: typed {var.base}, "
            "its regex is not checked by the shim"
        )
    if var.converter == "any":
        return f"<any({var.args}):{var.name}>: the handler must check the value"
    if var.converter in ("int", "float") and var.args:
        return f"<{var.converter}({var.args}):{var.name}>: bounds are the handler's"
    return ""


def _wrapper(book: _Book, name: str, field: _Field) -> TypeRef:
    key = (("__wrapper__", name), (field.name, field.type, field.label))
    book.structs[key] = _Struct(fields=[field], hints=[])
    book.hint(key, 1, f"{name}Response")
    return TypeRef("message", struct=key)


def _header_templates(
    ok: Sequence[Exchange], book: _Book, response: TypeRef, notes: list[str]
) -> list[tuple[str, str]]:
    """Response headers of the 2xx samples, as templates over response fields where they fit."""
    if not ok:
        return []
    names: dict[str, str] = {}
    for exchange in ok:
        for header, _ in exchange.response_headers:
            if header.lower() not in _ORDINARY_HEADERS:
                names.setdefault(header.lower(), header)
    scalar_fields = []
    if response.kind == "message" and response.struct is not None:
        struct = book.structs[response.struct]
        scalar_fields = [f.name for f in struct.fields if f.type.kind == "scalar" and not f.label]
    templates = []
    for _, header in sorted(names.items()):
        found: set[str] = set()
        for exchange in ok:
            value = exchange.response_header(header)
            ok_json, body = exchange.response_json()
            found.add(_templated(value or "", body if ok_json else None, scalar_fields))
        if len(found) == 1 and "" not in found:
            templates.append((header, found.pop()))
        else:
            notes.append(f"response header {header} varies: set it from the handler's metadata")
    return templates


def _templated(value: str, body: Any, fields: Sequence[str]) -> str:
    if not isinstance(body, dict):
        return value
    for name in sorted(fields, key=lambda f: -len(str(body.get(f, "")))):
        raw = body.get(name)
        if isinstance(raw, (str, int)) and not isinstance(raw, bool) and str(raw):
            encoded = quote(str(raw), safe="-._~!$&'()*+,;=:@")
            if encoded in value:
                value = value.replace(encoded, f"{{{name}}}")
    return value


def _request_part(book: _Book, rpc: _Rpc, seen: Sequence[Exchange]) -> None:
    """An RPC's request message: path variables, the JSON body, then query parameters."""
    primary = rpc.routes[0]
    variables: dict[str, PathVar] = {}
    for route in rpc.routes:
        for var in route.variables:
            variables.setdefault(var.name, var)
    body_values = _ok_json(seen, "request")
    shape = infer(body_values)
    if primary.request_hint is not None:
        shape = merge(primary.request_hint, shape) if body_values else primary.request_hint
    has_body = rpc.method in ("POST", "PUT", "PATCH") and (
        bool(shape.count) or primary.evidence.reads_body
    )
    path_fields = [_path_field(v) for v in variables.values()]
    if not has_body:
        fields = path_fields
    elif shape.count and classify(shape).name == "object" and shape.fields:
        fields = _object_body(book, rpc, shape, variables, body_values)
    else:
        fields = [*path_fields, _other_body(book, rpc, shape)]
    if rpc.body != "*":
        fields += _query_fields(primary, seen, {f.name for f in fields})
    rpc.request_fields = fields


def _object_body(
    book: _Book,
    rpc: _Rpc,
    shape: Shape,
    variables: Mapping[str, PathVar],
    body_values: Sequence[Any],
) -> list[_Field]:
    """Fields for a JSON object body, one of three ways.

    A response message that takes every key is the body (``body: "item"``), and a
    path variable naming one of its fields binds it (``/items/{item.sku}``); else
    the keys are request fields (``body: "*"``), in a ``body`` message of their
    own when one of them is also a path variable.
    """
    target = _matching_struct(book, shape)
    if target is not None:
        struct = book.structs[target]
        rpc.body = snake(_best_hint(struct)) if struct.hints else "body"
        rpc.request_struct = target
        if struct.order is None:
            struct.order = _key_order(body_values)
        in_body = {f.name for f in struct.fields}
        if in_body & variables.keys():
            rpc.var_prefix = f"{rpc.body}."
        others = [_path_field(v) for name, v in variables.items() if name not in in_body]
        return [*reversed(others), _Field(rpc.body, TypeRef("message", struct=target), "")]
    where = f"{rpc.name}:request"
    body_fields = [book.field(key, s, shape.optional(key), where) for key, s in shape.fields]
    fields = [_path_field(v) for v in variables.values()]
    if any(f.name in variables for f in body_fields):
        rpc.body = "body"
        return [*fields, _Field("body", book.object_type(shape, f"{rpc.name}Body", 1, where), "")]
    rpc.body = "*"
    return fields + body_fields


def _other_body(book: _Book, rpc: _Rpc, shape: Shape) -> _Field:
    """The field for a body that is not an object of known keys: an array, or any JSON."""
    kind = classify(shape).name if shape.count else "value"
    if kind == "repeated":
        rpc.body = "items"
        rpc.notes.append('top-level JSON array body: body "items"')
        return book.field("items", shape, False, rpc.name)
    rpc.body = "body"
    rpc.notes.append("request body shape unknown: google.protobuf.Struct")
    return _Field("body", TypeRef("wkt", VALUE if shape.count else STRUCT), "")


def _key_order(values: Sequence[Any]) -> list[str]:
    order: dict[str, None] = {}
    for value in values:
        if isinstance(value, dict):
            order.update(dict.fromkeys(value))
    return list(order)


def _path_field(var: PathVar) -> _Field:
    scalar = {"int": "int64", "float": "double"}.get(var.base, "string")
    return _Field(var.name, TypeRef("scalar", scalar), "", f"path <{var.converter}:{var.name}>")


def _query_fields(route: LegacyRoute, seen: Sequence[Exchange], taken: set[str]) -> list[_Field]:
    kinds: dict[str, str] = dict(route.evidence.query)
    values: dict[str, list[str]] = {}
    repeated: set[str] = set()
    for exchange in seen:
        if not 200 <= exchange.status < 300:
            continue
        pairs = parse_qsl(exchange.query, keep_blank_values=True)
        counts = Counter(k for k, _ in pairs)
        repeated |= {k for k, n in counts.items() if n > 1}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
    fields = []
    for key in [*kinds, *(k for k in values if k not in kinds)]:
        if key in taken or not is_identifier(key):
            continue
        kind = kinds.get(key) or _query_kind(values.get(key, []))
        scalar = {"int": "int64", "float": "double", "bool": "bool"}.get(kind, "string")
        label = "repeated" if key in repeated else "optional"
        fields.append(_Field(key, TypeRef("scalar", scalar), label, "query parameter"))
        taken.add(key)
    return fields


def _query_kind(values: Sequence[str]) -> str:
    if values and all(_QUERY_INT.fullmatch(v) for v in values):
        return "int"
    if values and all(v in ("true", "false") for v in values):
        return "bool"
    return "string"


def _matching_struct(book: _Book, shape: Shape) -> StructKey | None:
    """A response message whose fields take every key of a request body, types alike."""
    probe = _Book()
    wanted = {key: probe.field(key, s, False, "probe").type for key, s in shape.fields}
    best = None
    for key, struct in book.structs.items():
        if not struct.hints or (key and key[0] and key[0][0] == "__wrapper__"):
            continue
        if min(h[0] for h in struct.hints) != 0 and not any(
            h[2].endswith("Response") for h in struct.hints
        ):
            continue
        by_name = {f.name: f for f in struct.fields}
        fits = all(k in by_name and _compatible(t, by_name[k].type) for k, t in wanted.items())
        if fits and (best is None or len(struct.fields) < len(book.structs[best].fields)):
            best = key
    return best


def _compatible(a: TypeRef, b: TypeRef) -> bool:
    if a == b:
        return True
    return a.kind == b.kind == "scalar" and {a.name, b.name} <= {"int64", "uint64", "double"}


def _best_hint(struct: _Struct) -> str:
    return min(struct.hints)[2]


def _name_structs(book: _Book, planned: Sequence[_Rpc]) -> dict[StructKey, str]:
    names: dict[StructKey, str] = {}
    used = {f"{rpc.name}Request" for rpc in planned}
    for key, struct in sorted(book.structs.items(), key=lambda kv: min(kv[1].hints)[:2]):
        for _, _, hint in sorted(struct.hints):
            if hint not in used:
                names[key] = hint
                break
        else:
            base = _best_hint(struct)
            counter = 2
            while f"{base}{counter}" in used:
                counter += 1
            names[key] = f"{base}{counter}"
        used.add(names[key])
    return names


def _type_name(ref: TypeRef, names: Mapping[StructKey, str]) -> str:
    if ref.kind in ("scalar", "wkt"):
        return ref.name
    if ref.kind == "map":
        assert ref.value is not None
        return f"map<string, {_type_name(ref.value, names)}>"
    assert ref.struct is not None
    return names[ref.struct]


def _uses(ref: TypeRef, book: _Book, out: dict[StructKey, None]) -> None:
    if ref.kind == "map" and ref.value is not None:
        _uses(ref.value, book, out)
    if ref.kind == "message" and ref.struct is not None and ref.struct not in out:
        out[ref.struct] = None
        for field in book.structs[ref.struct].fields:
            _uses(field.type, book, out)


def _files(
    book: _Book,
    planned: Sequence[_Rpc],
    *,
    names: Mapping[StructKey, str],
    facts: AppFacts,
    options: PlanOptions,
    previous: Previous,
) -> tuple[ProtoFile, ...]:
    """One ``.proto`` per service; a message shared by services is defined in the first."""
    by_service: dict[str, list[_Rpc]] = {}
    for rpc in planned:
        by_service.setdefault(rpc.service, []).append(rpc)
    package_dir = options.package.replace(".", "/")
    files = []
    owner: dict[StructKey, str] = {}  # a structure shared by services lives in the first
    for service, rpcs in by_service.items():
        used: dict[StructKey, None] = {}
        for rpc in rpcs:
            for field in rpc.request_fields:
                _uses(field.type, book, used)
            _uses(rpc.response, book, used)
        messages = []
        for rpc in rpcs:
            messages.append(
                _message(f"{rpc.name}Request", rpc.request_fields, names, previous, None)
            )
        for key in used:
            if key in owner:
                continue
            owner[key] = service
            struct = book.structs[key]
            messages.append(_message(names[key], struct.fields, names, previous, struct.order))
        rpc_specs = tuple(_rpc_spec(rpc, names) for rpc in rpcs)
        filename = snake(service) + ".proto"
        files.append(
            ProtoFile(
                path=f"{package_dir}/{filename}",
                package=options.package,
                service=ServiceSpec(
                    name=service,
                    rpcs=rpc_specs,
                    strict_json=options.strict_json,
                    max_body_bytes=facts.max_body_bytes,
                    comment=(f"Scanned from the Flask app {facts.name!r}.",),
                ),
                messages=tuple(messages),
                imports=_imports(messages, rpc_specs),
            )
        )
    # A message used by several services must be importable from the others: one package,
    # so the type name resolves as long as the files import each other.
    return tuple(_cross_imports(files))


def _imports(messages: Sequence[MessageSpec], rpcs: Sequence[RpcSpec]) -> tuple[str, ...]:
    """The imports a file's own text needs (other files' messages: :func:`_cross_imports`)."""
    text = " ".join(
        [
            *(f.type for m in messages for f in m.fields),
            *(f"{r.request} {r.response}" for r in rpcs),
        ]
    )
    imports = ["google/api/annotations.proto", "rpckit/v1/http.proto"]
    if EMPTY in text:
        imports.append("google/protobuf/empty.proto")
    if any(wkt in text for wkt in (VALUE, STRUCT, LIST_VALUE)):
        imports.append("google/protobuf/struct.proto")
    return tuple(sorted(imports))


def _cross_imports(files: Sequence[ProtoFile]) -> list[ProtoFile]:
    defined = {m.name: f.path for f in files for m in f.messages}
    out = []
    for file in files:
        types = {f.type for m in file.messages for f in m.fields}
        types |= {r.request for r in file.service.rpcs} | {r.response for r in file.service.rpcs}
        types = {t.split(", ")[-1].rstrip(">") for t in types}
        extra = {defined[t] for t in types if t in defined and defined[t] != file.path}
        out.append(dataclasses.replace(file, imports=tuple(sorted({*file.imports, *extra}))))
    return out


def _message(
    name: str,
    fields: Sequence[_Field],
    names: Mapping[StructKey, str],
    previous: Previous,
    order: Sequence[str] | None,
) -> MessageSpec:
    before = previous.get(name, {})
    reserved = {f for f, (n, t) in before.items() if t == "reserved"}
    ordered = [f for f in fields if f.name not in reserved]
    if order:
        rank = {key: i for i, key in enumerate(order)}
        ordered.sort(key=lambda f: rank.get(f.name, len(rank)))
    next_number = max([n for n, _ in before.values()], default=0) + 1
    specs = []
    for field in ordered:
        type_name = _type_name(field.type, names)
        type_name = _reviewed_type(type_name, field, before.get(field.name))
        if field.name in before:
            number = before[field.name][0]
        else:
            number = next_number
            next_number += 1
        specs.append(FieldSpec(field.name, type_name, number, field.label, field.note))
    present = {f.name for f in specs}
    gone = [(n, f) for f, (n, t) in before.items() if f not in present and t != "reserved"]
    numbers = sorted(
        {n for n, _ in gone} | {n for f, (n, t) in before.items() if t == "reserved" and n > 0}
    )
    names_gone = sorted({f for _, f in gone} | {f for f in reserved if not f.startswith("#")})
    return MessageSpec(
        name=name,
        fields=tuple(specs),
        reserved_numbers=tuple(numbers),
        reserved_names=tuple(names_gone),
    )


def _reviewed_type(inferred: str, field: _Field, before: tuple[int, str] | None) -> str:
    """The previous run's integer type, when a reviewer narrowed it and every sample fits."""
    if before is None or before[1] == inferred:
        return inferred
    kept = before[1]
    if inferred in _INT_RANGES and kept in _INT_RANGES:
        low, high = _INT_RANGES[kept]
        seen_low = field.low if field.low is not None else 0
        seen_high = field.high if field.high is not None else 0
        if low <= seen_low and seen_high <= high:
            return kept
    return inferred


def _rpc_spec(rpc: _Rpc, names: Mapping[StructKey, str]) -> RpcSpec:
    bindings = []
    for route in rpc.routes:
        path = template_for(route.rule, route.variables, prefix="")
        if rpc.var_prefix:
            path = template_for(route.rule, route.variables, prefix=rpc.var_prefix)
        bindings.append(
            Binding(rpc.method.lower(), path, body=rpc.body, response_body=rpc.response_body)
        )
    idempotency = {"GET": "NO_SIDE_EFFECTS", "PUT": "IDEMPOTENT", "DELETE": "IDEMPOTENT"}
    primary = rpc.routes[0]
    comment = [
        f"{rpc.method} {primary.rule} -> {primary.view}"
        + (f" ({primary.source})" if primary.source else "")
    ]
    comment += [f"note: {n}" for n in rpc.notes]
    return RpcSpec(
        name=rpc.name,
        request=f"{rpc.name}Request",
        response=_type_name(rpc.response, names),
        bindings=tuple(bindings),
        idempotency=idempotency.get(rpc.method, ""),
        success_status=rpc.success_status,
        response_headers=tuple(rpc.response_headers),
        comment=tuple(comment),
    )


def _app_notes(facts: AppFacts, routes: Iterable[LegacyRoute]) -> list[str]:
    notes = []
    if facts.error_handlers:
        notes.append(
            "error handlers: "
            + ", ".join(facts.error_handlers)
            + ": migrated routes' errors come from the shim's error renderer"
        )
    if facts.custom_converters:
        notes.append("custom converters: " + ", ".join(facts.custom_converters))
    if any(not r.strict_slashes for r in routes):
        notes.append("some rules set strict_slashes=False; the shim has one setting for all")
    return notes


def _error_renderer(samples: Mapping[tuple[str, str], Sequence[Exchange]]) -> str:
    """Which built-in renderer gives the error bodies the samples show (or ``""``: none does)."""
    shapes = set()
    for seen in samples.values():
        for exchange in seen:
            if exchange.status < 400:
                continue
            ok, value = exchange.response_json()
            if not ok:
                continue
            if (
                isinstance(value, dict)
                and set(value) == {"error"}
                and isinstance(value["error"], dict)
                and set(value["error"]) == {"code", "message"}
            ):
                shapes.add("render_error_object")
            elif isinstance(value, dict) and {"code", "message"} <= set(value) <= {
                "code",
                "message",
                "details",
            }:
                shapes.add("render_gateway_error")
            else:
                shapes.add("")
    return shapes.pop() if len(shapes) == 1 else ""


def samples_by_route(
    exchanges: Iterable[Exchange], match: Any
) -> dict[tuple[str, str], list[Exchange]]:
    """Group exchanges by ``match(exchange) -> (endpoint, method) | None``."""
    grouped: dict[tuple[str, str], list[Exchange]] = {}
    for exchange in exchanges:
        key = match(exchange)
        if key is not None:
            grouped.setdefault(key, []).append(exchange)
    return grouped


def decoded_path(path: str) -> str:
    return unquote(path)

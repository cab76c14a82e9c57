"""Reading one legacy HTTP request: path, query, content type, deadline, body, JSON types.

Pure functions over the pieces of a WSGI request (no I/O): each raises
:class:`~rpckit.http._errors.HttpError` with the status and message the legacy
contract gives. The shim calls them in the legacy check order, first failure
wins: guard (auth) -> content type (415) -> body size (413) -> UTF-8 and JSON
syntax (400) -> a JSON object -> unknown fields (all of them, sorted) ->
field types in proto field order -> then the handler checks values.

*Strict types* (``LegacyJson.strict_types``) check request JSON the way a
hand-written Flask view did, before json_format sees it: integer fields take
JSON integers only (``true``, ``1.0``, ``"1"`` and ``null`` are refused with the
field's name), strings only strings, lists only lists; keys only in the
profile's spelling; query integers only ``-?[0-9]+``. json_format is lenient
in exactly those places (ProtoJSON accepts ``"1"`` and ``1.0`` for ints).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from google.protobuf import descriptor

from rpckit.core._deadline import decode_grpc_timeout
from rpckit.core._descriptors import (
    INT_RANGES,
    FieldPathError,
    is_map,
    is_plain_message,
    message_type_of,
)
from rpckit.http._errors import (
    ErrorReason,
    FieldViolation,
    HttpError,
    JsonType,
    json_type_of,
)
from rpckit.http._mapping._jsonmap import JsonError, LegacyProfile, loads
from rpckit.http._mapping._routes import Route, query_fields

__all__ = [
    "check_body_types",
    "check_query_types",
    "check_required",
    "deadline_from_headers",
    "decode_body",
    "is_json_content_type",
    "parse_query",
    "raw_request_path",
    "request_url_part",
]

_FD = descriptor.FieldDescriptor

#: What a raw URL path may keep unescaped when it is rebuilt from PATH_INFO (RFC 3986 pchar + "/").
_PATH_SAFE = "/-._~!$&'()*+,;=:@"

_SIGNED = re.compile(r"-?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")

_INT_NAMES = {
    _FD.CPPTYPE_INT32: "int32",
    _FD.CPPTYPE_UINT32: "uint32",
    _FD.CPPTYPE_INT64: "int64",
    _FD.CPPTYPE_UINT64: "uint64",
}
_INT_KINDS = {cpp: (name, *INT_RANGES[cpp]) for cpp, name in _INT_NAMES.items()}
_INT64_CPP = frozenset({_FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT64})

#: Longest X-Request-Timeout accepted, in seconds (a day): beyond it is a typo, not a budget.
MAX_HEADER_TIMEOUT_S = 86_400.0


# ---------------------------------------------------------------- the URL


def raw_request_path(environ: Mapping[str, Any]) -> str:
    """The request path as sent (still percent-encoded), relative to ``SCRIPT_NAME``.

    Uses ``RAW_URI``/``REQUEST_URI`` (gunicorn, cheroot, Werkzeug) when it agrees
    with ``SCRIPT_NAME + PATH_INFO``, so an encoded ``/`` in a segment survives;
    otherwise re-encodes ``PATH_INFO`` (WSGI's latin-1 view of the bytes).
    """
    script = str(environ.get("SCRIPT_NAME", ""))
    path_info = str(environ.get("PATH_INFO", "")) or "/"
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(uri, str) and uri:
        raw = uri.split("?", 1)[0].split("#", 1)[0]
        if "://" in raw:  # absolute-form request target
            raw = "/" + raw.split("://", 1)[1].partition("/")[2]
        try:
            agrees = unquote_to_bytes(raw) == (script + path_info).encode("latin-1")
        except UnicodeEncodeError:
            agrees = False
        if agrees:
            prefix = "/".join(raw.split("/")[: script.count("/") + 1]) if script else ""
            if unquote_to_bytes(prefix) == script.encode("latin-1"):
                return raw[len(prefix) :] or "/"
    try:
        return quote(path_info.encode("latin-1"), safe=_PATH_SAFE)
    except UnicodeEncodeError:
        return quote(path_info.encode("utf-8", "surrogateescape"), safe=_PATH_SAFE)


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def request_url_part(environ: Mapping[str, Any], name: str) -> str:
    """One part of the URL the client used, as Werkzeug's request spells it.

    ``$scheme`` (``http``), ``$host`` (the ``Host`` header, else ``SERVER_NAME`` and
    port; a default port dropped), ``$script_root`` (``SCRIPT_NAME`` without its
    trailing ``/``, percent-encoded) and ``$url_root`` (``http://host/root/``).
    """
    scheme = str(environ.get("wsgi.url_scheme") or "http")
    if name == "$scheme":
        return scheme
    host = str(environ.get("HTTP_HOST") or "")
    if not host:
        host = str(environ.get("SERVER_NAME") or "localhost")
        port = str(environ.get("SERVER_PORT") or "")
        if port and port != _DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
    elif host.endswith(":" + _DEFAULT_PORTS.get(scheme, "-")):
        host = host.rsplit(":", 1)[0]
    if name == "$host":
        return host
    script_root = quote(str(environ.get("SCRIPT_NAME") or "").rstrip("/"), safe=_PATH_SAFE)
    if name == "$script_root":
        return script_root
    if name == "$url_root":
        return f"{scheme}://{host}{script_root}/"
    raise ValueError(f"unknown request placeholder {{{name}}}")


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """``a=1&b=x+y`` -> ``[("a", "1"), ("b", "x y")]``, as Werkzeug parses ``request.args``.

    ``QUERY_STRING`` is WSGI's latin-1 view of the bytes; values are decoded as
    UTF-8 with invalid sequences replaced (Werkzeug's choice).
    """
    if not query_string:
        return []
    raw = query_string.encode("latin-1", "replace").decode("ascii", "replace")
    return parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- headers


def is_json_content_type(value: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters allowed): Flask's ``is_json``."""
    if not value:
        return False
    mimetype = value.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def deadline_from_headers(x_request_timeout: str | None, grpc_timeout: str | None) -> float | None:
    """Seconds the client allows, from ``X-Request-Timeout`` (decimal seconds, ``"2.5"``)
    and ``grpc-timeout`` (gRPC's ``"250m"``); the shorter when both are set; None if neither.

    Raises a 400 :class:`HttpError` naming the header when one cannot be read.
    """
    budgets: list[float] = []
    if x_request_timeout is not None:
        text = x_request_timeout.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not (0 <= seconds <= MAX_HEADER_TIMEOUT_S) or not re.fullmatch(r"[0-9.]+", text):
            raise HttpError(
                400,
                f"malformed X-Request-Timeout {x_request_timeout!r}: expected seconds "
                f"from 0 to {MAX_HEADER_TIMEOUT_S:g}, e.g. 2.5",
                reason="bad_timeout",
                field="X-Request-Timeout",
            )
        budgets.append(seconds)
    if grpc_timeout is not None:
        try:
            budgets.append(decode_grpc_timeout(grpc_timeout.strip()))
        except ValueError as exc:
            raise HttpError(400, str(exc), reason="bad_timeout", field="grpc-timeout") from None
    return min(budgets) if budgets else None


# ---------------------------------------------------------------- the body


def decode_body(raw: bytes, *, strict: bool) -> Any:
    """The JSON value of a request body; None for an empty body unless ``strict``.

    ``strict`` treats an empty body as malformed JSON, as ``json.loads("")`` did in
    the legacy view. Raises 400 :class:`HttpError` for bad UTF-8 or JSON syntax
    (the message says where: ``malformed JSON: Expecting value: line 1 column 1 (char 0)``).
    """
    if not strict and not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "request body is not valid UTF-8", reason="invalid_utf8") from None
    try:
        return loads(text)
    except JsonError as exc:
        raise HttpError(400, f"malformed JSON: {exc.reason}", reason="malformed_json") from None


def check_body_types(
    obj: Any,
    route: Route,
    profile: LegacyProfile,
    *,
    found: list[FieldViolation] | None = None,
) -> Any:
    """Strict-type check of a decoded body for ``route``; returns it, unknown keys pruned
    when the profile ignores them. Raises 400 :class:`HttpError` for the first failure,
    or, given ``found``, appends every field's violation there and raises only for the
    body as a whole (not an object, unknown fields).
    """
    checker = _StrictChecker(profile, found)
    request = route.request_descriptor
    if route.body == "*":
        if not isinstance(obj, dict) and is_plain_message(request):
            raise HttpError(400, "request body must be a JSON object", reason="not_an_object")
        return checker.root(obj, request)
    field = request.fields_by_name[route.body]
    if field.cpp_type == _FD.CPPTYPE_MESSAGE and not field.is_repeated:
        sub = message_type_of(field)
        if is_plain_message(sub):
            if not isinstance(obj, dict):
                raise HttpError(400, "request body must be a JSON object", reason="not_an_object")
            return checker.root(obj, sub)
    checker.value(field, obj, route.body)
    return obj


def check_required(
    obj: Any, required: Sequence[str], profile: LegacyProfile, found: list[FieldViolation]
) -> None:
    """Note a ``missing`` violation for each required top-level body key ``obj`` lacks
    (``null`` counts as absent, as marshmallow's ``required=True`` without ``allow_none``)."""
    present = obj if isinstance(obj, dict) else {}
    for name in required:
        if present.get(name) is None:
            found.append(FieldViolation(field=name, description="is required", reason="missing"))


def check_query_types(
    route: Route,
    query: Sequence[tuple[str, str]],
    *,
    python_ints: bool = False,
    found: list[FieldViolation] | None = None,
) -> list[tuple[str, str]]:
    """Strict query parameters: integer fields take ``-?[0-9]+`` within range (with
    ``python_ints``, whatever Python's ``int()`` reads, as ``request.args.get(type=int)``
    did: ``+1``, `` 1``; passed on as the plain number), and a repeated parameter for a
    singular field keeps its first value (``request.args.get``).
    Given ``found``, violations are appended there instead of raised.

    A parameter names its field as :func:`~rpckit.http._mapping._routes.build_request`
    reads it (proto or JSON names: ``page_size`` and ``pageSize`` are one field), so
    every parameter that sets a field is checked. Returns the query to apply;
    unknown parameters pass through (ignored later).
    """
    if route.body == "*":
        return list(query)
    bound = route.bound_paths
    kept: list[tuple[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for key, value in query:
        fields = _query_fields(route.request_descriptor, key)
        names = tuple(f.name for f in fields)
        field = fields[-1] if fields else None
        if (
            field is None  # unknown: the writer ignores it or says what is wrong
            or field.cpp_type == _FD.CPPTYPE_MESSAGE  # its own text form (Timestamp...)
            or any(names[: len(b)] == b for b in bound)  # set by the path or the body
        ):
            kept.append((key, value))
            continue
        if not field.is_repeated:
            if names in seen:
                continue
            seen.add(names)
        kind = _INT_KINDS.get(field.cpp_type)
        if kind is not None:
            name, low, high = kind
            pattern = _UNSIGNED if name.startswith("u") else _SIGNED
            violation = None
            text = _python_int_text(value) if python_ints else value
            if pattern.fullmatch(text) is None:
                violation = FieldViolation(
                    field=key,
                    description="must be an integer",
                    location="query",
                    expected="integer",
                )
            elif not _fits(text, low, high):
                violation = FieldViolation(
                    field=key,
                    description=f"is out of range for {name}",
                    reason="out_of_range",
                    location="query",
                    expected="integer",
                )
            if violation is not None:
                if found is None:
                    raise HttpError.for_violations([violation])
                found.append(violation)
                continue
            kept.append((key, text))
            continue
        kept.append((key, value))
    return kept


#: More digits than any 64-bit value has: out of range without calling int() (which
#: refuses over 4300 digits with a ValueError, a hostile query's way to a 500).
_MAX_INT_DIGITS = 20


def _fits(digits: str, low: int, high: int) -> bool:
    """Whether the integer text ``digits`` (``-?[0-9]+``) is from ``low`` to ``high``."""
    if len(digits.lstrip("+-").lstrip("0")) > _MAX_INT_DIGITS:
        return False
    return low <= int(digits) <= high


def _python_int_text(text: str) -> str:
    """``text`` as the digits of Python's ``int(text)`` (``"+1"`` -> ``"1"``); unchanged
    when ``int()`` refuses it (the caller reports it)."""
    if len(text) > 4 * _MAX_INT_DIGITS:  # no 64-bit value needs more, even with "_"s
        return text
    try:
        return str(int(text))
    except ValueError:
        return text


def _query_fields(desc: descriptor.Descriptor, key: str) -> tuple[descriptor.FieldDescriptor, ...]:
    """The fields ``key`` sets; empty when it names none (the writer then ignores it, or
    says what is wrong with it)."""
    try:
        return query_fields(desc, key)
    except FieldPathError:
        return ()


class _StrictChecker:
    """Walks request JSON along the message types: unknown keys first, then types."""

    def __init__(self, profile: LegacyProfile, found: list[FieldViolation] | None) -> None:
        self._profile = profile
        self._reject = profile.unknown_fields == "reject"
        self._found = found

    def _fail(
        self,
        field: str,
        description: str,
        value: Any,
        *,
        reason: ErrorReason = "wrong_type",
        expected: JsonType = "",
    ) -> None:
        """Report one violation: raise it, or note it when collecting them all."""
        violation = FieldViolation(
            field=field,
            description=description,
            reason=reason,
            received=json_type_of(value),
            expected=expected,
        )
        if self._found is None:
            raise HttpError.for_violations([violation])
        if violation not in self._found:  # a list with several wrong items: once
            self._found.append(violation)

    def root(self, obj: dict[str, Any], desc: descriptor.Descriptor) -> dict[str, Any]:
        unknown: list[str] = []
        pruned = self._unknown(obj, desc, "", unknown)
        if unknown and self._reject and self._found is not None:
            for name in sorted(unknown):
                self._found.append(
                    FieldViolation(
                        field=name, description="is not a known field", reason="unknown_fields"
                    )
                )
        elif unknown and self._reject:
            names = sorted(unknown)
            quoted = ", ".join(f"'{n}'" for n in names)
            plural = "s" if len(names) > 1 else ""
            raise HttpError(
                400, f"unknown field{plural} {quoted}", reason="unknown_fields", fields=names
            )
        self._message(pruned, desc, "")
        return pruned

    # -- unknown keys (collected over the whole document, reported sorted)

    def _names(self, desc: descriptor.Descriptor) -> dict[str, descriptor.FieldDescriptor]:
        return {self._profile.output_name(f): f for f in desc.fields}

    def _unknown(
        self, obj: dict[str, Any], desc: descriptor.Descriptor, path: str, unknown: list[str]
    ) -> dict[str, Any]:
        names = self._names(desc)
        kept: dict[str, Any] = {}
        for key, value in obj.items():
            field = names.get(key)
            where = f"{path}.{key}" if path else key
            if field is None:
                unknown.append(where)
                continue
            kept[key] = self._unknown_in(field, value, where, unknown)
        return kept

    def _unknown_in(
        self, field: descriptor.FieldDescriptor, value: Any, where: str, unknown: list[str]
    ) -> Any:
        """``value`` with unknown keys pruned from the plain messages it holds."""
        inner = _held_plain_message(field)
        if inner is None:
            return value

        def prune(item: Any, at: str) -> Any:
            return self._unknown(item, inner, at, unknown) if isinstance(item, dict) else item

        if is_map(field):
            if not isinstance(value, dict):
                return value
            return {k: prune(v, f"{where}[{k}]") for k, v in value.items()}
        if field.is_repeated:
            if not isinstance(value, list):
                return value
            return [prune(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return prune(value, where)

    # -- types, in proto field order

    def _message(self, obj: dict[str, Any], desc: descriptor.Descriptor, path: str) -> None:
        for field in desc.fields:
            key = self._profile.output_name(field)
            if key in obj:
                self.value(field, obj[key], f"{path}.{key}" if path else key)

    def value(self, field: descriptor.FieldDescriptor, value: Any, where: str) -> None:
        """Check one field's JSON value; ``where`` names it in the error."""
        if is_map(field):
            entry = message_type_of(field)
            value_field = entry.fields_by_name["value"]
            if not isinstance(value, dict):
                self._fail(where, "must be an object", value, expected="object")
                return
            for key, item in value.items():
                self._single(value_field, item, f"{where}[{key}]", where, in_map=True)
            return
        if field.is_repeated:
            if not isinstance(value, list):
                self._fail(where, f"must be a list of {_plural(field)}", value, expected="array")
                return
            for i, item in enumerate(value):
                self._single(field, item, f"{where}[{i}]", where, in_list=True)
            return
        self._single(field, value, where, where)

    def _single(
        self,
        field: descriptor.FieldDescriptor,
        value: Any,
        where: str,
        named: str,
        *,
        in_list: bool = False,
        in_map: bool = False,
    ) -> None:
        """One value; a list element's or map value's wrong type is reported on the field."""
        cpp = field.cpp_type
        wrong = (
            f"must be a list of {_plural(field)}"
            if in_list
            else f"must be an object of {_plural(field)}"
            if in_map
            else f"must be {_singular(field)}"
        )
        expected = _EXPECTED.get(cpp, "string")
        if cpp == _FD.CPPTYPE_MESSAGE:
            sub = message_type_of(field)
            if is_plain_message(sub):  # well-known types are json_format's: their own JSON forms
                if not isinstance(value, dict):
                    self._fail(named, wrong, value, expected=expected)
                    return
                self._message(value, sub, where)
        elif cpp in _INT_KINDS:
            self._integer(field, value, named, wrong)
        elif not _SCALAR_ACCEPTS.get(cpp, _is_str)(field, value):
            self._fail(named, wrong, value, expected=expected)

    def _integer(
        self, field: descriptor.FieldDescriptor, value: Any, named: str, wrong: str
    ) -> None:
        cpp = field.cpp_type
        name, low, high = _INT_KINDS[cpp]
        is_int = type(value) is int  # not isinstance: bool is an int in Python, not in JSON
        if not is_int and cpp in _INT64_CPP and not self._profile.int64_as_number:
            pattern = _UNSIGNED if name.startswith("u") else _SIGNED
            if isinstance(value, str) and pattern.fullmatch(value):
                fits = len(value.lstrip("-").lstrip("0")) <= _MAX_INT_DIGITS
                value, is_int = (int(value) if fits else high + 1), True
        if not is_int:
            self._fail(named, wrong, value, expected="integer")
        elif not low <= value <= high:
            self._fail(
                named,
                f"is out of range for {name}",
                value,
                reason="out_of_range",
                expected="integer",
            )


def _held_plain_message(field: descriptor.FieldDescriptor) -> descriptor.Descriptor | None:
    """The plain message type ``field`` holds (a map's value type), or None."""
    if field.cpp_type != _FD.CPPTYPE_MESSAGE:
        return None
    sub = message_type_of(field)
    if is_map(field):
        value_field = sub.fields_by_name["value"]
        if value_field.cpp_type != _FD.CPPTYPE_MESSAGE:
            return None
        sub = message_type_of(value_field)
    return sub if is_plain_message(sub) else None


def _is_str(field: descriptor.FieldDescriptor, value: Any) -> bool:
    return isinstance(value, str)


def _is_number(field: descriptor.FieldDescriptor, value: Any) -> bool:
    return type(value) in (int, float)


def _is_bool(field: descriptor.FieldDescriptor, value: Any) -> bool:
    return type(value) is bool


def _is_enum_value(field: descriptor.FieldDescriptor, value: Any) -> bool:
    enum = field.enum_type
    return enum is not None and (
        (isinstance(value, str) and value in enum.values_by_name)
        or (type(value) is int and value in enum.values_by_number)
    )


#: Whether a JSON value fits a non-integer scalar field, by C++ type (strings and bytes: str).
_SCALAR_ACCEPTS = {
    _FD.CPPTYPE_DOUBLE: _is_number,
    _FD.CPPTYPE_FLOAT: _is_number,
    _FD.CPPTYPE_BOOL: _is_bool,
    _FD.CPPTYPE_ENUM: _is_enum_value,
}

#: The JSON type a field's value takes, by C++ type (anything else: a string).
_EXPECTED: dict[int, JsonType] = {
    **dict.fromkeys(_INT_KINDS, "integer"),
    _FD.CPPTYPE_DOUBLE: "number",
    _FD.CPPTYPE_FLOAT: "number",
    _FD.CPPTYPE_BOOL: "boolean",
    _FD.CPPTYPE_MESSAGE: "object",
}

_SINGULAR = {
    **dict.fromkeys(_INT_KINDS, "an integer"),
    _FD.CPPTYPE_DOUBLE: "a number",
    _FD.CPPTYPE_FLOAT: "a number",
    _FD.CPPTYPE_BOOL: "true or false",
    _FD.CPPTYPE_MESSAGE: "an object",
}
_PLURAL = {
    **dict.fromkeys(_INT_KINDS, "integers"),
    _FD.CPPTYPE_DOUBLE: "numbers",
    _FD.CPPTYPE_FLOAT: "numbers",
    _FD.CPPTYPE_BOOL: "booleans",
    _FD.CPPTYPE_MESSAGE: "objects",
}


def _singular(field: descriptor.FieldDescriptor) -> str:
    """What one JSON value of ``field`` must be: ``an integer``, ``a string``..."""
    if field.cpp_type == _FD.CPPTYPE_ENUM and field.enum_type is not None:
        return "one of " + ", ".join(v.name for v in field.enum_type.values)
    if field.type == _FD.TYPE_BYTES:
        return "a base64 string"
    return _SINGULAR.get(field.cpp_type, "a string")


def _plural(field: descriptor.FieldDescriptor) -> str:
    """What a list of ``field``'s values must hold: ``integers``, ``strings``..."""
    if field.cpp_type == _FD.CPPTYPE_ENUM and field.enum_type is not None:
        return field.enum_type.name + " names"
    if field.type == _FD.TYPE_BYTES:
        return "base64 strings"
    return _PLURAL.get(field.cpp_type, "strings")

"""Routes for the legacy HTTP shim, read from ``google.api.http`` rules: match, then build.

Three steps, all pure (no I/O, no web framework):

1. :class:`PathTemplate` parses an HttpRule path (``/v1/{name=shelves/*}/books:run``)
   and matches raw request paths against it.
2. :func:`routes_for_service` turns a service's ``(google.api.http)`` options,
   ``additional_bindings`` and ``custom`` methods included, into :class:`Route`
   values; :class:`Router` resolves ``(http method, path)`` to a route with
   werkzeug's answers for the near misses (404, 405 with the allowed methods,
   308 to the URL with a trailing slash).
3. :func:`build_request` fills the route's request message from path
   variables, the query string and the JSON body, as grpc-gateway does.

Template syntax (google/api/http.proto)::

    Template = "/" [ Segments ] [ "/" ] [ ":" Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;

``*`` matches one non-empty segment, ``**`` zero or more (only as the last
segment), ``{f}`` is ``{f=*}``. The root ``/`` and a trailing ``/`` are
extensions for Flask URLs (``/items/``): google.api.http has neither. Captured
values are percent-decoded as the spec says: a one-segment variable decodes
everything (``%2F`` becomes ``/``); a variable over several segments or ``**``
decodes everything except ``%2F``/``%2f``, which stay as sent.

Which route wins when several templates match one path (documented rule):
a template with a verb beats one without; then segments are compared left to
right, a literal beating ``*``/``{f}`` beating ``**`` (so ``/v1/items/search``
beats ``/v1/items/{id}``, and ``/a/*`` beats ``/a/**``); then declaration
order. This is werkzeug's "static parts first" order, spelled for templates.
Two routes with the same method and the same template shape are an error.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import unquote

# googleapis-common-protos ships .pyi files but no py.typed marker.
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from rpckit.core._descriptors import (
    INT_RANGES,
    TEXT_MESSAGE_TYPES,
    FieldPathError,
    descriptor_of,
    fields_on_path,
    is_map,
    is_text_settable,
    is_wrapper,
    message_type_of,
)
from rpckit.http._mapping._jsonmap import JsonError, LegacyProfile, json_to_message, loads

__all__ = [
    "Match",
    "MethodNotAllowed",
    "NotFound",
    "PathTemplate",
    "RedirectSlash",
    "RequestError",
    "Resolution",
    "Route",
    "Router",
    "TemplateSegment",
    "TemplateVariable",
    "build_request",
    "query_fields",
    "routes_for_service",
]

_FD = descriptor.FieldDescriptor

# RFC 3986 pchar = unreserved / pct-encoded / sub-delims / ":" / "@" (grpc-gateway's check).
_PCHARS = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@")
_HEX = frozenset(string.hexdigits)
_TEMPLATE_CHARS = _PCHARS | frozenset("/{}%")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_GRPC_METHOD = re.compile(r"/[A-Za-z_][\w.]*/[A-Za-z_]\w*")
_ENCODED_SLASH = re.compile(r"(%2[fF])")

SegmentKind = Literal["literal", "*", "**"]
_SEGMENT_RANK = {"literal": 0, "*": 1, "**": 2}


class RequestError(ValueError):
    """A request the route cannot turn into its gRPC message; the shim answers 400.

    Attributes:
        field: the parameter or body field at fault, as the client spelled it
            (``page_size``, ``filter.color``, ``item.tags[2]``); ``""`` for the
            body as a whole (malformed JSON, the position is in ``message``).
        message: what is wrong with it.
        location: ``"path"``, ``"query"`` or ``"body"``.
        fields: every field concerned (several for unknown body fields).
    """

    _NOUNS = {"path": "path parameter", "query": "query parameter", "body": "body field"}
    _WHOLE = {"path": "path", "query": "query string", "body": "request body"}

    def __init__(
        self,
        field: str,
        message: str,
        *,
        location: Literal["path", "query", "body"],
        fields: Sequence[str] = (),
    ) -> None:
        self.field = field
        self.message = message
        self.location = location
        self.fields = tuple(fields) or ((field,) if field else ())
        if field and len(self.fields) == 1:
            text = f"{self._NOUNS[location]} {field!r}: {message}"
        else:
            text = f"{self._WHOLE[location]}: {message}"
        super().__init__(text)


# ---------------------------------------------------------------- templates


@dataclasses.dataclass(frozen=True)
class TemplateSegment:
    """One path segment of a template: a literal (percent-decoded), ``*`` or ``**``."""

    kind: SegmentKind
    literal: str = ""


@dataclasses.dataclass(frozen=True)
class TemplateVariable:
    """``{field_path=...}`` over ``segments[start:end]``.

    ``multi`` is true when it may capture more than one segment (then ``%2F``
    stays encoded in the value).
    """

    field_path: str
    start: int
    end: int
    multi: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class PathTemplate:
    """A parsed google.api.http path template. Build it with :meth:`parse`."""

    text: str
    segments: tuple[TemplateSegment, ...]
    variables: tuple[TemplateVariable, ...]
    verb: str = ""
    trailing_slash: bool = False

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse ``text``; ``ValueError`` names the template and the position of a mistake."""
        if not isinstance(text, str):
            raise TypeError(f"a path template is a str, not {type(text).__name__}")
        return _TemplateParser(text).parse()

    def __str__(self) -> str:
        return self.text

    @property
    def field_paths(self) -> tuple[str, ...]:
        """The request fields the path binds, in template order."""
        return tuple(v.field_path for v in self.variables)

    @property
    def specificity(self) -> tuple[int, tuple[int, ...]]:
        """Sort key: smaller is more specific (see the module docstring)."""
        return (0 if self.verb else 1, tuple(_SEGMENT_RANK[s.kind] for s in self.segments))

    @property
    def shape(self) -> tuple[object, ...]:
        """What the template matches, without variable names (equal shapes match equal paths)."""
        return (self.segments, self.verb, self.trailing_slash)

    def match(self, path: str) -> dict[str, str] | None:
        """Field path -> captured value when the raw (still percent-encoded) ``path`` matches.

        ``path`` is the URL path without the query string, as sent
        (``REQUEST_URI``/``RAW_URI``); a path that was already decoded still
        matches, but an encoded ``/`` inside a segment is then lost.
        """
        split = _split_path(path)
        return None if split is None else self._match_parts(*split)

    def _match_parts(self, parts: list[str], trailing: bool) -> dict[str, str] | None:
        """:meth:`match` on a path already split by :func:`_split_path`."""
        segments = self.segments
        count = len(segments)
        deep = count > 0 and segments[-1].kind == "**"
        if trailing != self.trailing_slash:
            return None
        if len(parts) != count and not (deep and len(parts) >= count - 1):
            return None
        if self.verb:
            stripped = self._without_verb(parts)
            if stripped is None:
                return None
            parts = stripped
        if not self._segments_fit(parts):
            return None
        captured = {}
        for var in self.variables:
            end = len(parts) if deep and var.end == count else var.end
            raw = "/".join(parts[var.start : end])
            captured[var.field_path] = _decode_keep_slash(raw) if var.multi else _decode(raw)
        return captured

    def _without_verb(self, parts: list[str]) -> list[str] | None:
        """``parts`` with ``:verb`` cut from the last one; None when it is not there."""
        suffix = ":" + self.verb
        if not parts or len(parts[-1]) <= len(suffix) or not parts[-1].endswith(suffix):
            return None
        return [*parts[:-1], parts[-1][: -len(suffix)]]

    def _segments_fit(self, parts: list[str]) -> bool:
        for segment, part in zip(self.segments, parts, strict=False):
            if segment.kind == "literal":
                if part != segment.literal and _decode(part) != segment.literal:
                    return False
            elif segment.kind == "*" and not part:
                return False
        return True


def _split_path(path: str) -> tuple[list[str], bool] | None:
    """``("/a/b/", ...)`` -> ``(["a", "b"], True)``: segments and whether a slash ends it."""
    if not path.startswith("/"):
        return None
    rest = path[1:]
    trailing = rest.endswith("/")
    if trailing:
        rest = rest[:-1]
    return (rest.split("/") if rest else []), trailing


def _decode(raw: str) -> str:
    """Percent-decode as UTF-8; invalid sequences become U+FFFD, as werkzeug does."""
    return unquote(raw, errors="replace") if "%" in raw else raw


def _decode_keep_slash(raw: str) -> str:
    if "%" not in raw:
        return raw
    pieces = _ENCODED_SLASH.split(raw)
    return "".join(p if i % 2 else _decode(p) for i, p in enumerate(pieces))


def _bad_pchar(text: str) -> int | None:
    """Index of the first character that is not an RFC 3986 pchar (or a bad %XX).

    Non-ASCII letters count as pchars, standing for their UTF-8 %-escapes: Flask
    rules may spell ``/café``.
    """
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            if len(text) < i + 3 or not (text[i + 1] in _HEX and text[i + 2] in _HEX):
                return i
            i += 3
            continue
        if char not in _PCHARS and not _is_plain_non_ascii(char):
            return i
        i += 1
    return None


def _is_plain_non_ascii(char: str) -> bool:
    return ord(char) > 127 and char.isprintable() and not char.isspace()


class _TemplateParser:
    """Recursive descent over a template string; every error names its position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = len(text)
        self.segments: list[TemplateSegment] = []
        self.positions: list[int] = []
        self.variables: list[TemplateVariable] = []

    def error(self, pos: int, what: str) -> ValueError:
        return ValueError(f"invalid path template {self.text!r} at position {pos}: {what}")

    def parse(self) -> PathTemplate:
        text = self.text
        if not text.startswith("/"):
            raise self.error(0, "a template starts with '/'")
        for pos, char in enumerate(text):
            if char not in _TEMPLATE_CHARS and not _is_plain_non_ascii(char):
                hint = " (werkzeug's '<id>' is '{id}' here)" if char in "<>" else ""
                raise self.error(pos, f"invalid character {char!r}{hint}")
        verb = self._split_verb()
        trailing = False
        self.pos = 1
        if self.end == 1:
            if verb:
                raise self.error(1, "a verb needs a path before it")
        else:
            if text[self.end - 1] == "/":
                if verb:
                    raise self.error(self.end - 1, "a trailing '/' cannot come before a verb")
                trailing = True
                self.end -= 1
            self._segments(in_variable=False)
            if self.pos != self.end:
                raise self.error(self.pos, f"unexpected {text[self.pos]!r}")
        self._check()
        return PathTemplate(
            text=text,
            segments=tuple(self.segments),
            variables=tuple(self.variables),
            verb=verb,
            trailing_slash=trailing,
        )

    def _split_verb(self) -> str:
        text = self.text
        colon = text.rfind(":")
        if colon <= max(text.rfind("/"), text.rfind("}")):
            return ""
        verb = text[colon + 1 :]
        if not verb:
            raise self.error(colon, "empty verb after ':'")
        bad = _bad_pchar(verb)
        if bad is not None:
            what = "a bad %-escape" if verb[bad] == "%" else f"invalid character {verb[bad]!r}"
            raise self.error(colon + 1 + bad, f"{what} in the verb")
        self.end = colon
        return verb

    def _segments(self, *, in_variable: bool) -> None:
        while True:
            self._segment(in_variable=in_variable)
            if self.pos < self.end and self.text[self.pos] == "/":
                self.pos += 1
                continue
            return

    def _segment(self, *, in_variable: bool) -> None:
        text, start = self.text, self.pos
        if start >= self.end or text[start] in "/}":
            raise self.error(start, "empty path segment")
        if text[start] == "{":
            if in_variable:
                raise self.error(start, "variables cannot be nested")
            self._variable()
            return
        stop = start
        while stop < self.end and text[stop] not in "/{}":
            stop += 1
        word = text[start:stop]
        self.pos = stop
        if word in ("*", "**"):
            self._add(TemplateSegment(word), start)  # type: ignore[arg-type]
            return
        bad = _bad_pchar(word)
        if bad is not None:
            what = "a bad %-escape" if word[bad] == "%" else f"invalid character {word[bad]!r}"
            raise self.error(start + bad, f"{what} in a path segment")
        self._add(TemplateSegment("literal", _decode(word)), start)

    def _add(self, segment: TemplateSegment, pos: int) -> None:
        self.segments.append(segment)
        self.positions.append(pos)

    def _variable(self) -> None:
        text, open_pos = self.text, self.pos
        self.pos += 1
        stop = self.pos
        while stop < self.end and text[stop] not in "=}/{":
            stop += 1
        field_path = text[self.pos : stop]
        offset = self.pos
        for ident in field_path.split("."):
            if not _IDENT.fullmatch(ident):
                raise self.error(offset, f"{ident!r} is not a field name (in {field_path!r})")
            offset += len(ident) + 1
        self.pos = stop
        first = len(self.segments)
        if stop < self.end and text[stop] == "=":
            self.pos += 1
            self._segments(in_variable=True)
        else:
            self._add(TemplateSegment("*"), stop)
        if self.pos >= self.end or text[self.pos] != "}":
            raise self.error(open_pos, f"variable {field_path!r} is not closed with '}}'")
        self.pos += 1
        inner = self.segments[first:]
        multi = len(inner) > 1 or any(s.kind == "**" for s in inner)
        self.variables.append(TemplateVariable(field_path, first, len(self.segments), multi))

    def _check(self) -> None:
        last = len(self.segments) - 1
        for i, segment in enumerate(self.segments):
            if segment.kind == "**" and i != last:
                raise self.error(self.positions[i], "'**' must be the last segment")
        seen: set[str] = set()
        for var in self.variables:
            if var.field_path in seen:
                raise self.error(self.positions[var.start], f"field {var.field_path!r} bound twice")
            seen.add(var.field_path)


# ---------------------------------------------------------------- routes


def _settable_from_text(field: descriptor.FieldDescriptor) -> bool:
    return field.cpp_type != _FD.CPPTYPE_MESSAGE or is_text_settable(message_type_of(field))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Route:
    """One HTTP binding of one gRPC method.

    Attributes:
        http_method: upper-case HTTP method (``GET``, ``POST``..., or a custom kind).
        template: the parsed path template.
        body: ``""`` (no body), ``"*"`` (the whole request message) or the name
            of a top-level request field.
        response_body: ``""`` (the whole response) or a top-level response
            field (a repeated one gives a top-level JSON array).
        grpc_method: full gRPC method name, ``/package.Service/Method``.
        request_descriptor, response_descriptor: the message types.
        client_streaming, server_streaming: the method's streaming flags.
    """

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    grpc_method: str
    request_descriptor: descriptor.Descriptor
    response_descriptor: descriptor.Descriptor
    client_streaming: bool = False
    server_streaming: bool = False

    def __post_init__(self) -> None:
        if not _HTTP_TOKEN.fullmatch(self.http_method):
            raise ValueError(
                f"{self.grpc_method}: {self.http_method!r} is not an upper-case HTTP method"
            )
        if not _GRPC_METHOD.fullmatch(self.grpc_method):
            raise ValueError(
                f"{self.grpc_method!r} is not a gRPC method name like /pkg.Service/Method"
            )
        request = self.request_descriptor
        for field_path in self.template.field_paths:
            try:
                leaf = fields_on_path(request, field_path)[-1]
            except ValueError as exc:
                raise ValueError(f"{self}: path variable: {exc}") from None
            if leaf.is_repeated or not _settable_from_text(leaf):
                raise ValueError(
                    f"{self}: path variable {field_path!r} must name a singular scalar field"
                )
        if self.body not in ("", "*") and self.body not in request.fields_by_name:
            raise ValueError(f"{self}: body {self.body!r} is not a field of {request.full_name}")
        response = self.response_descriptor
        if self.response_body and self.response_body not in response.fields_by_name:
            raise ValueError(
                f"{self}: response_body {self.response_body!r} "
                f"is not a field of {response.full_name}"
            )

    def __str__(self) -> str:
        return f"{self.http_method} {self.template.text} -> {self.grpc_method}"

    @property
    def bound_paths(self) -> list[tuple[str, ...]]:
        """The proto-name paths the path template and the body bind (``("filter", "shelf")``).

        A query parameter may set any field outside them; with ``body: "*"`` the
        body binds every field and the query none.
        """
        bound = [tuple(p.split(".")) for p in self.template.field_paths]
        if self.body:
            bound.append((self.body,))
        return bound


def routes_for_service(service: descriptor.ServiceDescriptor) -> tuple[Route, ...]:
    """Every route the ``(google.api.http)`` options of ``service``'s methods declare.

    Per method: the rule itself, then its ``additional_bindings`` in order.
    Methods without the option get no route. A malformed rule raises
    ``ValueError`` naming the method.
    """
    routes: list[Route] = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        routes.append(_route_for_rule(service, method, rule))
        for binding in rule.additional_bindings:
            if len(binding.additional_bindings):
                raise ValueError(f"{method.full_name}: additional_bindings cannot be nested")
            routes.append(_route_for_rule(service, method, binding))
    return tuple(routes)


def _route_for_rule(
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
    rule: http_pb2.HttpRule,
) -> Route:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError(f"{method.full_name}: google.api.http rule without a method and path")
    if pattern == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = pattern.upper(), getattr(rule, pattern)
    try:
        template = PathTemplate.parse(path)
    except ValueError as exc:
        raise ValueError(f"{method.full_name}: {exc}") from None
    return Route(
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        grpc_method=f"/{service.full_name}/{method.name}",
        request_descriptor=method.input_type,
        response_descriptor=method.output_type,
        client_streaming=bool(method.client_streaming),
        server_streaming=bool(method.server_streaming),
    )


# ---------------------------------------------------------------- router


@dataclasses.dataclass(frozen=True)
class Match:
    """The route to call and the captured path variables (field path -> decoded text)."""

    route: Route
    path_params: dict[str, str]


@dataclasses.dataclass(frozen=True)
class NotFound:
    """No route matches the path (404)."""


@dataclasses.dataclass(frozen=True)
class MethodNotAllowed:
    """Routes match the path, none for this method (405); ``allowed`` is the ``Allow`` header."""

    allowed: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RedirectSlash:
    """The route is declared with a trailing slash: redirect (308) to ``location``.

    ``location`` is the request path plus ``/``; the caller appends the query string.
    """

    location: str


Resolution = Match | NotFound | MethodNotAllowed | RedirectSlash


class Router:
    """Resolves ``(method, path)`` to a :class:`Match` or the reason there is none.

    Flask/werkzeug semantics for slashes: with ``strict_slashes=True`` (Flask's
    default) a route declared with a trailing slash answers the slashless URL
    with :class:`RedirectSlash`, and a route without one does not match a URL
    with one; with ``strict_slashes=False`` both spellings match. ``HEAD``
    falls back to the ``GET`` route. ``OPTIONS`` is not routed: the adapter
    answers it with :meth:`allowed_methods`. The most specific template wins
    (module docstring). Matching tries only the routes whose first literal
    segment fits the path, so cost grows with the routes sharing a prefix.
    """

    def __init__(self, routes: Iterable[Route], *, strict_slashes: bool = True) -> None:
        self.strict_slashes = strict_slashes
        declared = tuple(routes)
        seen: dict[tuple[object, ...], Route] = {}
        for route in declared:
            key = (route.http_method, route.template.shape)
            if key in seen:
                raise ValueError(f"two routes for one request: {seen[key]} and {route}")
            seen[key] = route
        ordered = sorted(declared, key=lambda r: r.template.specificity)
        self.routes: tuple[Route, ...] = tuple(ordered)
        by_first: dict[str, list[int]] = {}
        anywhere: list[int] = []
        for index, route in enumerate(ordered):
            first = _first_literal(route.template)
            if first is None:
                anywhere.append(index)
            else:
                by_first.setdefault(first, []).append(index)
        self._by_first = {k: tuple(v) for k, v in by_first.items()}
        self._anywhere = tuple(anywhere)

    def _matches(self, path: str) -> list[tuple[Route, dict[str, str]]]:
        split = _split_path(path)
        if split is None:
            return []
        parts, trailing = split
        keyed = self._by_first.get(_decode(parts[0]), ()) if parts else ()
        if keyed and self._anywhere:
            indexes: Sequence[int] = sorted((*keyed, *self._anywhere))
        else:
            indexes = keyed or self._anywhere
        found = []
        for index in indexes:
            route = self.routes[index]
            params = route.template._match_parts(parts, trailing)
            if params is not None:
                found.append((route, params))
        return found

    def _variants(self, path: str) -> list[tuple[Route, dict[str, str]]]:
        """Matches of the other slash spelling of ``path`` that the slash rules allow."""
        if path.endswith("/") and len(path) > 1:
            return [] if self.strict_slashes else self._matches(path[:-1])
        return self._matches(path + "/")

    def resolve(self, method: str, path: str) -> Resolution:
        """Route ``method path`` (the raw path, without the query string)."""
        method = method.upper()
        exact = self._matches(path)
        picked = _pick(exact, method)
        if picked is not None:
            return Match(*picked)
        variants = self._variants(path)
        picked = _pick(variants, method)
        if picked is not None:
            if self.strict_slashes and not path.endswith("/"):
                return RedirectSlash(location=path + "/")
            return Match(*picked)
        # werkzeug counts the other spelling's methods only for "/x/" matching a rule "/x"
        # (non-strict); "/x" near a rule "/x/" with another method is a 404 there.
        counted = exact + variants if not self.strict_slashes and path.endswith("/") else exact
        allowed = _allowed(counted)
        return MethodNotAllowed(allowed) if allowed else NotFound()

    def allowed_methods(self, path: str) -> tuple[str, ...]:
        """The ``Allow`` header for ``path``: its routes' methods, ``HEAD`` with ``GET``,
        and ``OPTIONS``; empty when nothing matches (answer 404)."""
        exact = self._matches(path)
        return _allowed(exact if self.strict_slashes else exact + self._variants(path))


def _first_literal(template: PathTemplate) -> str | None:
    """The first segment's literal, when every matching path must start with it."""
    segments = template.segments
    if not segments or segments[0].kind != "literal":
        return None
    if template.verb and len(segments) == 1:
        return None  # the verb shares the first path segment
    return segments[0].literal


def _pick(
    matches: Sequence[tuple[Route, dict[str, str]]], method: str
) -> tuple[Route, dict[str, str]] | None:
    for route, params in matches:
        if route.http_method == method:
            return route, params
    if method == "HEAD":
        for route, params in matches:
            if route.http_method == "GET":
                return route, params
    return None


def _allowed(matches: Sequence[tuple[Route, dict[str, str]]]) -> tuple[str, ...]:
    methods = {route.http_method for route, _ in matches}
    if not methods:
        return ()
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return tuple(sorted(methods))


# ---------------------------------------------------------------- requests

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_SIGNED = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_MAP_KEY = re.compile(r"(.*)\[(.*)\]", re.DOTALL)


def build_request(
    route: Route,
    path_params: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: Any | None,
    *,
    profile: LegacyProfile | None = None,
    unknown_query_params: Literal["ignore", "reject"] = "ignore",
) -> Message:
    """The route's request message from path variables, query parameters and body.

    Order (grpc-gateway's): the body (``bytes`` are raw JSON, anything else an
    already decoded JSON value, ``None``/empty means no body) through
    :func:`json_to_message` with ``profile``; then path variables, overriding
    the body; then query parameters into every field not bound by the path or
    the body (``body: "*"`` binds all: the query is ignored). Query names are
    dotted field paths (``filter.color``), proto or JSON spelling; repeated
    fields take repeated parameters (``tag=a&tag=b``), maps ``labels[k]=v``;
    enums a name or number; bools ``true``/``false`` (or ``1``/``0``, ``t``/``f``);
    Timestamp/Duration their JSON strings, FieldMask ``a,b``, wrappers their
    value. Unknown or bound query parameters are ignored, as grpc-gateway
    does, unless ``unknown_query_params="reject"``. Raises :class:`RequestError`.
    """
    if unknown_query_params not in ("ignore", "reject"):
        raise ValueError(
            f"unknown_query_params must be 'ignore' or 'reject', not {unknown_query_params!r}"
        )
    message_class = message_factory.GetMessageClass(route.request_descriptor)
    request = _request_from_body(route, message_class, body, profile)
    for field_path, text in path_params.items():
        fields = fields_on_path(route.request_descriptor, field_path)
        try:
            _set_scalar(_parent_of(request, fields), fields[-1], text)
        except ValueError as exc:
            raise RequestError(field_path, str(exc), location="path") from None
    if route.body == "*":
        if query and unknown_query_params == "reject":
            raise RequestError(
                query[0][0],
                'the body binds every field (body: "*"); query parameters are not accepted',
                location="query",
            )
        return request
    _QueryWriter(request, route.bound_paths, reject=unknown_query_params == "reject").write(query)
    return request


def _request_from_body(
    route: Route, message_class: type[Message], body: Any | None, profile: LegacyProfile | None
) -> Message:
    if not route.body or body is None:
        return message_class()
    if isinstance(body, bytes | bytearray) and not body.strip():
        return message_class()
    try:
        obj = loads(body) if isinstance(body, bytes | bytearray) else body
    except JsonError as exc:
        raise RequestError("", exc.reason, location="body") from exc
    try:
        if route.body == "*":
            return json_to_message(obj, message_class, profile)
        return json_to_message({route.body: obj}, message_class, profile)
    except JsonError as exc:
        default = "" if route.body == "*" else route.body
        field = exc.fields[0] if len(exc.fields) == 1 and exc.fields[0] else default
        fields = exc.fields if len(exc.fields) > 1 else ()
        raise RequestError(field, exc.reason, location="body", fields=fields) from exc


def query_fields(
    desc: descriptor.Descriptor, dotted: str
) -> tuple[descriptor.FieldDescriptor, ...]:
    """The fields a query parameter's name leads to (``filter.color``, ``pageSize``): proto or
    JSON names, as grpc-gateway reads them. Raises :class:`FieldPathError` (a ValueError).

    The one lookup for query names: the strict type checks use it too, so a key
    they check is the key this module sets.
    """
    return fields_on_path(desc, dotted, json_names=True)


def _parent_of(request: Message, fields: Sequence[descriptor.FieldDescriptor]) -> Message:
    parent = request
    for field in fields[:-1]:
        parent = getattr(parent, field.name)
    return parent


def _set_scalar(parent: Message, field: descriptor.FieldDescriptor, text: str) -> None:
    value = _parse_text(field, text)
    try:
        if isinstance(value, Message):
            getattr(parent, field.name).CopyFrom(value)
        else:
            setattr(parent, field.name, value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot set {field.name}: {exc}") from None


class _QueryWriter:
    """Applies query parameters to a request message (grpc-gateway's DefaultQueryParser)."""

    def __init__(self, request: Message, bound: list[tuple[str, ...]], *, reject: bool) -> None:
        self._request = request
        self._desc = descriptor_of(request)
        self._bound = bound
        self._reject = reject

    def write(self, query: Sequence[tuple[str, str]]) -> None:
        grouped: dict[str, list[str]] = {}
        for key, value in query:
            grouped.setdefault(key, []).append(value)
        for key, values in grouped.items():
            self._apply(key, values)

    def _skip(self, key: str, why: str) -> None:
        if self._reject:
            raise RequestError(key, why, location="query")

    def _resolve(self, key: str, dotted: str) -> tuple[descriptor.FieldDescriptor, ...] | None:
        try:
            return query_fields(self._desc, dotted)
        except FieldPathError as exc:
            if exc.missing:
                return None
            raise RequestError(
                key, f"{exc.name!r} is not a message field; nothing is inside it", location="query"
            ) from None

    def _apply(self, key: str, values: list[str]) -> None:
        base, map_key = key, None
        bracketed = _MAP_KEY.fullmatch(key)
        if bracketed is not None:
            base, map_key = bracketed[1], bracketed[2]
        fields = self._resolve(key, base)
        if fields is None:
            self._skip(key, "unknown query parameter")
            return
        names = tuple(f.name for f in fields)
        if any(names[: len(b)] == b for b in self._bound):
            self._skip(key, "set by the path or the body; it cannot also be a query parameter")
            return
        parent = _parent_of(self._request, fields)
        leaf = fields[-1]
        try:
            if map_key is not None:
                self._set_map_entry(key, parent, leaf, map_key, values)
            elif is_map(leaf):
                raise ValueError(f"a map: give each entry as {base}[KEY]=VALUE")
            elif leaf.is_repeated:
                self._append(parent, leaf, values)
            else:
                if len(values) > 1:
                    raise ValueError(f"expected one value, got {len(values)}")
                oneof = leaf.containing_oneof
                if oneof is not None and parent.WhichOneof(oneof.name) is not None:
                    raise ValueError(
                        f"{parent.WhichOneof(oneof.name)!r} is already set; "
                        f"only one field of oneof {oneof.name!r} may be"
                    )
                _set_scalar(parent, leaf, values[0])
        except ValueError as exc:
            raise RequestError(key, str(exc), location="query") from None

    @staticmethod
    def _append(parent: Message, leaf: descriptor.FieldDescriptor, values: list[str]) -> None:
        container = getattr(parent, leaf.name)
        for text in values:
            value = _parse_text(leaf, text)
            if isinstance(value, Message):
                container.add().CopyFrom(value)
            else:
                container.append(value)

    @staticmethod
    def _set_map_entry(
        key: str,
        parent: Message,
        leaf: descriptor.FieldDescriptor,
        map_key: str,
        values: list[str],
    ) -> None:
        if not is_map(leaf):
            raise ValueError(f"{leaf.name!r} is not a map field; drop the [{map_key}]")
        if len(values) > 1:
            raise ValueError(f"expected one value, got {len(values)}")
        entry = message_type_of(leaf)
        entry_key = _parse_text(entry.fields_by_name["key"], map_key)
        value = _parse_text(entry.fields_by_name["value"], values[0])
        container = getattr(parent, leaf.name)
        if isinstance(value, Message):
            container[entry_key].CopyFrom(value)
        else:
            container[entry_key] = value


def _parse_text(field: descriptor.FieldDescriptor, text: str) -> Any:
    """A path/query parameter's text as ``field``'s Python value; ``ValueError`` says why not."""
    cpp = field.cpp_type
    if cpp in INT_RANGES:
        return _parse_int(cpp, text)
    if cpp in (_FD.CPPTYPE_DOUBLE, _FD.CPPTYPE_FLOAT):
        return _parse_float(text, single=cpp == _FD.CPPTYPE_FLOAT)
    if cpp == _FD.CPPTYPE_BOOL:
        return _parse_bool(text)
    if cpp == _FD.CPPTYPE_ENUM:
        return _parse_enum(field, text)
    if cpp == _FD.CPPTYPE_MESSAGE:
        return _parse_message(message_type_of(field), text)
    return _parse_bytes(text) if field.type == _FD.TYPE_BYTES else text


def _parse_bool(text: str) -> bool:
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_int(cpp_type: int, text: str) -> int:
    pattern = _UNSIGNED if cpp_type in (_FD.CPPTYPE_UINT32, _FD.CPPTYPE_UINT64) else _SIGNED
    low, high = INT_RANGES[cpp_type]
    if pattern.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    raise ValueError(f"expected an integer from {low} to {high}, got {text!r}")


def _parse_float(text: str, *, single: bool) -> float:
    if text in _FLOAT_WORDS:
        return _FLOAT_WORDS[text]
    try:
        if text != text.strip() or "_" in text:
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if single and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        raise ValueError(f"{text!r} is out of range for a 32-bit float")
    return value


def _parse_enum(field: descriptor.FieldDescriptor, text: str) -> int:
    enum = field.enum_type
    if enum is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    by_name = enum.values_by_name.get(text)
    if by_name is not None:
        return by_name.number
    if _SIGNED.fullmatch(text) and int(text) in enum.values_by_number:
        return int(text)
    names = ", ".join(v.name for v in enum.values)
    raise ValueError(f"expected one of {names} (or its number), got {text!r}")


def _parse_bytes(text: str) -> bytes:
    standard = text.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"expected base64, got {text!r}") from None


def _parse_message(desc: descriptor.Descriptor, text: str) -> Message:
    message = message_factory.GetMessageClass(desc)()
    full_name = desc.full_name
    if is_wrapper(desc):
        setattr(message, "value", _parse_text(desc.fields_by_name["value"], text))  # noqa: B010
        return message
    if full_name not in TEXT_MESSAGE_TYPES:
        raise ValueError(f"a {full_name} cannot be given as a parameter")
    try:
        if full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            message.FromJsonString(text)  # type: ignore[attr-defined]
        elif full_name == "google.protobuf.FieldMask":
            message.paths.extend(p for p in text.split(",") if p)  # type: ignore[attr-defined]
        else:
            json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise ValueError(f"expected JSON for a {full_name}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"invalid {desc.name}: {exc}") from None
    return message

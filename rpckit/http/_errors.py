"""Errors of the legacy HTTP shim: what went wrong, its HTTP status, and the body clients read.

Every failure the shim answers -- routing (404, 405), the request (400, 413,
415), the call (a gRPC status from the handler or backend), the shim itself
(500, no traceback) -- becomes one :class:`HttpError`. A pluggable
*renderer* turns it into the JSON value sent as the body, dumped with the
route's JSON profile, so an old app's error bytes come out unchanged::

    def render(error: HttpError) -> object:
        return {"error": {"code": error.status, "message": error.message}}

Two renderers ship: :func:`render_gateway_error` (grpc-gateway's
``{"code", "message", "details"}``, the default) and
:func:`render_error_object` (``{"error": {"code", "message"}}``, a common
hand-written Flask convention). gRPC codes map to HTTP statuses with
grpc-gateway's table (:data:`GATEWAY_STATUS_FOR_CODE`), overridable per shim.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import http
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import grpc
from google.protobuf import any_pb2, json_format

__all__ = [
    "GATEWAY_STATUS_FOR_CODE",
    "ErrorLocation",
    "ErrorReason",
    "ErrorRenderer",
    "FieldViolation",
    "HttpError",
    "JsonType",
    "error_object_schema",
    "gateway_error_schema",
    "http_status_for",
    "json_type_of",
    "reason_phrase",
    "render_error_object",
    "render_gateway_error",
]

_C = grpc.StatusCode

#: grpc-gateway's ``runtime.HTTPStatusFromCode``: the default gRPC code -> HTTP status table.
GATEWAY_STATUS_FOR_CODE: Mapping[grpc.StatusCode, int] = {
    _C.OK: 200,
    _C.CANCELLED: 499,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}

#: Reason phrases as Werkzeug (and Python 3.11's http.HTTPStatus) spell them; fixed here so
#: error bodies do not change with the Python version (3.13 renamed 413 "Content Too Large").
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

ErrorReason = Literal[
    "not_found",  # no route, no fallback (404)
    "method_not_allowed",  # the path has routes, none for this method (405)
    "unsupported_media_type",  # a body that is not JSON (415)
    "body_too_large",  # over the route's body limit (413)
    "invalid_utf8",  # the body is not UTF-8 (400)
    "malformed_json",  # JSON syntax error, the position in the message (400)
    "not_an_object",  # the body must be a JSON object (400)
    "unknown_fields",  # keys the message lacks, under unknown_fields=reject (400)
    "wrong_type",  # a field holds the wrong JSON type (400)
    "missing",  # a required field is absent (RouteOptions.required_fields)
    "out_of_range",  # an integer beyond its field's range (400)
    "bad_parameter",  # a path or query parameter, or body value, json_format refuses (400)
    "bad_timeout",  # X-Request-Timeout / grpc-timeout cannot be read (400)
    "call_failed",  # the handler (or backend) ended the call with a gRPC status
    "internal",  # the shim itself failed; details are in the log only (500)
]

#: Where in the request the value at fault was: the URL path, the query string, the body,
#: a header, or ``""`` (the request as a whole).
ErrorLocation = Literal["path", "query", "body", "header", ""]

#: The JSON type of a received value, as JSON Schema names them (``""``: none was received).
JsonType = Literal["object", "array", "string", "integer", "number", "boolean", "null", ""]


#: Python types of decoded JSON and their JSON type names (bool before int: True is an int).
_JSON_TYPE_NAMES: tuple[tuple[type, JsonType], ...] = (
    (type(None), "null"),
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type_of(value: Any) -> JsonType:
    """The JSON Schema type name of a decoded JSON value (``True`` is ``"boolean"``)."""
    return next((name for kind, name in _JSON_TYPE_NAMES if isinstance(value, kind)), "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldViolation:
    """One thing wrong with one request value; an :class:`HttpError` carries them all.

    Attributes:
        field: the field as the request spelled it (``quantity``, ``item.tags[2]``).
        description: what is wrong (``"must be an integer"``).
        reason: the kind of failure (:data:`ErrorReason`).
        location: ``"path"``, ``"query"``, ``"body"`` or ``"header"``.
        received: the JSON type of the value received (:data:`JsonType`), ``""`` if
            none or not JSON (path and query values are text).
        expected: the JSON type the field takes (``"integer"``; ``"string"`` for
            enums and bytes; the field's type for each item of a list).
    """

    field: str
    description: str
    reason: ErrorReason = "wrong_type"
    location: ErrorLocation = "body"
    received: JsonType = ""
    expected: JsonType = ""


#: The gRPC code reported for errors the shim finds itself (grpc-gateway's choices).
_CODE_FOR_STATUS = {
    400: _C.INVALID_ARGUMENT,
    404: _C.NOT_FOUND,
    422: _C.INVALID_ARGUMENT,
    405: _C.UNIMPLEMENTED,
    413: _C.RESOURCE_EXHAUSTED,
    415: _C.INVALID_ARGUMENT,
    500: _C.INTERNAL,
}


def reason_phrase(status: int) -> str:
    """The reason phrase for ``status`` (``"Not Found"``)."""
    phrase = _PHRASES.get(status)
    if phrase is not None:
        return phrase
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpError(Exception):
    """One error answer of the shim.

    Attributes:
        status: the HTTP status.
        message: the human message (the gRPC status message for call failures).
        reason: what kind of failure (:data:`ErrorReason`), for renderers that word
            messages themselves.
        grpc_code: the gRPC code: the call's, or grpc-gateway's choice for errors
            found before any call (INVALID_ARGUMENT for 400s, NOT_FOUND for 404...).
        field: the request field at fault (``quantity``, ``item.tags``), or ``""``.
        fields: every field concerned (several for unknown fields).
        description: what is wrong with ``field`` (``"must be an integer"``).
        headers: extra response headers (``Allow``, ``WWW-Authenticate``, ``Retry-After``).
        details: the ``google.rpc`` detail messages of a failed call, as ``Any``.
        location: where ``field`` was (:data:`ErrorLocation`).
        received: the JSON type of the value at fault (:data:`JsonType`).
        violations: every field violation found in the request, in the order
            found (path, query, body); the first is ``field``/``description``.
        route: the route's key (``"PUT /pets/{pet_id}"``) once the request was
            routed, else ``""``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: ErrorReason,
        grpc_code: grpc.StatusCode | None = None,
        field: str = "",
        fields: Sequence[str] = (),
        description: str = "",
        headers: Sequence[tuple[str, str]] = (),
        details: Sequence[any_pb2.Any] = (),
        location: ErrorLocation = "",
        received: JsonType = "",
        violations: Sequence[FieldViolation] = (),
        route: str = "",
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.reason = reason
        self.grpc_code = grpc_code or _CODE_FOR_STATUS.get(status, _C.UNKNOWN)
        self.field = field
        self.fields = tuple(fields) or ((field,) if field else ())
        self.description = description
        self.headers = tuple(headers)
        self.details = tuple(details)
        self.location: ErrorLocation = location
        self.received: JsonType = received
        self.violations = tuple(violations)
        self.route = route

    @classmethod
    def for_field(
        cls,
        field: str,
        description: str,
        *,
        reason: ErrorReason = "wrong_type",
        location: ErrorLocation = "body",
        received: JsonType = "",
    ) -> HttpError:
        """400 ``field 'quantity' must be an integer``: a field the request gets wrong."""
        violation = FieldViolation(
            field=field,
            description=description,
            reason=reason,
            location=location,
            received=received,
        )
        return cls.for_violations([violation])

    @classmethod
    def for_violations(
        cls, violations: Sequence[FieldViolation], *, status: int = 400
    ) -> HttpError:
        """One error (400 by default) for every violation found; the message and ``field``
        are the first's."""
        first = violations[0]
        return cls(
            status,
            f"field '{first.field}' {first.description}",
            reason=first.reason,
            field=first.field,
            fields=[v.field for v in violations] if len(violations) > 1 else (),
            description=first.description,
            location=first.location,
            received=first.received,
            violations=violations,
        )

    def with_headers(self, headers: Sequence[tuple[str, str]]) -> HttpError:
        """This error with ``headers`` added."""
        self.headers = (*self.headers, *headers)
        return self


#: Turns an error into the JSON value sent as the body (dumped with the route's profile).
ErrorRenderer = Callable[[HttpError], Any]


def http_status_for(code: grpc.StatusCode, overrides: Mapping[Any, int]) -> int:
    """The HTTP status for a gRPC ``code``: ``overrides`` (by code name), then grpc-gateway's."""
    return overrides.get(code.name, GATEWAY_STATUS_FOR_CODE.get(code, 500))


def render_gateway_error(error: HttpError) -> dict[str, Any]:
    """grpc-gateway's error body: ``{"code": 5, "message": "...", "details": [...]}``.

    ``code`` is the gRPC code number; ``details`` are the ``google.rpc`` messages
    in ProtoJSON (``{"@type": "type.googleapis.com/google.rpc.BadRequest", ...}``).
    """
    return {
        "code": error.grpc_code.value[0],
        "message": error.message,
        "details": [_detail_json(d) for d in error.details],
    }


def render_error_object(error: HttpError) -> dict[str, Any]:
    """``{"error": {"code": 404, "message": "..."}}``: the HTTP status and the message."""
    return {"error": {"code": error.status, "message": error.message}}


def gateway_error_schema() -> dict[str, Any]:
    """OpenAPI schema of :func:`render_gateway_error`'s body."""
    return {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "description": "gRPC status code"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["code", "message", "details"],
    }


def error_object_schema() -> dict[str, Any]:
    """OpenAPI schema of :func:`render_error_object`'s body."""
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "description": "HTTP status"},
                    "message": {"type": "string"},
                },
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    }


def _detail_json(detail: any_pb2.Any) -> Any:
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):  # type not in the descriptor pool
        return {"@type": detail.type_url}

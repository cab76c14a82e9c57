"""The legacy HTTP shim: gRPC handlers served at an old JSON-over-HTTP contract, byte for byte.

Mount it in front of the old Flask app; migrated routes are answered by rpckit
handlers, everything else falls through to Flask::

    from rpckit.http import Shim

    app = create_app()                                   # the legacy Flask app
    app.wsgi_app = Shim(services=[Inventory()], fallback=app.wsgi_app)

or serve it next to the gRPC port, through the same admission control::

    rpckit serve examples.inventory.server:servicers --grpc 127.0.0.1:50051 --http 127.0.0.1:8080

Routes come from the ``google.api.http`` rules of the services; how each route
speaks (JSON dialect, success status and headers, deadline, body limit) from
rpckit's proto options (``rpckit/v1/http.proto``) and :class:`RouteOptions`.
Errors map gRPC codes to HTTP statuses (grpc-gateway's table) and get their
body from a pluggable renderer, which sees every value it needs to word them as
the old app did (:class:`HttpError`, :class:`FieldViolation`, :data:`ErrorReason`).
A :class:`Dialect` reproduces the old framework's habits around the JSON
(:data:`FLASK_DIALECT`, on by default in front of a Flask app). Shadow mode and
rollout percentages move traffic route by route; :meth:`Shim.traffic_report` shows who still calls.
"""

from rpckit.core._http_limits import HttpLimits
from rpckit.http._app import Shim
from rpckit.http._dialect import FLASK_DIALECT, RPCKIT_DIALECT, Dialect, werkzeug_phrase
from rpckit.http._errors import (
    GATEWAY_STATUS_FOR_CODE,
    ErrorLocation,
    ErrorReason,
    ErrorRenderer,
    FieldViolation,
    HttpError,
    JsonType,
    http_status_for,
    json_type_of,
    reason_phrase,
    render_error_object,
    render_gateway_error,
)
from rpckit.http._mapping._converters import ConverterName
from rpckit.http._mapping._jsonmap import LegacyProfile
from rpckit.http._options import (
    BodyMode,
    CallContext,
    Guard,
    GuardedCall,
    QueryInts,
    RouteOptions,
    RouteSettings,
    ShimConfig,
    guard_identity,
)
from rpckit.http._server._server import HttpServer
from rpckit.http._shadow import JsonDifference, ShadowReport

__all__ = [
    "FLASK_DIALECT",
    "GATEWAY_STATUS_FOR_CODE",
    "RPCKIT_DIALECT",
    "BodyMode",
    "CallContext",
    "ConverterName",
    "Dialect",
    "ErrorLocation",
    "ErrorReason",
    "ErrorRenderer",
    "FieldViolation",
    "Guard",
    "GuardedCall",
    "HttpError",
    "HttpLimits",
    "HttpServer",
    "JsonDifference",
    "JsonType",
    "LegacyProfile",
    "QueryInts",
    "RouteOptions",
    "RouteSettings",
    "ShadowReport",
    "Shim",
    "ShimConfig",
    "guard_identity",
    "http_status_for",
    "json_type_of",
    "reason_phrase",
    "render_error_object",
    "render_gateway_error",
    "werkzeug_phrase",
]

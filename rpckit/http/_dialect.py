"""How the shim's answers are spelled around the JSON: rpckit's own dialect or the legacy app's.

A client of a migrated Flask app sees more than JSON: the status line's reason
phrase, which headers a 204 carries, what ``PUT /pets`` answers, whether
``/pets/abc`` is a 404 or a 400. :class:`Dialect` names each such habit;
:data:`FLASK_DIALECT` reproduces Flask 3 / Werkzeug 3, :data:`RPCKIT_DIALECT`
is the shim's own (RFC 9110 phrases, its merged ``Allow``, ``grpc-timeout`` read
on every route). :class:`~rpckit.http.ShimConfig` picks :data:`FLASK_DIALECT`
when the fallback app is a Flask app, unless told otherwise. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import http
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "FLASK_DIALECT",
    "RPCKIT_DIALECT",
    "TIMEOUT_HEADERS",
    "Dialect",
    "is_flask_app",
    "status_line",
    "werkzeug_phrase",
]

#: The deadline headers the shim can read (lower case).
TIMEOUT_HEADERS = ("x-request-timeout", "grpc-timeout")

#: Where Werkzeug's phrases differ from Python's http.HTTPStatus beyond letter case
#: (Werkzeug 3.1's ``HTTP_STATUS_CODES``, upper-cased as its ``Response.status`` does).
_WERKZEUG_SPELLINGS = {
    203: "NON AUTHORITATIVE INFORMATION",
    207: "MULTI STATUS",
    306: "SWITCH PROXY",
    413: "REQUEST ENTITY TOO LARGE",
    414: "REQUEST URI TOO LONG",
    416: "REQUESTED RANGE NOT SATISFIABLE",
    418: "I'M A TEAPOT",
    422: "UNPROCESSABLE ENTITY",
    449: "RETRY WITH",
    507: "INSUFFICIENT STORAGE",
    511: "NETWORK AUTHENTICATION FAILED",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dialect:
    """The legacy habits the shim reproduces around the JSON; each says what it reproduces.

    Attributes:
        name: for logs and docs (``"flask"``, ``"rpckit"``).
        reason_phrases: ``"werkzeug"`` upper-cases the status line's phrase as
            Werkzeug does (``404 NOT FOUND``); ``"rfc"`` writes RFC 9110's
            (``404 Not Found``).
        content_length_on_no_content: send ``Content-Length: 0`` on 204 and 304
            (``False``: none, as Werkzeug; RFC 9110 says a server must not send
            it on 204).
        fallback_answers_untouched: when the fallback app answers (a 405 on a
            path the shim half-serves, ``OPTIONS``) send its answer as it is
            (Flask still knows every route, so its ``Allow`` is right);
            ``False`` merges the shim's methods into its ``Allow``.
        path_converters: a path variable on an integer field behaves as
            Werkzeug's ``<int:...>`` converter, on a float field as ``<float:...>``
            (``RouteOptions.path_converters`` names one per variable): a value the
            converter refuses is no match (the fallback's answer, or 404).
        timeout_headers: which deadline headers are read (lower case, from
            :data:`TIMEOUT_HEADERS`): a legacy client's stray ``grpc-timeout``
            was ignored by the old app, so the Flask dialect reads only rpckit's
            ``X-Request-Timeout``.
        flask_response_hooks: run the Flask fallback's ``after_request`` hooks
            (flask-cors, headers added by the app) on the shim's own answers.
        flask_request_context: run guards and handlers inside the Flask
            fallback's request context (``url_for``, ``request.host_url``,
            ``current_app`` work in handlers as they did in views).
    """

    name: str
    reason_phrases: Literal["werkzeug", "rfc"] = "rfc"
    content_length_on_no_content: bool = True
    fallback_answers_untouched: bool = False
    path_converters: bool = False
    timeout_headers: Sequence[str] = TIMEOUT_HEADERS
    flask_response_hooks: bool = False
    flask_request_context: bool = False

    def __post_init__(self) -> None:
        if self.reason_phrases not in ("werkzeug", "rfc"):
            raise ValueError(
                f"Dialect.reason_phrases must be 'werkzeug' or 'rfc', not {self.reason_phrases!r}"
            )
        if isinstance(self.timeout_headers, str):
            raise TypeError("Dialect.timeout_headers is a sequence of header names, not a str")
        headers = tuple(h.lower() for h in self.timeout_headers)
        unknown = sorted(set(headers) - set(TIMEOUT_HEADERS))
        if unknown:
            raise ValueError(
                f"Dialect.timeout_headers: {unknown} unknown; use some of {list(TIMEOUT_HEADERS)}"
            )
        object.__setattr__(self, "timeout_headers", headers)


#: The shim's own habits (the default without a Flask fallback).
RPCKIT_DIALECT = Dialect(name="rpckit")

#: Flask 3 / Werkzeug 3 as a legacy client saw them (the default with a Flask fallback).
FLASK_DIALECT = Dialect(
    name="flask",
    reason_phrases="werkzeug",
    content_length_on_no_content=False,
    fallback_answers_untouched=True,
    path_converters=True,
    timeout_headers=("x-request-timeout",),
    flask_response_hooks=True,
    flask_request_context=True,
)


def werkzeug_phrase(status: int) -> str:
    """Werkzeug's reason phrase for ``status``: ``"NOT FOUND"``, ``"UNKNOWN"`` if it has none."""
    spelled = _WERKZEUG_SPELLINGS.get(status)
    if spelled is not None:
        return spelled
    try:
        return http.HTTPStatus(status).phrase.upper()
    except ValueError:
        return "UNKNOWN"


def status_line(status: int, dialect: Dialect, rfc_phrase: str) -> str:
    """The WSGI status string, ``"404 NOT FOUND"`` or ``"404 Not Found"``."""
    if dialect.reason_phrases == "werkzeug":
        return f"{status} {werkzeug_phrase(status)}"
    return f"{status} {rfc_phrase}"


def is_flask_app(app: object) -> bool:
    """Whether ``app`` is a Flask app or its ``wsgi_app`` method (no flask import needed)."""
    return flask_app_of(app) is not None


def flask_app_of(app: object) -> Any:
    """The Flask app behind ``app`` (the app, or its bound ``wsgi_app``), or None."""
    owner = getattr(app, "__self__", app)
    for klass in type(owner).__mro__:
        if klass.__module__ == "flask.app" and klass.__name__ == "Flask":
            return owner
    return None

"""The Flask fallback's own machinery, applied to the shim's answers for migrated routes.

Two things a migrated route loses when rpckit answers instead of a Flask view,
and gets back here (:data:`~rpckit.http._dialect.FLASK_DIALECT` turns both on):

* the request context: guards and handlers run inside
  ``app.request_context(environ)``, so ``url_for(..., _external=True)``,
  ``request.host_url``, ``current_app`` and the app's extensions work as they
  did in views (the context variables reach a server's handler thread too);
* the response hooks: the shim's answer becomes ``app.response_class`` and goes
  through ``app.process_response`` -- every ``after_request`` function
  (flask-cors adds ``Access-Control-Allow-Origin`` and ``Vary: Origin``; apps
  add their own headers) and the session save -- as a view's answer did.
  When that processing would hand the answer back unchanged (no ``after_request``
  function anywhere, nothing to save in the session, Flask's own response class
  and a ``Content-Type`` already set), the answer is not built into a response
  object at all: ~25 us a request, a tenth of the shim's own CPU (bench/README.md).

Flask is never imported here: the app object brings its own classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["FlaskHooks"]


class FlaskHooks:
    """A Flask app's request context and response processing, for the shim's own answers."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def request_context(self, environ: WSGIEnvironment) -> contextlib.AbstractContextManager[Any]:
        """``with hooks.request_context(environ):`` -- Flask's request (and app) context."""
        context: contextlib.AbstractContextManager[Any] = self._app.request_context(environ)
        return context

    def process_response(
        self, context: Any, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer after the app's ``after_request`` hooks, inside ``context`` (what
        entering :meth:`request_context` gave). ``Content-Length`` is left to the caller:
        hooks may change the body."""
        if self._changes_nothing(context, headers):
            return status, _without_content_length(headers), body
        response = self._app.response_class(body, status=status, headers=headers)
        response = self._app.process_response(response)
        kept = _without_content_length(response.headers.items())
        return int(response.status_code), kept, bytes(response.get_data())

    def _changes_nothing(self, context: Any, headers: list[tuple[str, str]]) -> bool:
        """Would ``process_response`` hand this answer back as it is? Only when no
        ``after_request`` function is registered (app, blueprints, or ``after_this_request``
        in this request), the session is the null one (nothing to save), the response class
        is Flask's own and a ``Content-Type`` is set (else the class adds its default)."""
        app = self._app
        if any(app.after_request_funcs.values()):
            return False
        pending = getattr(context, "_after_request_functions", None)
        if not isinstance(pending, list) or pending:
            return False  # after_this_request was used (or this Flask keeps them elsewhere)
        if not app.session_interface.is_null_session(context.session):
            return False
        response_class = app.response_class
        if (response_class.__module__, response_class.__qualname__) != (
            "flask.wrappers",
            "Response",
        ):
            return False
        return any(name.lower() == "content-type" for name, _ in headers)


def _without_content_length(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != "content-length"]

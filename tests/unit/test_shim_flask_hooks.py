"""FlaskHooks.process_response: the legacy app's response processing on the shim's answers,
skipped only where Flask would hand the answer back unchanged (a real Flask app, no sockets).

Each case compares with Flask's own path: the answer built into ``app.response_class`` and
run through ``app.process_response`` inside a request context of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Blueprint, Flask, Response, after_this_request, session
from werkzeug.test import EnvironBuilder

from rpckit.http._flask import FlaskHooks

Answer = tuple[int, list[tuple[str, str]], bytes]
JSON_ANSWER: Answer = (200, [("Content-Type", "application/json"), ("X-Id", "7")], b'{"a": 1}')
BARE_ANSWER: Answer = (204, [("X-Id", "7")], b"")


def environ() -> dict[str, object]:
    return EnvironBuilder(path="/items/7", method="GET").get_environ()


def flasks_own(app: Flask, answer: Answer, inside: Callable[[], None] = lambda: None) -> Answer:
    status, headers, body = answer
    with app.request_context(environ()):
        inside()
        response = app.process_response(app.response_class(body, status=status, headers=headers))
        kept = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return response.status_code, kept, response.get_data()


def through_hooks(
    app: Flask, answer: Answer, inside: Callable[[], None] = lambda: None
) -> tuple[Answer, bool]:
    """The hooks' answer, and whether they skipped Flask's processing for it."""
    hooks = FlaskHooks(app)
    with hooks.request_context(environ()) as context:
        inside()
        skipped = hooks._changes_nothing(context, answer[1])
        return hooks.process_response(context, *answer), skipped


def test_an_app_without_hooks_gets_the_answer_back_unchanged_without_a_response_object() -> None:
    app = Flask(__name__)
    got, skipped = through_hooks(app, JSON_ANSWER)
    assert skipped
    assert got == flasks_own(app, JSON_ANSWER)
    assert got == (200, [("Content-Type", "application/json"), ("X-Id", "7")], b'{"a": 1}')


def test_an_answer_without_a_content_type_gets_flasks_default() -> None:
    app = Flask(__name__)
    got, skipped = through_hooks(app, BARE_ANSWER)
    assert not skipped
    assert got == flasks_own(app, BARE_ANSWER)
    assert ("Content-Type", "text/html; charset=utf-8") in got[1]


def test_after_request_functions_of_the_app_and_its_blueprints_run() -> None:
    app = Flask(__name__)

    @app.after_request
    def tag(response: Response) -> Response:
        response.headers["X-App"] = "yes"
        return response

    got, skipped = through_hooks(app, JSON_ANSWER)
    assert not skipped
    assert got == flasks_own(app, JSON_ANSWER)
    assert ("X-App", "yes") in got[1]

    blueprinted = Flask(__name__)
    items = Blueprint("items", __name__)

    @items.after_request
    def never_here(response: Response) -> Response:  # another blueprint's: not this URL's
        return response

    blueprinted.register_blueprint(items)
    _, skipped = through_hooks(blueprinted, JSON_ANSWER)
    assert not skipped  # any registered function makes Flask's path the one taken


def test_after_this_request_in_the_request_runs() -> None:
    app = Flask(__name__)

    def register() -> None:
        @after_this_request
        def late(response: Response) -> Response:
            response.headers["X-Late"] = "1"
            return response

    got, skipped = through_hooks(app, JSON_ANSWER, register)
    assert not skipped
    assert got == flasks_own(app, JSON_ANSWER, register)
    assert ("X-Late", "1") in got[1]


def test_a_session_with_something_to_save_sets_its_cookie() -> None:
    app = Flask(__name__)
    app.secret_key = "test-only"

    def write() -> None:
        session["seen"] = True

    got, skipped = through_hooks(app, JSON_ANSWER, write)
    assert not skipped
    assert any(name == "Set-Cookie" for name, _ in got[1])
    assert [n for n, _ in got[1]] == [n for n, _ in flasks_own(app, JSON_ANSWER, write)[1]]


@pytest.mark.parametrize("answer", [JSON_ANSWER, BARE_ANSWER])
def test_an_apps_own_response_class_always_gets_built(answer: Answer) -> None:
    class Stamped(Response):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.headers["X-Stamped"] = "1"

    app = Flask(__name__)
    app.response_class = Stamped
    got, skipped = through_hooks(app, answer)
    assert not skipped
    assert got == flasks_own(app, answer)
    assert ("X-Stamped", "1") in got[1]

"""Baseline: the benchmark handler as a Flask JSON endpoint, served by gunicorn + gevent.

    gunicorn -k gevent -w 3 -b 127.0.0.1:0 'bench.overload.flask_app:create_app()'

``POST /work`` with ``{"cpu_ms", "wait_ms", "payload"}`` (payload base64) answers
``{"pid", "payload"}``; the client's deadline arrives as header ``X-Request-Deadline``
(epoch milliseconds). ``GET /healthz`` answers 200. Each worker imports the app after the
fork (gunicorn without --preload), the usual "fork-then-import" deployment.
"""

from __future__ import annotations

import os
import sys

from flask import Flask, Response, jsonify, request

from bench.overload.handler import WorkAccounting, do_work

READY_MARKER = "bench.overload.flask_app ready in pid"


def _gevent_sleep(seconds: float) -> None:
    import gevent  # type: ignore[import-untyped]  # gevent ships no type hints

    gevent.sleep(seconds)


def create_app(*, use_gevent_sleep: bool = True) -> Flask:
    """The Flask app; `use_gevent_sleep` makes the wait yield to other greenlets explicitly."""
    app = Flask(__name__)
    accounting = WorkAccounting.from_environment()
    sleep = _gevent_sleep if use_gevent_sleep else None

    @app.post("/work")
    def work() -> Response:
        body = request.get_json(force=True)
        header = request.headers.get("X-Request-Deadline")
        deadline = int(header) / 1000 if header else None
        do_work(
            float(body.get("cpu_ms", 0)),
            float(body.get("wait_ms", 0)),
            deadline,
            accounting=accounting,
            sleep=sleep,
        )
        return jsonify(pid=os.getpid(), payload=body.get("payload", ""))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    # The runner counts these lines to know every worker has imported the app.
    print(f"{READY_MARKER} {os.getpid()}", file=sys.stderr, flush=True)
    return app

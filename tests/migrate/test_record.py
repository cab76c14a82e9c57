"""The recorder: redaction, sampling bounds, size bounds, streaming passed through."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, jsonify, request
from werkzeug.test import Client

from rpckit.migrate._record import RecordConfig, Recorder, SamplingPolicy, redact_headers
from rpckit.migrate._samples import REDACTED, read_samples


def _app() -> Flask:
    app = Flask("recorded")

    @app.post("/login")
    def login() -> Response:
        body = request.get_json()
        response = jsonify(ok=True, token="abc123", user={"password": body.get("password")})
        response.set_cookie("session", "s3cr3t")
        return response

    @app.get("/big")
    def big() -> Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"x" * 1000

        return Response(chunks(), mimetype="text/plain")

    return app


def test_auth_cookies_and_fields_are_redacted(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    recorder = Recorder(_app(), out, config=RecordConfig(redact_fields=["user_pin"]))
    client = Client(recorder, use_cookies=False)
    response = client.post(
        "/login?token=qq&x=1",
        # A pin of many digits: a short one can turn up by chance in the record's timestamp.
        json={"name": "a", "password": "hunter2", "user_pin": 73914528},
        headers={"Authorization": "Bearer sekret", "Cookie": "session=old; theme=dark"},
    )
    assert response.status_code == 200
    assert b"abc123" in response.data  # the client is unaffected
    response.close()  # a WSGI server closes the body: the exchange is written then
    recorder.close()
    text = out.read_text(encoding="utf-8")
    for secret in ("sekret", "hunter2", "73914528", "abc123", "s3cr3t", "old", "qq"):
        assert secret not in text, secret
    (sample,) = read_samples([out])
    assert sample.header("Authorization") == f"Bearer {REDACTED}"
    assert sample.header("Cookie") == f"session={REDACTED}; theme={REDACTED}"
    assert sample.response_header(
        "Set-Cookie",
    ).startswith(f"session={REDACTED};")  # type: ignore[union-attr]
    assert json.loads(sample.body or b"")["name"] == "a"
    assert "x=1" in sample.query


def test_response_over_the_bound_is_streamed_whole_but_not_recorded(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    recorder = Recorder(_app(), out, config=RecordConfig(max_body_bytes=10_000))
    response = Client(recorder).get("/big")
    assert len(response.get_data()) == 100_000
    response.close()
    recorder.close()
    (sample,) = read_samples([out])
    assert sample.response_body is None
    assert sample.response_truncated
    assert any("not recorded" in n for n in sample.notes)


def test_file_bound_stops_recording(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    recorder = Recorder(_app(), out, config=RecordConfig(max_file_bytes=1500, burst=100))
    client = Client(recorder)
    for _ in range(10):
        client.post("/login", json={"password": "p"}).close()
    recorder.close()
    assert out.stat().st_size <= 1500
    assert recorder.sink.dropped > 0
    assert recorder.sink.lines >= 1


def test_rate_bound_is_a_token_bucket_that_refills() -> None:
    policy = SamplingPolicy(RecordConfig(max_per_second=2, burst=3))
    rng = random.Random(1)
    burst = [policy.decide(0.0, rng) for _ in range(10)]
    assert burst.count(True) == 3  # a burst larger than the bound
    assert not policy.decide(0.1, rng)
    assert policy.decide(1.0, rng)  # refilled after a quiet spell
    sampled = SamplingPolicy(RecordConfig(sample_rate=0.25, max_per_second=1e6, burst=10**6))
    hits = sum(sampled.decide(i * 1e-3, rng) for i in range(4000))
    assert 800 < hits < 1200


def test_redact_headers_without_a_scheme() -> None:
    assert redact_headers([("X-Api-Key", "k")], frozenset({"x-api-key"})) == (
        ("X-Api-Key", REDACTED),
    )

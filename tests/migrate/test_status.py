"""migrate status: counters from several processes, over time, and the verdict."""

from __future__ import annotations

from werkzeug.test import Client

from examples.migrated_inventory.stages import stage_1
from rpckit.migrate._status import Reading, add_counts, assess, parse_prometheus, parse_report

DAY = 86400.0


def test_counts_from_two_worker_processes_add_up_from_prometheus_and_json() -> None:
    shims = [stage_1(), stage_1()]
    for shim in shims:
        client = Client(shim)
        client.get("/items/NUT-M8", headers={"User-Agent": "billing/2"})
        client.get("/healthz", headers={"User-Agent": "monitor/1"})
    scraped = [parse_prometheus(_exposition(s)) for s in shims]
    reported = [parse_report(s.traffic_report()) for s in shims]
    assert add_counts(scraped) == add_counts(reported)
    total = add_counts(scraped)
    assert total[("/items/{sku}", "GET", "200", "billing/2", "rpckit")] == 2
    assert total[("/healthz", "GET", "200", "monitor/1", "fallback")] == 2  # kept on Flask


def _exposition(shim: object) -> str:
    from prometheus_client import generate_latest

    return generate_latest(shim.metrics_registry()).decode()  # type: ignore[attr-defined]


def test_verdict_over_history_with_a_restart() -> None:
    key_rpc = ("/items/{sku}", "GET", "200", "billing/2", "rpckit")
    key_flask = ("(fallback)", "GET", "200", "monitor/1", "fallback")
    readings = [
        Reading(0.0, {key_rpc: 10, key_flask: 5}),
        Reading(2 * DAY, {key_rpc: 20, key_flask: 5}),
        Reading(9 * DAY, {key_rpc: 3}),  # the process restarted: counters reset
    ]
    report = assess(readings, now=9 * DAY, quiet_s=6 * DAY)
    assert report.fallback_can_go
    assert not report.shim_can_go
    flask = next(c for c in report.callers if c.served_by == "fallback")
    assert (flask.first_seen, flask.last_seen, flask.recent) == (0.0, 0.0, 0)
    rpc = next(c for c in report.callers if c.served_by == "rpckit")
    assert rpc.recent == 3
    assert rpc.last_seen == 9 * DAY
    quiet = assess([*readings, Reading(17 * DAY, {key_rpc: 3})], now=17 * DAY, quiet_s=6 * DAY)
    assert quiet.shim_can_go
    assert "the shim can go" in quiet.render_text()


def test_one_reading_says_it_cannot_tell_yet() -> None:
    report = assess([Reading(0.0, {})], now=0.0, quiet_s=DAY)
    assert not report.fallback_can_go
    assert not report.shim_can_go
    assert "one reading so far" in report.render_text()

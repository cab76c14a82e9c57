"""Unit tests of bench/shim's pure report: the acceptance checks and the markdown."""

from __future__ import annotations

from typing import Any

from bench.shim.__main__ import _row, acceptance, render
from bench.shim.load import LoadResult


def _step(connections: int, rps: float, p99_ms: float) -> dict[str, Any]:
    return {
        "connections": connections,
        "throughput_rps": rps,
        "p50_ms": p99_ms / 2,
        "p99_ms": p99_ms,
        "server_cpu_ms_per_request": 0.5,
        "unexpected": {},
    }


def _run(shim: list[dict[str, Any]], gevent: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2, "python": "3.11", "load_average_at_end": [0.1, 0.1, 0.1]},
        "server_cpus": "0",
        "client_cpus": "1",
        "warmup_s": 2.0,
        "measure_s": 16.0,
        "rounds": 4,
        "labels": {"rpckit-shim": "shim", "gunicorn-gevent": "gevent"},
        "identity": [{"request": "get", "status": 200, "identical": True}],
        "runs": {"rpckit-shim": shim, "gunicorn-gevent": gevent},
    }


def test_acceptance_compares_each_level_with_each_baseline() -> None:
    run = _run(
        [_step(1, 2000, 0.95), _step(8, 3000, 6.0)],
        [_step(1, 1700, 1.00), _step(8, 3100, 5.0)],
    )
    rows = acceptance(run)
    assert rows == [
        ["throughput, 1 conn. vs gevent", "2000 / 1700 = 1.18x", ">= 1.0x", "PASS"],
        ["p99, 1 conn. vs gevent", "0.95 vs 1.00 ms", "no worse", "PASS"],
        ["throughput, 8 conn. vs gevent", "3000 / 3100 = 0.97x", ">= 1.0x", "FAIL"],
        ["p99, 8 conn. vs gevent", "6.00 vs 5.00 ms", "no worse", "FAIL"],
    ]


def test_render_shows_the_acceptance_table() -> None:
    text = render(_run([_step(1, 2000, 0.95)], [_step(1, 1700, 1.0)]))
    assert "## Acceptance (shim against each Flask setup)" in text
    assert "| p99, 1 conn. vs gevent | 0.95 vs 1.00 ms | no worse | PASS |" in text
    assert "| shim | 1 | 2000 | 0.47 | 0.95 |" in text


def _rounds(*per_round: tuple[int, list[float]]) -> list[tuple[LoadResult, float]]:
    """(completed, latencies in seconds) per 1 s round, with 0.5 s of server CPU each."""
    return [(LoadResult(done, 1.0, lats, {}), 0.5) for done, lats in per_round]


def test_a_row_reports_the_median_over_rounds_and_keeps_the_pooled_values() -> None:
    fast = [0.001] * 99 + [0.002]
    slow = [0.010] * 100  # one round spoiled by a slow spell of the machine
    row = _row(8, _rounds((100, fast), (100, fast), (50, slow)))
    assert row["throughput_rps"] == 100.0  # median of 100, 100, 50
    assert row["p50_ms"] == 1.0
    assert row["p99_ms"] == 1.01  # the fast rounds' p99, not the slow round's 10 ms
    assert row["pooled"]["throughput_rps"] == round(250 / 3, 1)
    assert row["pooled"]["p99_ms"] == 10.0
    assert [r["throughput_rps"] for r in row["rounds"]] == [100.0, 100.0, 50.0]
    assert row["server_cpu_ms_per_request"] == round(1500 / 250, 3)


def test_render_shows_the_pooled_columns_when_rows_have_them() -> None:
    step = _step(1, 2000, 0.95) | {"pooled": {"throughput_rps": 1990.0, "p99_ms": 1.2}}
    text = render(_run([step], [_step(1, 1700, 1.0)]))
    assert "| pooled req/s | pooled p99 ms |" in text
    assert "| shim | 1 | 2000 | 0.47 | 0.95 | 1990.0 | 1.20 |" in text
    assert "| gevent | 1 | 1700 | 0.50 | 1.00 | - | - |" in text

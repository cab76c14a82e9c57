"""Unit tests of bench/shim's pure report: the acceptance checks and the markdown."""

from __future__ import annotations

from typing import Any

from bench.shim.__main__ import acceptance, render


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

"""Unit tests of bench/balance's pure parts: capacity, per-policy summaries, acceptance, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.balance.__main__ import FULL, QUICK, Plan, main, read_findings
from bench.balance.clients import ClientSpec, round_robin_target
from bench.balance.results import (
    acceptance,
    capacity_paragraph,
    cpu_capacity,
    nominal_capacity,
    render_markdown,
    summarize_policy,
    tail_points,
)
from bench.harness.stats import Outcome, RequestRecord

OK, DEADLINE, REJECTED = Outcome.OK, Outcome.DEADLINE, Outcome.REJECTED
SLOW_PID, FAST_PIDS = 100, (101, 102, 103)
BACKEND_OF_PID = {SLOW_PID: 0, 101: 1, 102: 2, 103: 3}


def record(
    at: float, latency_ms: float, outcome: Outcome = OK, pid: int = 101, code: str = ""
) -> RequestRecord:
    return RequestRecord(at, latency_ms / 1000, outcome, code, pid, 0.001)


def test_nominal_capacity_sums_threads_over_service_time() -> None:
    # The benchmark's default: 9 backends of 10 ms and one of 100 ms, 2 threads each.
    assert nominal_capacity([2] * 10, [0.1] + [0.01] * 9) == pytest.approx(1820)
    with pytest.raises(ValueError, match="one thread count"):
        nominal_capacity([1, 1], [0.01])
    with pytest.raises(ValueError, match="threads must be"):
        nominal_capacity([0], [0.01])


def test_tail_points_count_failures_as_infinitely_slow() -> None:
    records = [record(i / 100, 10 + i) for i in range(98)]
    records += [record(0.98, 1, REJECTED, code="RESOURCE_EXHAUSTED")]
    records += [record(0.99, 500, DEADLINE, pid=0, code="DEADLINE_EXCEEDED")]
    points = dict(tail_points(records, (0.5, 0.02, 0.01, 0.001)))
    assert points[0.5] == pytest.approx(59.0)  # nearest rank: the 50th of 100
    assert points[0.02] == pytest.approx(107.0)  # the 98th: the slowest OK call
    assert points[0.01] is None  # the 99th is a failure
    assert 0.001 not in points  # finer than one call in 100
    assert tail_points([]) == []


def test_summarize_policy_attributes_calls_to_backends_by_pid() -> None:
    records = [record(0.1 * i, 12, pid=FAST_PIDS[i % 3]) for i in range(90)]
    records += [record(9.0 + 0.1 * i, 105, pid=SLOW_PID) for i in range(5)]
    # A refusal carries the pid in its load report; a client timeout carries none.
    records += [record(9.6, 1, REJECTED, pid=SLOW_PID, code="RESOURCE_EXHAUSTED")]
    records += [record(9.7, 500, DEADLINE, pid=0, code="DEADLINE_EXCEEDED")]
    records += [record(10.5, 12)]  # outside the window
    summary = summarize_policy(
        records, window_s=10.0, backend_of_pid=BACKEND_OF_PID, backends=4, slow=0
    )
    assert summary["sent"] == 97
    assert summary["good"] == 95
    assert summary["misses"] == 2
    assert summary["miss_fraction"] == pytest.approx(2 / 97)
    assert summary["calls_by_backend"] == [6, 30, 30, 30]
    assert summary["unattributed"] == 1
    assert summary["slow_share"] == pytest.approx(6 / 97)
    assert summary["slow_share_upper"] == pytest.approx(7 / 97)
    assert summary["codes"] == {"RESOURCE_EXHAUSTED": 1, "DEADLINE_EXCEEDED": 1}
    assert summary["p50_ms"] == pytest.approx(12.0)
    assert summary["max_ms"] == pytest.approx(105.0)
    assert summary["p99_all_ms"] is None  # 2 of 97 calls failed: the p99 call did
    assert summary["offered_rps"] == pytest.approx(9.7)
    with pytest.raises(ValueError, match="slow must index"):
        summarize_policy(records, window_s=10.0, backend_of_pid={}, backends=4, slow=4)


def _run(p2c: dict[str, Any] | None, rr: dict[str, Any] | None) -> dict[str, Any]:
    policies = []
    for name, summary in (("p2c", p2c), ("round_robin", rr)):
        entry: dict[str, Any] = {"policy": name, "label": name}
        if summary is not None:
            entry["summary"] = summary
            entry["cpu"] = {"cores_used": 1.2, "backends_s": 30.0, "senders_s": 18.0}
        policies.append(entry)
    return {
        "mode": "full",
        "started": "2026-01-01T00:00:00+00:00",
        "elapsed_s": 200.0,
        "command": "python -m bench.balance",
        "capacity": {
            "threads_rps": 7280.0,
            "calibration": {
                "policy": "p2c",
                "rate_rps": 300.0,
                "seconds": 10.0,
                "calls": 3000,
                "cpu_s": 6.6,
                "cpu_ms_per_call": 2.2,
                "cpu_rps": 909.1,
            },
            "rps": 909.1,
        },
        "rate_rps": 454.6,
        "machine": {
            "cpu_model": "test",
            "cores": 2,
            "kernel": "6",
            "python": "3.11",
            "grpcio": "1.85",
            "protobuf": "7",
        },
        "config": {
            "backends": 4,
            "slow_backend": 0,
            "slow_factor": 10.0,
            "service_ms": 10.0,
            "threads": 8,
            "load": 0.5,
            "deadline_ms": 500.0,
            "senders": 4,
            "backend_warmup_s": 5.0,
            "warmup_s": 30.0,
            "measure_s": 40.0,
        },
        "policies": policies,
        "notes": [],
    }


def _summary(**fields: Any) -> dict[str, Any]:
    records = [record(0.01 * i, 12, pid=FAST_PIDS[i % 3]) for i in range(1000)]
    summary = summarize_policy(
        records, window_s=10.0, backend_of_pid=BACKEND_OF_PID, backends=4, slow=0
    )
    summary.update(fields)
    return summary


def test_acceptance_passes_and_fails_on_the_issue_targets() -> None:
    good = _run(_summary(p99_all_ms=20.0, p99_ms=20.0), _summary(p99_all_ms=105.0, p99_ms=105.0))
    checks = acceptance(good)
    assert [c.passed for c in checks] == [True, True, True, True]
    assert checks[0].name == "P2C p99 / round_robin p99 (OK calls)"
    assert checks[0].value == "20.0 / 105.0 ms = 0.19"
    assert checks[1].value == "20.0 / 105.0 ms = 0.19"
    bad = _run(
        _summary(
            p99_all_ms=30.0, p99_ms=30.0, misses=2, miss_fraction=0.002, slow_share_upper=0.031
        ),
        _summary(p99_all_ms=105.0, p99_ms=105.0),
    )
    checks = acceptance(bad)
    assert [c.passed for c in checks] == [False, False, False, False]
    assert checks[1].value == "30.0 / 105.0 ms = 0.29"
    missing = acceptance(_run(None, _summary()))
    assert [c.passed for c in missing] == [None, None, None, None]


def test_both_readings_of_p99_must_pass() -> None:
    """Round robin's failed calls are its tail: over OK calls only it would look fast, so
    p99 over all calls (a failure counting as slower than the deadline) is checked too; and
    the OK-only reading must pass as well."""
    run = _run(
        _summary(p99_all_ms=66.0, p99_ms=66.0),
        _summary(p99_all_ms=None, p99_ms=107.0),  # > 1% of its calls failed or came late
    )
    checks = acceptance(run)
    assert checks[0].value == "66.0 / 107.0 ms = 0.62"
    assert checks[0].passed is False
    assert checks[1].value == "66.0 / > 500 ms = < 0.13"
    assert checks[1].passed is True
    beyond = _run(_summary(p99_all_ms=None, p99_ms=20.0), _summary(p99_all_ms=None))
    assert acceptance(beyond)[1].passed is False  # P2C's own tail unknown: not a pass
    assert acceptance(beyond)[1].value == "> 500 / > 500 ms = ?"


def test_render_markdown_has_the_tables_and_verdicts() -> None:
    run = _run(_summary(p99_all_ms=20.0, p99_ms=20.0), _summary(p99_all_ms=105.0, p99_ms=105.0))
    run["notes"] = ["a note"]
    text = render_markdown(run)
    assert "| rpckit P2C" not in text  # labels come from the run
    assert "| p2c | 100.0 |" in text
    assert text.count("| PASS |") == 4
    assert "#0 (slow)" in text
    assert "- a note" in text
    assert "909 req/s" in text  # capacity
    assert "455 req/s" in text  # offered


def test_capacity_is_the_lower_of_threads_and_cpu() -> None:
    assert cpu_capacity(6.0, 3000, 2) == pytest.approx(1000.0)  # 2 ms a call, 2 cores
    with pytest.raises(ValueError, match="cpu_s"):
        cpu_capacity(0.0, 3000, 2)
    with pytest.raises(ValueError, match="calls"):
        cpu_capacity(1.0, 0, 2)
    run = _run(_summary(), None)
    text = capacity_paragraph(run)
    assert "8 handler threads each / service time, summed: 7280 req/s" in text
    assert "a call cost 2.20 ms of CPU" in text
    assert "could carry 909 req/s" in text
    assert "50% of it = **455 req/s**" in text
    run["capacity"]["calibration"] = None
    assert "The rate was given (`--rate`): **455 req/s**" in capacity_paragraph(run)


def test_client_spec_checks_its_fields() -> None:
    spec = ClientSpec(policy="p2c", addresses=("127.0.0.1:1", "127.0.0.1:2"), wait_ms=10)
    assert round_robin_target(spec.addresses) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(ValueError, match="unknown policy"):
        ClientSpec(policy="least", addresses=("127.0.0.1:1",), wait_ms=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loopback"):
        ClientSpec(policy="random", addresses=("10.0.0.1:1",), wait_ms=10)
    with pytest.raises(ValueError, match="at least one"):
        ClientSpec(policy="random", addresses=(), wait_ms=10)


def test_findings_file_bullets_may_span_lines(tmp_path: Path) -> None:
    path = tmp_path / "findings.md"
    path.write_text("- first, which\n  goes on\n\n- second\n", encoding="utf-8")
    assert read_findings(path) == ["first, which goes on", "second"]
    assert read_findings(None) == []


def test_full_mode_measures_each_policy_in_rounds() -> None:
    assert (FULL.rounds, FULL.round_s) == (4, 10.0)  # 40 s per policy, 10 s per round
    assert QUICK.rounds == 1
    with pytest.raises(ValueError, match="rounds"):
        Plan(backend_warmup_s=1, warmup_s=1, measure_s=1, calibrate_s=1, rounds=0)
    with pytest.raises(SystemExit):
        main(["--rounds", "0"])  # a usage error, before any process starts


def test_render_markdown_says_how_the_rounds_ran() -> None:
    run = _run(_summary(p99_all_ms=20.0, p99_ms=20.0), _summary(p99_all_ms=105.0, p99_ms=105.0))
    run["config"].update(rounds=4, measure_s=40.0, lead_in_s=3.0)
    text = render_markdown(run)
    assert "in 4 rounds of 10 s" in text
    assert "3 s unmeasured first" in text

"""Unit tests of bench/soak's pure parts: the plan, the schedule, the accounting of every call,
RSS growth, the checks and the report; and the harness's RSS parser."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.harness.procs import parse_rss_kib
from bench.harness.stats import Outcome, RequestRecord
from bench.soak.client import attribute_lost
from bench.soak.memory import rss_anon_mib
from bench.soak.plan import (
    FULL,
    QUICK,
    Restart,
    SoakPlan,
    burst_wait_s,
    burst_window,
    restart_plan,
    soak_schedule,
)
from bench.soak.results import (
    LOST_CODE,
    account,
    account_by_phase,
    buckets,
    checks,
    load_gauges,
    load_when_refusing,
    phase_of,
    render_markdown,
    rss_growth,
    shed_buckets,
    shed_by_phase,
    shed_by_reason,
)

OK, DEADLINE, REJECTED, ERROR = Outcome.OK, Outcome.DEADLINE, Outcome.REJECTED, Outcome.ERROR


def record(
    at: float, outcome: Outcome = OK, code: str = "", latency_ms: float = 12
) -> RequestRecord:
    return RequestRecord(at, latency_ms / 1000, outcome, code, 0 if outcome is not OK else 7, 0.0)


def test_restart_plan_takes_the_backends_in_turn_half_a_period_in() -> None:
    assert restart_plan(duration_s=60, every_s=15, backends=3) == [
        Restart(7.5, 0),
        Restart(22.5, 1),
        Restart(37.5, 2),
        Restart(52.5, 0),
    ]
    assert restart_plan(duration_s=5, every_s=15, backends=3) == []
    with pytest.raises(ValueError, match="every_s"):
        restart_plan(duration_s=60, every_s=0, backends=3)


def test_burst_is_centred_and_must_fit() -> None:
    assert burst_window(duration_s=60, burst_s=3) == (28.5, 31.5)
    with pytest.raises(ValueError, match="burst_s"):
        burst_window(duration_s=3, burst_s=3)


def test_the_schedule_runs_at_the_burst_factor_only_inside_the_burst() -> None:
    schedule = soak_schedule(
        rate_rps=200,
        duration_s=60,
        burst=(28.5, 31.5),
        burst_factor=3,
        max_requests=100_000,
        rng=random.Random(1),
    )
    assert schedule == sorted(schedule)
    assert schedule[0] >= 0
    assert schedule[-1] < 60
    inside = sum(1 for at in schedule if 28.5 <= at < 31.5) / 3
    outside = sum(1 for at in schedule if not 28.5 <= at < 31.5) / 57
    assert inside == pytest.approx(600, rel=0.1)
    assert outside == pytest.approx(200, rel=0.05)
    again = soak_schedule(
        rate_rps=200, duration_s=60, burst=(28.5, 31.5), burst_factor=3,
        max_requests=100_000, rng=random.Random(1),
    )  # fmt: skip
    assert again == schedule  # seeded


def test_plans_validate_and_fit_their_rss_windows() -> None:
    assert FULL.duration_s == 60
    assert FULL.load == 0.8
    assert FULL.burst_factor == 3
    assert QUICK.duration_s <= 20
    with pytest.raises(ValueError, match="must fit"):
        SoakPlan(duration_s=15, restart_every_s=5, burst_s=1, warmup_s=5, rss_window_s=10,
                 ramp_level_s=1, prelude_s=5)  # fmt: skip
    with pytest.raises(ValueError, match="load"):
        SoakPlan(duration_s=60, load=0, restart_every_s=5, burst_s=1, warmup_s=5,
                 rss_window_s=10, ramp_level_s=1, prelude_s=5)  # fmt: skip
    with pytest.raises(ValueError, match="prelude"):
        SoakPlan(duration_s=60, restart_every_s=5, burst_s=1, warmup_s=5, rss_window_s=10,
                 ramp_level_s=1, prelude_s=1)  # fmt: skip


def test_a_burst_no_system_could_serve_in_time_is_refused() -> None:
    # The last call of a burst waits for the backlog: (load x factor - 1) x burst seconds.
    assert burst_wait_s(load=0.8, burst_factor=3, burst_s=3) == pytest.approx(4.2)
    assert burst_wait_s(load=0.8, burst_factor=3, burst_s=1) == pytest.approx(1.4)
    assert burst_wait_s(load=0.5, burst_factor=2, burst_s=5) == 0.0  # within capacity
    for plan in (FULL, QUICK):
        wait = burst_wait_s(load=plan.load, burst_factor=plan.burst_factor, burst_s=plan.burst_s)
        assert 0 < wait < plan.deadline_s
    # The first design: 3x of 80% for 3 s queued 4.2 s of work against 2 s deadlines.
    with pytest.raises(ValueError, match="no system could serve it in time"):
        SoakPlan(duration_s=60, restart_every_s=15, burst_s=3, warmup_s=5, rss_window_s=10,
                 ramp_level_s=3, prelude_s=6)  # fmt: skip


def test_every_call_is_ok_failed_or_lost_and_they_add_up() -> None:
    records = [
        record(0.1),
        record(0.2, REJECTED, "RESOURCE_EXHAUSTED"),
        record(0.3, DEADLINE, "late OK"),
        record(0.4, ERROR, "UNAVAILABLE"),
        record(0.5, ERROR, LOST_CODE),
        record(6.0),
    ]
    totals = account(records)
    assert totals == {
        "sent": 6,
        "ok": 2,
        "failed": 3,
        "failed_by_code": {"RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 1, "late OK": 1},
        "lost": 1,
    }
    assert totals["ok"] + totals["failed"] + totals["lost"] == totals["sent"]


def test_lost_calls_get_the_scheduled_time_of_the_call_that_never_reported() -> None:
    raws = [
        (1.0, 0.01, "ok", "", 7, 0.0),
        (0.0, 0.0, "error", LOST_CODE, 0, 0.0),
        (3.0, 0.01, "deadline", "not sent", 0, 0.0),
    ]
    attributed = attribute_lost([1.0, 2.0, 3.0], raws)
    assert attributed[1][:4] == (2.0, 0.0, "error", LOST_CODE)
    assert attributed[0] == raws[0]
    assert attributed[2] == raws[2]
    assert attribute_lost([1.0], [raws[0]]) == [raws[0]]


def test_buckets_count_by_scheduled_time_with_latency_and_rss() -> None:
    records = [record(0.5, latency_ms=10), record(1.0, latency_ms=30), record(5.5)]
    records.append(record(7.0, ERROR, LOST_CODE))
    rss: dict[str, list[list[float | None]]] = {
        "client-0": [[0.0, 1024.0], [1.0, 3072.0], [6.0, None], [7.0, 4096.0]]
    }
    table = buckets(records, rss, bucket_s=5, duration_s=10)
    assert [row["sent"] for row in table] == [2, 2]
    assert table[0]["offered_rps"] == 0.4
    assert table[0]["p50_ms"] == 20.0
    assert table[1]["lost"] == 1
    assert table[1]["ok"] == 1
    assert table[0]["rss_mib"] == {"client-0": 2.0}
    assert table[1]["rss_mib"] == {"client-0": 4.0}
    # a record scheduled at the very end lands in the last row, not out of range
    assert buckets([record(10.0)], {}, bucket_s=5, duration_s=10)[1]["sent"] == 1


def test_rss_growth_is_last_window_over_first_after_warmup() -> None:
    samples: list[list[float | None]] = [
        [t, 100.0 if t < 2 else 1000.0 + 10 * t] for t in range(21)
    ]
    growth = rss_growth(samples, warmup_s=2, window_s=5, end_s=20)
    first = sum(1000 + 10 * t for t in range(2, 7)) / 5
    last = sum(1000 + 10 * t for t in range(15, 21)) / 6
    assert growth["growth"] == pytest.approx(last / first - 1, abs=1e-4)
    assert rss_growth([], warmup_s=2, window_s=5, end_s=20)["growth"] is None
    assert rss_growth([[1, None], [19, 5.0]], warmup_s=0, window_s=5, end_s=20)["growth"] is None


def _run(**overrides: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "totals": {"sent": 10, "ok": 10, "failed": 0, "failed_by_code": {}, "lost": 0},
        "rss_growth": {"client-0": {"growth": 0.02, "first_mib": 50.0, "last_mib": 51.0}},
    }
    run.update(overrides)
    return run


def test_checks_pass_only_with_no_failure_no_loss_and_flat_rss() -> None:
    assert [c.passed for c in checks(_run())] == [True, True, True]
    failing = _run(
        totals={"sent": 10, "ok": 8, "failed": 1, "failed_by_code": {"UNAVAILABLE": 1}, "lost": 1},
        rss_growth={"client-0": {"growth": 0.15, "first_mib": 50.0, "last_mib": 57.5}},
    )
    verdicts = checks(failing)
    assert [c.passed for c in verdicts] == [False, False, False]
    assert "UNAVAILABLE 1" in verdicts[0].value
    # no data is n/a, never a pass
    empty = checks({"totals": None, "rss_growth": {}})
    assert [c.passed for c in empty] == [None, None, None]
    assert (
        checks(_run(totals={"sent": 0, "ok": 0, "failed": 0, "failed_by_code": {}, "lost": 0}))[
            0
        ].passed
        is None
    )


def test_the_report_names_the_command_the_machine_and_the_checks() -> None:
    plan = {
        "deadline_s": 2.0, "load": 0.8, "duration_s": 20.0, "burst_factor": 3.0,
        "bucket_s": 5.0, "rss_window_s": 5.0, "warmup_s": 2.0, "burst_s": 1.0, "prelude_s": 4.0,
    }  # fmt: skip
    records = [record(1.0), record(6.0, REJECTED, "RESOURCE_EXHAUSTED")]
    rss = {"backend-0": [[1.0, 2048.0]]}
    run = _run(
        command="python -m bench.soak --quick",
        mode="quick",
        started="2026-12-06T04:00:00+00:00",
        machine={"cpu_model": "EPYC", "cores": 2, "kernel": "6.18", "python": "3.11.7"},
        config={"backends": 3, "backend_argv": ["rpckit", "serve"], "cpu_ms": 1, "wait_ms": 10,
                "senders": 2},
        plan=plan,
        capacity={"rps": 500.0, "source": "ramp", "ramp": []},
        rate_rps=400.0,
        burst=[9.5, 10.5],
        burst_wait_s=1.4,
        prelude={"burst": [1.5, 2.5], "totals": account(records)},
        restarts=[{"at_s": 3.0, "backend": 0, "ready_s": 4.5}],
        rss=rss,
        buckets=buckets(records, rss, bucket_s=5, duration_s=20),
        shed_buckets=shed_buckets([[6.0, 0, "codel", 4]], bucket_s=5, duration_s=20),
        by_phase={"steady": account(records)},
        shed_by_phase={"steady": {"codel": 4}},
        load_when_refusing={
            "refusing": {"rpckit_concurrency_limit": 2.0},
            "not refusing": {"rpckit_concurrency_limit": 9.5},
        },
    )  # fmt: skip
    run["acceptance"] = [c.__dict__ for c in checks(run)]
    text = render_markdown(run)
    assert "`python -m bench.soak --quick`" in text
    assert "EPYC" in text
    assert "RESOURCE_EXHAUSTED 1" in text
    assert "| PASS |" in text
    assert "#0 at 3 s (back at 4.5 s)" in text
    assert "leaves 1.4 s of work queued" in text
    assert "Prelude" in text
    assert "2 calls, 1 OK, 1 failed" in text
    assert "| codel 4 |" in text  # the servers' refusals, in the 5 s row and by phase
    assert "| refusing | - | - | 2.0 | - | - |" in text


METRICS = """\
# HELP rpckit_shed_total Calls rejected by admission control, by reason.
# TYPE rpckit_shed_total counter
rpckit_shed_total{grpc_method="/benchwork.v1.Work/Do",reason="codel"} 120.0
rpckit_shed_total{grpc_method="/other.v1.S/M",reason="codel"} 3.0
rpckit_shed_total{grpc_method="/benchwork.v1.Work/Do",reason="queue_full"} 2.0
# HELP rpckit_shed_created Calls rejected by admission control, by reason.
rpckit_shed_created{grpc_method="/benchwork.v1.Work/Do",reason="codel"} 1.7e+09
rpckit_queue_depth 4.0
"""


def test_server_refusals_are_summed_by_reason_and_split_by_time_and_phase() -> None:
    assert shed_by_reason(METRICS) == {"codel": 123.0, "queue_full": 2.0}
    assert shed_by_reason("rpckit_queue_depth 1.0\n") == {}
    assert load_gauges(METRICS) == {"rpckit_queue_depth": 4.0}
    events = [[1.0, 0, "codel", 5], [6.0, 1, "codel", 2], [6.5, 1, "queue_full", 1],
              [30.0, 2, "codel", 9], [99.0, 0, "codel", 1]]  # fmt: skip
    gauges = [
        [1.0, 0, {"rpckit_concurrency_limit": 2.0}],
        [1.0, 1, {"rpckit_concurrency_limit": 9.0}],
        [6.0, 1, {"rpckit_concurrency_limit": 3.0}],
        [7.0, 1, {"rpckit_concurrency_limit": 11.0}],
    ]
    assert load_when_refusing(events, gauges) == {
        "refusing": {"rpckit_concurrency_limit": 2.5},
        "not refusing": {"rpckit_concurrency_limit": 10.0},
    }
    rows = shed_buckets(events, bucket_s=5, duration_s=20)
    assert rows == [{"codel": 5}, {"codel": 2, "queue_full": 1}, {}, {"codel": 10}]
    phases = shed_by_phase(
        events, restarts=[{"at_s": 5.5, "ready_s": 6.0}], burst=(29.0, 30.0), settle_s=2.0
    )
    assert phases == {
        "steady": {"codel": 6},
        "restart": {"codel": 2, "queue_full": 1},
        "burst": {"codel": 9},
    }


def test_rss_is_read_from_proc_status() -> None:
    assert parse_rss_kib("Name:\tpython\nVmRSS:\t   51234 kB\nThreads: 3\n") == 51234
    with pytest.raises(ValueError, match="VmRSS"):
        parse_rss_kib("Name:\tzombie\n")


def test_phases_split_the_run_into_burst_restarts_and_steady() -> None:
    restarts: list[dict[str, Any]] = [
        {"at_s": 7.5, "ready_s": 9.0},
        {"at_s": 22.5, "ready_s": None},
    ]
    burst = (28.5, 31.5)

    def phase(at: float) -> str:
        return phase_of(at, restarts=restarts, burst=burst, settle_s=2.0)

    assert [phase(t) for t in (0, 7.4, 7.5, 10.9, 11.0)] == [
        "steady", "steady", "restart", "restart", "steady",
    ]  # fmt: skip
    assert [phase(t) for t in (22.5, 24.4, 24.5)] == ["restart", "restart", "steady"]
    assert [phase(t) for t in (28.4, 28.5, 33.4, 33.5)] == ["steady", "burst", "burst", "steady"]
    split = account_by_phase(
        [record(1.0), record(8.0, REJECTED, "RESOURCE_EXHAUSTED"), record(30.0)],
        restarts=restarts,
        burst=burst,
        settle_s=2.0,
    )
    assert [split[p]["sent"] for p in ("steady", "restart", "burst")] == [1, 1, 1]
    assert split["restart"]["failed_by_code"] == {"RESOURCE_EXHAUSTED": 1}


def test_the_memory_probe_reads_this_process_anonymous_rss() -> None:
    before = rss_anon_mib()
    block = bytearray(32 * 1024 * 1024)  # touched: resident and anonymous
    block[::4096] = b"x" * len(block[::4096])
    assert rss_anon_mib() > before + 16
    del block

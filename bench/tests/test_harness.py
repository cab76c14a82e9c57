"""Unit tests of the benchmark harness's pure parts: schedule, stats, /proc parsing, reports."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.harness.loadgen import (
    Target,
    Work,
    check_loopback,
    deal_round_robin,
    even_channels,
    poisson_schedule,
    senders_for,
    spread_plan,
)
from bench.harness.neighbour import spin
from bench.harness.procs import (
    descendants,
    host_ticks,
    json_line_address,
    json_line_http_address,
    parse_host_ticks,
    parse_proc_stat,
    parse_pss_kib,
)
from bench.harness.report import Check, format_cell, markdown_table, verdict
from bench.harness.stats import (
    HandlerTotals,
    Outcome,
    RequestRecord,
    StepSummary,
    capacity_from_ramp,
    classify_grpc,
    classify_http,
    keeps_up,
    percentile,
    ramp_done,
    ramp_rates,
    summarize,
    summarize_burst,
    sustained_capacity,
)
from bench.overload.handler import WorkAccounting, do_work, read_stats_dir
from bench.overload.systems import gunicorn_ready

OK, DEADLINE, REJECTED, ERROR = Outcome.OK, Outcome.DEADLINE, Outcome.REJECTED, Outcome.ERROR

# ---------------------------------------------------------------- schedule


def test_poisson_schedule_is_reproducible_from_the_seed() -> None:
    first = poisson_schedule(rate_rps=50, duration_s=2, max_requests=1000, rng=random.Random(7))
    again = poisson_schedule(rate_rps=50, duration_s=2, max_requests=1000, rng=random.Random(7))
    other = poisson_schedule(rate_rps=50, duration_s=2, max_requests=1000, rng=random.Random(8))
    assert first == again
    assert first != other


def test_poisson_schedule_has_the_rate_and_exponential_gaps() -> None:
    arrivals = poisson_schedule(
        rate_rps=200, duration_s=100, max_requests=100_000, rng=random.Random(1)
    )
    assert len(arrivals) == pytest.approx(200 * 100, rel=0.03)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert statistics.mean(gaps) == pytest.approx(1 / 200, rel=0.03)
    # An exponential distribution's standard deviation equals its mean (CV = 1).
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.05)


@settings(deadline=None, max_examples=60)
@given(
    rate=st.floats(min_value=0.5, max_value=2000),
    duration=st.floats(min_value=0.01, max_value=5),
    cap=st.integers(min_value=0, max_value=300),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_poisson_schedule_is_bounded_and_ascending(
    rate: float, duration: float, cap: int, seed: int
) -> None:
    arrivals = poisson_schedule(
        rate_rps=rate, duration_s=duration, max_requests=cap, rng=random.Random(seed)
    )
    assert len(arrivals) <= cap
    assert all(0 <= at < duration for at in arrivals)
    assert arrivals == sorted(arrivals)


@pytest.mark.parametrize(
    ("rate", "duration", "cap"), [(0, 1, 10), (-1, 1, 10), (10, 0, 10), (10, 1, -1)]
)
def test_poisson_schedule_rejects_bad_parameters(rate: float, duration: float, cap: int) -> None:
    with pytest.raises(ValueError, match="need"):
        poisson_schedule(rate_rps=rate, duration_s=duration, max_requests=cap, rng=random.Random())


@settings(deadline=None)
@given(
    schedule=st.lists(st.floats(min_value=0, max_value=100), max_size=200).map(sorted),
    parts=st.integers(min_value=1, max_value=8),
)
def test_dealing_keeps_every_arrival_once_and_balances(schedule: list[float], parts: int) -> None:
    dealt = deal_round_robin(schedule, parts)
    assert len(dealt) == parts
    assert sorted(at for part in dealt for at in part) == schedule
    assert all(part == sorted(part) for part in dealt)
    assert max(map(len, dealt)) - min(map(len, dealt)) <= 1


def test_senders_scale_with_the_peak_rate_within_bounds() -> None:
    assert senders_for(10, per_sender_rps=400, max_senders=2) == 1
    assert senders_for(401, per_sender_rps=400, max_senders=4) == 2
    assert senders_for(5000, per_sender_rps=400, max_senders=2) == 2
    with pytest.raises(ValueError, match="per_sender_rps"):
        senders_for(10, per_sender_rps=0, max_senders=2)


@pytest.mark.parametrize(
    ("pids", "processes", "redial"),
    [
        ([1, 2, 1, 2], 2, None),  # 2:2
        ([1, 1, 1, 2], 2, 2),  # 3:1 -> redial the last connection of the crowded process
        ([1, 1, 1, 1], 2, 3),  # all on one
        ([1, 2, 3], 2, None),  # more distinct pids than expected: each holds <= 2
        ([7], 2, None),  # one connection cannot be spread
        ([1, 1], 2, 1),
        ([1, 2, 2, 3, 3, 1, 1], 3, None),  # 3:2:2 of 7
        ([1, 2, 1, 1, 3, 1, 1], 3, 6),  # 5:1:1 of 7
        ([5, 5, 6, 6, 6], 2, None),  # 2:3 of 5
        ([], 2, None),
    ],
)
def test_spread_plan_redials_the_crowded_process(
    pids: list[int], processes: int, redial: int | None
) -> None:
    assert spread_plan(pids, processes) == redial


def test_spread_plan_converges_by_redialing() -> None:
    """Redialing as planned, with the kernel's hash as a seeded coin, ends balanced."""
    rng = random.Random(3)
    for processes, connections in ((2, 4), (2, 8), (3, 4), (4, 4)):
        pids = [rng.randrange(processes) for _ in range(connections)]
        for _ in range(200):
            plan = spread_plan(pids, processes)
            if plan is None:
                break
            pids[plan] = rng.randrange(processes)
        counts = sorted(Counter(pids).values())
        assert len(counts) == min(connections, processes)
        assert counts[-1] - counts[0] <= 1
    with pytest.raises(ValueError, match="processes"):
        spread_plan([1], 0)


def test_targets_must_be_loopback() -> None:
    assert check_loopback("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert check_loopback("[::1]:50051") == ("::1", 50051)
    for address in ("10.0.0.1:80", "example.com:443", "127.0.0.1", "127.0.0.1:http"):
        with pytest.raises(ValueError, match=r"loopback|HOST:PORT"):
            check_loopback(address)
    with pytest.raises(ValueError, match="loopback"):
        Target(protocol="grpc", address="192.168.1.2:50051")
    with pytest.raises(ValueError, match="protocol"):
        Target(protocol="ftp", address="127.0.0.1:21")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        Work(cpu_ms=-1, wait_ms=0)


# ---------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("code", "latency", "expected"),
    [
        ("OK", 0.030, (OK, "")),
        ("OK", 0.260, (DEADLINE, "late OK")),
        ("DEADLINE_EXCEEDED", 0.250, (DEADLINE, "DEADLINE_EXCEEDED")),  # the client's timer
        ("DEADLINE_EXCEEDED", 0.004, (REJECTED, "DEADLINE_EXCEEDED")),  # the server said no
        ("RESOURCE_EXHAUSTED", 0.002, (REJECTED, "RESOURCE_EXHAUSTED")),
        ("UNAVAILABLE", 0.001, (REJECTED, "UNAVAILABLE")),
        ("INTERNAL", 0.010, (ERROR, "INTERNAL")),
    ],
)
def test_grpc_outcomes(code: str, latency: float, expected: tuple[Outcome, str]) -> None:
    assert classify_grpc(code, latency, 0.250) == expected


@pytest.mark.parametrize(
    ("status", "latency", "expected"),
    [
        (200, 0.030, (OK, "")),
        (204, 0.030, (OK, "")),
        (200, 0.300, (DEADLINE, "late OK")),
        (503, 0.002, (REJECTED, "HTTP 503")),
        (429, 0.002, (REJECTED, "HTTP 429")),
        (500, 0.010, (ERROR, "HTTP 500")),
        (404, 0.010, (ERROR, "HTTP 404")),
        (504, 0.003, (REJECTED, "HTTP 504")),  # refused early: deadline too short
        (504, 0.249, (DEADLINE, "HTTP 504")),  # the route's timeout ran out: a timeout
    ],
)
def test_http_outcomes(status: int, latency: float, expected: tuple[Outcome, str]) -> None:
    assert classify_http(status, latency, 0.250) == expected


# ---------------------------------------------------------------- statistics


def test_percentile_interpolates_linearly() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == pytest.approx(25.0)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


@settings(deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=100),
    low=st.floats(min_value=0, max_value=100),
    high=st.floats(min_value=0, max_value=100),
)
def test_percentile_is_monotone_and_within_range(
    values: list[float], low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    p_low, p_high = percentile(values, low), percentile(values, high)
    assert p_low is not None
    assert p_high is not None
    assert min(values) <= p_low <= p_high * (1 + 1e-12) + 1e-9
    assert p_high <= max(values)


def record(
    at: float,
    latency: float,
    outcome: Outcome,
    *,
    code: str = "",
    pid: int = 0,
    lag: float = 0.0,
) -> RequestRecord:
    return RequestRecord(at, latency, outcome, code, pid, lag)


def test_summary_counts_only_the_measured_window() -> None:
    records = [
        record(0.1, 0.020, OK, pid=1),  # warm-up: ignored
        record(1.0, 0.020, OK, pid=1),
        record(1.5, 0.040, OK, pid=2),
        record(2.0, 0.250, DEADLINE, code="DEADLINE_EXCEEDED"),
        record(2.5, 0.009, REJECTED, code="RESOURCE_EXHAUSTED", lag=0.004),
        record(2.9, 0.001, ERROR, code="INTERNAL"),
        record(3.0, 0.020, OK, pid=1),  # after the window: ignored
    ]
    summary = summarize(records, window_start_s=1.0, window_end_s=3.0)
    assert summary.sent == 5
    assert summary.offered_rps == pytest.approx(2.5)
    assert (summary.good, summary.deadline, summary.rejected, summary.errors) == (2, 1, 1, 1)
    assert summary.goodput_rps == pytest.approx(1.0)
    assert summary.good_p50_ms == pytest.approx(30.0)
    # Rejections are timed from the actual send: 9 ms after schedule, sent 4 ms late.
    assert summary.rejected_p99_ms == pytest.approx(5.0)
    assert summary.rejected_codes == {"RESOURCE_EXHAUSTED": 1}
    assert summary.error_codes == {"INTERNAL": 1}
    assert summary.replies_by_pid == {1: 1, 2: 1}
    assert summary.send_lag_max_ms == pytest.approx(4.0)
    assert summary.as_json()["replies_by_pid"] == {"1": 1, "2": 1}
    with pytest.raises(ValueError, match="window"):
        summarize(records, window_start_s=2.0, window_end_s=2.0)


def test_an_empty_window_has_no_latencies() -> None:
    summary = summarize([], window_start_s=0, window_end_s=1)
    assert (summary.sent, summary.goodput_rps) == (0, 0.0)
    assert summary.good_p99_ms is None
    assert summary.rejected_p99_ms is None
    assert not keeps_up(summary)


def test_handler_totals_sum_and_subtract() -> None:
    dumps: list[dict[str, Any]] = [
        {"pid": 1, "cpu_total_s": 2.0, "cpu_wasted_s": 0.5, "calls": 400, "late_calls": 100},
        {"pid": 2, "cpu_total_s": 1.0, "cpu_wasted_s": 0.0, "calls": 200, "late_calls": 0},
    ]
    total = HandlerTotals.sum_of(dumps)
    assert total == HandlerTotals(cpu_total_s=3.0, cpu_wasted_s=0.5, calls=600, late_calls=100)
    assert total.wasted_fraction == pytest.approx(0.5 / 3)
    step = total - HandlerTotals.sum_of(dumps[:1])
    assert step == HandlerTotals(cpu_total_s=1.0, cpu_wasted_s=0.0, calls=200, late_calls=0)
    assert step.wasted_fraction == 0.0
    assert HandlerTotals().wasted_fraction is None


def summary_of(
    sent: int, good: int, window: float = 1.0, *, latency_s: float = 0.01
) -> StepSummary:
    records = [record(0.0, latency_s, OK if i < good else DEADLINE) for i in range(sent)]
    return summarize(records, window_start_s=0, window_end_s=window)


def test_ramp_rates_grow_geometrically_and_capacity_is_the_best_goodput() -> None:
    assert ramp_rates(start_rps=100, factor=1.5, max_levels=3) == pytest.approx([100, 150, 225])
    with pytest.raises(ValueError, match="factor"):
        ramp_rates(start_rps=100, factor=1.0, max_levels=3)
    levels = [summary_of(100, 100), summary_of(150, 149), summary_of(225, 180)]
    assert [keeps_up(level) for level in levels] == [True, True, False]
    assert capacity_from_ramp(levels) == pytest.approx(180)
    assert capacity_from_ramp([]) == 0.0


def test_sustained_capacity_skips_levels_that_kept_up_only_by_queueing() -> None:
    # The soak's worst ramp: a level over capacity keeps up into a long deadline, its p99
    # the queue it built (about 1 s); the best goodput alone would take it for capacity.
    levels = [
        summary_of(100, 100, latency_s=0.02),
        summary_of(150, 150, latency_s=0.2),
        summary_of(225, 224, latency_s=1.0),
        summary_of(300, 180, latency_s=1.9),
    ]
    assert capacity_from_ramp(levels) == pytest.approx(224)
    assert sustained_capacity(levels, p99_ms=250) == pytest.approx(150)
    assert sustained_capacity(levels, p99_ms=1000) == pytest.approx(224)
    assert sustained_capacity(levels[2:], p99_ms=250) == 0.0  # none qualifies: the caller says so
    with pytest.raises(ValueError, match="p99_ms"):
        sustained_capacity(levels, p99_ms=0)


def test_a_ramp_stops_after_two_misses_in_a_row_only() -> None:
    hit, miss = summary_of(100, 100), summary_of(100, 50)
    assert not ramp_done([])
    assert not ramp_done([miss])  # a cold first level is not the end
    assert not ramp_done([miss, hit, miss])
    assert ramp_done([hit, miss, miss])
    assert ramp_done([miss], misses=1)
    with pytest.raises(ValueError, match="misses"):
        ramp_done([hit], misses=0)


# ---------------------------------------------------------------- /proc parsing


def test_proc_stat_parsing_survives_odd_command_names() -> None:
    line = "4242 (gunicorn: worker [x) y]) S 4200 4200 4200 0 -1 4194560 1 0 0 0 150 25 0 0 20 0"
    stat = parse_proc_stat(line)
    assert (stat.pid, stat.ppid, stat.pgrp, stat.cpu_ticks) == (4242, 4200, 4200, 175)
    with pytest.raises(ValueError, match="stat"):
        parse_proc_stat("garbage")


def test_pss_comes_from_the_rollup() -> None:
    rollup = (
        "55b0-7ffc ---p 00000000 00:00 0 [rollup]\nRss: 1680 kB\nPss:   369 kB\nPss_Anon: 112 kB\n"
    )
    assert parse_pss_kib(rollup) == 369
    with pytest.raises(ValueError, match="Pss"):
        parse_pss_kib("Rss: 1 kB\n")


def test_host_steal_is_the_share_of_the_cpu_time_between_two_readings() -> None:
    before = parse_host_ticks("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    after = parse_host_ticks("cpu  300 0 100 1100 10 0 5 85 0 0\n")
    assert (before.total, before.steal) == (1000, 35)
    assert before.steal_share(after) == pytest.approx(50 / 600)
    assert before.steal_share(before) is None  # no time passed
    old_kernel = parse_host_ticks("cpu 10 0 5 80\n")  # before steal time was counted
    assert (old_kernel.total, old_kernel.steal) == (95, 0)
    with pytest.raises(ValueError, match="cpu line"):
        parse_host_ticks("intr 1 2 3\n")
    live = host_ticks()  # this machine's own /proc/stat parses
    assert live is not None
    assert live.total > 0
    assert live.steal >= 0


def test_descendants_walks_the_whole_tree_only() -> None:
    parent_of = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 30: 20}
    assert descendants(10, parent_of) == [10, 11, 12, 13]
    assert descendants(13, parent_of) == [13]
    assert set(descendants(1, parent_of)) == {1, 10, 11, 12, 13, 20, 30}


def test_ready_checks_read_the_servers_announcements() -> None:
    assert json_line_address('log line\n{"grpc": "127.0.0.1:5000"}\n', "") == "127.0.0.1:5000"
    assert json_line_address("{not json\n", "") is None
    both = '{"grpc": "127.0.0.1:5000", "http": "127.0.0.1:5001"}\n'
    assert json_line_http_address(both, "") == "127.0.0.1:5001"
    assert json_line_http_address('{"grpc": "127.0.0.1:5000"}\n', "") is None
    ready = gunicorn_ready(2)
    listening = "[INFO] Listening at: http://127.0.0.1:41234 (99)\n"
    one = "bench.overload.flask_app ready in pid 100\n"
    assert ready("", listening + one) is None
    assert ready("", listening + one + one) == "127.0.0.1:41234"


# ---------------------------------------------------------------- handler accounting


def test_work_past_its_deadline_is_counted_as_wasted(tmp_path: Path) -> None:
    accounting = WorkAccounting(tmp_path)
    slept: list[float] = []
    do_work(0, 20, None, accounting=accounting, sleep=slept.append)
    do_work(0, 0, 0.0, accounting=accounting)  # deadline at the epoch: long gone
    snapshot = accounting.snapshot()
    assert slept == [0.02]
    assert (snapshot["calls"], snapshot["late_calls"]) == (2, 1)
    accounting.record(cpu_s=0.004, late=True)
    accounting.record(cpu_s=0.006, late=False)
    totals = HandlerTotals.sum_of(read_stats_dir(tmp_path))  # the file mirrors the counters
    assert (totals.calls, totals.late_calls) == (4, 2)
    assert totals.cpu_wasted_s == pytest.approx(0.004)
    assert totals.cpu_total_s == pytest.approx(0.010)
    with pytest.raises(ValueError, match=">= 0"):
        do_work(-1, 0, None, accounting=accounting)


# ---------------------------------------------------------------- reports


def test_markdown_table_aligns_numbers_and_escapes_pipes() -> None:
    table = markdown_table(["system", "goodput"], [["a|b", 12.345], ["c", None]])
    assert table.splitlines() == [
        "| system | goodput |",
        "|---|---:|",
        "| a\\|b | 12.3 |",
        "| c | - |",
    ]
    assert format_cell(math.nan) == "-"
    with pytest.raises(ValueError, match="one cell per header"):
        markdown_table(["a", "b"], [["only one"]])


def test_verdicts_of_gates_and_goals() -> None:
    assert [verdict(p) for p in (True, False, None)] == ["PASS", "FAIL", "n/a"]
    assert [verdict(p, gate=False) for p in (True, False, None)] == [
        "goal met",
        "goal missed",
        "n/a",
    ]
    assert Check(name="c", value="v", target="t", passed=True).gate  # a gate unless told


# ---------------------------------------------------------------- bursts


def test_a_burst_counts_outcomes_and_the_time_to_its_last_call() -> None:
    records = [
        RequestRecord(0.0, 0.81, OK, "", 7, 0.0),
        RequestRecord(0.0, 0.85, OK, "", 8, 0.0),
        RequestRecord(0.0, 0.002, REJECTED, "RESOURCE_EXHAUSTED", 0, 0.0),
        RequestRecord(0.0, 10.0, DEADLINE, "DEADLINE_EXCEEDED", 0, 0.0),
        RequestRecord(0.0, 0.5, ERROR, "INTERNAL", 0, 0.0),
    ]
    burst = summarize_burst(records)
    assert (burst.sent, burst.ok, burst.refused, burst.failed) == (5, 2, 1, 2)
    assert burst.finish_ms == 10_000.0  # the slowest call of any outcome
    assert burst.ok_max_ms == 850.0
    assert burst.codes == {"RESOURCE_EXHAUSTED": 1, "DEADLINE_EXCEEDED": 1, "INTERNAL": 1}
    empty = summarize_burst([])
    assert (empty.sent, empty.finish_ms, empty.ok_max_ms) == (0, None, None)


def test_the_neighbour_spins_until_its_clock_says_stop() -> None:
    ticks = iter([0.0, 0.5, 1.0, 1.5, 2.0])
    assert spin(1.2, clock=lambda: next(ticks)) == 3  # rounds at 0.0, 0.5 and 1.0
    assert spin(0.0, clock=lambda: 5.0) == 0


def test_health_probe_summary_counts_serving_and_slowest() -> None:
    from bench.harness.health_probe import summarize_probes

    summary = summarize_probes([(0.002, "SERVING"), (0.010, "SERVING"), (0.060, "UNAVAILABLE")])
    assert (summary.probes, summary.serving, summary.max_ms) == (3, 2, 60.0)
    assert summary.p99_ms is not None
    assert 10.0 < summary.p99_ms <= 60.0
    empty = summarize_probes([])
    assert (empty.probes, empty.p99_ms, empty.max_ms) == (0, None, None)


@pytest.mark.parametrize(
    ("requested", "processes", "channels"),
    [(4, 1, 4), (4, 2, 4), (4, 3, 3), (4, 4, 4), (4, 5, 5), (8, 3, 9), (1, 3, 3), (6, 4, 8)],
)
def test_even_channels_is_a_multiple_of_the_processes_nearest_the_request(
    requested: int, processes: int, channels: int
) -> None:
    assert even_channels(requested, processes) == channels
    # Spread, every process then holds the same number of a sender's connections.
    assert channels % processes == 0


def test_even_channels_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        even_channels(0, 3)

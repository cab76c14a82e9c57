"""Unit tests of bench/overhead's pure parts (h2load's framing and report, the rounds, the
acceptance) and of the handler's call counter."""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench._gen.benchwork.v1 import work_pb2
from bench.overhead import results
from bench.overhead.h2load import grpc_frame, h2load_argv, parse_output
from bench.overhead.service import CallCounter, read_counts

# What h2load 1.52 printed for 2000 calls against the plain grpcio server.
H2LOAD_OUTPUT = """starting benchmark...
spawning thread #0: 1 total client(s). 2000 total requests
Application protocol: h2c
progress: 100% done

finished in 382.52ms, 5228.47 req/s, 417.54KB/s
requests: 2000 total, 2000 started, 2000 done, 1990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 1990 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 159.72KB (163550) total, 5.93KB (6075) headers (space savings 96.25%), 52.73KB (54000) data
"""


def test_a_grpc_frame_is_flag_length_message() -> None:
    message = work_pb2.DoRequest(payload=b"x" * 16).SerializeToString()
    frame = grpc_frame(message)
    assert frame[0] == 0  # not compressed
    assert struct.unpack(">I", frame[1:5]) == (len(message),)
    assert work_pb2.DoRequest.FromString(frame[5:]).payload == b"x" * 16
    assert grpc_frame(b"") == b"\x00\x00\x00\x00\x00"


def test_h2load_speaks_grpc_to_loopback_only(tmp_path: Path) -> None:
    argv = h2load_argv(
        "/usr/bin/h2load",
        address="127.0.0.1:5000",
        path="/benchwork.v1.Work/Do",
        body_file=tmp_path / "body",
        requests=1000,
    )
    assert argv[0] == "/usr/bin/h2load"
    assert argv[argv.index("-n") + 1] == "1000"
    assert argv[argv.index("-c") + 1] == "1"
    assert argv[argv.index("-m") + 1] == "16"
    assert argv[argv.index("-d") + 1] == str(tmp_path / "body")
    headers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]
    assert headers == ["content-type: application/grpc", "te: trailers"]
    assert argv[-1] == "http://127.0.0.1:5000/benchwork.v1.Work/Do"
    with pytest.raises(ValueError, match="loopback"):
        h2load_argv("h2load", address="10.1.2.3:80", path="/", body_file=tmp_path, requests=1)
    with pytest.raises(ValueError, match=">= 1"):
        h2load_argv("h2load", address="127.0.0.1:1", path="/", body_file=tmp_path, requests=0)


def test_h2loads_report_is_parsed() -> None:
    result = parse_output(H2LOAD_OUTPUT)
    assert result.elapsed_s == pytest.approx(0.38252)
    assert result.requests_per_s == 5228.47
    assert (result.done, result.succeeded, result.failed) == (2000, 1990, 10)
    assert (result.errored, result.timeout, result.status_2xx) == (0, 0, 1990)
    seconds = H2LOAD_OUTPUT.replace("finished in 382.52ms", "finished in 5.01s")
    assert parse_output(seconds).elapsed_s == 5.01
    with pytest.raises(ValueError, match="no finished, status line"):
        parse_output(
            "requests: 1 total, 1 started, 1 done, 1 succeeded, 0 failed, 0 errored, 0 timeout"
        )


def test_rounds_alternate_the_order_and_share_a_size() -> None:
    assert results.round_order(("a", "b"), 0) == ["a", "b"]
    assert results.round_order(("a", "b"), 1) == ["b", "a"]
    assert results.round_order(("a", "b"), 2) == ["a", "b"]
    assert results.calls_per_round([3000.0, 5000.0], 5.0) == 20_000
    assert results.calls_per_round([10.0], 1.0) == 500  # the floor
    with pytest.raises(ValueError, match="positive"):
        results.calls_per_round([0.0], 1.0)


def test_a_count_is_read_only_once_every_process_has_mirrored_it_since() -> None:
    counts = [{"pid": 1, "calls": 10, "at": 5.0}, {"pid": 2, "calls": 7, "at": 6.0}]
    assert results.settled_count(counts, after=5.0) == 17
    assert results.settled_count(counts, after=5.5) is None  # pid 1's file is older
    assert results.settled_count([], after=9.0) == 0  # no call yet, no file yet


def row(
    round_index: int, system: str, rate: float, *, handled: int = 1000, client: str = "h2load"
) -> dict[str, Any]:
    return results.round_row(
        round_index=round_index,
        client=client,
        system=system,
        sent=1000,
        client_ok=1000,
        handled=handled,
        elapsed_s=handled / rate,
        server_cpu_s=0.1,
        client_cpu_s=0.01,
    )


def test_a_round_counts_what_reached_the_handler() -> None:
    whole = row(0, "rpckit", 2000.0)
    assert (whole["not_handled"], whole["verified"], whole["calls_per_s"]) == (0, True, 2000.0)
    refused = row(0, "rpckit", 2000.0, handled=900)  # h2load saw 1000 2xx answers
    assert (refused["not_handled"], refused["verified"]) == (100, False)
    assert refused["calls_per_s"] == 2000.0  # the calls handled, per second


def rounds(rpckit: list[float], plain: list[float], **kwargs: Any) -> list[dict[str, Any]]:
    return [row(i, "rpckit", rate, **kwargs) for i, rate in enumerate(rpckit)] + [
        row(i, "grpc-plain", rate) for i, rate in enumerate(plain)
    ]


def test_the_ratio_is_of_the_medians_of_the_rounds() -> None:
    rows = rounds([850.0, 900.0, 2000.0], [1000.0, 1000.0, 1000.0])
    own = results.summary(rows, "h2load", "rpckit")
    assert own is not None
    assert own["median_calls_per_s"] == 900.0
    assert results.ratio(rows, "h2load") == pytest.approx(0.9)
    assert results.paired_ratios(rows, "h2load") == [0.85, 0.9, 2.0]
    assert results.ratio(rows, "python") is None
    cpu = results.summary(rows, "h2load", "grpc-plain")
    assert cpu is not None
    assert cpu["server_cpu_us_per_call"] == 100.0


def test_acceptance_needs_the_ratio_and_every_call_handled() -> None:
    def verdicts(rows: list[dict[str, Any]]) -> list[bool | None]:
        return [check.passed for check in results.acceptance({"rounds": rows})]

    assert verdicts(rounds([850.0, 860.0], [1000.0, 1000.0])) == [True, True]
    assert verdicts(rounds([840.0, 849.0], [1000.0, 1000.0])) == [False, True]
    assert verdicts(rounds([950.0, 950.0], [1000.0, 1000.0], handled=990)) == [True, False]
    assert verdicts([]) == [None, None]


def test_the_report_has_the_medians_the_ratio_and_every_round() -> None:
    rows = rounds([900.0, 950.0], [1000.0, 1000.0])
    run: dict[str, Any] = {
        "mode": "full",
        "command": "python -m bench.overhead",
        "config": {"rounds": 2, "round_s": 5.0, "clients": ["h2load"], "in_flight": 16},
        "machine": {
            "cpu_model": "x",
            "cores": 2,
            **dict.fromkeys(("kernel", "python", "grpcio", "protobuf"), "1"),
            "h2load": "h2load nghttp2/1.52.0",
        },
        "systems": {
            "rpckit": {"label": "rpckit serve", "command": "rpckit serve app"},
            "grpc-plain": {"label": "grpcio", "command": "python -m plain"},
        },
        "rounds": rows,
        "notes": ["a note"],
    }
    run["acceptance"] = [dataclasses.asdict(c) for c in results.acceptance(run)]
    text = results.render_markdown(run)
    assert "`rpckit serve app` against `python -m plain`" in text
    assert "Command: `python -m bench.overhead`." in text
    assert "| h2load | rpckit serve | 925.0 | 900-950 |" in text
    assert "| h2load | rpckit / plain grpcio | 0.93x | per round 0.90-0.95x |" in text
    assert "| >= 0.85x | PASS |" in text
    assert text.count("| h2load | rpckit |") == 2  # every round listed
    assert "- a note" in text


def test_the_call_counter_counts_every_call_from_many_threads(tmp_path: Path) -> None:
    counter = CallCounter(tmp_path, flush_interval_s=0.01)

    def count_2000() -> None:
        for _ in range(2000):
            counter.count()

    threads = [threading.Thread(target=count_2000) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert counter.calls == 16_000
    after = time.monotonic()
    counter.close()  # the last mirror is written after `after`
    assert results.settled_count(read_counts(tmp_path), after=after) == 16_000
    assert [path.name for path in tmp_path.iterdir()] == [f"calls-{os.getpid()}.json"]


def test_a_counter_without_a_directory_counts_in_memory_only(tmp_path: Path) -> None:
    counter = CallCounter(None)
    counter.count()
    counter.close()
    assert counter.calls == 1
    assert read_counts(tmp_path) == []


# -- bench.overhead.handoff


def test_handoff_summary_takes_each_systems_median_round() -> None:
    from bench.overhead.handoff import Reading, per_call, table

    readings = [
        Reading(system="rpckit", calls=1000, seconds=0.1, cpu_s=0.06, switches=900),
        Reading(system="rpckit", calls=1000, seconds=0.2, cpu_s=0.10, switches=1100),
        Reading(system="rpckit", calls=1000, seconds=0.4, cpu_s=0.20, switches=4000),
        Reading(system="thread-pool", calls=2000, seconds=0.1, cpu_s=0.05, switches=600),
    ]
    summary = per_call(readings)
    assert summary["rpckit"] == {
        "calls_per_s": 5000.0,
        "cpu_us_per_call": pytest.approx(100.0),
        "switches_per_call": 1.1,
        "rounds": 3,
    }
    assert summary["thread-pool"]["switches_per_call"] == 0.3
    rendered = table(summary)
    assert "| rpckit | 5000 | 100.0 | 1.10 | 3 |" in rendered
    assert "| thread-pool | 20000 | 25.0 | 0.30 | 1 |" in rendered


def test_handoff_summary_refuses_an_empty_round() -> None:
    from bench.overhead.handoff import Reading, per_call

    with pytest.raises(ValueError, match="needs calls and time"):
        per_call([Reading(system="rpckit", calls=0, seconds=1.0, cpu_s=0.0, switches=0)])


def test_handoff_counts_both_kinds_of_switch_of_every_thread(tmp_path: Path) -> None:
    from bench.overhead.handoff import context_switches

    for tid, (voluntary, involuntary) in {"11": (5, 2), "12": (30, 7)}.items():
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "status").write_text(
            f"Name:\tpython\nvoluntary_ctxt_switches:\t{voluntary}\n"
            f"nonvoluntary_ctxt_switches:\t{involuntary}\n"
        )
    (tmp_path / "13").mkdir()  # a thread that ended between the listing and the read
    assert context_switches(tmp_path) == 44

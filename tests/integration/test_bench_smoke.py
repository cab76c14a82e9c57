"""Smoke tests of the benches' real parts: the overhead bench end to end (a tiny run), the
overload bench's HTTP shim system and its route timeout, and the neighbour process.

They check that the pieces are wired (processes start, calls arrive, files are written), not
how fast anything is: timing claims live in bench/, as ratios measured in one run.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.harness import procs
from bench.harness.loadgen import LoadGenerator, RawRecord
from bench.harness.neighbour import Neighbour, neighbour_core
from bench.overhead.h2load import find_h2load
from bench.overload import systems
from bench.overload.handler import read_stats_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(find_h2load() is None, reason="h2load (Debian: nghttp2-client) not installed")
def test_a_tiny_overhead_run_checks_every_call_against_the_handler(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.overhead",
            "--rounds",
            "1",
            "--round-s",
            "0.2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((tmp_path / "results.json").read_text())
    measured = {(r["client"], r["system"]) for r in run["rounds"]}
    assert measured == {
        (client, system) for client in ("h2load", "python") for system in ("rpckit", "grpc-plain")
    }
    for row in run["rounds"]:
        assert row["sent"] == run["calls_per_round"][row["client"]]
        assert row["handled"] > 0
        assert row["handled"] + row["not_handled"] == row["sent"]
        if row["system"] == "grpc-plain":  # a plain grpcio server refuses nothing
            assert row["verified"], row
    assert [check["name"].split(":")[0] for check in run["acceptance"]] == ["h2load", "h2load"]
    assert "## Calls per second (median of the rounds)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "overhead.png").stat().st_size > 0


def _post_work(
    address: str, *, wait_ms: float, client_deadline_s: float
) -> tuple[int, dict[str, Any]]:
    """What the unchanged HTTP client sends: POST /work, JSON, its X-Request-Deadline."""
    host, port = address.rsplit(":", 1)
    body = {"cpu_ms": 0, "wait_ms": wait_ms, "payload": base64.b64encode(b"hi").decode()}
    headers = {
        "Content-Type": "application/json",
        "X-Request-Deadline": str(round((time.time() + client_deadline_s) * 1000)),
    }
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/work", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_the_shim_system_serves_work_and_its_route_timeout_follows_the_profile(
    tmp_path: Path,
) -> None:
    spec = systems.overload_systems()["rpckit-http"]
    # The proto's 250 ms route timeout: a call that waits 400 ms gets a 504.
    stats = tmp_path / "seed"
    stats.mkdir()
    with systems.start(
        spec, stats_dir=stats, log_dir=tmp_path / "logs", deadline_ms=250
    ) as process:
        status, answer = _post_work(process.address, wait_ms=0, client_deadline_s=0.25)
        assert (status, answer["payload"]) == (200, base64.b64encode(b"hi").decode())
        assert answer["pid"] in procs.process_tree(process.pid)
        status, answer = _post_work(process.address, wait_ms=400, client_deadline_s=0.25)
        assert status == 504, answer
    # A profile with a 500 ms deadline gets a 500 ms route: the same call is served, and the
    # handler counts it late by the client's own deadline (X-Request-Deadline, 250 ms).
    stats = tmp_path / "io"
    stats.mkdir()
    with systems.start(
        spec, stats_dir=stats, log_dir=tmp_path / "logs", deadline_ms=500
    ) as process:
        status, answer = _post_work(process.address, wait_ms=400, client_deadline_s=0.25)
        assert status == 200, answer
    dumps = read_stats_dir(stats)
    assert sum(d["calls"] for d in dumps) == 1
    assert sum(d["late_calls"] for d in dumps) == 1


def test_the_neighbour_spins_on_one_core_at_our_niceness_until_stopped(tmp_path: Path) -> None:
    core = neighbour_core()
    with Neighbour(cpu=core, max_s=60, log_dir=tmp_path, cwd=ROOT) as neighbour:
        pid = neighbour.pid
        status = Path(f"/proc/{pid}/status").read_text()
        allowed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        assert allowed.split()[-1] == str(core)
        assert neighbour.niceness() == os.getpriority(os.PRIO_PROCESS, 0)
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped


class _StuckClient:
    """A sender's client whose every call blocks for ``block_s``: a stuck sender."""

    def __init__(self, block_s: float) -> None:
        self._block_s = block_s

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None:
        time.sleep(self._block_s)  # stands in for whatever held the sender up

    def wait_all(self, until: float) -> list[RawRecord]:
        return []

    def close(self) -> None:
        pass


class _InstantClient:
    """A sender's client that answers every call OK at once, from this process."""

    def __init__(self) -> None:
        self._records: list[RawRecord] = []

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None:
        self._records.append((scheduled_s, 0.0, "ok", "", os.getpid(), 0.0))

    def wait_all(self, until: float) -> list[RawRecord]:
        taken, self._records = self._records, []
        return taken

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_a_stuck_sender_dumps_its_stacks_and_is_replaced(capfd: pytest.CaptureFixture[str]) -> None:
    with LoadGenerator(senders=2, answer_slack_s=0.5) as generator:
        stuck_pids = {proc.pid for proc in generator._procs}
        generator.prepare_client(functools.partial(_StuckClient, block_s=60))
        with pytest.raises(RuntimeError, match=r"did not answer 'records'.*a fresh sender"):
            generator.run([0.0, 0.0], deadline_s=0.1)
        assert "_fire_schedule" in capfd.readouterr().err  # the stuck sender's stacks
        # Fresh senders serve the next commands.
        generator.prepare_client(_InstantClient)
        result = generator.run([0.0, 0.01, 0.02, 0.03], deadline_s=1.0)
        assert [record.outcome.value for record in result.records] == ["ok"] * 4
        pids = {record.pid for record in result.records}
        assert len(pids) == 2
        assert not pids & stuck_pids

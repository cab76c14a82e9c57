"""Smoke test of bench/soak: a quick run end to end (three real backends, two restarts or more,
the burst, the balanced client in sender processes), checking that every call is accounted for
and the files are written, not how fast anything is (timing claims live in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_quick_soak_accounts_for_every_call_and_restarts_every_backend(tmp_path: Path) -> None:
    # --capacity skips the ramp: a low rate the busiest CI machine still carries.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--quick",
            "--capacity",
            "150",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "results.json").read_text())
    totals = run["totals"]
    assert totals["sent"] > 1000  # 120/s for 20 s, 3x for 1 s
    assert totals["ok"] + totals["failed"] + totals["lost"] == totals["sent"]
    assert totals["lost"] == 0  # every call ended, one way or another
    assert sum(row["sent"] for row in run["buckets"]) == totals["sent"]
    assert sum(part["sent"] for part in run["by_phase"].values()) == totals["sent"]
    # Every backend restarted once (quick: at 3, 9 and 15 s), cleanly, as a new process.
    restarts = run["restarts"]
    assert sorted(r["backend"] for r in restarts) == [0, 1, 2]
    assert all(r["exit_code"] == 0 and r["pid"] > 0 for r in restarts), restarts
    # RSS of 3 backend slots and 2 clients, about once a second for the whole soak.
    assert sorted(run["rss"]) == ["backend-0", "backend-1", "backend-2", "client-0", "client-1"]
    for name, samples in run["rss"].items():
        assert len(samples) >= 18, name
        assert sum(kib is not None for _, kib in samples) >= 15, name
    assert all(entry["growth"] is not None for entry in run["rss_growth"].values())
    names = [check["name"] for check in run["acceptance"]]
    assert names[:2] == ["failed idempotent calls", "lost calls"]
    assert sum(name.startswith("RSS growth: ") for name in names) == 5
    markdown = (tmp_path / "results.md").read_text()
    assert "## Every 5 s" in markdown
    assert "python -m bench.soak --quick" in markdown
    assert (tmp_path / "soak.png").stat().st_size > 0

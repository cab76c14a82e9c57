"""Fixtures that run ``rpckit serve`` as a real subprocess on 127.0.0.1 port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
RPCKIT = str(Path(sys.executable).parent / "rpckit")


@pytest.fixture(autouse=True)
def _heap_frozen_as_at_start_up() -> Iterator[None]:
    """Keep what the test process built so far out of the collector's reach during a test.

    In-process servers share the pytest process, whose heap (earlier tests, hypothesis)
    made full collections stop every thread for 50-140 ms: a call queued during one
    outwaits CoDel's 100 ms interval and is dropped, in a test of a server at low load.
    ``rpckit serve`` freezes its start-up heap (``freeze_start_up``) and sees no such
    pauses; the test process does the same here, and unfreezes after the test.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclasses.dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    address: str
    stderr_path: Path
    events_path: Path
    announcement: dict[str, Any]

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def events(self) -> list[dict[str, object]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def wait_for_events(
        self, kind: str, count: int, timeout: float = 20.0
    ) -> list[dict[str, object]]:
        """Poll the events file until ``count`` events of ``kind`` arrived (bounded)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            found = [e for e in self.events() if e["event"] == kind]
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"only {len(found)} of {count} {kind!r} events in {timeout} s")

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``rpckit serve APP --grpc 127.0.0.1:0 ARGS...``; every process is stopped after."""
    started: list[ServeProcess] = []

    def start(app: str = "tests.integration.probe:servicers", *args: str) -> ServeProcess:
        n = len(started)
        stderr_path = tmp_path / f"serve-{n}.stderr"
        events_path = tmp_path / f"serve-{n}.events"
        env = {**os.environ, "RPCKIT_TEST_EVENTS": str(events_path), "PYTHONUNBUFFERED": "1"}
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen(
                [RPCKIT, "serve", app, "--grpc", "127.0.0.1:0", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,  # its own process group: cleaned up with its workers
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            proc.stdout.close()
            raise AssertionError(f"rpckit serve did not start:\n{stderr_path.read_text()}")
        announcement = json.loads(line)
        handle = ServeProcess(proc, announcement["grpc"], stderr_path, events_path, announcement)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        # Killing the supervisor alone (a test that failed before it stopped the server)
        # would orphan its --workers children: kill the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.proc.pid, signal.SIGKILL)
        if handle.proc.poll() is None:
            handle.proc.kill()
            handle.proc.wait(timeout=10)
        if handle.proc.stdout is not None:
            handle.proc.stdout.close()

"""The README's first screen must not lie: its code runs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def test_quick_start_is_exactly_two_commands_demo_then_tests() -> None:
    section = README.split("## Quick start", 1)[1]
    first_block = re.search(r"```[a-z]*\n(.*?)```", section, re.DOTALL)
    assert first_block is not None
    lines = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("python3 ")
    assert "examples.inventory.demo" in lines[0]
    assert lines[1].startswith("python3 ")
    assert "pytest" in lines[1]


def test_ten_line_server_example_serves_and_drains() -> None:
    (example,) = [b for b in _blocks("python") if "rpckit.Server(" in b]
    assert len(example.strip().splitlines()) <= 10
    proc = subprocess.Popen(
        [sys.executable, "-c", example], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving on 127.0.0.1:"), line
        address = line.split()[-1]
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="inventory.v1.Inventory"), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

"""The README must not lie: every Python and shell block in it runs, for real, on loopback.

Each fenced ``python`` or ``bash`` block is one test (its id: the line it starts on), run in a
fresh temporary folder with this venv's ``bin`` first on PATH (``rpckit``, ``python``, ``pip``)
and the checkout on PYTHONPATH (the README's examples import ``examples.*``):

* a block that starts a server and waits (``rpckit serve ...``, or Python ending in
  ``server.wait()``) is started; the commands before it in the block run first; its readiness
  line is read; health is checked over gRPC (TLS when the block serves TLS), and the HTTP shim
  and metrics when it announces them; then SIGTERM, and it must drain and exit 0. The fixed
  ports a reader would type (``127.0.0.1:50051``) are replaced by port 0, so parallel runs and
  busy ports do not collide; nothing else in a block is changed;
* any other block must run to completion and exit 0 without a traceback;
* the Quick start block's two commands each create ``.venv`` and install into it, which a test
  running inside that venv must not do: CI runs them verbatim (``.ci/run`` takes them from this
  README through ``.ci/quickstart.py``, which a test below checks), and here the demo the first
  one ends with runs, as the first line runs it.

``pip install`` in a block runs offline (``PIP_NO_INDEX``): what it asks for must already be
installed in the test venv, so the block checks that the requirement is satisfiable without
changing anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from examples.legacy_inventory.app import DEV_API_TOKEN
from tests.integration.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
#: A block must finish, or a server must announce itself, within this (a cold start of
#: ``rpckit new`` included); generous, as the machine is shared.
STEP_TIMEOUT_S = 180.0
SERVE_PORT = re.compile(r"127\.0\.0\.1:\d+")


@dataclasses.dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.lang}"


def _blocks() -> list[Block]:
    return [Block(m[1], m[2], README.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(README)]


RUNNABLE = [b for b in _blocks() if b.lang in ("python", "bash")]
QUICK_START = RUNNABLE[0]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_CONFIG_FILE=os.devnull)
    return env


def _commands(script: str) -> list[str]:
    """The script's commands, backslash continuations joined (serve blocks have no heredocs)."""
    return [c.strip() for c in script.replace("\\\n", " ").splitlines() if c.strip()]


def test_every_fenced_block_is_python_bash_or_plain_text() -> None:
    langs = {b.lang for b in _blocks()}
    assert langs <= {"python", "bash", ""}, f"a block this test would not run: {langs}"
    for block in _blocks():
        if block.lang == "":  # plain text (a diagram) holds no command
            command = r"^\s*(\$ |rpckit (serve|gen|new|migrate|openapi)\b|python3? -|pip install)"
            assert not re.search(command, block.text, re.MULTILINE), block.text
    assert len(RUNNABLE) >= 12


def test_quick_start_is_exactly_two_commands_demo_then_tests() -> None:
    section = README.split("## Quick start", 1)[1]
    first_block = re.search(r"```[a-z]*\n(.*?)```", section, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1) == QUICK_START.text
    lines = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("python3 ")
    assert "examples.inventory.demo" in lines[0]
    assert lines[1].startswith("python3 ")
    assert "pytest" in lines[1]


def test_ci_runs_the_quick_start_lines_verbatim() -> None:
    lines = [line for line in QUICK_START.text.splitlines() if line.strip()]
    for which, expected in zip(("demo", "test"), lines, strict=True):
        printed = subprocess.run(
            [sys.executable, str(ROOT / ".ci" / "quickstart.py"), which],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert printed.stdout.strip() == expected
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'bash -c "$demo_cmd"' in ci
    assert 'bash -c "$test_cmd"' in ci


def test_the_server_example_fits_in_ten_lines() -> None:
    """The first server a reader meets ("A server"); later ones show more (auth, TLS)."""
    serving = [b for b in RUNNABLE if b.lang == "python" and "server.wait()" in b.text]
    example = serving[0]
    assert example.line < README.count("\n", 0, README.index("## Calling services"))
    assert len(example.text.strip().splitlines()) <= 10


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    if block is QUICK_START:
        _run_quick_start_demo(block)
    elif block.lang == "python" and "server.wait()" in block.text:
        _serve_python(block, tmp_path)
    elif block.lang == "bash" and "rpckit serve " in block.text:
        _serve_shell(block, tmp_path)
    else:
        argv = (
            [sys.executable, "-c", block.text]
            if block.lang == "python"
            else ["bash", "-euo", "pipefail", "-c", block.text]
        )
        done = subprocess.run(
            argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=STEP_TIMEOUT_S
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stdout.strip() or "rpckit gen" in block.text, "the block printed nothing"


def _run_quick_start_demo(block: Block) -> None:
    first = block.text.splitlines()[0]
    demo = first.split("&&")[-1].split()
    assert demo[:3] == [".venv/bin/python", "-m", "examples.inventory.demo"], first
    done = subprocess.run(
        [sys.executable, *demo[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def _serve_python(block: Block, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", block.text], cwd=tmp_path, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    with _stopped_at_the_end(proc):
        line = _first_line(proc)
        assert line.startswith("serving on 127.0.0.1:"), line
        _check_health(line.split()[-1], None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STEP_TIMEOUT_S) == 0


def _serve_shell(block: Block, tmp_path: Path) -> None:
    *setup, serve = _commands(block.text)
    assert serve.startswith("rpckit serve "), "a serve block ends with its rpckit serve"
    env = _env()
    if setup:
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(setup)], cwd=tmp_path, env=env,
            check=True, timeout=STEP_TIMEOUT_S,
        )  # fmt: skip
    argv = shlex.split(SERVE_PORT.sub("127.0.0.1:0", serve))
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    with _stopped_at_the_end(proc):
        announced = json.loads(_first_line(proc))
        cert = tmp_path / argv[argv.index("--tls-cert") + 1] if "--tls-cert" in argv else None
        _check_health(announced["grpc"], cert)
        if "http" in announced:
            _check_http(announced["http"], argv, tmp_path)
        if "metrics" in announced:
            with urllib.request.urlopen(f"http://{announced['metrics']}/metrics", timeout=30) as m:
                assert b"rpckit_queue_depth" in m.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STEP_TIMEOUT_S) == 0


def _check_http(address: str, argv: list[str], tmp_path: Path) -> None:
    """A migrated route answers: over HTTPS when the block serves it (trusting its cert), with
    the example's API token when the block asks ``--auth`` (and 401 without it)."""
    context = None
    scheme = "http"
    if "--http-tls-cert" in argv:
        scheme = "https"
        cafile = tmp_path / argv[argv.index("--http-tls-cert") + 1]
        context = ssl.create_default_context(cafile=str(cafile))
        context.check_hostname = False  # the block's cert names localhost; we dial 127.0.0.1
    url = f"{scheme}://{address}/items/BOLT-M6-20"
    headers = {}
    if "--auth" in argv:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30, context=context)
        assert refused.value.code == 401
        refused.value.close()
        headers["Authorization"] = f"Bearer {DEV_API_TOKEN}"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        assert answer.status == 200
        assert json.load(answer)["sku"] == "BOLT-M6-20"


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The process's first stdout line; EOF (it exited) fails, and so does a hang (killed)."""
    assert proc.stdout is not None
    watchdog = threading.Timer(STEP_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
    finally:
        watchdog.cancel()
    assert line, f"exited {proc.poll()} before announcing itself"
    return line.strip()


def _check_health(address: str, cert: Path | None) -> None:
    if cert is None:
        channel = grpc.insecure_channel(address)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        override = (("grpc.ssl_target_name_override", "localhost"),)
        channel = grpc.secure_channel(address, credentials, options=override)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inventory.v1.Inventory"),
            timeout=30,
            wait_for_ready=True,
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


class _stopped_at_the_end:  # noqa: N801 - used like contextlib.closing
    """Kill the process if the test failed before it exited; close its stdout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

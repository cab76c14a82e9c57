"""Acceptance for ``rpckit new``: a generated service installs offline into a fresh venv and passes.

Once per test session (:func:`installed`, about a minute of CPU):

1. the checkout's files (tracked and untracked, not ignored) are copied, so
   that building rpckit writes nothing into the checkout;
2. every distribution rpckit and the generated project need is repacked from
   this test's own venv into a wheelhouse (``tests/integration/wheelhouse.py``);
3. a new venv (``python -m venv``, nothing shared with this one) gets, with
   pip's configuration files and ``PIP_*`` variables cleared, ``--no-index`` and
   ``--find-links`` the wheelhouse: setuptools, then rpckit *built from the copy*
   (``rpckit[new,http,metrics] @ file://...``, not editable);
4. that venv's ``rpckit new`` generates the project, with ``--rpckit`` naming
   the copy, so the project depends on rpckit by path as a development checkout
   makes it; then the project is installed (``-e '.[dev]'``, as its README says).

The tests run the project's own CI script (``rpckit gen --check``, ruff, mypy,
its tests) and its Quick start demo in that venv, and serve it with its
``rpckit serve`` and call it over gRPC and HTTP. No network is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.integration.wheelhouse import (
    closure,
    copy_checkout,
    offline_env,
    requirements,
    run,
    wheelhouse,
)

ROOT = Path(__file__).resolve().parents[2]
NAME, PACKAGE = "scaffold-check", "scaffold_check"
SERVICE = "scaffold_check.v1.ScaffoldCheck"

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Installed:
    venv: Path
    project: Path
    env: dict[str, str]
    work: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("rpckit-new")
    source = copy_checkout(work / "rpckit-checkout")
    wheels = work / "wheels"
    env = offline_env(wheels)
    needs = requirements(source / "pyproject.toml", "new", "http", "metrics")
    wheelhouse(closure([*needs, "setuptools>=77", "wheel"]).values(), wheels)

    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=work)
    pip = str(venv / "bin" / "pip")
    # The venv comes with an older setuptools; rpckit's PEP 639 license string needs 77.
    run([pip, "install", "--upgrade", "setuptools>=77", "wheel"], env=env, cwd=work)
    rpckit = f"rpckit[new,http,metrics] @ {source.as_uri()}"
    run([pip, "install", "--no-build-isolation", rpckit], env=env, cwd=work)

    project = work / NAME
    new = [str(venv / "bin" / "rpckit"), "new", NAME, "--path", str(project)]
    run([*new, "--rpckit", str(source)], env=env, cwd=work)
    dev = requirements(project / "pyproject.toml", "dev")
    wheelhouse(closure(dev, skip=["rpckit"]).values(), wheels)
    run([pip, "install", "--no-build-isolation", "-e", f"{project}[dev]"], env=env, cwd=work)
    return Installed(venv=venv, project=project, env=env, work=work)


def test_the_project_depends_on_the_rpckit_checkout_by_path(installed: Installed) -> None:
    pyproject = tomllib.loads((installed.project / "pyproject.toml").read_text())
    checkout = (installed.work / "rpckit-checkout").as_uri()
    assert pyproject["project"]["dependencies"] == [f"rpckit[http,metrics] @ {checkout}"]
    direct = json.loads(
        run(
            [installed.bin("python"), "-c",
             "import importlib.metadata as m; print(m.distribution('rpckit').read_text("
             "'direct_url.json'))"],
            env=installed.env, cwd=installed.work,
        )
    )  # fmt: skip
    assert direct["url"] == checkout
    assert "editable" not in json.dumps(direct)  # built and installed, as a user gets it


def test_the_generated_projects_ci_passes_in_the_fresh_venv(installed: Installed) -> None:
    """The project's own CI: rpckit gen --check, ruff check and format, mypy, its tests."""
    env = {**installed.env, "VENV": str(installed.venv)}
    out = run(["bash", ".ci/run"], env=env, cwd=installed.project)
    assert "generated code is up to date (1 targets)" in out
    assert "Success: no issues found" in out
    summary = out.strip().splitlines()[-1]
    assert " passed in " in summary
    assert "failed" not in summary
    assert "skipped" not in summary


def test_rpckit_gen_check_passes_inside_it(installed: Installed) -> None:
    out = run([installed.bin("rpckit"), "gen", "--check"], env=installed.env, cwd=installed.project)
    assert out.strip() == "generated code is up to date (1 targets)"


def test_the_quick_start_demo_runs(installed: Installed) -> None:
    out = run(
        [installed.bin("python"), "-m", f"{PACKAGE}.demo"], env=installed.env, cwd=installed.project
    )
    assert f"health of {SERVICE}" in out
    assert "HTTP GET /v1/items/first                 200" in out
    assert out.strip().endswith("demo finished")


@pytest.fixture
def served(installed: Installed) -> Iterator[dict[str, str]]:
    """``rpckit serve`` of the generated project, as its README says, on 127.0.0.1 port 0."""
    argv = [
        installed.bin("rpckit"), "serve", f"{PACKAGE}.server:servicers", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--http-app", f"{PACKAGE}.server:http_app", "--drain", "0.2",
    ]  # fmt: skip
    env = {**installed.env, "SCAFFOLD_CHECK_SEED_ITEMS": "true"}
    proc = subprocess.Popen(
        argv, cwd=installed.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"rpckit serve exited {proc.wait(timeout=30)}: {proc.communicate()[1]}"
        yield json.loads(line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_the_served_project_answers_health_and_the_same_item_over_grpc_and_http(
    served: dict[str, str],
) -> None:
    with grpc.insecure_channel(served["grpc"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The API as reflection describes it: no generated code in this process.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName(SERVICE).methods_by_name["GetItem"]
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)
        get_item = channel.unary_unary(
            f"/{SERVICE}/GetItem",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_type.FromString,
        )
        item = get_item(json_format.ParseDict({"id": "first"}, request_type()), timeout=10)
    over_grpc = json_format.MessageToDict(
        item, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    with urllib.request.urlopen(f"http://{served['http']}/v1/items/first", timeout=10) as answer:
        assert answer.status == 200
        over_http = json.loads(answer.read())
    assert over_grpc["id"] == "first"
    assert over_http == over_grpc


def test_an_installed_rpckit_pins_its_own_version(installed: Installed) -> None:
    """Not a checkout: the default requirement is this rpckit's version; templates shipped."""
    other = installed.work / "by-version"
    run([installed.bin("rpckit"), "new", "by-version", "--path", str(other)],
         env=installed.env, cwd=installed.work)  # fmt: skip
    query = "import importlib.metadata as m; print(m.version('rpckit'))"
    version = run([installed.bin("python"), "-c", query], env=installed.env, cwd=installed.work)
    version = version.strip()
    pyproject = tomllib.loads((other / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == [f"rpckit[http,metrics]=={version}"]
    answers = tomllib.loads((other / ".rpckit" / "answers.toml").read_text())
    assert answers["answers"]["rpckit"] == f"rpckit=={version}"
    assert answers["answers"]["rpckit_pinned"] is False


def test_a_grpc_only_project_with_the_longest_name_passes_its_ci(tmp_path: Path) -> None:
    """The other shape (--no-http) and the longest name (the longest lines), in this venv.

    This venv has rpckit installed editable, which mypy cannot follow: MYPYPATH
    points it at the checkout's rpckit package (alone, through a link).
    """
    name = "warehouse-inventory-reservations"  # 32 characters, the most rpckit new takes
    project = tmp_path / name
    rpckit = str(Path(sys.executable).parent / "rpckit")
    run(
        [rpckit, "new", name, "--no-http", "--path", str(project)],
        env=dict(os.environ),
        cwd=tmp_path,
    )
    assert not (project / "tests" / "test_http.py").exists()
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "rpckit").symlink_to(ROOT / "rpckit")
    env = {**os.environ, "VENV": sys.prefix, "MYPYPATH": str(stubs)}
    out = run(["bash", ".ci/run"], env=env, cwd=project)
    assert "Success: no issues found" in out
    summary = out.strip().splitlines()[-1]
    assert " passed in " in summary
    assert "failed" not in summary

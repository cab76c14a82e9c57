"""``pip install .`` (no extras) in a fresh venv, then ``rpckit gen``: it works, or says what to do.

Once per module (about half a minute of CPU): the checkout is copied, rpckit's runtime
requirements (and setuptools and wheel, to build it) are repacked from this test's venv
into a wheelhouse (``tests/integration/wheelhouse.py``), and a new venv (``python -m venv``,
nothing shared with this one) installs the copy with a plain ``pip install .``, build
isolation included, offline from the wheelhouse. Its PATH holds only that venv and the
system's ``/usr/bin:/bin``, so no tool of the development venv (mypy-protobuf's plugins)
leaks in: the venv is what a user has after ``pip install rpckit``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.wheelhouse import (
    closure,
    copy_checkout,
    offline_env,
    requirements,
    run,
    wheelhouse,
)

pytestmark = pytest.mark.slow

GREETER = """\
syntax = "proto3";
package hello.v1;

import "google/api/annotations.proto";
import "rpckit/v1/http.proto";

service Greeter {
  rpc SayHello(HelloRequest) returns (HelloReply) {
    option (google.api.http) = {post: "/v1/hello" body: "*"};
    option (rpckit.v1.http) = {success_status: 201};
  }
}
message HelloRequest { string name = 1; }
message HelloReply { string message = 1; }
"""


@dataclasses.dataclass(frozen=True)
class Plain:
    venv: Path
    env: dict[str, str]

    def rpckit(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "rpckit"), *args],
            cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def python(self, code: str, *, cwd: Path) -> str:
        return run([str(self.venv / "bin" / "python"), "-c", code], env=self.env, cwd=cwd)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Plain:
    work = tmp_path_factory.mktemp("plain-install")
    source = copy_checkout(work / "rpckit-checkout")
    wheels = work / "wheels"
    env = offline_env(wheels)
    needs = [*requirements(source / "pyproject.toml"), "setuptools>=77", "wheel"]
    wheelhouse(closure(needs).values(), wheels)
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=work)
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    run([str(venv / "bin" / "pip"), "install", "."], env=env, cwd=source)
    return Plain(venv=venv, env=env)


def _project(root: Path, *, out: str, package: str | None) -> Path:
    (root / "protos" / "hello" / "v1").mkdir(parents=True)
    (root / "protos" / "hello" / "v1" / "greeter.proto").write_text(GREETER)
    (root / "pyproject.toml").write_text(
        f'[[tool.rpckit.gen]]\nproto_path = "protos"\nprotos = ["protos/hello/v1"]\nout = "{out}"\n'
    )
    if package is not None:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    return root


def test_the_install_is_plain_and_ships_rpckits_protos(plain: Plain, tmp_path: Path) -> None:
    listed = plain.python(
        "import importlib.metadata as m\n"
        "print(' '.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))",
        cwd=tmp_path,
    ).split()
    assert "rpckit" in listed
    assert "grpcio-tools" in listed
    assert "mypy-protobuf" not in listed
    protos = plain.python(
        "from rpckit.codegen._gen import _rpckit_protos; print(_rpckit_protos())", cwd=tmp_path
    ).strip()
    assert protos.startswith(str(plain.venv)), protos  # the installed package's, not a checkout's
    assert sorted(p.name for p in (Path(protos) / "rpckit" / "v1").iterdir()) == [
        "http.proto",
        "load.proto",
    ]


def test_gen_writes_code_without_stubs_and_says_how_to_get_them(
    plain: Plain, tmp_path: Path
) -> None:
    project = _project(tmp_path, out="hello_service/_gen", package="hello_service")
    done = plain.rpckit("gen", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (
        "rpckit gen: note: writing no .pyi stubs (they need mypy-protobuf: "
        "pip install mypy-protobuf)"
    )
    out = project / "hello_service" / "_gen" / "hello" / "v1"
    assert sorted(p.name for p in out.iterdir()) == [
        "__init__.py",
        "greeter_pb2.py",
        "greeter_pb2_grpc.py",
    ]
    shown = plain.python(
        "from hello_service._gen.hello.v1 import greeter_pb2, greeter_pb2_grpc\n"
        "from rpckit.v1 import http_pb2\n"
        "method = greeter_pb2.DESCRIPTOR.services_by_name['Greeter'].methods_by_name['SayHello']\n"
        "print(method.GetOptions().Extensions[http_pb2.http].success_status,"
        " greeter_pb2_grpc.GreeterStub.__name__)",
        cwd=project,
    )
    assert shown.split() == ["201", "GreeterStub"]
    check = plain.rpckit("gen", "--check", cwd=project)
    assert check.returncode == 0, check.stderr
    assert "up to date" in check.stdout


def test_code_outside_a_package_imports_with_out_on_sys_path(plain: Plain, tmp_path: Path) -> None:
    """A .proto without a package folder, generated next to itself: importable from there."""
    (tmp_path / "greeter.proto").write_text(GREETER.replace("package hello.v1;", ""))
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.rpckit.gen]]\nproto_path = "."\nprotos = ["greeter.proto"]\nout = "."\n'
    )
    done = plain.rpckit("gen", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = plain.python(
        "import greeter_pb2_grpc; print(greeter_pb2_grpc.greeter__pb2.HelloRequest(name='Ada'))",
        cwd=tmp_path,
    )
    assert shown.strip() == 'name: "Ada"'


def test_gen_refuses_to_leave_old_stubs_stale(plain: Plain, tmp_path: Path) -> None:
    project = _project(tmp_path, out="hello_service/_gen", package="hello_service")
    stubs = project / "hello_service" / "_gen" / "hello" / "v1"
    stubs.mkdir(parents=True)
    (stubs / "greeter_pb2.pyi").write_text("# from an earlier run with mypy-protobuf\n")
    done = plain.rpckit("gen", cwd=project)
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("rpckit gen: error: hello_service/_gen holds .pyi stubs")
    assert "pip install mypy-protobuf" in error
    assert not (stubs / "greeter_pb2.py").exists()  # nothing written


def test_gen_without_a_pyproject_says_what_to_create(plain: Plain, tmp_path: Path) -> None:
    done = plain.rpckit("gen", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"rpckit gen: error: no pyproject.toml in {tmp_path}")
    assert "[[tool.rpckit.gen]]" in lines[-1]

"""The public surface: small, explicit, sorted."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import rpckit


def test_all_is_sorted_and_complete() -> None:
    # isort style (ruff RUF022): CONSTANTS, then Classes, then functions, each alphabetical.
    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert list(rpckit.__all__) == sorted(rpckit.__all__, key=style)
    loaded = {name: getattr(rpckit, name) for name in rpckit.__all__}  # imported on first use
    assert all(value is not None for value in loaded.values())
    public = {name for name in vars(rpckit) if not name.startswith("_")}
    submodules = {"http", "migrate", "scaffold", "testing", "v1"}
    assert public - submodules == set(rpckit.__all__)
    assert set(dir(rpckit)) >= set(rpckit.__all__)


def test_import_rpckit_loads_no_grpc() -> None:
    # The `rpckit` command lives in this package; `rpckit serve --workers`'s supervisor must
    # not load grpc (rpckit._workers), so `import rpckit` may not either.
    code = "import sys, rpckit, rpckit._cli, rpckit._workers; print(sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = set(ast.literal_eval(done.stdout))
    heavy = {"grpc", "google.protobuf", "rpckit._server", "rpckit._errors"}
    assert modules.isdisjoint(heavy), sorted(modules & heavy)


def test_a_missing_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = rpckit.no_such_name


def test_every_public_name_is_documented() -> None:
    for name in rpckit.__all__:
        obj = getattr(rpckit, name)
        if callable(obj):
            assert obj.__doc__, f"rpckit.{name} has no docstring"

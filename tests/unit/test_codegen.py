"""Import rewriting for generated code (pure), and the staleness check."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpckit.codegen._gen import GenError, GenTarget, load_targets, rewrite_imports

GENERATED = frozenset(
    {
        "inventory.v1.inventory_pb2",
        "inventory.v1.inventory_pb2_grpc",
        "inventory.common.money_pb2",
        "shared_pb2",
    }
)


def _rewrite(source: str, module: str = "inventory.v1.inventory_pb2_grpc") -> str:
    return rewrite_imports(source, module=module, generated=GENERATED)


def test_sibling_import_becomes_relative() -> None:
    src = "from inventory.v1 import inventory_pb2 as inventory_dot_v1_dot_inventory__pb2\n"
    assert _rewrite(src) == "from . import inventory_pb2 as inventory_dot_v1_dot_inventory__pb2\n"


def test_cousin_import_climbs_the_right_number_of_levels() -> None:
    src = "from inventory.common import money_pb2 as m\n"
    assert _rewrite(src) == "from ..common import money_pb2 as m\n"


def test_top_level_module_from_nested_one() -> None:
    assert _rewrite("import shared_pb2\nx = shared_pb2.Foo\n") == (
        "from ... import shared_pb2 as shared_pb2\nx = shared_pb2.Foo\n"
    )


def test_dotted_plain_import_gets_an_alias_and_uses_follow() -> None:
    src = "import inventory.common.money_pb2\nx: inventory.common.money_pb2.Money\n"
    out = _rewrite(src)
    assert "from ..common import money_pb2 as inventory_dot_common_dot_money_pb2\n" in out
    assert "x: inventory_dot_common_dot_money_pb2.Money" in out


def test_imports_outside_the_run_stay_absolute() -> None:
    src = (
        "from google.api import annotations_pb2 as a\n"
        "from google.protobuf import empty_pb2 as e\n"
        "import grpc\n"
        "from rpckit.v1 import load_pb2 as l\n"
    )
    assert _rewrite(src) == src


def test_indented_imports_are_rewritten_too() -> None:
    src = "if True:\n    from inventory.v1 import inventory_pb2\n"
    assert _rewrite(src) == "if True:\n    from . import inventory_pb2\n"


def test_load_targets_reads_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.rpckit.gen]]\nproto_path = "protos"\nprotos = ["protos/a"]\nout = "pkg/_gen"\n'
    )
    assert load_targets(tmp_path / "pyproject.toml") == [
        GenTarget(proto_path="protos", protos=("protos/a",), out="pkg/_gen")
    ]


def test_load_targets_without_a_table_says_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(GenError, match=r"\[\[tool.rpckit.gen\]\]"):
        load_targets(tmp_path / "pyproject.toml")


def test_target_needs_protos() -> None:
    with pytest.raises(ValueError, match="protos is empty"):
        GenTarget(proto_path="protos", protos=(), out="x")

"""The public surface: small, explicit, sorted."""

from __future__ import annotations

import rpckit


def test_all_is_sorted_and_complete() -> None:
    # isort style (ruff RUF022): CONSTANTS, then Classes, then functions, each alphabetical.
    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert list(rpckit.__all__) == sorted(rpckit.__all__, key=style)
    public = {name for name in vars(rpckit) if not name.startswith("_")}
    submodules = {"http", "testing", "v1"}
    assert public - submodules == set(rpckit.__all__)


def test_every_public_name_is_documented() -> None:
    for name in rpckit.__all__:
        obj = getattr(rpckit, name)
        if callable(obj):
            assert obj.__doc__, f"rpckit.{name} has no docstring"

"""Every config class rejects bad field values with an error naming ``Class.field``.

The classes and their fields are found by introspection: every keyword-only
dataclass in rpckit whose name ends in Config, Options or Profile (the shape
every config class has), and each of its init
fields annotated ``int`` or ``float`` (or ``... | None``). A new config class or
a new numeric field is covered without touching this file; a new class with
required fields needs a line in ``_REQUIRED``, and the test says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rpckit
from rpckit import AdmissionConfig, BalancedChannelConfig, ServerConfig
from rpckit.server._server import _admission_config

_CONFIG_NAME = re.compile(r"[A-Z]\w*(Config|Options|Profile)")


def _config_classes() -> list[type[Any]]:
    found: dict[str, type[Any]] = {}
    for module_info in pkgutil.walk_packages(rpckit.__path__, "rpckit."):
        if module_info.name.endswith(".__main__"):  # runs the command line
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
                and _CONFIG_NAME.fullmatch(value.__name__)
                and all(f.kw_only for f in dataclasses.fields(value) if f.init)
            ):
                found[f"{value.__module__}.{value.__name__}"] = value
    return [found[k] for k in sorted(found)]


CONFIG_CLASSES = _config_classes()


def _tls_files(tmp_path: Path) -> dict[str, object]:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("not checked here\n")
    return {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}


#: Valid values for the required fields of the classes that have some.
_REQUIRED: dict[str, Callable[[Path], dict[str, object]]] = {
    "TlsConfig": _tls_files,
    "PlanOptions": lambda _: {"package": "inventory.v1", "app_service": "Inventory"},
}


def _valid_kwargs(cls: type[Any], tmp_path: Path) -> dict[str, object]:
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if not required:
        return {}
    assert cls.__name__ in _REQUIRED, (
        f"{cls.__name__} has required fields {required}: add valid values to _REQUIRED"
    )
    return _REQUIRED[cls.__name__](tmp_path)


def _numeric(hint: object) -> type | None:
    """int or float when ``hint`` is one of them, alone or with None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    return hint if hint in (int, float) else None


def _fields_of(kind: Callable[[object], bool]) -> list[tuple[type[Any], str, object]]:
    cases = []
    for cls in CONFIG_CLASSES:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init and kind(hints[field.name]):
                cases.append((cls, field.name, hints[field.name]))
    return cases


NUMERIC_FIELDS = _fields_of(lambda hint: _numeric(hint) is not None)
BOOL_FIELDS = _fields_of(lambda hint: hint is bool or hint == (bool | None))

#: NaN, the infinities, a bool, a str and a negative number: none is a valid count,
#: duration, size, fraction or status.
BAD_VALUES: list[object] = [math.nan, math.inf, -math.inf, True, False, "1", -1, -0.5]


def _case_id(case: tuple[type[Any], str, object]) -> str:
    return f"{case[0].__name__}.{case[1]}"


def test_the_discovery_finds_the_config_classes_and_their_numbers() -> None:
    names = {cls.__name__ for cls in CONFIG_CLASSES}
    assert {
        "ServerConfig",
        "TlsConfig",
        "AdmissionConfig",
        "ConcurrencyConfig",
        "BalancedChannelConfig",
        "PickerConfig",
        "OutlierConfig",
        "RetryBudgetConfig",
        "AdaptiveThrottleConfig",
        "ShimConfig",
        "RouteOptions",
        "LegacyProfile",
        "RecordConfig",
        "ReplayOptions",
        "PlanOptions",
    } <= names
    fields = {_case_id(case) for case in NUMERIC_FIELDS}
    assert {"ServerConfig.drain_s", "ServerConfig.threads", "ShimConfig.max_body_bytes"} <= fields
    assert len(fields) >= 50


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_each_config_class_builds_from_valid_values(cls: type[Any], tmp_path: Path) -> None:
    built = cls(**_valid_kwargs(cls, tmp_path))
    assert isinstance(built, cls)


@pytest.mark.parametrize("case", NUMERIC_FIELDS, ids=_case_id)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_a_numeric_field_rejects_a_bad_value_naming_the_field(
    case: tuple[type[Any], str, object], bad: object, tmp_path: Path
) -> None:
    cls, name, _ = case
    kwargs = {**_valid_kwargs(cls, tmp_path), name: bad}
    with pytest.raises((ValueError, TypeError), match=re.escape(f"{cls.__name__}.{name} ")):
        cls(**kwargs)


@pytest.mark.parametrize("case", BOOL_FIELDS, ids=_case_id)
@pytest.mark.parametrize("bad", [1, 0, "yes", ""], ids=repr)
def test_a_flag_rejects_a_non_bool_naming_the_field(
    case: tuple[type[Any], str, object], bad: object, tmp_path: Path
) -> None:
    cls, name, _ = case
    kwargs = {**_valid_kwargs(cls, tmp_path), name: bad}
    with pytest.raises(TypeError, match=re.escape(f"{cls.__name__}.{name} ")):
        cls(**kwargs)


def test_a_nested_config_of_the_wrong_type_is_named() -> None:
    with pytest.raises(TypeError, match=r"BalancedChannelConfig\.picker must be a PickerConfig"):
        BalancedChannelConfig(picker={"decay_s": 1.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ServerConfig\.tls must be a TlsConfig"):
        ServerConfig(tls="cert.pem")  # type: ignore[arg-type]


def test_a_health_service_without_health_checks_is_a_conflict() -> None:
    with pytest.raises(
        ValueError, match=r"health_service=.inventory\.v1\.Inventory. is not watched"
    ):
        BalancedChannelConfig(health_check=False, health_service="inventory.v1.Inventory")
    assert BalancedChannelConfig(health_check=False).health_service == ""


def test_a_server_refuses_queue_bounds_that_disagree() -> None:
    with pytest.raises(ValueError, match=r"ServerConfig\.queue_limit \(10\).*disagree"):
        _admission_config(ServerConfig(queue_limit=10), AdmissionConfig(queue_limit=20))


def test_a_server_takes_the_queue_bound_from_where_it_was_set() -> None:
    from_server = _admission_config(ServerConfig(queue_limit=10), AdmissionConfig(max_wait_s=1.0))
    assert (from_server.queue_limit, from_server.max_wait_s) == (10, 1.0)
    from_admission = _admission_config(ServerConfig(), AdmissionConfig(queue_limit=20))
    assert from_admission.queue_limit == 20
    assert _admission_config(ServerConfig(queue_limit=7), None).queue_limit == 7


def test_a_server_refuses_admission_workers_it_would_ignore() -> None:
    with pytest.raises(ValueError, match=r"AdmissionConfig\.workers \(4\) is ignored"):
        _admission_config(ServerConfig(threads=16), AdmissionConfig(workers=4))
    agreeing = _admission_config(ServerConfig(threads=1), AdmissionConfig(workers=1))
    assert agreeing.workers == 1

"""Validation of configuration fields, shared by the config dataclasses (pure).

One path for every config class: its ``__post_init__`` first calls
:func:`check_fields`, which checks each field against its annotation (``int``
takes no bool and no float; ``float`` takes an int or a float, never NaN or an
infinity; ``bool``, ``str``, ``Literal`` and nested config types are checked by
type; every number is >= 0), then adds what the annotation cannot say (a lower
bound above 0, an upper bound, fields that must agree) with :func:`check_int`,
:func:`check_number` and :func:`conflict`.

Each error names the field as ``Owner.field`` and says what it must be.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import types
import typing
from pathlib import PurePath

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["check_fields", "check_int", "check_number", "conflict"]


def check_number(owner: str, name: str, value: float, *, low: float, strict: bool) -> None:
    """``owner.name`` must be a finite number >= ``low`` (> ``low`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{owner}.{name} must be finite and {bound}, got {value!r}")


def check_int(owner: str, name: str, value: int, *, low: int, high: int | None = None) -> None:
    """``owner.name`` must be an int (not a bool) >= ``low`` (and <= ``high`` if given)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{owner}.{name} must be {bound}, got {value!r}")


def conflict(owner: str, message: str) -> ValueError:
    """The error for arguments that contradict each other (``raise conflict(...)``)."""
    return ValueError(f"{owner}: {message}")


def check_fields(obj: DataclassInstance) -> None:
    """Check every init field of the dataclass ``obj`` against its annotation.

    Numbers must be finite and >= 0 (a class checks tighter bounds itself); an
    ``X | None`` field also takes None. Annotations this cannot check
    (callables, mappings, sequences) are left to the class.
    """
    owner = type(obj).__name__
    for name, hint in _init_hints(type(obj)):
        _check_value(owner, name, getattr(obj, name), hint)


@functools.cache
def _init_hints(cls: type) -> tuple[tuple[str, object], ...]:
    """``(name, resolved annotation)`` of ``cls``'s init fields, once per class (a memo of
    a pure function: resolving annotations costs ~100 us a field, a config may be built per
    request). Only init fields are resolved, so a derived field may name a type defined
    after an instance is built at import time (a module's default instance)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]

    def holder() -> None: ...

    holder.__annotations__ = {f.name: f.type for f in fields}
    namespace = vars(sys.modules[cls.__module__])
    hints = typing.get_type_hints(holder, globalns=namespace)
    return tuple((f.name, hints[f.name]) for f in fields)


def _check_value(owner: str, name: str, value: object, hint: object) -> None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return
        checkable = [o for o in options if o is not type(None)]
        if len(checkable) == 1:
            _check_value(owner, name, value, checkable[0])
    elif origin is typing.Literal:
        allowed = typing.get_args(hint)
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise ValueError(f"{owner}.{name} must be one of {allowed}, got {value!r}")
    elif hint is int:
        check_int(owner, name, typing.cast(int, value), low=0)
    elif hint is float:
        check_number(owner, name, typing.cast(float, value), low=0, strict=False)
    elif isinstance(hint, type):
        _check_type(owner, name, value, hint)


def _check_type(owner: str, name: str, value: object, hint: type) -> None:
    if issubclass(hint, PurePath):
        accepted: type | tuple[type, ...] = (str, os.PathLike)
    elif hint in (bool, str) or dataclasses.is_dataclass(hint):
        accepted = hint
    else:
        return  # callables, protocols, grpc enums: the class checks what it needs
    if not isinstance(value, accepted):
        what = "a path" if accepted != hint else f"a {hint.__name__}"
        raise TypeError(f"{owner}.{name} must be {what}, got {value!r}")

"""Validation of configuration fields, shared by the config dataclasses (pure).

Each error names the field as ``Owner.field`` and says what it must be.
"""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number"]


def check_number(owner: str, name: str, value: float, *, low: float, strict: bool) -> None:
    """``owner.name`` must be a finite number >= ``low`` (> ``low`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{owner}.{name} must be finite and {bound}, got {value!r}")


def check_int(owner: str, name: str, value: int, *, low: int) -> None:
    """``owner.name`` must be an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}.{name} must be >= {low}, got {value!r}")

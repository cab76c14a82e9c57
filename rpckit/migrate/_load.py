"""Importing what the migrate verbs work on: ``MODULE:ATTR`` naming an app or a factory.

An attribute that is a function or a class is a factory, called with no
arguments each time a fresh app is wanted (throwaway state); anything else is
the app itself, reused. A factory that raises, a module that does not import
or an attribute that is missing becomes a :class:`LoadError` whose message
says what happened and what to do.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["AppSource", "LoadError", "import_target", "load_source"]


class LoadError(Exception):
    """A target could not be imported or built; the message is one line for the user."""


def import_target(spec: str) -> Any:
    """Import ``module:attr`` (the working directory first on ``sys.path``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"{spec!r} is not MODULE:ATTR, e.g. myapp.wsgi:create_app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise LoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


@dataclasses.dataclass(frozen=True)
class AppSource:
    """Where apps come from: ``build()`` gives a fresh one when ``fresh`` (a factory)."""

    spec: str
    build: Callable[[], Any]
    fresh: bool


def load_source(spec: str) -> AppSource:
    """An :class:`AppSource` for ``spec`` (module docstring)."""
    target = import_target(spec)
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target):
        try:
            required = [
                p
                for p in inspect.signature(target).parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
        except (TypeError, ValueError):
            required = []
        if required:
            names = ", ".join(p.name for p in required)
            raise LoadError(
                f"{spec} needs arguments ({names}): name a factory that takes none, "
                "or an app object"
            )

        def build() -> Any:
            try:
                return target()
            except Exception as exc:
                raise LoadError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc

        return AppSource(spec, build, fresh=True)
    if not callable(target):
        raise LoadError(f"{spec} is a {type(target).__name__}, not a WSGI app or a factory")
    return AppSource(spec, lambda: target, fresh=False)

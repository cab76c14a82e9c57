"""``scan``'s Flask adapter: a Flask app's URL map, views and config as :class:`LegacyRoute` data.

Reads ``app.url_map`` (rules, methods, converters, defaults, strict_slashes,
endpoints; blueprints from the endpoint names), each view's source (through
decorators, and the methods of class-based views) and its type hints:
a return annotation or a body parameter that is a ``TypedDict``, a dataclass or
a pydantic model becomes a JSON shape, and where there is none, a marshmallow
schema the view loads or dumps (:mod:`rpckit.migrate._marshmallow`). Flask's
automatic ``HEAD``/``OPTIONS`` and the ``static`` endpoints are left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rpckit.migrate._evidence import read_view_source
from rpckit.migrate._infer import Shape, array_of, map_of, merge, object_of, observe
from rpckit.migrate._marshmallow import schema_shape
from rpckit.migrate._routes_in import AppFacts, Evidence, LegacyRoute, PathVar
from rpckit.migrate._samples import Exchange

__all__ = ["app_facts", "legacy_routes", "sample_matcher"]

_RULE_VAR = re.compile(
    r"<(?:(?P<converter>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<args>.*?)\))?:)?(?P<name>[A-Za-z_]\w*)>"
)
_BUILTIN = {"default": "string", "string": "string", "path": "path", "any": "string",
            "int": "int", "float": "float", "uuid": "string"}  # fmt: skip
_AUTOMATIC = frozenset({"HEAD", "OPTIONS"})
_METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _converter_base(app: Any, name: str) -> tuple[str, bool]:
    from werkzeug.routing import converters as wz

    builtin = dict(wz.DEFAULT_CONVERTERS)
    cls = app.url_map.converters.get(name)
    if name in builtin and cls is builtin[name]:
        return _BUILTIN[name], True
    if cls is not None:
        for base, kind in (
            (wz.IntegerConverter, "int"),
            (wz.FloatConverter, "float"),
            (wz.PathConverter, "path"),
        ):
            if isinstance(cls, type) and issubclass(cls, base):
                return kind, False
    return "string", False


def _view_of(app: Any, endpoint: str) -> Callable[..., Any] | None:
    view: Callable[..., Any] | None = app.view_functions.get(endpoint)
    return view


def _source_of(view: Callable[..., Any]) -> tuple[str, str, str]:
    """(source text, "file:line", dotted name) of a view, through decorators and view classes."""
    target: Any = getattr(view, "view_class", None) or inspect.unwrap(view)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    try:
        source = inspect.getsource(target)
        file = inspect.getsourcefile(target) or "?"
        _, line = inspect.getsourcelines(target)
    except (OSError, TypeError):
        return "", "", name
    try:
        shown = str(Path(file).resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = file
    return source, f"{shown}:{line}", name


def legacy_routes(app: Any) -> list[LegacyRoute]:
    """Every rule of ``app`` as a :class:`LegacyRoute`, in registration order."""
    routes = []
    for rule in app.url_map.iter_rules():
        endpoint = str(rule.endpoint)
        if endpoint == "static" or endpoint.endswith(".static"):
            continue
        variables = []
        for match in _RULE_VAR.finditer(rule.rule):
            converter = match.group("converter") or "default"
            base, builtin = _converter_base(app, converter)
            variables.append(
                PathVar(match.group("name"), converter, base, builtin, match.group("args") or "")
            )
        view = _view_of(app, endpoint)
        source, where, name = _source_of(view) if view is not None else ("", "", endpoint)
        evidence = read_view_source(source) if source else Evidence()
        request_hint, response_hint, notes = _hints(view, {v.name for v in variables}, evidence)
        methods = sorted(
            set(rule.methods or ()) - _AUTOMATIC or {"GET"},
            key=lambda m: (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else 9, m),
        )
        defaults = tuple(sorted((str(k), repr(v)) for k, v in (rule.defaults or {}).items()))
        routes.append(
            LegacyRoute(
                rule=rule.rule,
                endpoint=endpoint,
                blueprint=endpoint.rsplit(".", 1)[0] if "." in endpoint else None,
                methods=tuple(methods),
                variables=tuple(variables),
                defaults=defaults,
                strict_slashes=bool(rule.strict_slashes),
                view=name,
                source=where,
                evidence=evidence,
                request_hint=request_hint,
                response_hint=response_hint,
                hint_notes=notes,
                host_or_subdomain=str(rule.host or rule.subdomain or ""),
            )
        )
    return routes


def app_facts(app: Any) -> AppFacts:
    """The app's name, body limit, error handlers and custom converters."""
    from werkzeug.routing import converters as wz

    handlers = []
    for blueprint, by_code in app.error_handler_spec.items():
        for code, by_class in by_code.items():
            for cls in by_class:
                where = f"{blueprint}: " if blueprint else ""
                handlers.append(f"{where}{code or ''}{' ' if code else ''}{cls.__name__}")
    custom = sorted(
        name
        for name, cls in app.url_map.converters.items()
        if wz.DEFAULT_CONVERTERS.get(name) is not cls
    )
    limit = app.config.get("MAX_CONTENT_LENGTH")
    return AppFacts(
        name=str(app.import_name),
        max_body_bytes=int(limit) if isinstance(limit, int) and limit > 0 else None,
        error_handlers=tuple(handlers),
        custom_converters=tuple(custom),
    )


def sample_matcher(app: Any) -> Callable[[Exchange], tuple[str, str] | None]:
    """``exchange -> (endpoint, method)`` by the app's own URL map, or None (no route)."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = app.url_map.bind("localhost")

    def match(exchange: Exchange) -> tuple[str, str] | None:
        method = "GET" if exchange.method == "HEAD" else exchange.method
        try:
            endpoint, _ = adapter.match(unquote(exchange.path), method=method)
        except (HTTPException, RequestRedirect):
            return None
        return str(endpoint), method

    return match


# ---------------------------------------------------------------- type hints


def _hints(
    view: Callable[..., Any] | None, path_vars: set[str], evidence: Evidence
) -> tuple[Shape | None, Shape | None, tuple[str, ...]]:
    """(request body, response, notes) from the view's type hints, else from its schemas."""
    if view is None:
        return None, None, ()
    request, response, notes = _type_hints(view, path_vars)
    if evidence.schemas and (request is None or response is None):
        names = _namespace(view)
        if request is None:
            request = _schema_hint(evidence, "request", names, notes)
        if response is None:
            response = _schema_hint(evidence, "response", names, notes)
    return request, response, tuple(notes)


def _type_hints(
    view: Callable[..., Any], path_vars: set[str]
) -> tuple[Shape | None, Shape | None, list[str]]:
    target = inspect.unwrap(view)
    try:
        hints = typing.get_type_hints(target, include_extras=False)
    except Exception:  # noqa: BLE001 - unresolvable annotations are no hint at all
        return None, None, []
    notes = []
    response = _shape_of(hints.get("return"))
    if response is not None:
        notes.append(f"response shape from the type hint {_type_label(hints['return'])}")
    request = None
    for name, annotation in hints.items():
        if name in ("return", *path_vars):
            continue
        shape = _shape_of(annotation)
        if shape is not None and "object" in shape.kinds:
            request = shape
            notes.append(f"request body shape from the type hint {_type_label(annotation)}")
            break
    return request, response, notes


def _namespace(view: Callable[..., Any]) -> dict[str, Any]:
    """The names a view's source sees: its module's, its closure's, ``self`` for a class view."""
    view_class = getattr(view, "view_class", None)
    module = sys.modules.get(getattr(view_class or view, "__module__", "") or "")
    names = dict(vars(module)) if module is not None else {}
    if view_class is not None:
        names["self"] = view_class
    else:
        with contextlib.suppress(TypeError, ValueError):  # not a Python function
            names.update(inspect.getclosurevars(inspect.unwrap(view)).nonlocals)
    return names


def _schema_hint(
    evidence: Evidence, side: str, names: dict[str, Any], notes: list[str]
) -> Shape | None:
    """The shape of the first schema call on ``side`` whose receiver is a marshmallow schema."""
    for use in (u for u in evidence.schemas if u.side == side):
        found = schema_shape(_resolve(use.name, names), side=side, many=use.many)
        if found is not None:
            shape, label = found
            body = "request body" if side == "request" else "response"
            notes.append(f"{body} shape from the marshmallow schema {label}")
            return shape
    return None


def _resolve(dotted: str, names: dict[str, Any]) -> Any:
    """What ``a.b.c`` names, read without running code (no properties, no __getattr__)."""
    head, *attributes = dotted.split(".")
    value = names.get(head)
    for attribute in attributes:
        try:
            value = inspect.getattr_static(value, attribute)
        except AttributeError:
            return None
    return value


def _type_label(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _shape_of(annotation: Any, depth: int = 0) -> Shape | None:  # noqa: PLR0911 - one per kind
    """A :class:`Shape` standing for every value an annotation allows (None: not a JSON type)."""
    if annotation is None or depth > 20:
        return None
    if annotation is type(None):
        return observe(None)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        shapes = [_shape_of(a, depth + 1) for a in args]
        if any(s is None for s in shapes):
            return None
        merged = Shape()
        for shape in shapes:
            assert shape is not None
            merged = merge(merged, shape)
        return merged
    if origin in (list, tuple, set, frozenset) and args:
        inner = _shape_of(args[0], depth + 1)
        return None if inner is None else array_of(inner)
    if origin is dict and len(args) == 2:
        inner = _shape_of(args[1], depth + 1)
        return None if inner is None else map_of(inner)
    scalar = {bool: False, int: 0, float: 0.0, str: ""}
    if annotation in scalar:
        return observe(scalar[annotation])
    return _object_shape(annotation, depth)


def _object_shape(annotation: Any, depth: int) -> Shape | None:
    fields: list[tuple[str, Any, bool]] = []  # name, type, required
    model_fields = getattr(annotation, "model_fields", None)  # pydantic v2
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation)
        required = getattr(annotation, "__required_keys__", frozenset(hints))
        fields = [(n, t, n in required) for n, t in hints.items()]
    elif dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation)
        fields = [(f.name, hints.get(f.name), True) for f in dataclasses.fields(annotation)]
    elif isinstance(annotation, type) and isinstance(model_fields, dict):
        for name, info in model_fields.items():
            key = getattr(info, "alias", None) or name
            fields.append((key, info.annotation, bool(info.is_required())))
    else:
        return None
    return object_of(
        (name, _shape_of(field_type, depth + 1), req) for name, field_type, req in fields
    )

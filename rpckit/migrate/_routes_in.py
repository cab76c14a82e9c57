"""What ``scan`` knows about one legacy route before planning: plain data, no Flask.

:class:`LegacyRoute` is one Werkzeug rule with its view's evidence
(:class:`Evidence`, from reading the view's source) and type hints; the
Flask adapter (:mod:`rpckit.migrate._flask_app`) builds them, the planner
(:mod:`rpckit.migrate._plan`) consumes them.
"""

from __future__ import annotations

import dataclasses

from rpckit.migrate._infer import Shape

__all__ = ["AppFacts", "Evidence", "LegacyRoute", "PathVar", "SchemaUse"]


@dataclasses.dataclass(frozen=True)
class PathVar:
    """``<converter(args):name>`` of a rule; ``base`` is what the value is: int, float or string.

    ``converter`` is the name in the rule (``int``, ``path``, ``uuid``, a custom
    one); ``builtin`` is false for an app's own converter (its regex is not
    checked by the shim: a note says so).
    """

    name: str
    converter: str
    base: str
    builtin: bool = True
    args: str = ""


@dataclasses.dataclass(frozen=True)
class SchemaUse:
    """A view's ``NAME.load(...)`` (``side="request"``) or ``NAME.dump(...)`` (``"response"``).

    ``name`` is the receiver as written (``item_schema``, ``schemas.ITEM``,
    ``self.schema``, or ``ItemSchema`` for ``ItemSchema(many=True).dump(...)``);
    ``many`` is true when the call or the constructor says ``many=True``.
    Whether ``name`` is a (marshmallow) schema is for the Flask adapter to find out.
    """

    name: str
    side: str
    many: bool = False


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the view's source shows.

    ``json`` lists reasons to think it speaks JSON (``jsonify``, ``get_json``);
    ``blockers`` reasons it must stay on the fallback (``html: render_template``,
    ``form: request.form``...); ``query`` the query parameters it reads, with
    ``int``/``float``/``bool``/``string`` when ``type=`` says; ``statuses`` the
    literal success statuses it returns; ``schemas`` the schema-like
    ``load``/``dump`` calls it makes, in order.
    """

    json: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    statuses: tuple[int, ...] = ()
    reads_body: bool = False
    schemas: tuple[SchemaUse, ...] = ()


@dataclasses.dataclass(frozen=True)
class LegacyRoute:
    """One Werkzeug rule and what is known of its view."""

    rule: str
    endpoint: str
    blueprint: str | None
    methods: tuple[str, ...]
    variables: tuple[PathVar, ...]
    defaults: tuple[tuple[str, str], ...] = ()
    strict_slashes: bool = True
    view: str = ""
    source: str = ""
    evidence: Evidence = Evidence()
    request_hint: Shape | None = None
    response_hint: Shape | None = None
    hint_notes: tuple[str, ...] = ()
    host_or_subdomain: str = ""


@dataclasses.dataclass(frozen=True)
class AppFacts:
    """App-wide facts: its name, body limit, error handlers, strict slashes, converters."""

    name: str
    max_body_bytes: int | None = None
    error_handlers: tuple[str, ...] = ()
    custom_converters: tuple[str, ...] = ()

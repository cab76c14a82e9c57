"""What a generated project was made from: the answers, the names derived from them, the file.

``rpckit new order-service --package orders`` gives :class:`Answers`; every name a
template needs (distribution, Python package, proto package, service class, the
prefix of its environment variables) is derived here, once, by pure functions,
and each is checked so that a bad name fails before anything is written:

======================  =======================  ==========================
input                   derived                  example
======================  =======================  ==========================
NAME                    distribution name        ``order-service``
NAME or ``--package``   Python package           ``orders``
NAME                    proto file stem          ``order_service``
NAME                    gRPC service             ``OrderService``
Python package          proto package            ``orders.v1``
Python package          environment prefix       ``ORDERS_``
======================  =======================  ==========================

The answers file (``.rpckit/answers.toml``) records the answers and the
template version a project was last rendered with; ``rpckit new --update``
reads it back. It is written by :func:`answers_toml` (flat tables of strings,
integers and booleans; strings quoted as JSON, which TOML's basic strings
accept) and read with :mod:`tomllib`.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import keyword
import re
import sys
import tomllib
from collections.abc import Mapping

__all__ = [
    "ANSWERS_PATH",
    "Answers",
    "AnswersError",
    "Recorded",
    "answers_toml",
    "check_package",
    "derive_package",
    "parse_answers_toml",
    "rpckit_requirement",
]

#: Where a generated project keeps its answers (relative to the project root).
ANSWERS_PATH = ".rpckit/answers.toml"

#: Messages the template's proto declares; a service may not share their names.
_PROTO_MESSAGES = frozenset(
    {
        "Item",
        "GetItemRequest",
        "ListItemsRequest",
        "ListItemsResponse",
        "CreateItemRequest",
        "UpdateItemRequest",
        "DeleteItemRequest",
    }
)

#: Capitalised names the template's Python code defines or imports; the service class,
#: which lives beside them, may not take one (tests/unit/test_scaffold_answers.py keeps
#: this list complete).
_TEMPLATE_NAMES = frozenset(
    {
        "Any",
        "Callable",
        "CreateItem",
        "DEFAULT_TARGET",
        "DeleteItem",
        "ENV_PREFIX",
        "EXAMPLE_ITEMS",
        "GetItem",
        "HeldStore",
        "HttpServer",
        "ID_PATTERN",
        "InvalidFieldError",
        "ItemExistsError",
        "ItemNotFoundError",
        "ItemStore",
        "Iterable",
        "Iterator",
        "ListItems",
        "MAX_DESCRIPTION",
        "MAX_NAME",
        "Mapping",
        "Path",
        "ROOT",
        "RunningServer",
        "SERVICE_NAME",
        "SETTINGS",
        "Sequence",
        "Settings",
        "Shim",
        "Stub",
        "TARGET_VARIABLE",
        "UpdateItem",
        "WatchedStore",
    }
)

#: Top-level names a generated package would shadow or collide with: the project's own
#: folders and what it imports besides the standard library.
_TAKEN_PACKAGES = frozenset(
    {
        "cheroot",
        "deploy",
        "google",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "grpc_tools",
        "jinja2",
        "mypy",
        "prometheus_client",
        "protos",
        "pytest",
        "rpckit",
        "setuptools",
        "tests",
    }
)

#: Longest NAME and package: they go into Kubernetes names (63 characters at most, with a
#: suffix), environment variables, and code lines that must fit ruff's 100 columns.
MAX_NAME = 32

_SEPARATORS = re.compile(r"[-_.\s]+")
_PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
_VERSION = re.compile(r"\d[\w.+!-]*")
_REQUIREMENT = re.compile(r"rpckit\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<rest>.*)", re.IGNORECASE)
_SPECIFIER_STARTS = ("==", ">=", "<=", "~=", "!=", "<", ">", "@", ";")


class AnswersError(ValueError):
    """An answer that cannot make a project; the message says what to change."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answers:
    """The inputs of ``rpckit new``, normalised and checked.

    Attributes:
        name: the distribution name (PEP 503 normal form: lower case, ``-``).
        package: the Python package (and proto package root).
        http: serve the resource over HTTP/JSON too, through ``rpckit.http.Shim``.
        rpckit: the requirement on rpckit, without extras: ``rpckit==0.1.0`` or
            ``rpckit @ file:///src/rpckit``.
        rpckit_pinned: ``rpckit`` was chosen with ``--rpckit``; an update keeps it
            instead of moving it to the rpckit that runs the update.
        python: the Python the project runs on (``3.11``): its ``requires-python``
            and its container's base image. ``rpckit new`` records the one it runs on.
    """

    name: str
    package: str
    http: bool = True
    rpckit: str
    rpckit_pinned: bool = False
    python: str

    def __post_init__(self) -> None:
        stem_ok = _PACKAGE.fullmatch(self.proto_stem) and len(self.name) <= MAX_NAME
        if _normal_name(self.name) != self.name or not stem_ok:
            raise AnswersError(f"name {self.name!r} is not a normalised NAME (e.g. order-service)")
        check_package(self.package)
        if not _REQUIREMENT.fullmatch(self.rpckit) or "[" in self.rpckit:
            raise AnswersError(f"rpckit requirement {self.rpckit!r} is not rpckit<spec>")
        if not re.fullmatch(r"3\.\d+", self.python):
            raise AnswersError(f"python {self.python!r} is not a Python 3 version like 3.11")

    @classmethod
    def from_inputs(
        cls, name: str, *, package: str | None = None, http: bool = True, rpckit: str, python: str
    ) -> Answers:
        """Normalise the command line's inputs; AnswersError says which one is wrong."""
        normal = _normal_name(name)
        if not _PACKAGE.fullmatch(normal.replace("-", "_")):
            raise AnswersError(
                f"NAME {name!r} gives {normal.replace('-', '_')!r}, not an identifier: start "
                "with a letter, then ASCII letters, digits, '-' or '_' (e.g. order-service)"
            )
        if len(normal) > MAX_NAME:
            raise AnswersError(
                f"NAME {name!r} is {len(normal)} characters long; at most {MAX_NAME}, please"
            )
        chosen = derive_package(package if package is not None else name)
        try:
            check_package(chosen)
        except AnswersError as exc:
            hint = "" if package is not None else "; pass --package with another name"
            raise AnswersError(f"{exc}{hint}") from None
        return cls(name=normal, package=chosen, http=http, rpckit=rpckit, python=python)

    # ---------------------------------------------------------------- derived names

    @property
    def proto_stem(self) -> str:
        """``order_service``: the .proto file's name and its generated modules' prefix."""
        return self.name.replace("-", "_")

    @property
    def proto_package(self) -> str:
        return f"{self.package}.v1"

    @property
    def service(self) -> str:
        """``OrderService``; ``ItemService`` where the plain name is taken.

        Taken: the proto's messages, names the template's code uses beside the
        servicer class, Python's keywords (``True``) and builtins (``KeyError``).
        """
        camel = "".join(part[:1].upper() + part[1:] for part in self.name.split("-"))
        taken = camel in _PROTO_MESSAGES or camel in _TEMPLATE_NAMES
        if taken or keyword.iskeyword(camel) or hasattr(builtins, camel):
            return f"{camel}Service"
        return camel

    @property
    def env_prefix(self) -> str:
        return f"{self.package.upper()}_"


def _normal_name(name: str) -> str:
    return _SEPARATORS.sub("-", name.strip()).strip("-").lower()


def derive_package(name: str) -> str:
    """``Order-Service`` -> ``order_service``: lower case, separators to ``_``."""
    return _SEPARATORS.sub("_", name.strip()).strip("_").lower()


def check_package(package: str) -> None:
    """AnswersError unless ``package`` is a fresh lower-case ASCII identifier."""
    if not _PACKAGE.fullmatch(package):
        raise AnswersError(
            f"{package!r} is not a Python package name: start with a letter, then letters, "
            "digits or '_' (ASCII)"
        )
    if len(package) > MAX_NAME:
        raise AnswersError(f"package {package!r} is longer than {MAX_NAME} characters")
    if keyword.iskeyword(package):
        raise AnswersError(f"{package!r} is a Python keyword, not a package name")
    if package in sys.stdlib_module_names:
        raise AnswersError(f"package {package!r} would shadow the standard library's {package}")
    if package in _TAKEN_PACKAGES:
        raise AnswersError(f"package {package!r} would shadow {package}, which the project uses")


def rpckit_requirement(spec: str) -> str:
    """``--rpckit SPEC`` as a requirement without extras; AnswersError if it is none.

    SPEC is a version (``0.2.0``), a requirement (``rpckit>=0.1,<0.2``,
    ``rpckit @ https://...``) or a ``file://`` URL; a directory is turned into a
    ``file://`` URL by the caller, which can look at the disk.
    """
    text = spec.strip()
    if _VERSION.fullmatch(text):
        return f"rpckit=={text}"
    if text.startswith("file://"):
        return f"rpckit @ {text}"
    found = _REQUIREMENT.fullmatch(text)
    rest = found["rest"].strip() if found else ""
    usable = found is not None and found["extras"] is None
    if not usable or (rest and not rest.startswith(_SPECIFIER_STARTS)):
        raise AnswersError(
            f"--rpckit {spec!r}: give a version (0.1.0), a requirement (rpckit>=0.1) or the "
            "path of an rpckit checkout"
        )
    if rest.startswith("@"):
        return f"rpckit @ {rest[1:].strip()}"
    return f"rpckit{rest}"


# ---------------------------------------------------------------- the answers file


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recorded:
    """The answers file: the answers, and the template that last rendered the project."""

    answers: Answers
    template_version: int
    template_source: str
    rendered_by: str


def answers_toml(recorded: Recorded) -> str:
    """The text of ``.rpckit/answers.toml``."""
    answers = recorded.answers
    tables: dict[str, Mapping[str, str | int | bool]] = {
        "template": {
            "source": recorded.template_source,
            "version": recorded.template_version,
            "rendered_by": recorded.rendered_by,
        },
        "answers": {
            "name": answers.name,
            "package": answers.package,
            "http": answers.http,
            "rpckit": answers.rpckit,
            "rpckit_pinned": answers.rpckit_pinned,
            "python": answers.python,
        },
    }
    lines = [
        "# Written by `rpckit new`; `rpckit new --update` reads it. The files as they were last",
        "# generated, the base of the three-way merge an update makes, are in .rpckit/base/.",
        "# Keep both under version control.",
    ]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def parse_answers_toml(text: str) -> Recorded:
    """Read an answers file; AnswersError names what is missing or wrong."""
    try:
        data = tomllib.loads(text)
        template, given = data["template"], data["answers"]
        answers = Answers(
            name=str(given["name"]),
            package=str(given["package"]),
            http=bool(given["http"]),
            rpckit=str(given["rpckit"]),
            rpckit_pinned=bool(given.get("rpckit_pinned", False)),
            python=str(given["python"]),
        )
        version = template["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise AnswersError(f"template.version must be an integer, got {version!r}")
        return Recorded(
            answers=answers,
            template_version=version,
            template_source=str(template["source"]),
            rendered_by=str(template.get("rendered_by", "")),
        )
    except tomllib.TOMLDecodeError as exc:
        raise AnswersError(f"not valid TOML: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise AnswersError(f"lacks {exc}") from None

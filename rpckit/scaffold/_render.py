"""Rendering: a template and the answers -> every file of the project, in memory.

Pure: :func:`render` takes a :class:`~rpckit.scaffold._template.TemplateSource`
and a context (plain values) and returns ``{path: RenderedFile}``; nothing is
read or written. :func:`context` builds that context from the
:class:`~rpckit.scaffold._answers.Answers` and the :class:`Facts` of the rpckit
doing the rendering (its version, its drain and grace defaults), which the
caller gathers.

The engine is Jinja2, with ``StrictUndefined`` (a misspelt variable is an
error, not an empty string) and block tags that leave no blank lines behind.
Jinja2 rather than Copier: Copier's updates re-render the old version from a
git checkout of the template (a template shipped as package data has none) and
bring back files the user deleted (Copier issue #1718); its answers files and
updates are the part rpckit needs, and they are small
(:mod:`rpckit.scaffold._update`, :mod:`rpckit.scaffold._merge`). Jinja2 is one
small dependency (with MarkupSafe), behind the ``rpckit[new]`` extra.
"""

from __future__ import annotations

import dataclasses
import posixpath
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from rpckit.scaffold._answers import Answers
from rpckit.scaffold._template import SUFFIX, TemplateError, TemplateSource

__all__ = ["Facts", "RenderedFile", "context", "render", "with_extras"]

#: Rendered paths under this folder belong to rpckit (the answers, the merge base).
RESERVED_FOLDER = ".rpckit"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
    """What the rendering rpckit brings: its version and its serving defaults.

    ``drain_s`` and ``grace_s`` are ``rpckit.ServerConfig``'s defaults; the
    template writes them into the serve command and sizes the Kubernetes
    termination grace period and preStop hook from them.
    """

    rpckit_version: str
    drain_s: float
    grace_s: float


@dataclasses.dataclass(frozen=True)
class RenderedFile:
    text: str
    executable: bool = False


def with_extras(requirement: str, extras: tuple[str, ...]) -> str:
    """``rpckit==0.1.0`` + ``("http",)`` -> ``rpckit[http]==0.1.0`` (URLs and bare names too)."""
    if not extras:
        return requirement
    name, rest = requirement[: len("rpckit")], requirement[len("rpckit") :]
    return f"{name}[{','.join(extras)}]{rest}"


def context(answers: Answers, facts: Facts, *, template_version: int) -> dict[str, Any]:
    """The variables a template sees."""
    runtime_extras = ("http", "metrics") if answers.http else ("metrics",)
    return {
        "name": answers.name,
        "package": answers.package,
        "proto_stem": answers.proto_stem,
        "proto_package": answers.proto_package,
        "service": answers.service,
        "env_prefix": answers.env_prefix,
        "http": answers.http,
        "rpckit_dependency": with_extras(answers.rpckit, runtime_extras),
        "rpckit_dev_dependency": with_extras(answers.rpckit, ("new",)),
        "rpckit_version": facts.rpckit_version,
        "python_version": answers.python,
        "drain_s": facts.drain_s,
        "grace_s": facts.grace_s,
        "template_version": template_version,
    }


def render(template: TemplateSource, variables: Mapping[str, Any]) -> dict[str, RenderedFile]:
    """Render every file of ``template`` whose condition holds; TemplateError names the file."""
    jinja2 = _jinja2()
    files = dict(template.files)

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        # Naming each template after its path puts that path in tracebacks (error lines).
        return (files[name], name, lambda: True) if name in files else None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # renders code and config files, never HTML
    )
    rendered: dict[str, RenderedFile] = {}
    for source in sorted(template.files):
        if source in template.partials:
            continue
        condition = template.when.get(source)
        if condition is not None:
            if condition not in variables:
                raise TemplateError(f"{source}: its condition {condition!r} is not an answer")
            if not variables[condition]:
                continue
        try:
            path = env.from_string(source).render(variables)[: -len(SUFFIX)]
            text = env.get_template(source).render(variables)
        except jinja2.TemplateError as exc:
            raise TemplateError(
                f"{_where(exc, files, source)}: {exc.message or type(exc).__name__}"
            ) from None
        _check_path(source, path)
        if path in rendered:
            raise TemplateError(f"{source}: renders to {path!r}, as another template file does")
        rendered[path] = RenderedFile(text=text, executable=source in template.executable)
    return rendered


def _where(exc: Exception, files: Mapping[str, str], source: str) -> str:
    """``file:line`` of a template error: syntax errors carry it, runtime errors' tracebacks do."""
    name, line = getattr(exc, "name", None), getattr(exc, "lineno", None)
    if name is None or line is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in files]
        if not frames:
            return str(name or source)
        name, line = frames[-1].filename, frames[-1].lineno
    return f"{name}:{line}"


def _check_path(source: str, path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or posixpath.isabs(path)
        or "\\" in path
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] == RESERVED_FOLDER
    ):
        raise TemplateError(f"{source}: renders to {path!r}, not a path inside the project")


def _jinja2() -> Any:
    try:
        import jinja2
    except ImportError:
        raise TemplateError(
            "rpckit new needs Jinja2 and mypy-protobuf: pip install 'rpckit[new]'"
        ) from None
    return jinja2

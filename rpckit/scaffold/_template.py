"""A template: files with Jinja2 in their text and paths, and the manifest that versions them.

A template is a directory::

    template.toml                      version, executables, conditional files
    pyproject.toml.jinja               rendered to pyproject.toml
    {{package}}/service.py.jinja       the path is rendered too: orders/service.py
    .ci/run.jinja

``template.toml``::

    version = 1                        # bumped whenever a rendered file changes
    executable = [".ci/run.jinja"]     # rendered with mode 0755
    partials = ["_service.jinja"]      # imported by other files, not rendered on their own
    [when]                             # rendered only when the answer is true
    http = ["tests/test_http.py.jinja"]

Every template file ends in ``.jinja`` (dropped when rendered), so no tool
reading rpckit's own tree mistakes a template for code. rpckit's own template
ships as package data (``rpckit/scaffold/templates/service``); ``rpckit new
--template DIR`` renders another one. :func:`load_template` is the only I/O
here; :class:`TemplateSource` is plain data, so rendering can be tested on
templates built in memory.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = [
    "BUILTIN_SOURCE",
    "MANIFEST",
    "SUFFIX",
    "TemplateError",
    "TemplateSource",
    "builtin_template",
    "load_template",
    "parse_manifest",
]

MANIFEST = "template.toml"
SUFFIX = ".jinja"
#: How the answers file names rpckit's own template.
BUILTIN_SOURCE = "rpckit"


class TemplateError(Exception):
    """A template that cannot be read or rendered; the message names the file."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TemplateSource:
    """A template in memory: its version and its files' sources by template path."""

    version: int
    files: Mapping[str, str]
    executable: frozenset[str] = frozenset()
    partials: frozenset[str] = frozenset()
    when: Mapping[str, str] = dataclasses.field(default_factory=dict)  # template path -> answer

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise TemplateError(
                f"{MANIFEST}: version must be an integer >= 1, got {self.version!r}"
            )
        for path in (*self.executable, *self.partials, *self.when):
            if path not in self.files:
                raise TemplateError(f"{MANIFEST} names {path!r}, which the template lacks")
        for path in self.files:
            if not path.endswith(SUFFIX):
                raise TemplateError(f"{path}: template files end in {SUFFIX}")


def parse_manifest(text: str, files: Mapping[str, str]) -> TemplateSource:
    """``template.toml``'s text plus the files -> a TemplateSource."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{MANIFEST}: {exc}") from None
    if "version" not in data:
        raise TemplateError(f"{MANIFEST} lacks version = N")
    when: dict[str, str] = {}
    for answer, paths in data.get("when", {}).items():
        when.update((str(path), str(answer)) for path in paths)
    return TemplateSource(
        version=data["version"],
        files=dict(files),
        executable=frozenset(str(p) for p in data.get("executable", [])),
        partials=frozenset(str(p) for p in data.get("partials", [])),
        when=when,
    )


def builtin_template() -> Traversable:
    """rpckit's own service template (package data)."""
    return importlib.resources.files("rpckit.scaffold").joinpath("templates", "service")


def load_template(root: Traversable | Path) -> TemplateSource:
    """Read a template directory (a folder on disk or package data)."""
    manifest = root.joinpath(MANIFEST)
    if not manifest.is_file():
        raise TemplateError(f"{root}: no {MANIFEST}; is this a template directory?")
    files: dict[str, str] = {}
    pending: list[tuple[str, Traversable | Path]] = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            rel = f"{prefix}{entry.name}"
            if entry.is_dir():
                if entry.name != "__pycache__":
                    pending.append((f"{rel}/", entry))
            elif rel != MANIFEST:
                try:
                    files[rel] = entry.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise TemplateError(f"{rel}: cannot read it: {exc}") from None
    return parse_manifest(manifest.read_text(encoding="utf-8"), files)

"""The disk side of ``rpckit new``: create a project atomically, read one back, apply an update.

A new project is written into a staging folder beside its target, code is
generated there (``rpckit gen``), and only then is the folder renamed into
place: a failure at any step leaves nothing behind. The project also gets
``.rpckit/answers.toml`` and ``.rpckit/base/`` (the files as generated, the
merge base of later updates).

User files are read and written with ``surrogateescape``, so a file that is
not UTF-8 goes through a merge byte for byte instead of failing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

from rpckit.scaffold._answers import ANSWERS_PATH, Recorded, answers_toml
from rpckit.scaffold._render import RESERVED_FOLDER, RenderedFile
from rpckit.scaffold._update import Outcome, UpdatePlan

__all__ = [
    "BASE_FOLDER",
    "ScaffoldError",
    "apply_update",
    "check_target",
    "create_project",
    "generate_code",
    "read_base",
    "read_texts",
]

#: The files as last generated, relative to the project root.
BASE_FOLDER = f"{RESERVED_FOLDER}/base"
_ERRORS = "surrogateescape"


class ScaffoldError(Exception):
    """The project cannot be created or updated as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Created:
    root: Path
    files: tuple[str, ...]
    generated: tuple[str, ...]


def check_target(target: Path) -> Path:
    """The folder a new project can be created in (absolute); ScaffoldError says why not."""
    target = Path(os.path.abspath(target))
    _check_target(target)
    ancestor = _existing_ancestor(target)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ScaffoldError(f"cannot write in {ancestor}: Permission denied")
    return target


def create_project(target: Path, files: Mapping[str, RenderedFile], recorded: Recorded) -> Created:
    """Write a new project at ``target`` (absent or an empty folder), or nothing at all."""
    target = check_target(target)
    ancestor = _existing_ancestor(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.rpckit-", dir=ancestor))
    except OSError as exc:
        raise ScaffoldError(f"cannot write in {ancestor}: {exc.strerror or exc}") from None
    made: list[Path] = []
    try:
        _write_tree(staging, files)
        _write_tree(staging / BASE_FOLDER, files)
        _write_text(staging / ANSWERS_PATH, answers_toml(recorded))
        generated = generate_code(staging)
        staging.chmod(_folder_mode(target))
        for parent in reversed(target.parents):
            if not parent.exists():
                parent.mkdir()
                made.append(parent)
        os.rename(staging, target)
    except OSError as exc:
        _discard(staging, made)
        raise ScaffoldError(f"cannot create {target}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(staging, made)
        raise
    return Created(root=target, files=tuple(sorted(files)), generated=tuple(generated))


def _check_target(target: Path) -> None:
    if target.is_symlink() and not target.exists():
        raise ScaffoldError(
            f"{target} is a broken symbolic link; remove it or choose another --path"
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a folder; choose another --path")
    try:
        entries = next(target.iterdir(), None)
    except OSError as exc:
        raise ScaffoldError(f"cannot read {target}: {exc.strerror or exc}") from None
    if entries is not None:
        raise ScaffoldError(
            f"{target} exists and is not empty; choose another --path, or run "
            "'rpckit new --update' there if rpckit generated it"
        )


def _existing_ancestor(target: Path) -> Path:
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                raise ScaffoldError(f"{folder} is not a folder, so {target} cannot be made")
            return folder
    raise ScaffoldError(f"no folder of {target} exists")  # pragma: no cover - / always exists


def _folder_mode(target: Path) -> int:
    if target.is_dir():
        return target.stat().st_mode & 0o7777
    return 0o777 & ~_umask()


def _discard(staging: Path, made: list[Path]) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _write_tree(root: Path, files: Mapping[str, RenderedFile]) -> None:
    for rel, rendered in files.items():
        _write_text(root / rel, rendered.text, executable=rendered.executable)


def _write_text(path: Path, text: str, *, executable: bool = False) -> None:
    """Write ``text`` to ``path`` by a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors=_ERRORS, newline="") as out:
            out.write(text)
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.chmod(scratch, mode | (0o111 & ~_umask() if executable else 0))
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def generate_code(root: Path) -> list[str]:
    """``rpckit gen`` for the project at ``root``; the paths it wrote, relative to ``root``.

    A project whose pyproject.toml has no ``[[tool.rpckit.gen]]`` (another
    template's) has nothing to generate.
    """
    from rpckit.codegen import _gen as _codegen

    pyproject = root / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScaffoldError(f"cannot read {pyproject}: {exc}") from None
    if not data.get("tool", {}).get("rpckit", {}).get("gen"):
        return []
    written: list[str] = []
    try:
        for target in _codegen.load_targets(pyproject):
            written += _codegen.apply(root, target, _codegen.render(root, target))
    except _codegen.GenError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "failed"
        raise ScaffoldError(f"rpckit gen: {first}") from None
    return written


# ---------------------------------------------------------------- updates


def read_texts(root: Path, paths: set[str] | frozenset[str]) -> dict[str, str]:
    """The project's files among ``paths`` that exist, as text."""
    texts = {}
    for rel in paths:
        path = root / rel
        if path.is_file():
            texts[rel] = _read_text(path)
    return texts


def read_base(root: Path) -> dict[str, str]:
    """``.rpckit/base/``: the files as last generated."""
    base = root / BASE_FOLDER
    if not base.is_dir():
        raise ScaffoldError(
            f"{base} is missing: it holds the files as generated, the base of the merge; "
            "restore it from version control"
        )
    return {str(p.relative_to(base).as_posix()): _read_text(p) for p in _files_under(base)}


def _files_under(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors=_ERRORS, newline="") as src:
            text = src.read()
    except OSError as exc:
        raise ScaffoldError(f"cannot read {path}: {exc.strerror or exc}") from None
    return text


def apply_update(
    root: Path, plan: UpdatePlan, theirs: Mapping[str, RenderedFile], recorded: Recorded
) -> None:
    """Write the plan's files, then the new merge base and answers.

    The new base is written beside the old one first, so a folder that cannot
    be written fails before any of the user's files is touched.
    """
    fresh = root / f"{BASE_FOLDER}.new"
    try:
        shutil.rmtree(fresh, ignore_errors=True)
        _write_tree(fresh, theirs)
        for change in plan.changes:
            path = root / change.path
            if change.outcome is Outcome.REMOVED:
                path.unlink(missing_ok=True)
            elif change.text is not None:
                executable = change.outcome is Outcome.CREATED and theirs[change.path].executable
                _write_text(path, change.text, executable=executable)
        old = root / f"{BASE_FOLDER}.old"
        shutil.rmtree(old, ignore_errors=True)
        (root / BASE_FOLDER).rename(old)
        fresh.rename(root / BASE_FOLDER)
        shutil.rmtree(old, ignore_errors=True)
        _write_text(root / ANSWERS_PATH, answers_toml(recorded))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise ScaffoldError(f"cannot write{where}: {exc.strerror or exc}") from None

"""Wheels rebuilt from the distributions installed in the test's own venv, for offline installs.

A test that installs into a *fresh* virtual environment needs something to
install from, and the tests run without a network. pip cannot export what it
installed, so :func:`repack` does what ``wheel pack`` does for an unpacked
wheel: the files a distribution's RECORD lists, zipped with its ``.dist-info``
under the name and tag its WHEEL file gives, with a new RECORD. Console
scripts are left out (pip writes them again from ``entry_points.txt`` for the
new venv's interpreter); other files in ``bin/`` (ruff's binary) go to the
wheel's ``.data/scripts``. :func:`closure` finds every installed distribution
some requirements need, extras and markers evaluated, and checks the installed
versions satisfy them. A ``pip install --no-index --find-links`` from the result
then resolves and installs for real, into the new venv, offline.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

__all__ = [
    "closure",
    "copy_checkout",
    "offline_env",
    "repack",
    "requirements",
    "run",
    "wheelhouse",
]

ROOT = Path(__file__).resolve().parents[2]

#: Written by the installer, not part of a wheel.
_INSTALL_RECORDS = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def closure(
    requirements: Iterable[str], *, skip: Iterable[str] = ()
) -> dict[str, importlib.metadata.Distribution]:
    """Installed distributions ``requirements`` need, transitively, by canonical name."""
    skipped = {canonicalize_name(name) for name in skip}
    found: dict[str, importlib.metadata.Distribution] = {}
    done: dict[str, set[str]] = {}  # name -> extras whose requirements were followed
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in skipped:
            continue
        try:
            dist = found.get(name) or importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{requirement} is not installed in {sys.prefix}") from None
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise AssertionError(f"{requirement}: {sys.prefix} has {name} {dist.version}")
        found[name] = dist
        extras = {""} | set(requirement.extras)
        new = extras - done.setdefault(name, set())
        if not new:
            continue
        done[name] |= new
        for text in dist.requires or ():
            needed = Requirement(text)
            marker = needed.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in new):
                pending.append(needed)
    return found


def wheelhouse(dists: Iterable[importlib.metadata.Distribution], folder: Path) -> list[Path]:
    """Repack each distribution into ``folder`` (once: an existing wheel is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [repack(dist, folder) for dist in dists]


def repack(dist: importlib.metadata.Distribution, folder: Path) -> Path:
    """A wheel of an installed distribution, written into ``folder``."""
    files = dist.files
    if files is None:
        raise AssertionError(f"{dist.metadata['Name']} has no RECORD; it cannot be repacked")
    info_dir = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    tag = _tag(dist)
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    wheel = folder / f"{name}-{dist.version}-{tag}.whl"
    if wheel.exists():
        return wheel
    site = Path(str(dist.locate_file("")))
    scripts = {
        ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")
    }
    data = f"{name}-{dist.version}.data"
    record: list[str] = []
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for entry in files:
            if "__pycache__" in entry.parts or entry.suffix == ".pyc":
                continue
            if entry.parts[0] == info_dir and entry.name in _INSTALL_RECORDS:
                continue
            source = Path(str(dist.locate_file(entry)))
            arcname = entry.as_posix()
            if arcname.startswith("../"):
                outside = Path(os.path.normpath(site / entry)).relative_to(sys.prefix)
                if outside.parts[0] == "bin":
                    if outside.name in scripts:
                        continue  # pip writes console scripts for the new interpreter
                    arcname = f"{data}/scripts/{outside.name}"
                else:
                    arcname = f"{data}/data/{outside.as_posix()}"
            if not source.is_file():
                continue
            content = source.read_bytes()
            if arcname.startswith(f"{data}/scripts/"):
                content = _portable_shebang(content)
            member = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            member.external_attr = (source.stat().st_mode & 0xFFFF) << 16
            out.writestr(member, content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            record.append(f"{arcname},sha256={digest.decode()},{len(content)}")
        record.append(f"{info_dir}/RECORD,,")
        out.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    partial.replace(wheel)
    return wheel


def _tag(dist: importlib.metadata.Distribution) -> str:
    """The first of the wheel's tags this interpreter supports (``py3-none-any``...)."""
    wheel_file = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")
    ]
    supported = {str(tag) for tag in sys_tags()}
    for tag in tags:
        if tag in supported:
            return tag
    raise AssertionError(f"{dist.metadata['Name']}: no tag of {tags} fits this interpreter")


def _portable_shebang(script: bytes) -> bytes:
    """A script's ``#!/path/to/this/venv/python`` -> ``#!python``, which pip fills in."""
    first, newline, rest = script.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return b"#!python" + newline + rest
    return script


def offline_env(wheels: Path) -> dict[str, str]:
    """This environment without pip's settings; pip reads only the wheelhouse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_COMPILE="1",
        PIP_QUIET="1",
    )
    return env


def run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    """Run ``argv``; its stdout, or an assertion error with both outputs."""
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_checkout(destination: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored), copied: a build writes
    nothing into the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def requirements(pyproject: Path, *extras: str) -> list[str]:
    """A pyproject's dependencies, with those of ``extras``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]

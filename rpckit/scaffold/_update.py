"""Updating a generated project: what happens to each file, decided without touching the disk.

Three versions of the project meet, each as ``{path: text}``:

* **base** -- the files as rpckit last generated them (``.rpckit/base/``);
* **ours** -- the files in the project now (the user's);
* **theirs** -- the files the current template renders from the same answers.

:func:`plan_update` decides each path (table below); the writer carries the
plan out. A file's text is merged with :func:`~rpckit.scaffold._merge.merge3`.

================  ================  ==============  ===========================
base              ours              theirs          outcome
================  ================  ==============  ===========================
present           absent            present         KEPT_DELETED: deleted stays deleted
present           absent            absent          UNCHANGED: both dropped it
present           = base            present         UPDATED to theirs (or UNCHANGED)
present           edited            present         MERGED, or CONFLICT (markers)
present           = base            absent          REMOVED (the template dropped it)
present           edited            absent          KEPT_EDITED, counted as a conflict
absent            absent            present         CREATED
absent            present           present         UNCHANGED if equal, else a merge
                                                    against an empty base (CONFLICT)
================  ================  ==============  ===========================
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from rpckit.scaffold._merge import Labels, conflict_marker_lines, merge3

__all__ = ["FileUpdate", "Outcome", "UpdatePlan", "plan_update", "unresolved_conflicts"]


class Outcome(enum.Enum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    MERGED = "merged"
    CONFLICT = "conflict"
    REMOVED = "removed"
    KEPT_DELETED = "kept deleted"
    KEPT_EDITED = "kept edited"


#: Outcomes the user has to look at; an update with any of them exits 1.
NEEDS_ATTENTION = frozenset({Outcome.CONFLICT, Outcome.KEPT_EDITED})


@dataclasses.dataclass(frozen=True)
class FileUpdate:
    """One path's outcome; ``text`` is what to write (None: leave the file as it is, or remove)."""

    path: str
    outcome: Outcome
    text: str | None = None
    conflicts: int = 0
    note: str = ""


@dataclasses.dataclass(frozen=True)
class UpdatePlan:
    files: tuple[FileUpdate, ...]

    @property
    def changes(self) -> tuple[FileUpdate, ...]:
        """The updates that touch the disk (write or remove a file)."""
        return tuple(f for f in self.files if f.text is not None or f.outcome is Outcome.REMOVED)

    @property
    def attention(self) -> tuple[FileUpdate, ...]:
        return tuple(f for f in self.files if f.outcome in NEEDS_ATTENTION)

    def of(self, path: str) -> FileUpdate:
        return next(f for f in self.files if f.path == path)


def plan_update(
    base: Mapping[str, str],
    ours: Mapping[str, str],
    theirs: Mapping[str, str],
    *,
    labels: Labels,
) -> UpdatePlan:
    """Decide every path of ``base`` and ``theirs`` (see the module's table)."""
    files = [
        _decide(path, base.get(path), ours.get(path), theirs.get(path), labels)
        for path in sorted(set(base) | set(theirs))
    ]
    return UpdatePlan(tuple(files))


def _decide(  # noqa: PLR0911 - one return per row of the module docstring's table
    path: str, base: str | None, ours: str | None, theirs: str | None, labels: Labels
) -> FileUpdate:
    if ours is None and theirs is None:
        return FileUpdate(path, Outcome.UNCHANGED)  # both dropped it
    if base is not None and ours is None:
        note = "" if theirs == base else "the template changed it; its new text is in .rpckit/base"
        return FileUpdate(path, Outcome.KEPT_DELETED, note=note)
    if theirs is None:
        if ours is None or base is None:
            return FileUpdate(path, Outcome.UNCHANGED)  # not the template's
        if ours == base:
            return FileUpdate(path, Outcome.REMOVED, note="the template no longer has it")
        return FileUpdate(
            path,
            Outcome.KEPT_EDITED,
            note="the template no longer has it and you changed it: kept; remove it if unused",
        )
    if ours is None:
        return FileUpdate(path, Outcome.CREATED, text=theirs)
    if ours == theirs:
        return FileUpdate(path, Outcome.UNCHANGED)
    if ours == base:
        return FileUpdate(path, Outcome.UPDATED, text=theirs)
    if theirs == base:
        return FileUpdate(path, Outcome.UNCHANGED, note="your changes; the template's did not")
    merged = merge3(base or "", ours, theirs, labels=labels)
    if merged.conflicts:
        return FileUpdate(path, Outcome.CONFLICT, text=merged.text, conflicts=merged.conflicts)
    return FileUpdate(path, Outcome.MERGED, text=merged.text)


def unresolved_conflicts(ours: Mapping[str, str], labels: Labels) -> dict[str, list[int]]:
    """Files that still hold conflict markers from an update (path -> opening line numbers)."""
    found = {path: conflict_marker_lines(text, labels) for path, text in ours.items()}
    return {path: lines for path, lines in sorted(found.items()) if lines}

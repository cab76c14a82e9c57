"""Three-way merge of two edits of one text, line by line (diff3), as a pure function.

``merge3(base, ours, theirs)`` is what ``git merge-file`` and ``diff3 -m`` do:
``base`` is the text both sides started from (the file as last generated),
``ours`` the user's version, ``theirs`` the template's new version. Lines are
aligned to the base on each side (:class:`difflib.SequenceMatcher`, without
its junk heuristic, which would skip blank and repeated lines); a base line
matched on *both* sides is a sync point, and the text splits into chunks
between sync points:

* both sides kept the chunk as in the base: it stays;
* one side changed it: that side's version wins (a template change lands, a
  user change stays);
* both changed it the same way: once;
* both changed it differently: a conflict, written between markers::

      <<<<<<< yours
      the user's lines
      ||||||| template 1 (as generated)
      the base lines
      =======
      the template's new lines
      >>>>>>> template 2

Changes next to each other with no unchanged line between them are one chunk,
so they conflict (as in git). The chunking is exact: joining each chunk's
base, ours or theirs lines gives back the inputs, which the tests check on
random texts. Pure Python, no I/O, so it runs where git does not.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Sequence

__all__ = ["Chunk", "ChunkKind", "Labels", "Merge", "conflict_marker_lines", "merge3"]


class ChunkKind(enum.Enum):
    """What happened to a stretch of the base."""

    SAME = "same"  # neither side changed it
    OURS = "ours"  # only the user changed it
    THEIRS = "theirs"  # only the template changed it
    BOTH = "both"  # both changed it, identically
    CONFLICT = "conflict"  # both changed it, differently


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One stretch: the base's lines and each side's lines for it (each line with its end)."""

    base: tuple[str, ...]
    ours: tuple[str, ...]
    theirs: tuple[str, ...]

    @property
    def kind(self) -> ChunkKind:
        if self.ours == self.theirs:
            return ChunkKind.SAME if self.ours == self.base else ChunkKind.BOTH
        if self.ours == self.base:
            return ChunkKind.THEIRS
        if self.theirs == self.base:
            return ChunkKind.OURS
        return ChunkKind.CONFLICT


@dataclasses.dataclass(frozen=True, kw_only=True)
class Labels:
    """The names on the conflict markers."""

    ours: str = "yours"
    base: str = "base"
    theirs: str = "theirs"


@dataclasses.dataclass(frozen=True)
class Merge:
    """The merged text, how many conflicts it marks, and the chunks it was made of."""

    text: str
    conflicts: int
    chunks: tuple[Chunk, ...]


def merge3(base: str, ours: str, theirs: str, *, labels: Labels | None = None) -> Merge:
    """Merge ``ours`` and ``theirs``, two edits of ``base``; conflicts get markers."""
    labels = labels or Labels()
    chunks = _chunks(_lines(base), _lines(ours), _lines(theirs))
    out: list[str] = []
    conflicts = 0
    for chunk in chunks:
        kind = chunk.kind
        if kind is ChunkKind.CONFLICT:
            conflicts += 1
            out += _conflict(chunk, labels)
        else:
            out += chunk.theirs if kind is ChunkKind.THEIRS else chunk.ours
    return Merge(text="".join(out), conflicts=conflicts, chunks=tuple(chunks))


def conflict_marker_lines(text: str, labels: Labels) -> list[int]:
    """1-based numbers of the lines that open a conflict written with ``labels``."""
    opening = f"<<<<<<< {labels.ours}"
    return [n for n, line in enumerate(text.splitlines(), 1) if line == opening]


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _conflict(chunk: Chunk, labels: Labels) -> list[str]:
    return [
        f"<<<<<<< {labels.ours}\n",
        *_terminated(chunk.ours),
        f"||||||| {labels.base}\n",
        *_terminated(chunk.base),
        "=======\n",
        *_terminated(chunk.theirs),
        f">>>>>>> {labels.theirs}\n",
    ]


def _terminated(lines: Sequence[str]) -> list[str]:
    """The lines, the last one ended so that a marker can follow it on a line of its own."""
    if lines and not lines[-1].endswith(("\n", "\r")):
        return [*lines[:-1], lines[-1] + "\n"]
    return list(lines)


def _matches(base: Sequence[str], other: Sequence[str]) -> dict[int, int]:
    """Base line index -> index of the line it is aligned with in ``other``."""
    matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
    aligned: dict[int, int] = {}
    for at_base, at_other, size in matcher.get_matching_blocks():
        aligned.update((at_base + k, at_other + k) for k in range(size))
    return aligned


def _chunks(base: list[str], ours: list[str], theirs: list[str]) -> list[Chunk]:
    """Split the three texts at the base lines both sides kept (diff3's sync points)."""
    in_ours, in_theirs = _matches(base, ours), _matches(base, theirs)
    chunks: list[Chunk] = []
    i = a = b = 0  # positions in base, ours, theirs
    while i < len(base) or a < len(ours) or b < len(theirs):
        run = 0  # base lines from i on, kept in place on both sides
        while (
            i + run < len(base)
            and in_ours.get(i + run) == a + run
            and in_theirs.get(i + run) == b + run
        ):
            run += 1
        if run:
            chunks.append(
                Chunk(
                    tuple(base[i : i + run]), tuple(ours[a : a + run]), tuple(theirs[b : b + run])
                )
            )
            i, a, b = i + run, a + run, b + run
            continue
        # A change: it runs to the next base line both sides kept (alignments only move
        # forward, so that line lies past a and b on each side), or to the ends.
        j = i
        while j < len(base) and not (j in in_ours and j in in_theirs):
            j += 1
        a_end, b_end = (in_ours[j], in_theirs[j]) if j < len(base) else (len(ours), len(theirs))
        chunks.append(Chunk(tuple(base[i:j]), tuple(ours[a:a_end]), tuple(theirs[b:b_end])))
        i, a, b = j, a_end, b_end
    return chunks

"""The three-way merge: laws on random texts, and the cases an update meets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.scaffold._merge import ChunkKind, Labels, conflict_marker_lines, merge3

LABELS = Labels(ours="yours", base="template v1 (as generated)", theirs="template v2")

# Few distinct lines, so texts repeat lines and the alignment has choices to make.
_line = st.sampled_from(["a\n", "b\n", "c\n", "\n", "    return x\n", "}\n", "a"])
_text = st.lists(_line, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(base=_text, ours=_text, theirs=_text)
def test_the_chunks_give_back_each_input(base: str, ours: str, theirs: str) -> None:
    merged = merge3(base, ours, theirs, labels=LABELS)
    assert "".join(line for c in merged.chunks for line in c.base) == base
    assert "".join(line for c in merged.chunks for line in c.ours) == ours
    assert "".join(line for c in merged.chunks for line in c.theirs) == theirs
    conflicts = [c for c in merged.chunks if c.kind is ChunkKind.CONFLICT]
    assert merged.conflicts == len(conflicts)
    assert len(conflict_marker_lines(merged.text, LABELS)) == merged.conflicts


@settings(max_examples=300, deadline=None)
@given(base=_text, edit=_text)
def test_one_sided_edits_merge_cleanly_to_that_edit(base: str, edit: str) -> None:
    for ours, theirs in ((base, edit), (edit, base), (edit, edit)):
        merged = merge3(base, ours, theirs, labels=LABELS)
        assert (merged.text, merged.conflicts) == (edit, 0)


@settings(max_examples=300, deadline=None)
@given(base=_text, ours=_text, theirs=_text)
def test_swapping_the_sides_keeps_the_outcome(base: str, ours: str, theirs: str) -> None:
    one = merge3(base, ours, theirs, labels=LABELS)
    other = merge3(base, theirs, ours, labels=LABELS)
    assert one.conflicts == other.conflicts
    if one.conflicts == 0:
        assert one.text == other.text


@st.composite
def _disjoint_edits(draw: st.DrawFn) -> tuple[list[str], list[str], list[str], list[str]]:
    """A base of distinct lines, and two edits of it that leave a kept line between them."""
    size = draw(st.integers(min_value=3, max_value=30))
    base = [f"line {i}\n" for i in range(size)]
    first_start = draw(st.integers(min_value=0, max_value=size - 3))
    first_end = draw(st.integers(min_value=first_start, max_value=size - 2))
    second_start = draw(st.integers(min_value=first_end + 1, max_value=size - 1))
    second_end = draw(st.integers(min_value=second_start, max_value=size))
    new_first = draw(st.lists(st.sampled_from(["ours A\n", "ours B\n"]), max_size=3))
    new_second = draw(st.lists(st.sampled_from(["theirs A\n", "theirs B\n"]), max_size=3))
    ours = base[:first_start] + new_first + base[first_end:]
    theirs = base[:second_start] + new_second + base[second_end:]
    expected = base[:first_start] + new_first + base[first_end:second_start]
    expected += new_second + base[second_end:]
    if draw(st.booleans()):  # the user's edit comes second in the file
        ours, theirs = theirs, ours
    return base, ours, theirs, expected


@settings(max_examples=400, deadline=None)
@given(_disjoint_edits())
def test_edits_apart_both_land(case: tuple[list[str], list[str], list[str], list[str]]) -> None:
    base, ours, theirs, expected = case
    merged = merge3("".join(base), "".join(ours), "".join(theirs), labels=LABELS)
    assert merged.conflicts == 0
    assert merged.text == "".join(expected)


HANDLER_V1 = """\
class Orders:
    def GetItem(self, request, context):
        return self.store.get(request.id)

    def ListItems(self, request, context):
        size = request.page_size or 20
        return self.store.page(size)
"""


def test_a_template_change_and_a_user_change_elsewhere_both_land() -> None:
    ours = HANDLER_V1.replace("self.store.get(request.id)", "self.cache.get(request.id)")
    theirs = HANDLER_V1.replace("or 20", "or self.settings.default_page_size")
    merged = merge3(HANDLER_V1, ours, theirs, labels=LABELS)
    assert merged.conflicts == 0
    assert "self.cache.get(request.id)" in merged.text
    assert "or self.settings.default_page_size" in merged.text


def test_both_changing_a_line_is_one_conflict_with_every_side_shown() -> None:
    ours = HANDLER_V1.replace("or 20", "or 50")
    theirs = HANDLER_V1.replace("or 20", "or 25")
    merged = merge3(HANDLER_V1, ours, theirs, labels=LABELS)
    assert merged.conflicts == 1
    assert (
        "<<<<<<< yours\n"
        "        size = request.page_size or 50\n"
        "||||||| template v1 (as generated)\n"
        "        size = request.page_size or 20\n"
        "=======\n"
        "        size = request.page_size or 25\n"
        ">>>>>>> template v2\n"
    ) in merged.text
    assert merged.text.startswith(HANDLER_V1.split("        size", 1)[0])
    assert conflict_marker_lines(merged.text, LABELS) == [6]


def test_a_last_line_without_newline_still_gets_markers_on_their_own_lines() -> None:
    merged = merge3("x = 1", "x = 2", "x = 3", labels=LABELS)
    assert merged.conflicts == 1
    assert merged.text.splitlines() == [
        "<<<<<<< yours",
        "x = 2",
        "||||||| template v1 (as generated)",
        "x = 1",
        "=======",
        "x = 3",
        ">>>>>>> template v2",
    ]


def test_crlf_lines_and_text_that_is_not_utf8_go_through_unchanged() -> None:
    base = "one\r\ntwo\r\nthree\r\n"
    ours = "one\r\ntwo \udcff\r\nthree\r\n"  # a byte that is not UTF-8, as surrogateescape reads it
    theirs = "one\r\ntwo\r\nthree\r\nfour\r\n"
    merged = merge3(base, ours, theirs, labels=LABELS)
    assert (merged.text, merged.conflicts) == ("one\r\ntwo \udcff\r\nthree\r\nfour\r\n", 0)


def test_an_empty_base_conflicts_unless_the_sides_agree() -> None:
    assert merge3("", "same\n", "same\n", labels=LABELS).conflicts == 0
    merged = merge3("", "user's file\n", "template's file\n", labels=LABELS)
    assert merged.conflicts == 1
    assert "user's file\n" in merged.text
    assert "template's file\n" in merged.text


@pytest.mark.parametrize(
    ("ours_edit", "theirs_edit"),
    [
        (("return self.store.get", "return self.cache.get"), ("or 20", "or 30")),
        (("or 20", "or 50"), ("or 20", "or 25")),
        (("class Orders:", "class Orders:  # mine"), ("class Orders:", "class Orders(Base):")),
    ],
)
def test_clean_or_not_as_git_merge_file_says(
    tmp_path: Path, ours_edit: tuple[str, str], theirs_edit: tuple[str, str]
) -> None:
    """Realistic edits: the same outcome as git's merge (clean, or how many conflicts)."""
    ours = HANDLER_V1.replace(*ours_edit)
    theirs = HANDLER_V1.replace(*theirs_edit)
    paths = {}
    for name, text in (("ours", ours), ("base", HANDLER_V1), ("theirs", theirs)):
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    git = subprocess.run(
        ["git", "merge-file", "-p", "--diff3", str(paths["ours"]), str(paths["base"]),
         str(paths["theirs"])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert git.returncode >= 0, git.stderr
    merged = merge3(HANDLER_V1, ours, theirs, labels=LABELS)
    assert merged.conflicts == git.returncode
    if git.returncode == 0:
        assert merged.text == git.stdout

"""What an update does to each file: every row of rpckit.scaffold._update's table."""

from __future__ import annotations

import pytest

from rpckit.scaffold._merge import Labels
from rpckit.scaffold._update import NEEDS_ATTENTION, Outcome, plan_update, unresolved_conflicts

LABELS = Labels(ours="yours", base="template v1 (as generated)", theirs="template v2")
V1 = "line 1\nline 2\nline 3\nline 4\nline 5\n"
THEIRS_EDIT = V1.replace("line 1", "line 1, as the template has it now")
OURS_EDIT = V1.replace("line 5", "line 5, as the user wrote it")


@pytest.mark.parametrize(
    ("base", "ours", "theirs", "outcome", "text"),
    [
        (V1, None, THEIRS_EDIT, Outcome.KEPT_DELETED, None),
        (V1, None, V1, Outcome.KEPT_DELETED, None),
        (V1, V1, THEIRS_EDIT, Outcome.UPDATED, THEIRS_EDIT),
        (V1, V1, V1, Outcome.UNCHANGED, None),
        (V1, OURS_EDIT, V1, Outcome.UNCHANGED, None),
        (V1, OURS_EDIT, OURS_EDIT, Outcome.UNCHANGED, None),
        (
            V1,
            OURS_EDIT,
            THEIRS_EDIT,
            Outcome.MERGED,
            THEIRS_EDIT.replace("line 5", "line 5, as the user wrote it"),
        ),
        (V1, V1, None, Outcome.REMOVED, None),
        (V1, OURS_EDIT, None, Outcome.KEPT_EDITED, None),
        (V1, None, None, Outcome.UNCHANGED, None),
        (None, None, V1, Outcome.CREATED, V1),
        (None, V1, V1, Outcome.UNCHANGED, None),
    ],
)  # fmt: skip
def test_each_case(
    base: str | None, ours: str | None, theirs: str | None, outcome: Outcome, text: str | None
) -> None:
    def files(text: str | None) -> dict[str, str]:
        return {} if text is None else {"f.py": text}

    plan = plan_update(files(base), files(ours), files(theirs), labels=LABELS)
    change = plan.of("f.py")
    assert (change.outcome, change.text) == (outcome, text)
    assert (change in plan.changes) == (text is not None or outcome is Outcome.REMOVED)
    assert (change in plan.attention) == (outcome in NEEDS_ATTENTION)


def test_both_changing_the_same_line_is_a_conflict_with_markers() -> None:
    ours = V1.replace("line 3", "line 3 (mine)")
    theirs = V1.replace("line 3", "line 3 (template's)")
    change = plan_update({"f": V1}, {"f": ours}, {"f": theirs}, labels=LABELS).of("f")
    assert (change.outcome, change.conflicts) == (Outcome.CONFLICT, 1)
    assert change.text is not None
    assert unresolved_conflicts({"f": change.text}, LABELS) == {"f": [3]}


def test_a_user_file_where_the_template_adds_one_is_merged_against_nothing() -> None:
    change = plan_update({}, {"new.py": "mine\n"}, {"new.py": "template's\n"}, labels=LABELS)
    assert change.of("new.py").outcome is Outcome.CONFLICT


def test_a_deleted_file_the_template_changed_says_where_the_new_text_is() -> None:
    plan = plan_update({"f": V1}, {}, {"f": THEIRS_EDIT}, labels=LABELS)
    assert ".rpckit/base" in plan.of("f").note
    assert plan.changes == ()


def test_marker_lines_of_other_tools_are_not_taken_for_ours() -> None:
    text = "<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> branch\n"
    assert unresolved_conflicts({"f": text, "g": "fine\n"}, LABELS) == {}

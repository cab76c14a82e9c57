"""What rpckit says on the wire besides messages: one spelling per key, one text per rejection."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from rpckit.core import _wire
from rpckit.server._admission import Reason, Rejection, Ticket
from rpckit.server._executor import rejection_status

RPCKIT = Path(__file__).resolve().parents[2] / "rpckit"


@pytest.mark.parametrize("reason", list(Reason))
def test_a_rejection_is_answered_with_its_reasons_code_and_message(reason: Reason) -> None:
    rejection = Rejection(Ticket(item=None, method="/p.S/M", enqueued_at=0.0), reason, 5)
    code, details = rejection_status(rejection)
    assert code is grpc.StatusCode[reason.status]
    assert details == _wire.REJECTION_DETAILS_PREFIX + reason.message


def test_rejection_messages_are_distinct() -> None:
    assert len({reason.message for reason in Reason}) == len(Reason)


@pytest.mark.parametrize("name", [n for n in _wire.__all__ if isinstance(getattr(_wire, n), str)])
def test_each_wire_spelling_is_written_once_in_rpckit(name: str) -> None:
    # Any other module that spells the key out would drift from this one.
    spelled = repr(getattr(_wire, name)).replace("'", '"')
    holders = [
        path.relative_to(RPCKIT).as_posix()
        for path in sorted(RPCKIT.rglob("*.py"))
        if "_pb2" not in path.name and spelled in path.read_text(encoding="utf-8")
    ]
    assert holders == ["core/_wire.py"]

"""Test helpers for a migration: hold an app to recorded legacy answers.

::

    from rpckit.migrate.testing import replay_recorded

    def test_stage_answers_as_recorded() -> None:
        report = replay_recorded([Path("samples.jsonl")], "myapp.stages:stage_1")
        assert report.ok, report.render_text()

``scan`` writes a contract test that does this (``test_<package>_contract.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpckit.migrate._diff import IgnoreRule
from rpckit.migrate._diff_report import DiffReport
from rpckit.migrate._load import load_source
from rpckit.migrate._replay import ReplayOptions
from rpckit.migrate._replay import replay_recorded as _replay_recorded
from rpckit.migrate._samples import read_samples

__all__ = ["replay_recorded"]


def replay_recorded(
    samples: Sequence[Path],
    app: str,
    *,
    allow_writes: bool | None = None,
    rules: Sequence[IgnoreRule] = (),
    set_headers: dict[str, str] | None = None,
) -> DiffReport:
    """Replay the samples through ``app`` (``MODULE:APP_OR_FACTORY``); the report of differences.

    Writes are replayed when ``app`` is a factory (a fresh app: throwaway
    state) unless ``allow_writes`` says otherwise.
    """
    source = load_source(app)
    options = ReplayOptions(
        allow_writes=source.fresh if allow_writes is None else allow_writes,
        rules=tuple(rules),
        set_headers=dict(set_headers or {}),
    )
    built: Any = source.build
    return _replay_recorded(read_samples(list(samples)), app=built, options=options)

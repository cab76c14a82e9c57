"""Entry point for ``rpckit serve examples.inventory.server:servicers``."""

from __future__ import annotations

from examples.inventory.service import Inventory


def servicers() -> list[object]:
    """The servicers this service runs (rpckit adds health and reflection)."""
    return [Inventory()]

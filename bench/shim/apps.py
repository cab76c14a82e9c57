"""``--http-app`` factories for bench/shim variants (not for production use)."""

from __future__ import annotations

import rpckit
from examples.inventory.server import legacy_shim
from examples.inventory.service import Inventory
from rpckit.http import Shim


def inline_http(server: rpckit.Server) -> Shim:
    """The legacy shim calling the servicer in the HTTP thread: no admission queue, no handoff.

    Measures what the admission queue's thread handoff costs; it gives up overload
    protection for HTTP, which is why ``legacy_http`` does not do this.
    """
    inventory = next(s for s in server.servicers if isinstance(s, Inventory))
    return legacy_shim(inventory)

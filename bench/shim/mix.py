"""The request mix of bench/shim: the legacy inventory's endpoints, weighted, deterministic.

Pure: a seeded rng deals requests from :data:`MIX`. Reads dominate, as in the legacy
service's traffic; writes replace an item with itself (idempotent), so every system sees
the same data for the whole run and the answers can be compared byte for byte.
"""

from __future__ import annotations

import dataclasses
import random

from examples.legacy_inventory.app import DEV_API_TOKEN
from examples.legacy_inventory.store import seed_items

__all__ = ["MIX", "BenchRequest", "deal", "distinct_requests"]

_AUTH = ("Authorization", f"Bearer {DEV_API_TOKEN}")
_JSON = ("Content-Type", "application/json")


@dataclasses.dataclass(frozen=True)
class BenchRequest:
    """One HTTP request of the mix, and the status it must get."""

    name: str
    method: str
    path: str
    expected_status: int
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _items() -> list[BenchRequest]:
    return [
        BenchRequest(f"get {item.sku}", "GET", f"/items/{item.sku}", 200)
        for item in seed_items()[:8]
    ]


def _put_same() -> BenchRequest:
    item = seed_items()[9]  # NUT-M8, replaced by itself
    body = b'{"name": "%s", "quantity": %d, "price_cents": %d, "tags": ["fastener", "metric"]}' % (
        item.name.encode(),
        item.quantity,
        item.price_cents,
    )
    return BenchRequest("put same item", "PUT", f"/items/{item.sku}", 200, body, (_AUTH, _JSON))


#: (weight, request): what a request of the mix is, and how often.
MIX: tuple[tuple[float, BenchRequest], ...] = (
    *((50 / 8, r) for r in _items()),
    (15, BenchRequest("list page", "GET", "/items?page_size=10", 200)),
    (5, BenchRequest("list with token", "GET", "/items?page_size=5&page_token=TlVULU04", 200)),
    (10, BenchRequest("tags", "GET", "/items/TORCH-BRULEE/tags", 200)),
    (5, BenchRequest("restock plan", "POST", "/restock-plans", 200, b'{"threshold": 5}', (_JSON,))),
    (5, _put_same()),
    (4, BenchRequest("unknown sku", "GET", "/items/NOPE-1", 404)),
    (3, BenchRequest("bad field", "POST", "/items", 400, b'{"sku": 1}', (_AUTH, _JSON))),
    (3, BenchRequest("healthz (fallback)", "GET", "/healthz", 200)),
)


def deal(rng: random.Random, count: int) -> list[BenchRequest]:
    """``count`` requests drawn from :data:`MIX` by weight."""
    weights = [w for w, _ in MIX]
    requests = [r for _, r in MIX]
    return rng.choices(requests, weights=weights, k=count)


def distinct_requests() -> list[BenchRequest]:
    """Every request of the mix once (for the byte-for-byte check)."""
    return [r for _, r in MIX]

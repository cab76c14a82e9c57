"""The legacy inventory's domain: items, the in-memory store, paging tokens, restock planning.

Nothing here knows about Flask or JSON, so the migrated gRPC handlers can reuse
it unchanged and serve exactly the same data. All of it is deterministic: the
seed is a fixed list, listing is ordered by SKU, page tokens are derived from
SKUs, and restock planning is a pure function of the items and the threshold.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import threading
from collections.abc import Iterable

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_PAGE_SIZE",
    "MAX_RESTOCK_THRESHOLD",
    "MAX_WORK_MS_PER_ITEM",
    "SKU_PATTERN",
    "InvalidFieldError",
    "InventoryStore",
    "Item",
    "ItemExistsError",
    "ItemNotFoundError",
    "RestockLine",
    "check_item",
    "check_restock_request",
    "decode_page_token",
    "encode_page_token",
    "plan_restock",
    "resolve_page_request",
    "seed_items",
]

#: Page size when the caller sends none (or 0, as proto3 cannot tell the two apart).
#: Source: the proto's ListItemsRequest.page_size comment, "1-100, default 10".
DEFAULT_PAGE_SIZE = 10
#: Largest page a caller may ask for; same source.
MAX_PAGE_SIZE = 100

#: Bounds of PlanRestockRequest's fields, chosen here: 2 * threshold stays far inside
#: int64, and a plan over the twenty seed items does at most 20 s of simulated work.
MAX_RESTOCK_THRESHOLD = 1_000_000_000
MAX_WORK_MS_PER_ITEM = 1000

#: Bounds of the proto's int64 fields; JSON numbers outside them are rejected.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: What a SKU looks like: 1-32 characters of A-Z, 0-9 and '-', not starting with '-'.
SKU_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    """One stock-keeping unit; mirrors ``inventory.v1.Item`` field for field."""

    sku: str
    name: str
    quantity: int = 0
    price_cents: int = 0
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestockLine:
    """How many units of one SKU to order; mirrors ``PlanRestockResponse.Line``."""

    sku: str
    order_quantity: int


class ItemNotFoundError(LookupError):
    """No item has this SKU."""

    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


class ItemExistsError(ValueError):
    """An item with this SKU already exists (create only)."""

    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


class InvalidFieldError(ValueError):
    """A request field holds a value the service refuses; ``str()`` is the caller's message."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"field '{field}' {description}")
        self.field = field
        self.description = description


#: The seed, one row per item in SKU order: (sku, name, quantity, price_cents, tags).
_SEED_ROWS: tuple[tuple[str, str, int, int, tuple[str, ...]], ...] = (
    ("BOLT-M6-20", "Hex bolt M6x20, zinc", 1200, 12, ("fastener", "metric")),
    ("BOLT-M8-30", "Hex bolt M8x30, zinc", 640, 19, ("fastener", "metric")),
    ("CABLE-TIE-200", "Cable ties 200 mm (100 pack)", 85, 349, ("electrical",)),
    ("CLAMP-F-300", "F-clamp 300 mm", 14, 1899, ("clamping", "tool")),
    ("DRILL-BIT-SET", "HSS drill bit set, 19 pieces", 3, 2495, ("drilling", "tool")),
    ("GLOVE-NITRILE-L", "Nitrile gloves, size L (50 pairs)", 0, 1150, ("safety",)),
    ("HEX-KEY-SET", 'Hex key set 1/16" - 3/8"', 22, 1375, ("imperial", "tool")),
    ("LEVEL-600", "Spirit level 600 mm", 9, 2150, ("measuring", "tool")),
    ("NUT-M6", "Hex nut M6, zinc", 5000, 3, ("fastener", "metric")),
    ("NUT-M8", "Hex nut M8, zinc", 2, 5, ("fastener", "metric")),
    ("PLIERS-COMBI", "Combination pliers 180 mm", 17, 1599, ("tool",)),
    ("SANDPAPER-P120", "Sandpaper P120 (10 sheets)", 60, 499, ("abrasive",)),
    ("SAW-HAND-500", "Hand saw 500 mm", 4, 2799, ("cutting", "tool")),
    ("SCREW-WOOD-4X40", "Wood screw 4x40 <Torx> & countersunk", 2500, 4, ("fastener", "metric")),
    ("SEALANT-CLEAR", "Silicone sealant, clear 300 ml", 1, 675, ()),
    ("TAPE-DUCT-50", "Duct tape 50 mm x 50 m", 33, 899, ("adhesive",)),
    ("TAPE-MEASURE-5M", "Tape measure 5 m", 0, 1299, ("measuring", "tool")),
    ("TORCH-BRULEE", "Cr\u00e8me br\u00fbl\u00e9e torch", 6, 3450, ("kitchen", "tool")),
    ("WASHER-M6", "Flat washer M6", 7300, 2, ("fastener", "metric")),
    ("WD-40-400", "Penetrating oil 400 ml \u2014 spray", 26, 749, ("lubricant",)),
)


def seed_items() -> tuple[Item, ...]:
    """The twenty items every fresh store starts with, in SKU order.

    The names carry the characters that make JSON bytes interesting: non-ASCII
    (``\\u00e8``-escaped by Flask), double quotes, ``<``, ``>`` and ``&``. Some
    items are out of stock, some low, one has no tags.
    """
    return tuple(
        Item(sku=sku, name=name, quantity=quantity, price_cents=price_cents, tags=tags)
        for sku, name, quantity, price_cents, tags in _SEED_ROWS
    )


def encode_page_token(last_sku: str) -> str:
    """The opaque token that resumes a listing after ``last_sku`` (URL-safe base64)."""
    return base64.urlsafe_b64encode(last_sku.encode("utf-8")).decode("ascii")


def decode_page_token(token: str) -> str:
    """The SKU a token resumes after; ``ValueError`` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        last_sku = raw.decode("ascii")
    except (binascii.Error, UnicodeError) as exc:
        raise ValueError(f"not a page token: {token!r}") from exc
    if SKU_PATTERN.fullmatch(last_sku) is None or encode_page_token(last_sku) != token:
        raise ValueError(f"not a page token: {token!r}")
    return last_sku


def plan_restock(items: Iterable[Item], threshold: int) -> list[RestockLine]:
    """Order enough of every item below ``threshold`` to reach twice the threshold."""
    return [
        RestockLine(sku=item.sku, order_quantity=2 * threshold - item.quantity)
        for item in sorted(items, key=lambda item: item.sku)
        if item.quantity < threshold
    ]


class InventoryStore:
    """A thread-safe in-memory item table, listed in SKU order.

    ``InventoryStore()`` starts from :func:`seed_items`; pass ``items=()`` for an
    empty store. Items are immutable, so reads hand out the stored objects.
    """

    def __init__(self, items: Iterable[Item] | None = None) -> None:
        self._lock = threading.Lock()
        chosen = seed_items() if items is None else tuple(items)
        self._items: dict[str, Item] = {item.sku: item for item in chosen}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, sku: str) -> Item:
        """The item with this SKU; :class:`ItemNotFoundError` if there is none."""
        with self._lock:
            try:
                return self._items[sku]
            except KeyError:
                raise ItemNotFoundError(sku) from None

    def snapshot(self) -> list[Item]:
        """Every item, in SKU order."""
        with self._lock:
            return [self._items[sku] for sku in sorted(self._items)]

    def page(self, *, after_sku: str, page_size: int) -> tuple[list[Item], str]:
        """Up to ``page_size`` items with SKUs after ``after_sku`` ("" for the start).

        Returns the items and the SKU to resume after, or "" when nothing is left.
        A cursor rather than an offset, so creates and deletes between pages
        neither skip nor repeat items.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        with self._lock:
            remaining = sorted(sku for sku in self._items if sku > after_sku)
            chosen = remaining[:page_size]
            resume_after = chosen[-1] if len(remaining) > page_size else ""
            return [self._items[sku] for sku in chosen], resume_after

    def create(self, item: Item) -> None:
        """Add a new item; :class:`ItemExistsError` if the SKU is taken."""
        with self._lock:
            if item.sku in self._items:
                raise ItemExistsError(item.sku)
            self._items[item.sku] = item

    def replace(self, item: Item) -> None:
        """Overwrite an existing item; :class:`ItemNotFoundError` if there is none."""
        with self._lock:
            if item.sku not in self._items:
                raise ItemNotFoundError(item.sku)
            self._items[item.sku] = item

    def delete(self, sku: str) -> None:
        """Remove an item; :class:`ItemNotFoundError` if there is none."""
        with self._lock:
            if self._items.pop(sku, None) is None:
                raise ItemNotFoundError(sku)


def check_item(item: Item, *, new: bool) -> None:
    """Raise :class:`InvalidFieldError` for the first field (in proto order) ``item`` gets wrong.

    The SKU is checked only for ``new`` items: an update takes its SKU from the
    URL, and an unknown one is a 404, not a 400.
    """
    if new and not item.sku:
        raise InvalidFieldError("sku", "is required")
    if new and SKU_PATTERN.fullmatch(item.sku) is None:
        raise InvalidFieldError(
            "sku", "must be 1-32 characters of A-Z, 0-9 and '-', not starting with '-'"
        )
    if not item.name:
        raise InvalidFieldError("name", "is required")
    if item.quantity < 0:
        raise InvalidFieldError("quantity", "must be >= 0")
    if item.price_cents < 0:
        raise InvalidFieldError("price_cents", "must be >= 0")
    if any(not tag for tag in item.tags):
        raise InvalidFieldError("tags", "must not contain empty strings")


def check_restock_request(*, threshold: int, work_ms_per_item: int) -> None:
    """Raise :class:`InvalidFieldError` if a restock request is out of bounds."""
    if not 0 <= threshold <= MAX_RESTOCK_THRESHOLD:
        raise InvalidFieldError("threshold", f"must be between 0 and {MAX_RESTOCK_THRESHOLD}")
    if not 0 <= work_ms_per_item <= MAX_WORK_MS_PER_ITEM:
        raise InvalidFieldError("work_ms_per_item", f"must be between 0 and {MAX_WORK_MS_PER_ITEM}")


def resolve_page_request(*, page_size: int, page_token: str) -> tuple[str, int]:
    """The SKU to resume after and the page size a ListItems request asks for.

    ``page_size`` 0 means the default, as in proto3 an absent field and 0 are
    the same value; ``page_token`` "" means the first page.
    """
    if page_size == 0:
        page_size = DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidFieldError("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
    if not page_token:
        return "", page_size
    try:
        return decode_page_token(page_token), page_size
    except ValueError:
        raise InvalidFieldError("page_token", "is not a token from a previous response") from None

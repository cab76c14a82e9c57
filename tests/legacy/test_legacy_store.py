"""The legacy inventory's domain module: store, page tokens, restock planning (no HTTP)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.legacy_inventory.store import (
    DEFAULT_PAGE_SIZE,
    SKU_PATTERN,
    InvalidFieldError,
    InventoryStore,
    Item,
    ItemExistsError,
    ItemNotFoundError,
    RestockLine,
    check_item,
    decode_page_token,
    encode_page_token,
    plan_restock,
    resolve_page_request,
    seed_items,
)

SKUS = st.from_regex(SKU_PATTERN, fullmatch=True)


def test_seed_is_twenty_distinct_items_in_sku_order() -> None:
    skus = [item.sku for item in seed_items()]
    assert len(skus) == 20
    assert skus == sorted(set(skus))
    assert all(SKU_PATTERN.fullmatch(sku) for sku in skus)
    assert seed_items() == seed_items()


@settings(deadline=None, derandomize=True)
@given(SKUS)
def test_page_tokens_round_trip(sku: str) -> None:
    token = encode_page_token(sku)
    assert decode_page_token(token) == sku
    assert resolve_page_request(page_size=0, page_token=token) == (sku, DEFAULT_PAGE_SIZE)


@pytest.mark.parametrize(
    "token", ["not-a-token", "Zm9v", "Qk9MVC1NNi0yMA", "w6k=", "!!!!", "Qk9MVC1NNi0yMA==x"]
)
def test_foreign_page_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValueError, match="not a page token"):
        decode_page_token(token)
    with pytest.raises(InvalidFieldError) as caught:
        resolve_page_request(page_size=5, page_token=token)
    assert caught.value.field == "page_token"


@settings(deadline=None, derandomize=True)
@given(page_size=st.integers(min_value=1, max_value=25), deleted=st.sets(st.integers(0, 19)))
def test_paging_visits_every_item_once(page_size: int, deleted: set[int]) -> None:
    seed = seed_items()
    store = InventoryStore(item for index, item in enumerate(seed) if index not in deleted)
    seen: list[str] = []
    after = ""
    for _ in range(len(seed) + 1):
        items, after = store.page(after_sku=after, page_size=page_size)
        assert len(items) <= page_size
        seen.extend(item.sku for item in items)
        if not after:
            break
    assert seen == [item.sku for index, item in enumerate(seed) if index not in deleted]


def test_page_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="page_size"):
        InventoryStore().page(after_sku="", page_size=0)


def test_store_operations_and_their_errors() -> None:
    store = InventoryStore(items=())
    item = Item(sku="A-1", name="a")
    store.create(item)
    with pytest.raises(ItemExistsError):
        store.create(item)
    store.replace(Item(sku="A-1", name="b", quantity=2))
    assert store.get("A-1") == Item(sku="A-1", name="b", quantity=2)
    assert len(store) == 1
    store.delete("A-1")
    for operation in (store.get, store.delete, lambda sku: store.replace(Item(sku=sku, name="c"))):
        with pytest.raises(ItemNotFoundError) as caught:
            operation("A-1")
        assert caught.value.sku == "A-1"
    assert store.snapshot() == []


def test_plan_restock_orders_up_to_twice_the_threshold() -> None:
    items = [
        Item(sku="B", name="b", quantity=3),
        Item(sku="A", name="a", quantity=0),
        Item(sku="C", name="c", quantity=4),
    ]
    assert plan_restock(items, 4) == [
        RestockLine(sku="A", order_quantity=8),
        RestockLine(sku="B", order_quantity=5),
    ]
    assert plan_restock(items, 0) == []


@pytest.mark.parametrize(
    ("item", "new", "field"),
    [
        (Item(sku="", name="x"), True, "sku"),
        (Item(sku="", name="x"), False, None),
        (Item(sku="a", name="x"), True, "sku"),
        (Item(sku="A", name=""), True, "name"),
        (Item(sku="A", name="x", quantity=-1), True, "quantity"),
        (Item(sku="A", name="x", price_cents=-1), True, "price_cents"),
        (Item(sku="A", name="x", tags=("",)), True, "tags"),
        (Item(sku="A", name="x", quantity=0, price_cents=0, tags=("t",)), True, None),
    ],
)
def test_check_item(item: Item, new: bool, field: str | None) -> None:
    if field is None:
        check_item(item, new=new)
        return
    with pytest.raises(InvalidFieldError) as caught:
        check_item(item, new=new)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"field '{field}' ")

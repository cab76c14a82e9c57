"""The Inventory servicer: the legacy Flask inventory app, migrated to a plain grpcio servicer.

Same domain code (``examples/legacy_inventory/store.py``: seed data, validation
rules and their messages, page tokens, restock planning), so a gRPC caller and
a legacy HTTP caller going through :class:`rpckit.http.Shim` see the same
items and the same errors -- byte for byte at the old URLs. The only
HTTP-shaped thing here is the bearer-token check, which the legacy app made
first; it is shared with the shim as a guard (see ``server.py``) so that
order survives the migration.

State lives in the :class:`~examples.legacy_inventory.store.InventoryStore`
the servicer is given (a freshly seeded one by default): no module-level state.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.legacy_inventory.app import DEV_API_TOKEN
from examples.legacy_inventory.store import (
    InvalidFieldError,
    InventoryStore,
    Item,
    ItemExistsError,
    ItemNotFoundError,
    check_item,
    check_restock_request,
    encode_page_token,
    plan_restock,
    resolve_page_request,
)

__all__ = ["TOKEN_CHALLENGE", "WRITE_METHODS", "Inventory", "check_bearer_token"]

#: The legacy app's 401 challenge, sent as response metadata (a header through the shim).
TOKEN_CHALLENGE = ("www-authenticate", 'Bearer realm="inventory"')

#: Methods that need the bearer token (the legacy app's writes).
WRITE_METHODS = frozenset({"CreateItem", "UpdateItem", "DeleteItem"})


def check_bearer_token(metadata: Sequence[tuple[str, str | bytes]], expected: str) -> None:
    """Raise UNAUTHENTICATED unless ``authorization`` is ``Bearer <expected>`` (scheme any case).

    The legacy app's rule, message and challenge, for gRPC callers and the shim's guard alike.
    """
    header = next((v for k, v in metadata if k == "authorization"), "")
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode("utf-8"), expected.encode("utf-8")
    ):
        raise rpckit.StatusError(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or invalid bearer token",
            trailers=[TOKEN_CHALLENGE],
        )


def _invalid(exc: InvalidFieldError) -> rpckit.StatusError:
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=exc.field, description=exc.description
    )
    return rpckit.StatusError(
        grpc.StatusCode.INVALID_ARGUMENT,
        str(exc),
        details=[error_details_pb2.BadRequest(field_violations=[violation])],
    )


def _not_found(sku: str) -> rpckit.StatusError:
    info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=sku)
    return rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"item '{sku}' not found", details=[info])


def _exists(sku: str) -> rpckit.StatusError:
    info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=sku)
    return rpckit.StatusError(
        grpc.StatusCode.ALREADY_EXISTS, f"item '{sku}' already exists", details=[info]
    )


def _to_proto(item: Item) -> inventory_pb2.Item:
    return inventory_pb2.Item(
        sku=item.sku,
        name=item.name,
        quantity=item.quantity,
        price_cents=item.price_cents,
        tags=list(item.tags),
    )


def _from_proto(item: inventory_pb2.Item) -> Item:
    return Item(
        sku=item.sku,
        name=item.name,
        quantity=item.quantity,
        price_cents=item.price_cents,
        tags=tuple(item.tags),
    )


class Inventory(inventory_pb2_grpc.InventoryServicer):
    """inventory.v1.Inventory over an :class:`InventoryStore` (the legacy app's domain)."""

    def __init__(
        self,
        store: InventoryStore | None = None,
        *,
        api_token: str = DEV_API_TOKEN,
        simulate_work: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = InventoryStore() if store is None else store
        self.api_token = api_token
        self._simulate_work = simulate_work

    def _authorize(self, context: grpc.ServicerContext) -> None:
        metadata = tuple((m[0], m[1]) for m in context.invocation_metadata())
        check_bearer_token(metadata, self.api_token)

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        try:
            return _to_proto(self.store.get(request.sku))
        except ItemNotFoundError:
            raise _not_found(request.sku) from None

    def ListItems(
        self, request: inventory_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListItemsResponse:
        try:
            after_sku, page_size = resolve_page_request(
                page_size=request.page_size, page_token=request.page_token
            )
        except InvalidFieldError as exc:
            raise _invalid(exc) from None
        items, resume_after = self.store.page(after_sku=after_sku, page_size=page_size)
        return inventory_pb2.ListItemsResponse(
            items=[_to_proto(item) for item in items],
            next_page_token=encode_page_token(resume_after) if resume_after else "",
        )

    def CreateItem(
        self, request: inventory_pb2.CreateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        self._authorize(context)
        item = _from_proto(request.item)
        try:
            check_item(item, new=True)
            self.store.create(item)
        except InvalidFieldError as exc:
            raise _invalid(exc) from None
        except ItemExistsError:
            raise _exists(item.sku) from None
        return _to_proto(item)

    def UpdateItem(
        self, request: inventory_pb2.UpdateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        self._authorize(context)
        item = _from_proto(request.item)
        try:
            check_item(item, new=False)
            self.store.replace(item)
        except InvalidFieldError as exc:
            raise _invalid(exc) from None
        except ItemNotFoundError:
            raise _not_found(item.sku) from None
        return _to_proto(item)

    def DeleteItem(
        self, request: inventory_pb2.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._authorize(context)
        try:
            self.store.delete(request.sku)
        except ItemNotFoundError:
            raise _not_found(request.sku) from None
        return empty_pb2.Empty()

    def PlanRestock(
        self, request: inventory_pb2.PlanRestockRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.PlanRestockResponse:
        try:
            check_restock_request(
                threshold=request.threshold, work_ms_per_item=request.work_ms_per_item
            )
        except InvalidFieldError as exc:
            raise _invalid(exc) from None
        items = self.store.snapshot()
        if request.work_ms_per_item:
            for _ in items:
                # The caller may have gone (deadline passed, cancelled): stop working for nobody.
                rpckit.raise_if_cancelled()
                self._simulate_work(request.work_ms_per_item / 1000)
        plan = inventory_pb2.PlanRestockResponse()
        for line in plan_restock(items, request.threshold):
            plan.lines.add(sku=line.sku, order_quantity=line.order_quantity)
        return plan

    def WatchLowStock(
        self, request: inventory_pb2.WatchLowStockRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.Item]:
        for item in self.store.snapshot():
            if item.quantity <= request.threshold:
                yield _to_proto(item)

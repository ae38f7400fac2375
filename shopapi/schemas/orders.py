"""Orders: the placement body, the public order, status changes and the list query."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shopapi.schemas.addresses import ShippingAddress
from shopapi.schemas.common import Id, PageQuery, PositiveId, Timestamp
from shopapi.schemas.shipping import ShippingMethodRef

OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled"]
PaymentStatus = Literal["unpaid", "processing", "succeeded", "failed", "refunded"]
Quantity = Annotated[int, Meta(ge=1, le=1000)]
# the Idempotency-Key header (checked by hand: headers are not decoded by msgspec)
IDEMPOTENCY_KEY_MAX = 255


class OrderLine(msgspec.Struct):
    product_id: PositiveId
    quantity: Quantity


class OrderCreate(msgspec.Struct, kw_only=True):
    """The buyer names products and quantities, and optionally where it goes: an inline
    `shipping_address` or `address_id` (one of the caller's addresses; not both) and a
    `shipping_method_id` (needs an address). Status, user, prices and totals sent along are
    ignored like any unknown field (prices and shipping come from the database)."""

    items: Annotated[list[OrderLine], Meta(min_length=1, max_length=50)]
    shipping_address: ShippingAddress | None = None
    address_id: PositiveId | None = None
    shipping_method_id: PositiveId | None = None


class OrderItemPublic(msgspec.Struct):
    product_id: int
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


class StatusChange(msgspec.Struct):
    status: OrderStatus
    at: Timestamp
    by_user_id: int | None


class Payment(msgspec.Struct):
    provider: Literal["manual", "stripe"]
    status: PaymentStatus


class OrderPublic(msgspec.Struct):
    """`total_cents` = `subtotal_cents` (the lines) + `shipping_cents`; `expires_at`: when an
    unpaid pending order is cancelled automatically (null: never)."""

    id: int
    user_id: int
    status: OrderStatus
    items: list[OrderItemPublic]
    total_cents: int
    currency: str
    status_history: list[StatusChange]
    created_at: Timestamp
    updated_at: Timestamp
    subtotal_cents: int
    shipping_cents: int
    shipping_address: ShippingAddress | None
    shipping_method: ShippingMethodRef | None
    payment: Payment
    expires_at: Timestamp | None


class OrderStatusUpdate(msgspec.Struct):
    status: OrderStatus


class OrderListQuery(PageQuery, kw_only=True):
    """Newest first. `cursor` (keyset paging) replaces `page`; ADMIN/EDITOR see every
    order and may filter by `user_id`, customers always see only their own."""

    status: OrderStatus | None = None
    user_id: Id | None = None
    cursor: Annotated[str, Meta(min_length=1, max_length=512)] | None = None

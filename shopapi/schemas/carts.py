"""Carts: the cart as read (current names, prices and availability), its line body, and the
checkout body."""

from __future__ import annotations

import msgspec

from shopapi.schemas.addresses import ShippingAddress
from shopapi.schemas.common import PositiveId, Timestamp
from shopapi.schemas.orders import Quantity

CART_LINES_MAX = 50


class CartItemPublic(msgspec.Struct):
    """`available`: the product exists and is active; `in_stock`: the quantity is in stock."""

    product_id: int
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    available: bool
    in_stock: bool


class CartPublic(msgspec.Struct):
    """`subtotal_cents` counts available lines only; `expires_at` is null for a user's cart."""

    id: int
    items: list[CartItemPublic]
    subtotal_cents: int
    currency: str
    updated_at: Timestamp
    expires_at: Timestamp | None


class GuestCartPublic(CartPublic):
    """A new guest cart: `token` is its secret, shown only here; send it as X-Cart-Token."""

    token: str


class CartLineSet(msgspec.Struct):
    quantity: Quantity


class CheckoutBody(msgspec.Struct, kw_only=True):
    """As the body of POST /api/orders, without `items` (they come from the cart)."""

    shipping_address: ShippingAddress | None = None
    address_id: PositiveId | None = None
    shipping_method_id: PositiveId | None = None

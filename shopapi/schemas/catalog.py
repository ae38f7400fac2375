"""Catalog: categories, products, stock movements and their list queries."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shopapi.schemas.common import (
    NO_NUL,
    Id,
    PageQuery,
    PositiveId,
    PriceCents,
    Stock,
    Timestamp,
)

# Names are trimmed by the services; the pattern refuses NUL bytes and blank names.
_NON_BLANK = "^[^\\x00]*[^\\x00 \\t\\r\\n][^\\x00]*$"
CategoryName = Annotated[str, Meta(min_length=1, max_length=100, pattern=_NON_BLANK)]
ProductName = Annotated[str, Meta(min_length=1, max_length=200, pattern=_NON_BLANK)]
Text = Annotated[str, Meta(max_length=5000, pattern=NO_NUL)]
# an absolute http(s) URL: a host, then an optional path/query/fragment without blanks
ImageUrl = Annotated[
    str,
    Meta(
        max_length=2048,
        pattern="^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\\[\\]-]+([/?#][^\\x00-\\x20\\x7f]*)?$",
    ),
]
Search = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]
Cursor = Annotated[str, Meta(min_length=1, max_length=1024, pattern="^[A-Za-z0-9_-]+$")]
ProductSort = Literal["name", "-name", "price_cents", "-price_cents", "created_at", "-created_at"]


class CategoryPublic(msgspec.Struct):
    id: int
    name: str
    slug: str
    description: str
    created_at: Timestamp
    updated_at: Timestamp


class CategoryCreate(msgspec.Struct, kw_only=True):
    name: CategoryName
    description: Text = ""


class CategoryUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH): a field left out keeps its value; the slug never moves."""

    name: CategoryName | UnsetType = UNSET
    description: Text | UnsetType = UNSET


class CategoryListQuery(PageQuery, kw_only=True):
    q: Search | None = None


class CategoryRef(msgspec.Struct):
    id: int
    name: str


class ProductPublic(msgspec.Struct):
    id: int
    name: str
    description: str
    price_cents: int
    currency: str
    stock: int
    image_url: str | None
    category: CategoryRef
    is_active: bool
    created_at: Timestamp
    updated_at: Timestamp


class ProductCreate(msgspec.Struct, kw_only=True):
    name: ProductName
    price_cents: PriceCents
    category_id: PositiveId
    description: Text = ""
    stock: Stock = 0
    image_url: ImageUrl | None = None
    is_active: bool = True


class ProductUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH); `image_url: null` clears the image."""

    name: ProductName | UnsetType = UNSET
    price_cents: PriceCents | UnsetType = UNSET
    category_id: PositiveId | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    stock: Stock | UnsetType = UNSET
    image_url: ImageUrl | None | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class ProductListQuery(PageQuery, kw_only=True):
    q: Search | None = None
    category_id: Id | None = None
    min_price_cents: PriceCents | None = None
    max_price_cents: PriceCents | None = None
    in_stock: bool | None = None
    sort: ProductSort | None = None
    include_inactive: bool = False
    cursor: Cursor | None = None


class StockMovementPublic(msgspec.Struct):
    id: int
    product_id: int
    delta: int
    reason: Literal["order", "cancel", "adjust"]
    order_id: int | None
    by_user_id: int | None
    at: Timestamp

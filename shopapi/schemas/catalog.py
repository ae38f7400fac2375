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
from shopapi.schemas.patterns import CURSOR, FILLED_LINE, HTTP_URL

# Names are trimmed by the services; the pattern refuses blank names and control characters.
CategoryName = Annotated[str, Meta(min_length=1, max_length=100, pattern=FILLED_LINE)]
ProductName = Annotated[str, Meta(min_length=1, max_length=200, pattern=FILLED_LINE)]
Text = Annotated[str, Meta(max_length=5000, pattern=NO_NUL)]
ImageUrl = Annotated[str, Meta(max_length=2048, pattern=HTTP_URL)]
Search = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]
# a product search has at most this many words (runs of letters and digits, as the full-text
# parser splits them): each is an index lookup
SEARCH_MAX_WORDS = 20
Cursor = Annotated[str, Meta(min_length=1, max_length=1024, pattern=CURSOR)]
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


class ProductPage(msgspec.Struct, omit_defaults=True):
    """A product list answer: the list shape, plus `total_is_estimate: true` (sent only then)
    when more products match than offset paging reaches and `total` is PostgreSQL's estimate."""

    items: list[ProductPublic]
    page: int | None
    per_page: int
    total: int
    next_cursor: str | None
    total_is_estimate: bool = False


class StockMovementPublic(msgspec.Struct):
    id: int
    product_id: int
    delta: int
    reason: Literal["order", "cancel", "adjust"]
    order_id: int | None
    by_user_id: int | None
    at: Timestamp

"""Products: cached public reads, staff writes with the stock ledger and the If-Match guard."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi import cache
from shopapi.cache import Answer
from shopapi.context import AppContext, CurrentUser
from shopapi.db import aconnection, aqueries, connection, queries, transaction
from shopapi.errors import NotFound, PreconditionFailed, ValidationFailed
from shopapi.pagination import cursor_codec, fingerprint, page_of
from shopapi.schemas.catalog import (
    ProductCreate,
    ProductListQuery,
    ProductPublic,
    ProductUpdate,
    StockMovementPublic,
)
from shopapi.schemas.common import PageQuery
from shopapi.services.categories import BLANKS, like_escape

_encode = msgspec.json.Encoder().encode

# Allow-list: effective ordering -> (page query, the row field its cursor key comes from, type).
# "relevance" is the order of a search (`q`) without an explicit `sort`.
ORDERINGS: dict[str, tuple[Any, str, type]] = {
    "created_at": (queries.list_products_by_created_at, "created_at", str),
    "-created_at": (queries.list_products_by_created_at_desc, "created_at", str),
    "price_cents": (queries.list_products_by_price, "price_cents", int),
    "-price_cents": (queries.list_products_by_price_desc, "price_cents", int),
    "name": (queries.list_products_by_name, "name", str),
    "-name": (queries.list_products_by_name_desc, "name", str),
    "relevance": (queries.list_products_by_relevance, "sort_key", float),
}
DEFAULT_ORDERING = "-created_at"


def _is_staff(user: CurrentUser | None) -> bool:
    return user is not None and user.is_staff


def _public_bytes(row: dict) -> bytes:
    return _encode(msgspec.convert(row, ProductPublic))


def _category_missing() -> ValidationFailed:
    return ValidationFailed.single("category_id", "no such category")


# ------------------------------------------------------------------ reads


def get_product(
    ctx: AppContext, user: CurrentUser | None, product_id: int,
    prefetched: list[bytes | None] | None = None,
) -> Answer:
    """One product; an inactive one is only visible to staff (404 for everyone else).
    `prefetched`: its cache keys' values, when the rate limiter already read them."""

    def load() -> tuple[bytes, list[int]]:
        with connection(ctx.reader) as conn:
            row = queries.get_product(conn, id=product_id, currency=ctx.settings.currency)
        return _packed(product_id, row), []

    value, served = cache.read_product(ctx, product_id, load, prefetched)
    return _visible_to(user, product_id, value, served)


async def get_product_unblocked(
    ctx: AppContext, user: CurrentUser | None, product_id: int,
    prefetched: list[bytes | None] | None,
) -> Answer | None:
    """`get_product` where it needs no blocking call, on the event loop: a hit among the
    values the rate limiter prefetched, or with the cache off one query on the event loop's
    pool. None: run `get_product` on the thread pool (a miss fills the cache entry)."""
    if cache.enabled(ctx):
        value = cache.prefetched_product(ctx, prefetched)
        return None if value is None else _visible_to(user, product_id, value, "hit")
    async with aconnection(ctx.areader) as conn:
        row = await aqueries.get_product(conn, id=product_id, currency=ctx.settings.currency)
    return _visible_to(user, product_id, _packed(product_id, row), None)


def _packed(product_id: int, row: dict | None) -> bytes:
    if row is None:
        raise NotFound(f"Product {product_id} not found")
    return cache.pack(_public_bytes(row), visible=row["is_active"])


def _visible_to(user: CurrentUser | None, product_id: int, value: bytes,
                served: str | None) -> Answer:
    if not cache.is_visible(value) and not _is_staff(user):
        raise NotFound(f"Product {product_id} not found")
    return cache.unpack(value, served)


def list_products(ctx: AppContext, user: CurrentUser | None, query: ProductListQuery) -> Answer:
    """A page by offset (`page`) or by keyset (`cursor`); see the endpoint summary for order."""
    if query.page is not None and query.cursor is not None:
        raise ValidationFailed.single("cursor", "cannot be combined with page")
    q = (query.q or "").strip(BLANKS) or None
    ordering = query.sort or ("relevance" if q else DEFAULT_ORDERING)
    page_query, key_field, key_type = ORDERINGS[ordering]
    filters = {
        # a non-staff caller asking for inactive products just gets the active ones
        "include_inactive": query.include_inactive and _is_staff(user),
        "category_id": query.category_id,
        "min_price": query.min_price_cents,
        "max_price": query.max_price_cents,
        "in_stock": bool(query.in_stock),
        "q": q,
        "prefix": like_escape(q.lower()) + "%" if q else None,
    }
    issued_for = fingerprint(sort=ordering, **filters)
    codec = cursor_codec(ctx.settings.signing_key)
    after_key = after_id = None
    if query.cursor is not None:
        last = codec.decode(query.cursor, issued_for)
        if len(last) != 2 or not isinstance(last[0], key_type) or not isinstance(last[1], int):
            raise ValidationFailed.single("cursor", "is not a cursor this server issued")
        after_key, after_id = last
    page = None if query.cursor is not None else query.page or 1
    per_page = query.per_page
    offset = (page - 1) * per_page if page is not None else 0

    def load() -> tuple[bytes, list[int]]:
        with connection(ctx.reader) as conn:
            rows = list(page_query(conn, currency=ctx.settings.currency, **filters,
                                   after_key=after_key, after_id=after_id,
                                   limit=per_page + 1, offset=offset))
            more = len(rows) > per_page
            del rows[per_page:]
            if page is not None and not more and (rows or offset == 0):
                total = offset + len(rows)  # the last page tells the total: no count needed
            elif page is not None and rows and "matches" in rows[0]:
                total = rows[0]["matches"]  # counted by the search as it ranked (relevance)
            else:
                total = _count(ctx, conn, filters)
        next_cursor = (
            codec.encode([rows[-1][key_field], rows[-1]["id"]], issued_for) if more else None
        )
        answer = page_of(rows, ProductPublic, page=page, per_page=per_page, total=total,
                         next_cursor=next_cursor)
        return cache.pack(_encode(answer)), [row["id"] for row in rows]

    lookup = cache.product_list_key(cache.digest(issued_for, page, per_page, query.cursor),
                                    filters["in_stock"])
    value, served = cache.read_through(ctx, lookup, load)
    return cache.unpack(value, served)


def _count(ctx: AppContext, conn, filters: dict[str, Any]) -> int:
    """The total of a filter set: O(matching rows) in PostgreSQL, so cached on its own; it
    only moves with what moves list membership (the list versions), not with every order."""

    def count() -> tuple[bytes, list[int]]:
        return b"%d" % queries.count_products(conn, **filters), []

    lookup = cache.product_total_key(cache.digest(sorted(filters.items())), filters["in_stock"])
    return int(cache.read_through(ctx, lookup, count)[0])


def list_stock_movements(ctx: AppContext, product_id: int, query: PageQuery) -> Answer:
    """A product's ledger, oldest first (staff only; not cached: it is an audit view)."""
    page = query.page or 1
    with connection(ctx.pool) as conn:
        rows = list(queries.list_stock_movements(
            conn, product_id=product_id, limit=query.per_page, offset=(page - 1) * query.per_page
        ))
        if rows:
            total = rows[0]["total"]
        else:
            found = queries.count_stock_movements(conn, product_id=product_id)
            if not found["product_exists"]:  # (the query always returns its one row)
                raise NotFound(f"Product {product_id} not found")
            total = found["total"]
    answer = page_of(rows, StockMovementPublic, page=page, per_page=query.per_page, total=total)
    return cache.answer_of(_encode(answer))


# ------------------------------------------------------------------ writes


def create_product(ctx: AppContext, user: CurrentUser, body: ProductCreate) -> Answer:
    """A new product; its initial stock is the ledger's first `adjust` row."""
    with transaction(ctx.pool) as conn:
        try:
            product_id = queries.insert_product(
                conn, name=body.name.strip(BLANKS), description=body.description,
                price_cents=body.price_cents, stock=body.stock, image_url=body.image_url,
                category_id=body.category_id, is_active=body.is_active,
            )["id"]
        except psycopg.errors.ForeignKeyViolation:
            raise _category_missing() from None
        if body.stock:
            queries.insert_stock_movement(conn, product_id=product_id, delta=body.stock,
                                          reason="adjust", order_id=None, by_user_id=user.id)
        row = queries.get_product(conn, id=product_id, currency=ctx.settings.currency)
    cache.product_written(ctx, product_id)
    return cache.answer_of(_public_bytes(row))


def update_product(
    ctx: AppContext, user: CurrentUser, product_id: int, body: ProductUpdate,
    if_match: str | None = None,
) -> Answer:
    """Partial update (PUT = PATCH). `if_match` is compared with the locked row's ETag, and a
    `stock` edit writes its delta to the ledger, all in one transaction."""
    if if_match is not None and not if_match.strip(BLANKS):
        raise ValidationFailed.single("If-Match", "must be an entity tag or *")
    with transaction(ctx.pool) as conn:
        current = queries.get_product_for_update(
            conn, id=product_id, currency=ctx.settings.currency
        )
        if current is None:
            raise NotFound(f"Product {product_id} not found")
        if if_match is not None and not cache.match(
            if_match, cache.etag_of(_public_bytes(current))
        ):
            raise PreconditionFailed("The product changed since you read it: fetch it again")
        try:
            row = queries.update_product(
                conn, id=product_id, currency=ctx.settings.currency,
                name=None if body.name is UNSET else body.name.strip(BLANKS),
                description=None if body.description is UNSET else body.description,
                price_cents=None if body.price_cents is UNSET else body.price_cents,
                stock=None if body.stock is UNSET else body.stock,
                set_image_url=body.image_url is not UNSET,
                image_url=None if body.image_url is UNSET else body.image_url,
                category_id=None if body.category_id is UNSET else body.category_id,
                is_active=None if body.is_active is UNSET else body.is_active,
            )
        except psycopg.errors.ForeignKeyViolation:
            raise _category_missing() from None
        delta = row["stock"] - current["stock"]
        if delta:
            queries.insert_stock_movement(conn, product_id=product_id, delta=delta,
                                          reason="adjust", order_id=None, by_user_id=user.id)
    cache.product_written(ctx, product_id)
    return cache.answer_of(_public_bytes(row))


def delete_product(ctx: AppContext, product_id: int) -> None:
    """Removes the product, or deactivates it when an order holds it (history stays whole)."""
    with transaction(ctx.pool) as conn:
        locked = queries.get_product_for_update(
            conn, id=product_id, currency=ctx.settings.currency
        )
        if locked is None:
            raise NotFound(f"Product {product_id} not found")
        # no order line can appear meanwhile: inserting one must first lock this row too
        # (place_order locks its products FOR UPDATE, the foreign key check FOR KEY SHARE)
        if queries.product_in_orders(conn, id=product_id):
            queries.deactivate_product(conn, id=product_id)
        else:
            queries.delete_product(conn, id=product_id)
    cache.product_written(ctx, product_id)

"""Products: cached public reads, staff writes with the stock ledger and the If-Match guard."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi import cache
from shopapi.cache import Answer
from shopapi.context import AppContext, CurrentUser
from shopapi.db import connection, queries, transaction
from shopapi.errors import NotFound, PreconditionFailed, ValidationFailed
from shopapi.etags import etag_of, strong_match
from shopapi.pager import MAX_OFFSET_ROWS, fingerprint
from shopapi.schemas.catalog import (
    SEARCH_MAX_WORDS,
    ProductCreate,
    ProductListQuery,
    ProductPage,
    ProductPublic,
    ProductUpdate,
    StockMovementPublic,
)
from shopapi.schemas.common import PageQuery, sent_fields
from shopapi.text import BLANKS, like_escape

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
# totals are counted up to what offset paging reaches; past it PostgreSQL's estimate is shown
EXACT_TOTAL_LIMIT = MAX_OFFSET_ROWS
_WORD = re.compile(r"\w+")
# the columns a partial update may change, as update_product names its parameters
UPDATABLE = ("description", "price_cents", "stock", "image_url", "category_id", "is_active")


def _is_staff(user: CurrentUser | None) -> bool:
    return user is not None and user.is_staff


def _public_bytes(row: dict) -> bytes:
    return _encode(msgspec.convert(row, ProductPublic))


def _category_missing() -> ValidationFailed:
    return ValidationFailed.single("category_id", "no such category")


# ------------------------------------------------------------------ reads


async def get_product(
    ctx: AppContext,
    user: CurrentUser | None,
    product_id: int,
    prefetched: list[bytes | None] | None = None,
) -> Answer:
    """One product; an inactive one is only visible to staff (404 for everyone else).
    `prefetched`: its cache keys' values, when the rate limiter already read them (a hit
    among them costs no I/O at all)."""
    value = ctx.cache.prefetched_hit(prefetched)
    if value is not None:
        return _visible_to(user, product_id, value, "hit")

    async def load() -> tuple[bytes, list[int]]:
        row = await ctx.reads.read(
            lambda conn: queries.get_product(conn, id=product_id, currency=ctx.settings.currency)
        )
        return _packed(product_id, row), []

    value, served = await ctx.cache.read_product(product_id, load, prefetched)
    return _visible_to(user, product_id, value, served)


def _packed(product_id: int, row: dict | None) -> bytes:
    if row is None:
        raise NotFound(f"Product {product_id} not found")
    return cache.pack(_public_bytes(row), visible=row["is_active"])


def _visible_to(
    user: CurrentUser | None, product_id: int, value: bytes, served: str | None
) -> Answer:
    if not cache.is_visible(value) and not _is_staff(user):
        raise NotFound(f"Product {product_id} not found")
    return cache.unpack(value, served)


def _list_filters(user: CurrentUser | None, query: ProductListQuery) -> dict[str, Any]:
    """The query's filters as list_products_* take them (search text trimmed, LIKE-escaped);
    422 for a search of too many words and for in_stock=false (no such filter)."""
    if query.in_stock is False:
        raise ValidationFailed.single(
            "in_stock", "can only be true; leave it out to list products in and out of stock"
        )
    q = (query.q or "").strip(BLANKS) or None
    if q is not None and len(_WORD.findall(q)) > SEARCH_MAX_WORDS:
        raise ValidationFailed.single("q", f"may have at most {SEARCH_MAX_WORDS} words")
    return {
        # a non-staff caller asking for inactive products just gets the active ones
        "include_inactive": query.include_inactive and _is_staff(user),
        "category_id": query.category_id,
        "min_price": query.min_price_cents,
        "max_price": query.max_price_cents,
        "in_stock": bool(query.in_stock),
        "q": q,
        "prefix": like_escape(q.lower()) + "%" if q else None,
    }


async def list_products(
    ctx: AppContext, user: CurrentUser | None, query: ProductListQuery
) -> Answer:
    """A page by offset (`page`) or by keyset (`cursor`); see the endpoint summary for order.
    A ranked search ranks only the newest SEARCH_CANDIDATES matches, and its total counts
    those; other totals are exact up to EXACT_TOTAL_LIMIT, estimated past it. A cache miss
    waits for one of the worker's list slots (pager.admitted)."""
    filters = _list_filters(user, query)
    ordering = query.sort or ("relevance" if filters["q"] else DEFAULT_ORDERING)
    page_query, key_field, key_type = ORDERINGS[ordering]
    ranked = ordering == "relevance"
    candidates = ctx.settings.search_candidates
    extra = {"candidates": candidates} if ranked else {}
    window = ctx.pager.window(
        query.page,
        query.per_page,
        query.cursor,
        scope=fingerprint(sort=ordering, **filters),
        key_types=(key_type, int),
    )

    async def read(conn: Any) -> Any:
        rows = [
            row
            async for row in page_query(
                conn,
                currency=ctx.settings.currency,
                **filters,
                **extra,
                after_key=window.after[0],
                after_id=window.after[1],
                limit=window.limit,
                offset=window.offset,
            )
        ]
        return await ctx.pager.page(
            rows,
            window,
            ProductPublic,
            total_column="matches",
            count=lambda: _count(ctx, conn, filters, candidates if ranked else None),
            cursor_key=lambda row: [row[key_field], row["id"]],
        )

    async def load() -> tuple[bytes, list[int]]:
        async with ctx.pager.admitted():
            answer = await ctx.reads.read(read)
        page = ProductPage(
            answer.items,
            answer.page,
            answer.per_page,
            answer.total,
            answer.next_cursor,
            total_is_estimate=not ranked and answer.total > EXACT_TOTAL_LIMIT,
        )
        return cache.pack(_encode(page)), [item.id for item in answer.items]

    lookup = cache.product_list_key(
        cache.digest(window.scope, window.page, window.per_page, query.cursor),
        filters["in_stock"],
    )
    return cache.unpack(*await ctx.cache.read_through(lookup, load))


async def _count(
    ctx: AppContext, conn: Any, filters: dict[str, Any], ranked: int | None = None
) -> int:
    """The total of a filter set. A ranked search (`ranked`: how many matches it ranks)
    counts up to that many. Else the count stops past EXACT_TOTAL_LIMIT and PostgreSQL's
    estimate (planning only, at least the limit + 1) stands for more: a count of every match
    is what the limit bounds. Cached on its own; it only moves with what moves list
    membership (the list versions), not with every order."""
    cap = EXACT_TOTAL_LIMIT if ranked is None else ranked

    async def count() -> tuple[bytes, list[int]]:
        found = await queries.count_products(conn, **filters, cap=cap + 1)
        if found > cap and ranked is not None:
            found = cap
        elif found > cap:
            plan = await queries.estimate_products(conn, **filters)
            found = max(cap + 1, round(plan[0]["Plan"]["Plan Rows"]))
        return b"%d" % found, []

    lookup = cache.product_total_key(
        cache.digest(sorted(filters.items()), ranked), filters["in_stock"]
    )
    return int((await ctx.cache.read_through(lookup, count))[0])


async def list_stock_movements(ctx: AppContext, product_id: int, query: PageQuery) -> Answer:
    """A product's ledger, oldest first (staff only; not cached: it is an audit view)."""
    window = ctx.pager.window(query.page, query.per_page)
    async with connection(ctx.pool) as conn:
        rows = [
            row
            async for row in queries.list_stock_movements(
                conn, product_id=product_id, limit=window.limit, offset=window.offset
            )
        ]
        found = None
        if not rows:
            found = await queries.count_stock_movements(conn, product_id=product_id)
            if not found["product_exists"]:
                raise NotFound(f"Product {product_id} not found")

    async def count() -> int:
        return found["total"] if found is not None else 0

    answer = await ctx.pager.page(
        rows, window, StockMovementPublic, total_column="total", count=count
    )
    return Answer.of(_encode(answer))


# ------------------------------------------------------------------ writes


async def create_product(
    ctx: AppContext, user: CurrentUser, body: ProductCreate
) -> tuple[int, Answer]:
    """A new product (its id, for the Location header, and its answer); its initial stock is
    the ledger's first `adjust` row."""
    async with transaction(ctx.pool) as conn:
        try:
            product_id = (
                await queries.insert_product(
                    conn,
                    name=body.name.strip(BLANKS),
                    description=body.description,
                    price_cents=body.price_cents,
                    stock=body.stock,
                    image_url=body.image_url,
                    category_id=body.category_id,
                    is_active=body.is_active,
                )
            )["id"]
        except psycopg.errors.ForeignKeyViolation:
            raise _category_missing() from None
        if body.stock:
            await queries.insert_stock_movement(
                conn,
                product_id=product_id,
                delta=body.stock,
                reason="adjust",
                order_id=None,
                by_user_id=user.id,
            )
        row = await queries.get_product(conn, id=product_id, currency=ctx.settings.currency)
    await ctx.catalog_written(cache.product_version(product_id), cache.LIST_VERSION)
    return product_id, Answer.of(_public_bytes(row))


def _checked_if_match(if_match: str | None) -> str | None:
    if if_match is not None and not if_match.strip(BLANKS):
        raise ValidationFailed.single("If-Match", "must be an entity tag or *")
    return if_match


def _update_params(body: ProductUpdate) -> dict[str, Any]:
    """update_product's parameters for a partial body (NULL keeps a column)."""
    return {
        **sent_fields(body, *UPDATABLE),
        "name": None if body.name is UNSET else body.name.strip(BLANKS),
        # image_url may be cleared on purpose: null sent differs from not sent
        "set_image_url": body.image_url is not UNSET,
    }


async def update_product(
    ctx: AppContext,
    user: CurrentUser,
    product_id: int,
    body: ProductUpdate,
    if_match: str | None = None,
) -> Answer:
    """Partial update (PUT = PATCH). `if_match` is compared with the locked row's ETag, and a
    `stock` edit writes its delta to the ledger, all in one transaction."""
    if_match = _checked_if_match(if_match)
    async with transaction(ctx.pool) as conn:
        current = await queries.get_product_for_update(
            conn, id=product_id, currency=ctx.settings.currency
        )
        if current is None:
            raise NotFound(f"Product {product_id} not found")
        if if_match is not None and not strong_match(if_match, etag_of(_public_bytes(current))):
            raise PreconditionFailed("The product changed since you read it: fetch it again")
        try:
            row = await queries.update_product(
                conn, id=product_id, currency=ctx.settings.currency, **_update_params(body)
            )
        except psycopg.errors.ForeignKeyViolation:
            raise _category_missing() from None
        delta = row["stock"] - current["stock"]
        if delta:
            await queries.insert_stock_movement(
                conn,
                product_id=product_id,
                delta=delta,
                reason="adjust",
                order_id=None,
                by_user_id=user.id,
            )
        if current["stock"] > 0 and row["stock"] == 0:  # the event commits with the edit
            await queries.record_out_of_stock(conn, product_id=product_id, name=row["name"])
    await ctx.catalog_written(cache.product_version(product_id), cache.LIST_VERSION)
    return Answer.of(_public_bytes(row))


async def delete_product(ctx: AppContext, product_id: int) -> None:
    """Removes the product, or deactivates it when an order holds it (history stays whole)."""
    async with transaction(ctx.pool) as conn:
        locked = await queries.get_product_for_update(
            conn, id=product_id, currency=ctx.settings.currency
        )
        if locked is None:
            raise NotFound(f"Product {product_id} not found")
        # no order line can appear meanwhile: inserting one must first lock this row too
        # (place_order locks its products FOR UPDATE, the foreign key check FOR KEY SHARE)
        if await queries.product_in_orders(conn, id=product_id):
            await queries.deactivate_product(conn, id=product_id)
        else:
            await queries.delete_product(conn, id=product_id)
    await ctx.catalog_written(cache.product_version(product_id), cache.LIST_VERSION)

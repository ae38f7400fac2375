"""Categories: public reads through the cache, staff writes; the slug is set once."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi import cache
from shopapi.cache import Answer
from shopapi.context import AppContext
from shopapi.db import queries, transaction
from shopapi.errors import CategoryInUse, NameTaken, NotFound
from shopapi.schemas.catalog import (
    CategoryCreate,
    CategoryListQuery,
    CategoryPublic,
    CategoryUpdate,
)
from shopapi.schemas.common import sent_fields
from shopapi.slugs import slugify
from shopapi.text import BLANKS, like_escape

_encode = msgspec.json.Encoder().encode
_SUFFIX = re.compile(r"-([0-9]+)$")
SLUG_CONSTRAINT = "categories_slug_key"
_SLUG_ATTEMPTS = 5


def next_slug(base: str, taken: set[str]) -> str:
    """`base` when free, else `base-N` with N one more than the highest taken (from 2)."""
    if base not in taken:
        return base
    suffixes = [int(m.group(1)) for slug in taken if (m := _SUFFIX.search(slug[len(base) :]))]
    return f"{base}-{max([1, *suffixes]) + 1}"


def _public(row: dict) -> CategoryPublic:
    return msgspec.convert(row, CategoryPublic)


async def get_category(ctx: AppContext, category_id: int) -> Answer:
    async def load() -> tuple[bytes, list[int]]:
        row = await ctx.reads.read(lambda conn: queries.get_category(conn, id=category_id))
        if row is None:
            raise NotFound(f"Category {category_id} not found")
        return cache.pack(_encode(_public(row))), []

    return cache.unpack(*await ctx.cache.read_through(cache.category_key(category_id), load))


async def list_categories(ctx: AppContext, query: CategoryListQuery) -> Answer:
    pager = ctx.pager
    window = pager.window(query.page, query.per_page)
    q = query.q.strip(BLANKS) if query.q else ""
    pattern = f"%{like_escape(q)}%" if q else None

    async def read(conn: Any) -> Any:
        rows = [
            row
            async for row in queries.list_categories(
                conn, q=pattern, limit=window.limit, offset=window.offset
            )
        ]
        return await pager.page(
            rows,
            window,
            CategoryPublic,
            total_column="total",
            count=lambda: queries.count_categories(conn, q=pattern),
        )

    async def load() -> tuple[bytes, list[int]]:
        async with pager.admitted():  # a miss waits for one of the worker's list slots
            return cache.pack(_encode(await ctx.reads.read(read))), []

    lookup = cache.category_list_key(cache.digest(q, window.page, window.per_page))
    return cache.unpack(*await ctx.cache.read_through(lookup, load))


async def create_category(ctx: AppContext, body: CategoryCreate) -> tuple[int, Answer]:
    """A new category: its id (for the Location header) and its answer."""
    name = body.name.strip(BLANKS)
    base = slugify(name)
    for _ in range(_SLUG_ATTEMPTS):
        try:
            async with transaction(ctx.pool) as conn:
                taken = {row["slug"] async for row in queries.list_category_slugs(conn, base=base)}
                row = await queries.insert_category(
                    conn, name=name, slug=next_slug(base, taken), description=body.description
                )
            break
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != SLUG_CONSTRAINT:
                raise NameTaken(f"A category named {name!r} already exists") from None
            # a concurrent create took that slug between our read and insert: pick again
    else:
        raise NameTaken(f"Could not find a free slug for {name!r}, retry")
    await ctx.catalog_written(cache.CATEGORY_LIST_VERSION)  # a new one only joins the lists
    return row["id"], Answer.of(_encode(_public(row)))


async def update_category(ctx: AppContext, category_id: int, body: CategoryUpdate) -> Answer:
    name = None if body.name is UNSET else body.name.strip(BLANKS)
    try:
        async with transaction(ctx.pool) as conn:
            row = await queries.update_category(
                conn, id=category_id, name=name, **sent_fields(body, "description")
            )
    except psycopg.errors.UniqueViolation:
        raise NameTaken(f"A category named {name!r} already exists") from None
    if row is None:
        raise NotFound(f"Category {category_id} not found")
    # every catalog entry shows a category's name
    await ctx.catalog_written(cache.CATALOG_VERSION)
    return Answer.of(_encode(_public(row)))


async def delete_category(ctx: AppContext, category_id: int) -> None:
    in_use = CategoryInUse(f"Category {category_id} still has products; move or delete them")
    try:
        async with transaction(ctx.pool) as conn:
            if await queries.get_category(conn, id=category_id) is None:
                raise NotFound(f"Category {category_id} not found")
            if await queries.category_has_products(conn, id=category_id):
                raise in_use
            await queries.delete_category(conn, id=category_id)
    except psycopg.errors.ForeignKeyViolation:
        # a product was added concurrently, after our check
        raise in_use from None
    await ctx.catalog_written(cache.CATALOG_VERSION)

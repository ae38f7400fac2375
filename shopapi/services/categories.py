"""Categories: public reads through the cache, staff writes; the slug is set once."""

from __future__ import annotations

import re

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi import cache
from shopapi.cache import Answer
from shopapi.context import AppContext
from shopapi.db import connection, queries, transaction
from shopapi.errors import CategoryInUse, NameTaken, NotFound
from shopapi.pagination import page_of
from shopapi.schemas.catalog import (
    CategoryCreate,
    CategoryListQuery,
    CategoryPublic,
    CategoryUpdate,
)
from shopapi.slugs import slugify

_encode = msgspec.json.Encoder().encode
_SUFFIX = re.compile(r"-([0-9]+)$")
BLANKS = " \t\r\n"  # what names, searches and If-Match are trimmed of
SLUG_CONSTRAINT = "categories_slug_key"
_SLUG_ATTEMPTS = 5


def next_slug(base: str, taken: set[str]) -> str:
    """`base` when free, else `base-N` with N one more than the highest taken (from 2)."""
    if base not in taken:
        return base
    suffixes = [int(m.group(1)) for slug in taken if (m := _SUFFIX.search(slug[len(base):]))]
    return f"{base}-{max([1, *suffixes]) + 1}"


def like_escape(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (backslash is PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _public(row: dict) -> CategoryPublic:
    return msgspec.convert(row, CategoryPublic)


def get_category(ctx: AppContext, category_id: int) -> Answer:
    def load() -> tuple[bytes, list[int]]:
        with connection(ctx.reader) as conn:
            row = queries.get_category(conn, id=category_id)
        if row is None:
            raise NotFound(f"Category {category_id} not found")
        return cache.pack(_encode(_public(row))), []

    value, served = cache.read_through(ctx, cache.category_key(category_id), load)
    return cache.unpack(value, served)


def list_categories(ctx: AppContext, query: CategoryListQuery) -> Answer:
    page = query.page or 1
    q = query.q.strip(BLANKS) if query.q else ""
    pattern = f"%{like_escape(q)}%" if q else None

    def load() -> tuple[bytes, list[int]]:
        with connection(ctx.reader) as conn:
            rows = list(queries.list_categories(
                conn, q=pattern, limit=query.per_page, offset=(page - 1) * query.per_page
            ))
            total = rows[0]["total"] if rows else queries.count_categories(conn, q=pattern)
        answer = page_of(rows, CategoryPublic, page=page, per_page=query.per_page, total=total)
        return cache.pack(_encode(answer)), []

    lookup = cache.category_list_key(cache.digest(q, page, query.per_page))
    value, served = cache.read_through(ctx, lookup, load)
    return cache.unpack(value, served)


def create_category(ctx: AppContext, body: CategoryCreate) -> Answer:
    name = body.name.strip(BLANKS)
    base = slugify(name)
    for _ in range(_SLUG_ATTEMPTS):
        try:
            with transaction(ctx.pool) as conn:
                taken = {row["slug"] for row in queries.list_category_slugs(conn, base=base)}
                row = queries.insert_category(
                    conn, name=name, slug=next_slug(base, taken), description=body.description
                )
            break
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != SLUG_CONSTRAINT:
                raise NameTaken(f"A category named {name!r} already exists") from None
            # a concurrent create took that slug between our read and insert: pick again
    else:
        raise NameTaken(f"Could not find a free slug for {name!r}, retry")
    cache.category_created(ctx)
    return cache.answer_of(_encode(_public(row)))


def update_category(ctx: AppContext, category_id: int, body: CategoryUpdate) -> Answer:
    name = None if body.name is UNSET else body.name.strip(BLANKS)
    try:
        with transaction(ctx.pool) as conn:
            row = queries.update_category(
                conn, id=category_id, name=name,
                description=None if body.description is UNSET else body.description,
            )
    except psycopg.errors.UniqueViolation:
        raise NameTaken(f"A category named {name!r} already exists") from None
    if row is None:
        raise NotFound(f"Category {category_id} not found")
    cache.categories_changed(ctx)
    return cache.answer_of(_encode(_public(row)))


def delete_category(ctx: AppContext, category_id: int) -> None:
    in_use = CategoryInUse(f"Category {category_id} still has products; move or delete them")
    try:
        with transaction(ctx.pool) as conn:
            if queries.get_category(conn, id=category_id) is None:
                raise NotFound(f"Category {category_id} not found")
            if queries.category_has_products(conn, id=category_id):
                raise in_use
            queries.delete_category(conn, id=category_id)
    except psycopg.errors.ForeignKeyViolation:
        # a product was added concurrently, after our check
        raise in_use from None
    cache.categories_changed(ctx)

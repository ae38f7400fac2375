"""Shipping methods: public reads of the active ones, staff writes; a used method is kept.

Not cached in Redis: the table holds a handful of rows, a read is one indexed statement, and
checkout must see a price change at once. Reads still carry an ETag (304 when current).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi.cache import Answer
from shopapi.context import AppContext, CurrentUser
from shopapi.db import queries, transaction
from shopapi.errors import NameTaken, NotFound
from shopapi.schemas.common import sent_fields
from shopapi.schemas.shipping import (
    ShippingMethodCreate,
    ShippingMethodListQuery,
    ShippingMethodPublic,
    ShippingMethodUpdate,
)
from shopapi.text import BLANKS

_encode = msgspec.json.Encoder().encode
NAME_CONSTRAINT = "shipping_methods_name_key"


def _is_staff(user: CurrentUser | None) -> bool:
    return user is not None and user.is_staff


def _answer(row: dict) -> Answer:
    return Answer.of(_encode(msgspec.convert(row, ShippingMethodPublic)))


def _not_found(method_id: int) -> NotFound:
    return NotFound(f"Shipping method {method_id} not found")


def _name_taken(name: str, exc: psycopg.errors.UniqueViolation) -> NameTaken:
    """409 for a clash on the case-insensitive name index (the only unique one besides the
    generated id: anything else is a bug to surface, not a 409)."""
    if exc.diag.constraint_name != NAME_CONSTRAINT:
        raise exc
    return NameTaken(f"A shipping method named {name!r} already exists")


def normalize_countries(countries: Iterable[str]) -> list[str]:
    """One spelling of a country list: each code once, sorted (empty: ships everywhere)."""
    return sorted(set(countries))


# ------------------------------------------------------------------ reads


async def get_shipping_method(ctx: AppContext, user: CurrentUser | None, method_id: int) -> Answer:
    """One method; an inactive one is only visible to staff (404 for everyone else)."""
    row = await ctx.reads.read(lambda conn: queries.get_shipping_method(conn, id=method_id))
    if row is None or not (row["is_active"] or _is_staff(user)):
        raise _not_found(method_id)
    return _answer(row)


async def list_shipping_methods(
    ctx: AppContext, user: CurrentUser | None, query: ShippingMethodListQuery
) -> Answer:
    """A page by id: one statement (two for a page past the end, to count), in one of the
    worker's list slots like every public list."""
    # a non-staff caller asking for inactive methods just gets the active ones (as products)
    include_inactive = query.include_inactive and _is_staff(user)
    window = ctx.pager.window(query.page, query.per_page)

    async def read(conn: Any) -> Any:
        rows = [
            row
            async for row in queries.list_shipping_methods(
                conn, include_inactive=include_inactive, limit=window.limit, offset=window.offset
            )
        ]
        return await ctx.pager.page(
            rows,
            window,
            ShippingMethodPublic,
            total_column="total",
            count=lambda: queries.count_shipping_methods(conn, include_inactive=include_inactive),
        )

    async with ctx.pager.admitted():  # public and uncached: it waits for a list slot too
        return Answer.of(_encode(await ctx.reads.read(read)))


# ------------------------------------------------------------------ writes


async def create_shipping_method(ctx: AppContext, body: ShippingMethodCreate) -> tuple[int, Answer]:
    """A new method: its id (for the Location header) and its answer."""
    name = body.name.strip(BLANKS)
    try:
        async with transaction(ctx.pool) as conn:
            row = await queries.insert_shipping_method(
                conn,
                name=name,
                price_cents=body.price_cents,
                free_over_cents=body.free_over_cents,
                countries=normalize_countries(body.countries),
                is_active=body.is_active,
            )
    except psycopg.errors.UniqueViolation as exc:
        raise _name_taken(name, exc) from None
    await ctx.catalog_written()
    return row["id"], _answer(row)


def _update_params(body: ShippingMethodUpdate) -> dict[str, Any]:
    """update_shipping_method's parameters for a partial body (NULL keeps a column)."""
    return {
        **sent_fields(body, "price_cents", "is_active"),
        "name": None if body.name is UNSET else body.name.strip(BLANKS),
        "countries": None if body.countries is UNSET else normalize_countries(body.countries),
        # free_over_cents may be cleared on purpose: null sent differs from not sent
        "set_free_over": body.free_over_cents is not UNSET,
        "free_over_cents": None if body.free_over_cents is UNSET else body.free_over_cents,
    }


async def update_shipping_method(
    ctx: AppContext, method_id: int, body: ShippingMethodUpdate
) -> Answer:
    """Partial update (PUT = PATCH); a rename onto a taken name (any case) is 409."""
    params = _update_params(body)
    try:
        async with transaction(ctx.pool) as conn:
            row = await queries.update_shipping_method(conn, id=method_id, **params)
    except psycopg.errors.UniqueViolation as exc:
        raise _name_taken(params["name"], exc) from None
    if row is None:
        raise _not_found(method_id)
    await ctx.catalog_written()
    return _answer(row)


async def delete_shipping_method(ctx: AppContext, method_id: int) -> None:
    """Removes the method, or deactivates it when an order used it (the order keeps it)."""
    async with transaction(ctx.pool) as conn:
        if await queries.shipping_method_in_orders(conn, id=method_id):
            found = await queries.deactivate_shipping_method(conn, id=method_id)
        else:
            try:
                async with conn.transaction():  # a savepoint: the fallback below stays possible
                    found = await queries.delete_shipping_method(conn, id=method_id)
            except psycopg.errors.ForeignKeyViolation:
                # an order that used it committed after our check (the DELETE waited for its
                # foreign key lock, then the RESTRICT check saw it): keep it, out of the offer
                found = await queries.deactivate_shipping_method(conn, id=method_id)
        if not found:
            raise _not_found(method_id)
    await ctx.catalog_written()

"""The address book: each user's own addresses, at most MAX_ADDRESSES, at most one default.

Writes that could break either rule (a create, or making an address the default) first lock
the user's row (`lock_address_book`), so two concurrent creates cannot both pass the size
check and two new defaults cannot collide on the one-default index.
"""

from __future__ import annotations

import msgspec
import psycopg

from shopapi.context import AppContext, CurrentUser
from shopapi.db import connection, queries, transaction
from shopapi.errors import AddressLimit, NotAuthenticated, NotFound
from shopapi.schemas.addresses import (
    AddressCreate,
    AddressListQuery,
    AddressPublic,
    AddressUpdate,
)
from shopapi.schemas.common import PageOf, sent_fields

MAX_ADDRESSES = 20
_FIELDS = (
    "full_name",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
    "phone",
    "is_default",
)


def _public(row: dict) -> AddressPublic:
    return msgspec.convert(row, AddressPublic)


def _not_found(address_id: int) -> NotFound:
    # the same answer for another user's address and for none: no probing of ids
    return NotFound(f"Address {address_id} not found")


async def _lock_book(conn: psycopg.AsyncConnection, user: CurrentUser) -> None:
    if await queries.lock_address_book(conn, user_id=user.id) is None:
        # deactivated or deleted since its token was checked
        raise NotAuthenticated("This account is no longer active")


async def list_addresses(
    ctx: AppContext, user: CurrentUser, query: AddressListQuery
) -> PageOf[AddressPublic]:
    pager = ctx.pager
    window = pager.window(query.page, query.per_page)
    async with connection(ctx.pool) as conn:
        rows = [
            row
            async for row in queries.list_addresses(
                conn, user_id=user.id, limit=window.limit, offset=window.offset
            )
        ]
        return await pager.page(
            rows,
            window,
            AddressPublic,
            total_column="total",
            count=lambda: queries.count_addresses(conn, user_id=user.id),
        )


async def get_address(ctx: AppContext, user: CurrentUser, address_id: int) -> AddressPublic:
    async with connection(ctx.pool) as conn:
        row = await queries.get_address(conn, id=address_id, user_id=user.id)
    if row is None:
        raise _not_found(address_id)
    return _public(row)


async def create_address(ctx: AppContext, user: CurrentUser, body: AddressCreate) -> AddressPublic:
    fields = msgspec.structs.asdict(body)
    async with transaction(ctx.pool) as conn:
        await _lock_book(conn, user)
        if body.is_default:
            # (undone with the rest if the book turns out to be full)
            await queries.clear_default_address(conn, user_id=user.id, keep_id=None)
        row = await queries.insert_address(
            conn, user_id=user.id, max_addresses=MAX_ADDRESSES, **fields
        )
        if row is None:
            raise AddressLimit(f"An address book holds at most {MAX_ADDRESSES} addresses")
    return _public(row)


async def update_address(
    ctx: AppContext, user: CurrentUser, address_id: int, body: AddressUpdate
) -> AddressPublic:
    values = sent_fields(body, *_FIELDS)
    if body.is_default is True:
        async with transaction(ctx.pool) as conn:
            await _lock_book(conn, user)
            await queries.clear_default_address(conn, user_id=user.id, keep_id=address_id)
            row = await queries.update_address(conn, id=address_id, user_id=user.id, **values)
            if row is None:
                raise _not_found(address_id)  # rolls the clearing back
    else:
        # one statement: nothing else to keep consistent (is_default false may leave none)
        async with connection(ctx.pool) as conn:
            row = await queries.update_address(conn, id=address_id, user_id=user.id, **values)
        if row is None:
            raise _not_found(address_id)
    return _public(row)


async def delete_address(ctx: AppContext, user: CurrentUser, address_id: int) -> None:
    async with connection(ctx.pool) as conn:
        deleted = await queries.delete_address(conn, id=address_id, user_id=user.id)
    if not deleted:
        raise _not_found(address_id)

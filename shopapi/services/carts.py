"""Carts: one per user (bearer token) or per guest (X-Cart-Token), read with current prices.

A guest's token is a 256-bit secret shown once, when the cart is made; only its sha256 is
stored, so the carts table cannot be used to act as a guest. A bearer token always wins over
a cart token (a guest token never reaches a user's cart, and a user's cart has no token).
Every write locks its cart row first, in its transaction (sql/queries/carts.sql), so the
line count it checks is exact under concurrency; a read is one statement.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec

from shopapi.context import AppContext, CurrentUser
from shopapi.db import Pool, connection, queries, transaction
from shopapi.errors import ApiError, CartFull, NotAuthenticated, NotFound, ValidationFailed
from shopapi.schemas.carts import CART_LINES_MAX, CartPublic, GuestCartPublic

CART_TOKEN_HEADER = "X-Cart-Token"  # noqa: S105 - a header name, not a secret
TOKEN_BYTES = 32  # 256 bits of secrets.token_urlsafe: 43 characters


@dataclass(frozen=True)
class CartOwner:
    """Whose cart a request acts on: a user's (user_id) or a guest's (token_hash)."""

    user_id: int | None = None
    token_hash: bytes | None = None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def cart_owner(
    user: CurrentUser | None, auth_error: ApiError | None, cart_token: str | None
) -> CartOwner:
    """The bearer's cart when a valid bearer token came (a bad one is its 401, even with a
    cart token: the caller meant to be someone), else the guest cart of X-Cart-Token."""
    if auth_error is not None:
        raise auth_error
    if user is not None:
        return CartOwner(user_id=user.id)
    if cart_token:
        return CartOwner(token_hash=token_hash(cart_token))
    raise NotAuthenticated(f"Send a bearer token or the {CART_TOKEN_HEADER} of a guest cart")


def _unknown_token() -> NotFound:
    return NotFound("Unknown or expired cart token")


def _public(row: dict[str, Any]) -> CartPublic:
    return msgspec.convert(row, CartPublic)


async def user_cart_id(conn: Any, user_id: int) -> int:
    """The user's cart id, made on first use, row-locked until `conn`'s transaction ends
    (every cart change takes that lock first: call it inside `transaction(...)`)."""
    while True:
        cart_id = await queries.lock_or_make_user_cart(conn, user_id=user_id)
        if cart_id is not None:
            return cart_id
        # a concurrent first use made it after our look: it is visible to the next statement


async def _lock(conn: Any, owner: CartOwner) -> int:
    """The owner's cart id, row-locked (a guest's unknown or expired token: 404)."""
    if owner.user_id is not None:
        return await user_cart_id(conn, owner.user_id)
    cart_id = await queries.lock_guest_cart(conn, token_hash=owner.token_hash)
    if cart_id is None:
        raise _unknown_token()
    return cart_id


async def _read(ctx: AppContext, conn: Any, owner: CartOwner) -> dict[str, Any] | None:
    return await queries.get_cart(
        conn, user_id=owner.user_id, token_hash=owner.token_hash, currency=ctx.settings.currency
    )


# ------------------------------------------------------------------ reads


async def create_guest_cart(ctx: AppContext) -> GuestCartPublic:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    async with connection(ctx.pool) as conn:
        row = await queries.insert_guest_cart(
            conn, token_hash=token_hash(token), ttl=ctx.settings.cart_ttl
        )
    return GuestCartPublic(
        id=row["id"],
        items=[],
        subtotal_cents=0,
        currency=ctx.settings.currency,
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        token=token,
    )


async def get_cart(ctx: AppContext, owner: CartOwner) -> CartPublic:
    """One statement once the cart exists; a user's first read makes the empty cart."""
    async with connection(ctx.pool) as conn:
        row = await _read(ctx, conn, owner)
        if row is None:
            if owner.user_id is None:
                raise _unknown_token()
            await queries.ensure_user_cart(conn, user_id=owner.user_id)
            row = await _read(ctx, conn, owner)
    assert row is not None  # (a user's cart exists now; carts go only with their user)
    return _public(row)


# ------------------------------------------------------------------ writes


async def set_line(
    ctx: AppContext, owner: CartOwner, product_id: int, quantity: int
) -> tuple[CartPublic, bool]:
    """Set the quantity of one product's line; the cart and whether the line is new."""
    async with transaction(ctx.pool) as conn:
        cart_id = await _lock(conn, owner)
        result = await queries.set_cart_line(
            conn,
            cart_id=cart_id,
            product_id=product_id,
            quantity=quantity,
            max_lines=CART_LINES_MAX,
            ttl=ctx.settings.cart_ttl,
        )
        if not result["product_ok"]:
            raise ValidationFailed.single("product_id", "no such product for sale")
        if not result["written"]:
            raise CartFull(f"A cart holds at most {CART_LINES_MAX} products")
        row = await _read(ctx, conn, owner)
    assert row is not None  # (locked above, in this transaction)
    return _public(row), not result["existed"]


async def remove_line(ctx: AppContext, owner: CartOwner, product_id: int) -> None:
    """Remove one product's line; a line that is not there is removed already."""
    async with transaction(ctx.pool) as conn:
        cart_id = await _lock(conn, owner)
        await queries.delete_cart_line(
            conn, cart_id=cart_id, product_id=product_id, ttl=ctx.settings.cart_ttl
        )


async def clear(ctx: AppContext, owner: CartOwner) -> None:
    async with transaction(ctx.pool) as conn:
        cart_id = await _lock(conn, owner)
        await queries.clear_cart(conn, cart_id=cart_id, ttl=ctx.settings.cart_ttl)


async def claim(ctx: AppContext, user: CurrentUser, cart_token: str | None) -> CartPublic:
    """Move the guest cart's lines into the user's and delete it, all or nothing: a product
    in both keeps the larger quantity; over CART_LINES_MAX merged lines nothing changes."""
    if not cart_token:
        raise ValidationFailed.single(CART_TOKEN_HEADER, "required: the guest cart to claim")
    owner = CartOwner(user_id=user.id)
    async with transaction(ctx.pool) as conn:
        await queries.ensure_user_cart(conn, user_id=user.id)
        locked = [
            row
            async for row in queries.lock_claim_carts(
                conn, user_id=user.id, token_hash=token_hash(cart_token)
            )
        ]
        guest = next((row["id"] for row in locked if row["user_id"] is None), None)
        mine = next((row["id"] for row in locked if row["user_id"] == user.id), None)
        if guest is None or mine is None:
            raise _unknown_token()
        lines = await queries.merge_guest_cart(
            conn, user_cart_id=mine, guest_cart_id=guest, max_lines=CART_LINES_MAX
        )
        if lines > CART_LINES_MAX:
            raise CartFull(
                f"Together the carts hold {lines} products; a cart holds at most "
                f"{CART_LINES_MAX}: remove some first"
            )
        row = await _read(ctx, conn, owner)
    assert row is not None
    return _public(row)


# ------------------------------------------------------------------ housekeeping


async def purge_expired_guest_carts(pool: Pool) -> int:
    """Delete the guest carts past their expiry (lines cascade); returns how many."""
    async with connection(pool) as conn:
        return await queries.delete_expired_guest_carts(conn)

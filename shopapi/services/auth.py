"""Registration, login, refresh-token rotation with reuse detection, and the caller check."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import psycopg.errors

from shopapi.context import AppContext, CurrentUser
from shopapi.db import Pool, connection, queries, transaction
from shopapi.errors import EmailTaken, InvalidCredentials, NotAuthenticated, ValidationFailed
from shopapi.schemas.users import EMAIL_MAX, LoginRequest, TokenPair, UserCreate, UserPublic
from shopapi.security import AccessClaims, token_digest
from shopapi.text import normalize_email


def storable_email(email: str) -> str:
    """The spelling stored for a schema-valid email, re-checked after normalizing: lower-casing
    can lengthen it ("İ" becomes "i̇") and strip() also trims Unicode blanks next to the `@`."""
    email = normalize_email(email)
    local, _, domain = email.partition("@")
    if len(email) > EMAIL_MAX:
        raise ValidationFailed.single(
            "email", f"must be at most {EMAIL_MAX} characters once lower-cased"
        )
    if not local or not domain:
        raise ValidationFailed.single("email", "must have characters before and after the @")
    return email


async def register(ctx: AppContext, body: UserCreate) -> UserPublic:
    """Role is always CUSTOMER: a `role` in the body is ignored like any unknown field."""
    email = storable_email(body.email)
    password_hash = await ctx.passwords.hash(body.password)
    try:
        async with transaction(ctx.pool) as conn:
            row = await queries.insert_user(
                conn,
                email=email,
                password_hash=password_hash,
                full_name=body.full_name,
                role="CUSTOMER",
            )
    except psycopg.errors.UniqueViolation:
        raise EmailTaken("This email is already registered") from None
    return msgspec.convert(row, UserPublic)


async def _issue_pair(
    ctx: AppContext, conn: Any, user_id: int, role: str, family: uuid.UUID
) -> TokenPair:
    refresh, expires_at = ctx.tokens.issue_refresh(user_id, family)
    await queries.insert_refresh_token(
        conn,
        user_id=user_id,
        family_id=family,
        token_hash=token_digest(refresh),
        expires_at=expires_at,
    )
    return TokenPair(
        access_token=ctx.tokens.issue_access(user_id, role),
        refresh_token=refresh,
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
        expires_in=ctx.tokens.access_ttl,
    )


async def login(ctx: AppContext, body: LoginRequest) -> TokenPair:
    async with connection(ctx.pool) as conn:
        row = await queries.get_login(conn, email=normalize_email(body.email))
    if row is None:
        # same bcrypt cost as a real check: no user enumeration by timing
        await ctx.passwords.check_nobody(body.password)
        raise InvalidCredentials("Wrong email or password")
    if not await ctx.passwords.check(body.password, row["password_hash"]) or not row["is_active"]:
        raise InvalidCredentials("Wrong email or password")
    async with transaction(ctx.pool) as conn:
        return await _issue_pair(ctx, conn, row["id"], row["role"], uuid.uuid4())


async def refresh(ctx: AppContext, token: str) -> TokenPair:
    """Rotate: the presented token is revoked and a new pair of the same login is issued."""
    user_id = int(ctx.tokens.verify_refresh(token)["sub"])
    digest = token_digest(token)
    async with transaction(ctx.pool) as conn:
        # The user's row lock puts a rotation in line with logout-all, password and role
        # changes, deactivation and reuse detection, which all take it first: whichever
        # commits first, the other's next statement sees what it wrote, so no token issued
        # here can outlive a revocation that raced with it.
        # (the token we signed names its user: the row locked is the token row's user)
        user = await queries.get_user_for_update(conn, id=user_id)
        used = await queries.revoke_refresh_token(conn, token_hash=digest)
        if used is not None:
            if user is not None and user["is_active"]:
                return await _issue_pair(ctx, conn, user["id"], user["role"], used["family_id"])
            raise NotAuthenticated("Account disabled")
    # not live: a revoked token coming back means it leaked; end that whole login
    async with transaction(ctx.pool) as conn:
        await queries.get_user_for_update(conn, id=user_id)
        known = await queries.get_refresh_token(conn, token_hash=digest)
        if known is not None and known["revoked"]:
            await queries.revoke_refresh_family(conn, family_id=known["family_id"])
    raise NotAuthenticated("Refresh token revoked or unknown")


async def logout(ctx: AppContext, token: str) -> None:
    ctx.tokens.verify_refresh(token)
    # idempotent: logging out twice is still a 204 (the signature proved who issued it)
    async with transaction(ctx.pool) as conn:
        await queries.revoke_refresh_token(conn, token_hash=token_digest(token))


async def logout_all(ctx: AppContext, user: CurrentUser) -> None:
    async with transaction(ctx.pool) as conn:
        await queries.get_user_for_update(conn, id=user.id)  # in line with refreshes: see refresh()
        await queries.revoke_user_refresh_tokens(conn, user_id=user.id)


async def authenticate(ctx: AppContext, token: str) -> CurrentUser:
    """The caller behind an access token; a deactivated, deleted or re-roled user is refused."""
    claims = ctx.tokens.verify_access(token)
    # no database round trip while this worker's memory is kept true (shopapi/user_state.py)
    state = await ctx.user_states.get(claims.user_id, lambda user_id: _load_state(ctx, user_id))
    return _caller(claims, state)


def remembered_caller(ctx: AppContext, token: str) -> CurrentUser | None:
    """`authenticate` from this worker's memory alone, no I/O: None when the user's state must
    be read from PostgreSQL (then await `authenticate`)."""
    claims = ctx.tokens.verify_access(token)
    state = ctx.user_states.peek(claims.user_id)
    return None if state is None else _caller(claims, state)


def _caller(claims: AccessClaims, state: tuple[str, bool] | None) -> CurrentUser:
    if state is None or not state[1] or state[0] != claims.role:
        raise NotAuthenticated("Token no longer valid")
    return CurrentUser(claims.user_id, claims.role)


async def _load_state(ctx: AppContext, user_id: int) -> tuple[str, bool] | None:
    async with connection(ctx.pool) as conn:
        row = await queries.get_user_state(conn, id=user_id)
    return None if row is None else (row["role"], row["is_active"])


async def purge_refresh_tokens(pool: Pool) -> int:
    """Delete expired refresh tokens (housekeeping); returns how many."""
    async with connection(pool) as conn:
        return await queries.delete_expired_refresh_tokens(conn)

"""Registration, login, refresh-token rotation with reuse detection, and the caller check.

A login is a session row (its id is what GET /sessions shows) plus the chain of refresh
tokens rotated from it; access tokens carry the session id (`sid`) and the user's token
generation (`gen`): a newer generation refuses every older access token at once."""

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
from shopapi.services import account
from shopapi.text import normalize_email
from shopapi.user_state import State


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
    """Role is always CUSTOMER: a `role` in the body is ignored like any unknown field. The
    verification email is queued in the same transaction as the account."""
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
            await account.issue_email_verification(ctx, conn, row["id"])
    except psycopg.errors.UniqueViolation:
        raise EmailTaken("This email is already registered") from None
    return msgspec.convert(row, UserPublic)


def user_agent(raw: str | None) -> str | None:
    """What a session keeps of a client's User-Agent: printable, at most 512 characters."""
    if not raw:
        return None
    return "".join(ch for ch in raw if ch.isprintable())[:512] or None


async def _issue_pair(
    ctx: AppContext, conn: Any, user: dict[str, Any], family: uuid.UUID, session_id: int
) -> TokenPair:
    user_id = user["id"]
    refresh, expires_at = ctx.tokens.issue_refresh(user_id, family)
    await queries.insert_refresh_token(
        conn,
        user_id=user_id,
        family_id=family,
        token_hash=token_digest(refresh),
        expires_at=expires_at,
    )
    return TokenPair(
        access_token=ctx.tokens.issue_access(
            user_id, user["role"], user["token_generation"], session_id
        ),
        refresh_token=refresh,
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
        expires_in=ctx.tokens.access_ttl,
    )


async def login(ctx: AppContext, body: LoginRequest, agent: str | None = None) -> TokenPair:
    ctx.passwords.refuse_if_full()  # a flood's refused attempts cost no database round trip
    async with connection(ctx.pool) as conn:
        row = await queries.get_login(conn, email=normalize_email(body.email))
    if row is None:
        # same bcrypt cost as a real check: no user enumeration by timing
        await ctx.passwords.check_nobody(body.password)
        raise InvalidCredentials("Wrong email or password")
    if not await ctx.passwords.check(body.password, row["password_hash"]) or not row["is_active"]:
        raise InvalidCredentials("Wrong email or password")
    family = uuid.uuid4()
    async with transaction(ctx.pool) as conn:
        session_id = await queries.insert_session(
            conn, user_id=row["id"], family_id=family, user_agent=user_agent(agent)
        )
        return await _issue_pair(ctx, conn, row, family, session_id)


async def refresh(ctx: AppContext, token: str, agent: str | None = None) -> TokenPair:
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
                session_id = await queries.touch_session(
                    conn, family_id=used["family_id"], user_agent=user_agent(agent)
                )
                return await _issue_pair(ctx, conn, user, used["family_id"], session_id)
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
    """Every refresh token and every access token issued so far stop working."""
    async with transaction(ctx.pool) as conn:
        await queries.get_user_for_update(conn, id=user.id)  # in line with refreshes: see refresh()
        await queries.revoke_user_refresh_tokens(conn, user_id=user.id)
        await queries.end_access_tokens(conn, id=user.id)
    await ctx.user_states.changed(user.id)


async def authenticate(ctx: AppContext, token: str) -> CurrentUser:
    """The caller behind an access token; a deactivated, deleted or re-roled user, and a token
    older than the user's token generation, are refused."""
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


def _caller(claims: AccessClaims, state: State | None) -> CurrentUser:
    if state is None:
        raise NotAuthenticated("Token no longer valid")
    role, is_active, generation, email_verified = state
    if not is_active or role != claims.role or claims.generation < generation:
        raise NotAuthenticated("Token no longer valid")
    return CurrentUser(claims.user_id, claims.role, claims.session_id, email_verified)


async def _load_state(ctx: AppContext, user_id: int) -> State | None:
    async with connection(ctx.pool) as conn:
        row = await queries.get_user_state(conn, id=user_id)
    if row is None:
        return None
    return (row["role"], row["is_active"], row["token_generation"], row["email_verified"])


async def purge_refresh_tokens(pool: Pool) -> int:
    """Delete expired refresh tokens and the logins left without any (housekeeping); returns
    how many tokens."""
    async with transaction(pool) as conn:
        removed = await queries.delete_expired_refresh_tokens(conn)
        await queries.delete_ended_sessions(conn)
        return removed


async def purge_account_tokens(pool: Pool) -> int:
    """Delete used and expired reset and verification tokens (housekeeping)."""
    async with connection(pool) as conn:
        return await queries.delete_spent_account_tokens(conn)

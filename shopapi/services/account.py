"""Account lifecycle: password reset, email verification, sessions and account deletion.

Reset and verification links carry a token that only its email knows: the database keeps
its sha256 and the nonce it is derived from with SECRET_KEY (security.account_token), and the
email job is deferred in the statement that stores it (users.sql: issue_*).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from shopapi.context import AppContext, CurrentUser
from shopapi.db import connection, queries, transaction
from shopapi.errors import Forbidden, InvalidToken, NotFound
from shopapi.schemas.users import SessionPublic, UserPublic
from shopapi.security import new_account_token, token_digest

RESET = "password_reset"
VERIFICATION = "email_verification"
SESSIONS_LISTED = 100  # the newest live logins GET /sessions shows


def _new_link(ctx: AppContext, ttl_seconds: int) -> dict[str, Any]:
    """The stored half of a new link token: its nonce, its digest and how long it works."""
    nonce, token_hash = new_account_token(ctx.settings.signing_key)
    return {"nonce": nonce, "token_hash": token_hash, "ttl_seconds": ttl_seconds}


async def issue_email_verification(ctx: AppContext, conn: Any, user_id: int) -> None:
    """Inside the caller's transaction: a verification token for the user's current email,
    its email job deferred with it (nothing when the email is verified already)."""
    await queries.issue_email_verification(
        conn, user_id=user_id, **_new_link(ctx, ctx.settings.email_verification_ttl)
    )


async def request_password_reset(ctx: AppContext, email: str) -> None:
    """Always the same answer and the same work, known email or not (no enumeration)."""
    async with transaction(ctx.pool) as conn:
        await queries.issue_password_reset(
            conn, email=email, **_new_link(ctx, ctx.settings.password_reset_ttl)
        )


async def confirm_password_reset(ctx: AppContext, token: str, password: str) -> None:
    """Set the password; every login and every access token of the account ends."""
    digest = token_digest(token)
    async with connection(ctx.pool) as conn:
        live = await queries.find_account_token(conn, token_hash=digest, purpose=RESET)
    if not live:  # checked before hashing: a guessed token costs no bcrypt
        raise InvalidToken("This reset link is unknown, used or expired")
    password_hash = await ctx.passwords.hash(password)
    async with transaction(ctx.pool) as conn:
        spent = await queries.use_account_token(conn, token_hash=digest, purpose=RESET)
        user = (
            None if spent is None else await queries.get_user_for_update(conn, id=spent["user_id"])
        )
        if spent is None or user is None or not user["is_active"]:
            raise InvalidToken("This reset link is unknown, used or expired")
        await queries.set_password(
            conn, id=user["id"], password_hash=password_hash, proven_email=spent["email"]
        )
        await queries.revoke_user_refresh_tokens(conn, user_id=user["id"])
        await queries.void_account_tokens(conn, user_id=user["id"], purpose=RESET)
    await ctx.user_states.changed(user["id"])


async def verify_email(ctx: AppContext, token: str) -> UserPublic:
    async with transaction(ctx.pool) as conn:
        spent = await queries.use_account_token(
            conn, token_hash=token_digest(token), purpose=VERIFICATION
        )
        row = (
            None
            if spent is None
            else await queries.mark_email_verified(conn, id=spent["user_id"], email=spent["email"])
        )
        if row is None:  # also: the account's email changed since the link was sent
            raise InvalidToken("This verification link is unknown, used or expired")
    await ctx.user_states.changed(row["id"])  # REQUIRE_VERIFIED_EMAIL reads it from memory
    return msgspec.convert(row, UserPublic)


async def resend_verification(ctx: AppContext, user: CurrentUser) -> None:
    """A new verification email, the older links void; nothing when already verified."""
    async with transaction(ctx.pool) as conn:
        await issue_email_verification(ctx, conn, user.id)


async def list_sessions(ctx: AppContext, user: CurrentUser) -> list[SessionPublic]:
    async with connection(ctx.pool) as conn:
        rows = [
            row async for row in queries.list_sessions(conn, user_id=user.id, limit=SESSIONS_LISTED)
        ]
    return [SessionPublic(**row, current=row["id"] == user.session_id) for row in rows]


async def end_session(ctx: AppContext, user: CurrentUser, session_id: int) -> None:
    async with transaction(ctx.pool) as conn:
        await queries.get_user_for_update(conn, id=user.id)  # in line with refreshes
        if not await queries.revoke_session(conn, id=session_id, user_id=user.id):
            raise NotFound(f"Session {session_id} not found")


async def delete_account(ctx: AppContext, user: CurrentUser, password: str) -> None:
    """Erase the account's personal data and close it; its orders stay (accounting)."""
    async with connection(ctx.pool) as conn:
        password_hash = await queries.get_password_hash(conn, id=user.id)
    if password_hash is None or not await ctx.passwords.check(password, password_hash):
        raise Forbidden("Wrong password")
    placeholder = f"deleted-{user.id}-{secrets.token_hex(8)}@deleted.invalid"
    async with transaction(ctx.pool) as conn:
        await queries.get_user_for_update(conn, id=user.id)
        await queries.erase_user(conn, id=user.id, placeholder=placeholder)
    await ctx.user_states.changed(user.id)

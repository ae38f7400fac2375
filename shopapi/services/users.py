"""User administration and self-service profile edits."""

from __future__ import annotations

import msgspec
import psycopg.errors
from msgspec import UNSET

from shopapi.context import AppContext, CurrentUser
from shopapi.db import connection, queries, transaction
from shopapi.errors import (
    CannotDeleteSelf,
    EmailTaken,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from shopapi.schemas.common import PageOf, sent_fields
from shopapi.schemas.users import UserListQuery, UserPublic, UserUpdate
from shopapi.services.account import issue_email_verification
from shopapi.services.auth import storable_email


def _visible(user: CurrentUser, user_id: int) -> None:
    # others' ids, existing or not, are 403 for non-admins: no probing which ids exist
    if not user.is_admin and user.id != user_id:
        raise Forbidden("You may only see your own account")


async def get_user(ctx: AppContext, user: CurrentUser, user_id: int) -> UserPublic:
    _visible(user, user_id)
    async with connection(ctx.pool) as conn:
        row = await queries.get_user(conn, id=user_id)
    if row is None:
        raise NotFound(f"User {user_id} not found")
    return msgspec.convert(row, UserPublic)


async def list_users(ctx: AppContext, query: UserListQuery) -> PageOf[UserPublic]:
    pager = ctx.pager
    window = pager.window(query.page, query.per_page)
    filters = {"role": query.role, "q": query.q}
    async with connection(ctx.pool) as conn:
        rows = [
            row
            async for row in queries.list_users(
                conn, **filters, limit=window.limit, offset=window.offset
            )
        ]
        return await pager.page(
            rows,
            window,
            UserPublic,
            total_column="total",
            count=lambda: queries.count_users(conn, **filters),
        )


def _check_rights(user: CurrentUser, user_id: int, body: UserUpdate) -> None:
    """Who may change what: anyone their own profile, only an admin someone else's role or
    is_active, and nobody their own (an admin locking themselves out, the last one, would
    need another admin)."""
    _visible(user, user_id)
    if body.role is UNSET and body.is_active is UNSET:
        return
    if user.id == user_id:
        raise Forbidden("You cannot change your own role or is_active")
    if not user.is_admin:
        raise Forbidden("Only an admin may change role or is_active")


async def _check_current_password(
    ctx: AppContext, user: CurrentUser, body: UserUpdate, email: str | None, current: dict
) -> None:
    """Changing one's own password or email (admins too) proves knowledge of the password:
    missing or wrong is a 422 on `current_password`. An admin editing someone else does not."""
    email_changes = email is not None and email != current["email"]
    if user.id != current["id"] or (body.password is UNSET and not email_changes):
        return
    if body.current_password is UNSET or not await ctx.passwords.check(
        body.current_password, current["password_hash"]
    ):
        raise ValidationFailed.single("current_password", "is missing or wrong")


def _logins_end(current: dict, body: UserUpdate) -> bool:
    """Whether an update changes credentials or rights: every login and access token of the
    user must then start again."""
    return (
        body.password is not UNSET
        or (body.role is not UNSET and body.role != current["role"])
        or (current["is_active"] and body.is_active is False)
    )


async def update_user(
    ctx: AppContext, user: CurrentUser, user_id: int, body: UserUpdate
) -> UserPublic:
    _check_rights(user, user_id, body)
    email = None if body.email is UNSET else storable_email(body.email)
    password_hash = None if body.password is UNSET else await ctx.passwords.hash(body.password)
    async with transaction(ctx.pool) as conn:
        current = await queries.get_user_for_update(conn, id=user_id)
        if current is None:
            raise NotFound(f"User {user_id} not found")
        await _check_current_password(ctx, user, body, email, current)
        end_tokens = _logins_end(current, body)
        try:
            row = await queries.update_user(
                conn,
                id=user_id,
                email=email,
                password_hash=password_hash,
                end_tokens=end_tokens,
                **sent_fields(body, "full_name", "role", "is_active"),
            )
        except psycopg.errors.UniqueViolation:
            raise EmailTaken("This email is already registered") from None
        if end_tokens:
            await queries.revoke_user_refresh_tokens(conn, user_id=user_id)
        email_changed = row["email"] != current["email"]
        if email_changed:
            await issue_email_verification(ctx, conn, user_id)
    if end_tokens or email_changed or row["is_active"] != current["is_active"]:
        # after the commit: every worker forgets what it knew of this user
        await ctx.user_states.changed(user_id)
    return msgspec.convert(row, UserPublic)


async def delete_user(ctx: AppContext, user: CurrentUser, user_id: int) -> None:
    if user.id == user_id:
        raise CannotDeleteSelf("An admin cannot delete their own account")
    async with transaction(ctx.pool) as conn:
        if await queries.get_user_for_update(conn, id=user_id) is None:
            raise NotFound(f"User {user_id} not found")
        if await queries.user_has_orders(conn, id=user_id):
            # orders are never lost: the account is closed instead
            await queries.update_user(
                conn,
                id=user_id,
                email=None,
                full_name=None,
                role=None,
                is_active=False,
                password_hash=None,
                end_tokens=True,
            )
            await queries.revoke_user_refresh_tokens(conn, user_id=user_id)
        else:
            await queries.delete_user(conn, id=user_id)
    await ctx.user_states.changed(user_id)

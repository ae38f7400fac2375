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
from shopapi.pagination import page_of
from shopapi.schemas.common import PageOf
from shopapi.schemas.users import UserListQuery, UserPublic, UserUpdate
from shopapi.security import check_password, hash_password
from shopapi.services.auth import storable_email


def _visible(user: CurrentUser, user_id: int) -> None:
    # others' ids, existing or not, are 403 for non-admins: no probing which ids exist
    if not user.is_admin and user.id != user_id:
        raise Forbidden("You may only see your own account")


def get_user(ctx: AppContext, user: CurrentUser, user_id: int) -> UserPublic:
    _visible(user, user_id)
    with connection(ctx.pool) as conn:
        row = queries.get_user(conn, id=user_id)
    if row is None:
        raise NotFound(f"User {user_id} not found")
    return msgspec.convert(row, UserPublic)


def list_users(ctx: AppContext, query: UserListQuery) -> PageOf[UserPublic]:
    page = query.page or 1
    filters = {"role": query.role, "q": query.q}
    with connection(ctx.pool) as conn:
        # aiosql hands back a generator: read it while the connection is ours
        rows = list(queries.list_users(
            conn, **filters, limit=query.per_page, offset=(page - 1) * query.per_page
        ))
        total = rows[0]["total"] if rows else queries.count_users(conn, **filters)
    return page_of(rows, UserPublic, page=page, per_page=query.per_page, total=total)


def update_user(ctx: AppContext, user: CurrentUser, user_id: int, body: UserUpdate) -> UserPublic:
    _visible(user, user_id)
    if body.role is not UNSET or body.is_active is not UNSET:
        if user.id == user_id:
            # admins too: an admin locking themselves out (the last one) needs another admin
            raise Forbidden("You cannot change your own role or is_active")
        if not user.is_admin:
            raise Forbidden("Only an admin may change role or is_active")
    email = None if body.email is UNSET else storable_email(body.email)
    with transaction(ctx.pool) as conn:
        current = queries.get_user_for_update(conn, id=user_id)
        if current is None:
            raise NotFound(f"User {user_id} not found")
        password_hash = None
        if body.password is not UNSET:
            # changing one's own password (admins too) proves knowledge of the old one;
            # an admin resetting someone else's does not need it
            own = user.id == user_id
            if own and (body.current_password is UNSET
                        or not check_password(body.current_password, current["password_hash"])):
                raise ValidationFailed.single("current_password", "is missing or wrong")
            password_hash = hash_password(body.password, ctx.settings.bcrypt_rounds)
        try:
            row = queries.update_user(
                conn,
                id=user_id,
                email=email,
                full_name=None if body.full_name is UNSET else body.full_name,
                role=None if body.role is UNSET else body.role,
                is_active=None if body.is_active is UNSET else body.is_active,
                password_hash=password_hash,
            )
        except psycopg.errors.UniqueViolation:
            raise EmailTaken("This email is already registered") from None
        if (
            password_hash is not None
            or row["role"] != current["role"]
            or (current["is_active"] and not row["is_active"])
        ):
            # credentials or rights changed: every login of that user must start again
            queries.revoke_user_refresh_tokens(conn, user_id=user_id)
    if row["role"] != current["role"] or row["is_active"] != current["is_active"]:
        # after the commit: every worker forgets what it knew of this caller
        ctx.user_states.changed(user_id)
    return msgspec.convert(row, UserPublic)


def delete_user(ctx: AppContext, user: CurrentUser, user_id: int) -> None:
    if user.id == user_id:
        raise CannotDeleteSelf("An admin cannot delete their own account")
    with transaction(ctx.pool) as conn:
        if queries.get_user_for_update(conn, id=user_id) is None:
            raise NotFound(f"User {user_id} not found")
        if queries.user_has_orders(conn, id=user_id):
            # orders are never lost: the account is closed instead
            queries.update_user(conn, id=user_id, email=None, full_name=None, role=None,
                                is_active=False, password_hash=None)
            queries.revoke_user_refresh_tokens(conn, user_id=user_id)
        else:
            queries.delete_user(conn, id=user_id)
    ctx.user_states.changed(user_id)

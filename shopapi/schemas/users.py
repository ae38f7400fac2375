"""Users and auth: the public user, registration, login, tokens, updates."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shopapi.schemas.common import NO_NUL, PageQuery, Timestamp
from shopapi.schemas.patterns import EMAIL, ONE_LINE

EMAIL_MAX = 254

Role = Literal["ADMIN", "EDITOR", "CUSTOMER"]
# one @, no white space or control character inside (schemas.patterns)
Email = Annotated[str, Meta(max_length=EMAIL_MAX, pattern=EMAIL)]
# code points, not bytes: "é" * 128 is a valid password (security.py pre-hashes for bcrypt);
# NUL is refused like everywhere else, so no client library can truncate a password at it
Password = Annotated[str, Meta(min_length=8, max_length=128, pattern=NO_NUL)]
FullName = Annotated[str, Meta(max_length=200, pattern=ONE_LINE)]
Token = Annotated[str, Meta(min_length=1, max_length=4096)]


class UserPublic(msgspec.Struct):
    """The only user shape ever serialized: it has no password hash to leak."""

    id: int
    email: str
    full_name: str
    role: Role
    is_active: bool
    email_verified: bool
    created_at: Timestamp
    updated_at: Timestamp


class UserCreate(msgspec.Struct, kw_only=True):
    email: Email
    password: Password
    full_name: FullName = ""


# lenient (any stored email matches after trimming), but no NUL: PostgreSQL text refuses it
LookupEmail = Annotated[str, Meta(max_length=320, pattern=NO_NUL)]


class LoginRequest(msgspec.Struct):
    email: LookupEmail
    password: Annotated[str, Meta(max_length=1024)]


class RefreshRequest(msgspec.Struct):
    refresh_token: Token


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class UserUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH): a field left out keeps its value.

    An admin may set every field. A user editing their own account may set email, full_name and
    password; sending role or is_active at all is a 403 `forbidden`. Changing one's own password
    (admins included) needs `current_password`: missing or wrong is a 422 `validation_error` on
    that field, like any other invalid input, and nothing is written; so does changing one's own
    email. A new password or role ends every login of that user: their refresh tokens are revoked
    and every access token issued before is refused at once; so does deactivation. A new email
    is `email_verified: false` until the link of its verification email is followed.
    """

    email: Email | UnsetType = UNSET
    full_name: FullName | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    current_password: (
        Annotated[
            str,
            Meta(
                max_length=1024,
                description=(
                    "required to change your own password or email; missing or wrong: 422"
                ),
            ),
        ]
        | UnsetType
    ) = UNSET
    role: Role | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class UserListQuery(PageQuery, kw_only=True):
    role: Role | None = None
    q: (
        Annotated[
            str,
            Meta(
                max_length=200,
                pattern=NO_NUL,
                description=(
                    "case-insensitive substring of email or full_name; `%` and `_` are literal"
                ),
            ),
        ]
        | None
    ) = None


class PasswordResetRequest(msgspec.Struct):
    email: LookupEmail


class PasswordResetConfirm(msgspec.Struct):
    token: Token
    password: Password


class VerifyEmailRequest(msgspec.Struct):
    token: Token


class DeleteAccountRequest(msgspec.Struct):
    password: Annotated[str, Meta(max_length=1024)]


class SessionPublic(msgspec.Struct):
    """One login: the chain of refresh tokens one POST /login started."""

    id: int
    created_at: Timestamp
    last_used_at: Timestamp
    user_agent: str | None
    current: bool

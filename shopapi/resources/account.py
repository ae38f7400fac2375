"""/api/auth account lifecycle: password reset, email verification, sessions, deletion."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import AUTHENTICATED, endpoint
from shopapi.schemas.users import (
    DeleteAccountRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    SessionPublic,
    UserPublic,
    VerifyEmailRequest,
)
from shopapi.services import account
from shopapi.text import normalize_email

TAGS = ("auth",)


class PasswordReset:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Email a password reset link (202 whether the email is known or not)",
        body=PasswordResetRequest,
        status=202,
        errors=(400, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await account.request_password_reset(self.ctx, normalize_email(req.context.body.email))


class PasswordResetConfirmation:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Set a new password with a reset token; every login and access token ends",
        body=PasswordResetConfirm,
        status=204,
        errors=(400, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.context.body
        await account.confirm_password_reset(self.ctx, body.token, body.password)


class VerifyEmail:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Verify the account's email with the token of its verification email",
        body=VerifyEmailRequest,
        returns=UserPublic,
        errors=(400, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await account.verify_email(self.ctx, req.context.body.token)


class VerifyEmailResend:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Send the verification email again (already verified: nothing is sent)",
        roles=AUTHENTICATED,
        status=202,
        errors=(401, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await account.resend_verification(self.ctx, req.context.user)


class Sessions:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        f"The caller's live logins, newest first (at most {account.SESSIONS_LISTED}); "
        "`current` is the login of this access token",
        roles=AUTHENTICATED,
        returns=list[SessionPublic],
        errors=(401, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await account.list_sessions(self.ctx, req.context.user)

    @endpoint(
        "End one of the caller's logins (its refresh chain is revoked; another's id: 404)",
        roles=AUTHENTICATED,
        status=204,
        errors=(401, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, session_id: int
    ) -> None:
        await account.end_session(self.ctx, req.context.user, session_id)


class DeleteAccount:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Delete the caller's account: personal data erased, account closed, orders kept; "
        "wrong password: 403",
        roles=AUTHENTICATED,
        body=DeleteAccountRequest,
        status=204,
        errors=(400, 401, 403, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await account.delete_account(self.ctx, req.context.user, req.context.body.password)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    sessions = Sessions(ctx)
    return [
        ("/api/auth/password-reset", PasswordReset(ctx), None),
        ("/api/auth/password-reset/confirm", PasswordResetConfirmation(ctx), None),
        ("/api/auth/verify-email", VerifyEmail(ctx), None),
        ("/api/auth/verify-email/resend", VerifyEmailResend(ctx), None),
        ("/api/auth/sessions", sessions, None),
        ("/api/auth/sessions/{session_id}", sessions, "item"),
        ("/api/auth/delete-account", DeleteAccount(ctx), None),
    ]

"""/api/auth: register, login, refresh, logout, me (the account lifecycle: account.py)."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import AUTHENTICATED, endpoint
from shopapi.schemas.users import LoginRequest, RefreshRequest, TokenPair, UserCreate, UserPublic
from shopapi.services import auth, users

TAGS = ("auth",)


class Register:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Register a customer account",
        body=UserCreate,
        returns=UserPublic,
        status=201,
        errors=(400, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = await auth.register(self.ctx, req.context.body)
        resp.location = f"/api/users/{user.id}"
        resp.media = user


class Login:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Exchange email and password for a token pair",
        body=LoginRequest,
        returns=TokenPair,
        errors=(400, 401, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await auth.login(self.ctx, req.context.body, req.get_header("User-Agent"))


class Refresh:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Rotate a refresh token into a new pair (reuse revokes the login)",
        body=RefreshRequest,
        returns=TokenPair,
        errors=(400, 401, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await auth.refresh(
            self.ctx, req.context.body.refresh_token, req.get_header("User-Agent")
        )


class Logout:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Revoke one refresh token",
        body=RefreshRequest,
        status=204,
        errors=(400, 401, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await auth.logout(self.ctx, req.context.body.refresh_token)


class LogoutAll:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "End every login of the caller: all refresh and access tokens issued so far stop working",
        roles=AUTHENTICATED,
        status=204,
        errors=(401, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await auth.logout_all(self.ctx, req.context.user)


class Me:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "The caller's own user",
        roles=AUTHENTICATED,
        returns=UserPublic,
        errors=(401, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.user
        resp.media = await users.get_user(self.ctx, user, user.id)

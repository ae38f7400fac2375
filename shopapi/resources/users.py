"""/api/users: administration by ADMIN, own profile for everyone."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import ADMIN, AUTHENTICATED, endpoint
from shopapi.schemas.common import PageOf
from shopapi.schemas.users import UserListQuery, UserPublic, UserUpdate
from shopapi.services import users

TAGS = ("users",)


class Users:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List users (filters role, q)",
        roles=ADMIN,
        query=UserListQuery,
        returns=PageOf[UserPublic],
        errors=(401, 403, 422, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await users.list_users(self.ctx, req.context.query)

    @endpoint(
        "Get a user (ADMIN or self)",
        roles=AUTHENTICATED,
        returns=UserPublic,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_get_item(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        resp.media = await users.get_user(self.ctx, req.context.user, user_id)

    @endpoint(
        "Update a user (partial; self may not set role or is_active)",
        roles=AUTHENTICATED,
        body=UserUpdate,
        returns=UserPublic,
        errors=(400, 401, 403, 404, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_put_item(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        resp.media = await users.update_user(self.ctx, req.context.user, user_id, req.context.body)

    on_patch_item = on_put_item

    @endpoint(
        "Delete a user (one with orders is deactivated)",
        roles=ADMIN,
        status=204,
        errors=(401, 403, 404, 409, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, user_id: int
    ) -> None:
        await users.delete_user(self.ctx, req.context.user, user_id)

"""/api/me/addresses: the caller's own address book (any authenticated user)."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import AUTHENTICATED, endpoint
from shopapi.schemas.addresses import (
    AddressCreate,
    AddressListQuery,
    AddressPublic,
    AddressUpdate,
)
from shopapi.schemas.common import PageOf
from shopapi.services import addresses

TAGS = ("addresses",)
PATH = "/api/me/addresses"


class Addresses:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List your addresses by id (next_cursor is always null)",
        roles=AUTHENTICATED,
        query=AddressListQuery,
        returns=PageOf[AddressPublic],
        errors=(401, 422, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await addresses.list_addresses(self.ctx, req.context.user, req.context.query)

    @endpoint(
        "Add an address (the first one is the default; is_default true moves the default "
        "here; at most 20: 409 address_limit). Answers a Location header.",
        roles=AUTHENTICATED,
        body=AddressCreate,
        returns=AddressPublic,
        status=201,
        errors=(400, 401, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        address = await addresses.create_address(self.ctx, req.context.user, req.context.body)
        resp.location = f"{PATH}/{address.id}"
        resp.media = address

    @endpoint(
        "Get one of your addresses (another user's: 404)",
        roles=AUTHENTICATED,
        returns=AddressPublic,
        errors=(401, 404, 422, 429),
        tags=TAGS,
    )
    async def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, address_id: int
    ) -> None:
        resp.media = await addresses.get_address(self.ctx, req.context.user, address_id)

    @endpoint(
        "Update one of your addresses (partial; is_default true moves the default here, "
        "false on the default leaves none)",
        roles=AUTHENTICATED,
        body=AddressUpdate,
        returns=AddressPublic,
        errors=(400, 401, 404, 413, 422, 429),
        tags=TAGS,
    )
    async def on_put_item(
        self, req: falcon.Request, resp: falcon.Response, address_id: int
    ) -> None:
        resp.media = await addresses.update_address(
            self.ctx, req.context.user, address_id, req.context.body
        )

    on_patch_item = on_put_item

    @endpoint(
        "Delete one of your addresses (deleting the default leaves none)",
        roles=AUTHENTICATED,
        status=204,
        errors=(401, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, address_id: int
    ) -> None:
        await addresses.delete_address(self.ctx, req.context.user, address_id)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Addresses(ctx)
    return [
        (PATH, resource, None),
        (PATH + "/{address_id}", resource, "item"),
    ]

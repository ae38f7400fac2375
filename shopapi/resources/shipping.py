"""/api/shipping-methods: public reads of the active methods, writes for ADMIN and EDITOR."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import STAFF, endpoint
from shopapi.resources.conditional import ETAG_NOTE, respond, send
from shopapi.schemas.common import PageOf
from shopapi.schemas.shipping import (
    ShippingMethodCreate,
    ShippingMethodListQuery,
    ShippingMethodPublic,
    ShippingMethodUpdate,
)
from shopapi.services import shipping

TAGS = ("shipping",)
COLLECTION_ROUTE = "/api/shipping-methods"


class ShippingMethods:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List shipping methods by id. Active only; ADMIN/EDITOR may add include_inactive=true "
        "(ignored for anyone else, who just gets the active ones). next_cursor is always null."
        + ETAG_NOTE,
        query=ShippingMethodListQuery,
        returns=PageOf[ShippingMethodPublic],
        errors=(422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        answer = await shipping.list_shipping_methods(self.ctx, req.context.user, req.context.query)
        respond(req, resp, answer)

    @endpoint(
        "Create a shipping method (countries: alpha-2 codes, stored once each and sorted; "
        "empty ships everywhere). Duplicate name in any case: 409 name_taken. The answer's "
        "Location header is the new method's URL.",
        roles=STAFF,
        body=ShippingMethodCreate,
        returns=ShippingMethodPublic,
        status=201,
        errors=(400, 401, 403, 409, 413, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        method_id, answer = await shipping.create_shipping_method(self.ctx, req.context.body)
        resp.location = f"{COLLECTION_ROUTE}/{method_id}"
        send(resp, answer)

    @endpoint(
        "Get a shipping method (inactive: 404 except for ADMIN/EDITOR)." + ETAG_NOTE,
        returns=ShippingMethodPublic,
        errors=(404, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get_item(self, req: falcon.Request, resp: falcon.Response, method_id: int) -> None:
        respond(
            req, resp, await shipping.get_shipping_method(self.ctx, req.context.user, method_id)
        )

    @endpoint(
        "Update a shipping method (partial; free_over_cents: null makes it never free). "
        "A name taken in any case: 409 name_taken.",
        roles=STAFF,
        body=ShippingMethodUpdate,
        returns=ShippingMethodPublic,
        errors=(400, 401, 403, 404, 409, 413, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_put_item(self, req: falcon.Request, resp: falcon.Response, method_id: int) -> None:
        send(resp, await shipping.update_shipping_method(self.ctx, method_id, req.context.body))

    on_patch_item = on_put_item

    @endpoint(
        "Delete a shipping method (one that any order used is deactivated instead)",
        roles=STAFF,
        status=204,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, method_id: int
    ) -> None:
        await shipping.delete_shipping_method(self.ctx, method_id)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = ShippingMethods(ctx)
    return [
        (COLLECTION_ROUTE, resource, None),
        (COLLECTION_ROUTE + "/{method_id}", resource, "item"),
    ]

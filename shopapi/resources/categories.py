"""/api/categories: public reads (cached, with ETags), writes for ADMIN and EDITOR."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import STAFF, endpoint
from shopapi.resources.conditional import ETAG_NOTE, respond, send
from shopapi.schemas.catalog import (
    CategoryCreate,
    CategoryListQuery,
    CategoryPublic,
    CategoryUpdate,
)
from shopapi.schemas.common import PageOf
from shopapi.services import categories

TAGS = ("categories",)
COLLECTION_ROUTE = "/api/categories"


class Categories:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List categories by id (q: case-insensitive substring of the name; "
        "next_cursor is always null)." + ETAG_NOTE,
        query=CategoryListQuery,
        returns=PageOf[CategoryPublic],
        errors=(422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond(req, resp, await categories.list_categories(self.ctx, req.context.query))

    @endpoint(
        "Create a category (slug derived from the name; duplicate name: 409 name_taken)",
        roles=STAFF,
        body=CategoryCreate,
        returns=CategoryPublic,
        status=201,
        errors=(400, 401, 403, 409, 413, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        category_id, answer = await categories.create_category(self.ctx, req.context.body)
        resp.location = f"{COLLECTION_ROUTE}/{category_id}"
        send(resp, answer)

    @endpoint(
        "Get a category." + ETAG_NOTE,
        returns=CategoryPublic,
        errors=(404, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, category_id: int
    ) -> None:
        respond(req, resp, await categories.get_category(self.ctx, category_id))

    @endpoint(
        "Update a category (partial; the slug stays)",
        roles=STAFF,
        body=CategoryUpdate,
        returns=CategoryPublic,
        errors=(400, 401, 403, 404, 409, 413, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_put_item(
        self, req: falcon.Request, resp: falcon.Response, category_id: int
    ) -> None:
        send(resp, await categories.update_category(self.ctx, category_id, req.context.body))

    on_patch_item = on_put_item

    @endpoint(
        "Delete a category (one with products: 409 category_in_use)",
        roles=STAFF,
        status=204,
        errors=(401, 403, 404, 409, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, category_id: int
    ) -> None:
        await categories.delete_category(self.ctx, category_id)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Categories(ctx)
    return [
        (COLLECTION_ROUTE, resource, None),
        (COLLECTION_ROUTE + "/{category_id}", resource, "item"),
    ]

"""/api/webhooks (ADMIN): merchant subscriptions to events, their delivery log, redelivery."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import ADMIN, endpoint
from shopapi.schemas.common import PageOf
from shopapi.schemas.webhooks import (
    DeliveryPublic,
    Redelivery,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookPublic,
    WebhookUpdate,
)
from shopapi.services import webhooks

TAGS = ("webhooks",)
COLLECTION_ROUTE = "/api/webhooks"
URL_RULES = (
    " The URL must be http(s) and resolve to public addresses (loopback, private and "
    "link-local ones: 422, unless WEBHOOK_ALLOW_PRIVATE); at most 20 webhooks."
)


class Webhooks:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List webhooks by id (the secret is never shown again)",
        roles=ADMIN,
        query=WebhookListQuery,
        returns=PageOf[WebhookPublic],
        errors=(401, 403, 422, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await webhooks.list_webhooks(self.ctx, req.context.query)

    @endpoint(
        "Subscribe a URL to events; the answer holds the signing `secret`, shown only here."
        + URL_RULES,
        roles=ADMIN,
        body=WebhookCreate,
        returns=WebhookCreated,
        status=201,
        errors=(400, 401, 403, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        webhook = await webhooks.create_webhook(self.ctx, req.context.body)
        resp.location = f"{COLLECTION_ROUTE}/{webhook.id}"
        resp.media = webhook

    @endpoint(
        "Get a webhook",
        roles=ADMIN,
        returns=WebhookPublic,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: int
    ) -> None:
        resp.media = await webhooks.get_webhook(self.ctx, webhook_id)

    @endpoint(
        "Update a webhook (partial: url, events, is_active)." + URL_RULES,
        roles=ADMIN,
        body=WebhookUpdate,
        returns=WebhookPublic,
        errors=(400, 401, 403, 404, 413, 422, 429),
        tags=TAGS,
    )
    async def on_put_item(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: int
    ) -> None:
        resp.media = await webhooks.update_webhook(self.ctx, webhook_id, req.context.body)

    on_patch_item = on_put_item

    @endpoint(
        "Delete a webhook and its delivery log",
        roles=ADMIN,
        status=204,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: int
    ) -> None:
        await webhooks.delete_webhook(self.ctx, webhook_id)

    @endpoint(
        "The delivery log, newest attempt first (one row per attempt)",
        roles=ADMIN,
        query=WebhookListQuery,
        returns=PageOf[DeliveryPublic],
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_get_deliveries(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: int
    ) -> None:
        resp.media = await webhooks.list_deliveries(self.ctx, webhook_id, req.context.query)

    @endpoint(
        "Deliver the event of a logged attempt again (a new series of attempts)",
        roles=ADMIN,
        returns=Redelivery,
        status=202,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_post_redeliver(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: int, delivery_id: int
    ) -> None:
        resp.media = await webhooks.redeliver(self.ctx, webhook_id, delivery_id)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Webhooks(ctx)
    return [
        (COLLECTION_ROUTE, resource, None),
        (COLLECTION_ROUTE + "/{webhook_id}", resource, "item"),
        (COLLECTION_ROUTE + "/{webhook_id}/deliveries", resource, "deliveries"),
        (
            COLLECTION_ROUTE + "/{webhook_id}/deliveries/{delivery_id}/redeliver",
            resource,
            "redeliver",
        ),
    ]

"""/api/orders: placement (idempotent), reads, the status machine, cancel and delete."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import ADMIN, AUTHENTICATED, STAFF, endpoint
from shopapi.schemas.carts import CheckoutBody
from shopapi.schemas.common import PageOf
from shopapi.schemas.orders import OrderCreate, OrderListQuery, OrderPublic, OrderStatusUpdate
from shopapi.services import orders

TAGS = ("orders",)


def _created(resp: falcon.Response, order: OrderPublic, replayed: bool) -> None:
    resp.media = order
    resp.location = f"/api/orders/{order.id}"
    if replayed:
        resp.set_header("Idempotent-Replayed", "true")


class Orders:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "List orders, newest first (customers: their own; staff: all, filter user_id)",
        roles=AUTHENTICATED,
        query=OrderListQuery,
        returns=PageOf[OrderPublic],
        errors=(401, 422, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await orders.list_orders(self.ctx, req.context.user, req.context.query)

    @endpoint(
        "Place an order (all or nothing; Idempotency-Key makes retries safe)",
        roles=AUTHENTICATED,
        body=OrderCreate,
        returns=OrderPublic,
        status=201,
        headers=("Idempotency-Key",),
        errors=(400, 401, 403, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        order, replayed = await orders.place_order(
            self.ctx,
            req.context.user,
            req.context.body,
            idempotency_key=req.get_header("Idempotency-Key"),
            raw_body=req.context.raw_body,
        )
        _created(resp, order, replayed)

    @endpoint(
        "Get an order (owner, ADMIN or EDITOR)",
        roles=AUTHENTICATED,
        returns=OrderPublic,
        errors=(401, 404, 422, 429),
        tags=TAGS,
    )
    async def on_get_item(self, req: falcon.Request, resp: falcon.Response, order_id: int) -> None:
        resp.media = await orders.get_order(self.ctx, req.context.user, order_id)

    @endpoint(
        "Delete an order (stock still held goes back)",
        roles=ADMIN,
        status=204,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, order_id: int
    ) -> None:
        await orders.delete_order(self.ctx, req.context.user, order_id)

    @endpoint(
        "Move an order along pending → paid → shipped → delivered, or cancel it",
        roles=STAFF,
        body=OrderStatusUpdate,
        returns=OrderPublic,
        errors=(400, 401, 403, 404, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_put_status(
        self, req: falcon.Request, resp: falcon.Response, order_id: int
    ) -> None:
        resp.media = await orders.change_status(
            self.ctx, req.context.user, order_id, req.context.body.status
        )

    @endpoint(
        "Cancel your own pending order (stock goes back)",
        roles=AUTHENTICATED,
        returns=OrderPublic,
        errors=(401, 404, 409, 422, 429),
        tags=TAGS,
    )
    async def on_post_cancel(
        self, req: falcon.Request, resp: falcon.Response, order_id: int
    ) -> None:
        resp.media = await orders.cancel_own_order(self.ctx, req.context.user, order_id)


class Checkout:
    """POST /api/cart/checkout: the caller's cart becomes an order (services.orders)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Place an order from your cart, exactly as POST /api/orders would, and empty the cart "
        "in the same transaction (empty cart or an unavailable line: 422; not enough stock: "
        "409; on any failure the cart is unchanged). The body is optional.",
        roles=AUTHENTICATED,
        body=CheckoutBody,
        body_optional=True,
        returns=OrderPublic,
        status=201,
        headers=("Idempotency-Key",),
        errors=(400, 401, 403, 409, 413, 422, 429),
        tags=("cart",),
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        order, replayed = await orders.checkout_cart(
            self.ctx,
            req.context.user,
            req.context.body,
            idempotency_key=req.get_header("Idempotency-Key"),
            raw_body=req.context.raw_body,
        )
        _created(resp, order, replayed)


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Orders(ctx)
    return [
        ("/api/orders", resource, None),
        ("/api/orders/{order_id}", resource, "item"),
        ("/api/orders/{order_id}/status", resource, "status"),
        ("/api/orders/{order_id}/cancel", resource, "cancel"),
        ("/api/cart/checkout", Checkout(ctx), None),
    ]

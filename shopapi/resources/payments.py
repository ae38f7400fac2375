"""Online payments: POST /api/orders/{id}/payment (the buyer starts paying) and the payment
provider's webhook, POST /api/payments/stripe/webhook (no bearer: Stripe's signature)."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import AUTHENTICATED, endpoint
from shopapi.schemas.payments import PaymentStart, StripeEvent, WebhookAck
from shopapi.services import payments

TAGS = ("payments",)


class OrderPayment:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Start paying your pending order online, or get the payment already started: hand "
        "client_secret and publishable_key to Stripe's SDK (PaymentSheet). Not the owner: "
        "404; PAYMENT_PROVIDER=manual: 409 payment_not_online; not pending: 409 "
        "invalid_transition; Stripe unreachable: 502",
        roles=AUTHENTICATED,
        returns=PaymentStart,
        errors=(401, 404, 409, 422, 429, 502),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response, order_id: int) -> None:
        resp.media = await payments.start_payment(self.ctx, req.context.user, order_id)


class StripeWebhook:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Stripe's webhook (register this URL in the Stripe dashboard): the body is verified "
        "against Stripe-Signature with STRIPE_WEBHOOK_SECRET (300 s tolerance; 400 "
        "invalid_signature, nothing changes); each event id is applied at most once (a replay "
        "answers 200). 5xx only when the event could not be recorded: Stripe delivers again.",
        body=StripeEvent,
        body_raw=True,
        returns=WebhookAck,
        errors=(400, 413, 503),
        headers=("Stripe-Signature",),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await payments.apply_webhook(
            self.ctx, req.context.raw_body, req.get_header("Stripe-Signature")
        )
        resp.media = WebhookAck()


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    return [
        ("/api/orders/{order_id}/payment", OrderPayment(ctx), None),
        ("/api/payments/stripe/webhook", StripeWebhook(ctx), None),
    ]

"""Payments: what starting an order's online payment answers."""

from __future__ import annotations

from typing import Literal

import msgspec

from shopapi.schemas.orders import PaymentStatus


class PaymentStart(msgspec.Struct):
    """Hand `client_secret` and `publishable_key` to Stripe's mobile SDK (PaymentSheet); the
    order becomes paid when Stripe's webhook says the payment succeeded. Calling again gives
    the same payment."""

    provider: Literal["manual", "stripe"]
    client_secret: str
    publishable_key: str
    amount_cents: int
    currency: str
    status: PaymentStatus


class StripeEventObject(msgspec.Struct):
    id: str
    object: str
    amount: int | None = None
    currency: str | None = None


class StripeEventData(msgspec.Struct):
    object: StripeEventObject


class StripeEvent(msgspec.Struct):
    """A Stripe event as Stripe sends it (only the fields read are shown). Applied:
    `payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`; any
    other type is acknowledged and ignored."""

    id: str
    type: str
    data: StripeEventData


class WebhookAck(msgspec.Struct):
    received: bool = True

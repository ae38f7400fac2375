"""The payment provider seam: `manual` and `stripe`, two implementations of one small interface.

services/payments.py decides what a payment means for an order (and keeps every effect in the
database, exactly once); a provider only talks to the outside: start a payment for an amount,
refund it, and turn a webhook delivery into a verified `ProviderEvent`. `make_provider(settings)`
picks one from PAYMENT_PROVIDER.

Stripe goes through its official library (`stripe.StripeClient`, async methods over httpx);
STRIPE_API_BASE points it elsewhere (the tests' local Stripe emulator).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Protocol

import msgspec
import stripe

from shopapi.config import Settings
from shopapi.errors import InvalidSignature, PaymentNotOnline, PaymentProviderUnavailable

log = logging.getLogger("shopapi.payments")

WEBHOOK_TOLERANCE = 300  # seconds a signed webhook stays acceptable (Stripe's scheme)
# Below the database's 10 s idle-in-transaction limit: a payment is started while the order
# row is locked, so that two racing starts make one PaymentIntent.
STRIPE_TIMEOUT = 8.0


class Intent(msgspec.Struct, frozen=True):
    """A started payment: what the buyer's app needs to confirm it."""

    id: str
    client_secret: str


class Refund(msgspec.Struct, frozen=True):
    id: str
    succeeded: bool  # False: the provider confirms it later (webhook charge.refunded)


class ProviderEvent(msgspec.Struct, frozen=True):
    """A verified webhook event, reduced to what an order needs. `kind`: `succeeded`,
    `failed`, `refunded`, or `other` (recorded, changes nothing)."""

    id: str
    type: str
    kind: str
    intent_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None  # upper case, as the shop's CURRENCY


class PaymentProvider(Protocol):
    name: Literal["manual", "stripe"]
    publishable_key: str | None

    async def create_intent(self, order_id: int, amount_cents: int, currency: str) -> Intent: ...

    async def refund(self, order_id: int, intent_id: str) -> Refund: ...

    def verify_webhook(self, body: bytes, signature: str | None) -> ProviderEvent: ...

    async def close(self) -> None: ...


class ManualPayments:
    """Staff mark orders paid (PUT /api/orders/{id}/status): nothing is taken online."""

    name: Literal["manual", "stripe"] = "manual"
    publishable_key: str | None = None

    async def create_intent(self, order_id: int, amount_cents: int, currency: str) -> Intent:
        raise PaymentNotOnline("This shop takes payments outside the app; staff mark orders paid")

    async def refund(self, order_id: int, intent_id: str) -> Refund:
        raise RuntimeError("manual payments are refunded outside the app")

    def verify_webhook(self, body: bytes, signature: str | None) -> ProviderEvent:
        raise InvalidSignature("This shop takes no Stripe payments (PAYMENT_PROVIDER=manual)")

    async def close(self) -> None:
        return None


# Stripe's ids (evt_..., pi_..., ch_...) and event types; anything else is not from Stripe (and
# a NUL character would not even fit a PostgreSQL text column)
_StripeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]{1,255}$")]
_StripeType = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.]{1,255}$")]


# Stripe's event envelope, only the fields used (msgspec skips the rest)
class _StripeObject(msgspec.Struct):
    id: _StripeId
    object: str
    amount: int | None = None
    currency: str | None = None
    payment_intent: _StripeId | None = None  # a charge's
    refunded: bool = False  # a charge's: fully refunded


class _StripeData(msgspec.Struct):
    object: _StripeObject


class _StripeEvent(msgspec.Struct):
    id: _StripeId
    type: _StripeType
    data: _StripeData


_decode_stripe_event = msgspec.json.Decoder(_StripeEvent).decode
_KINDS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "charge.refunded": "refunded",
}


class StripePayments:
    """PaymentIntents (one per order, idempotency key derived from the order), full refunds,
    and webhooks verified with the library's `WebhookSignature` (`Stripe-Signature`, 300 s)."""

    name: Literal["manual", "stripe"] = "stripe"
    publishable_key: str | None

    def __init__(self, settings: Settings) -> None:
        assert settings.stripe_secret_key and settings.stripe_webhook_secret  # config checks
        self.publishable_key = settings.stripe_publishable_key
        self.webhook_secret = settings.stripe_webhook_secret
        self.http = stripe.HTTPXClient(timeout=STRIPE_TIMEOUT)
        self.client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base},
            http_client=self.http,
            max_network_retries=0,  # the caller retries (the app, or the job's backoff)
        )

    async def close(self) -> None:
        await self.http.close_async()

    async def create_intent(self, order_id: int, amount_cents: int, currency: str) -> Intent:
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params={  # type: ignore[typeddict-unknown-key]
                    "amount": amount_cents,
                    "currency": currency.lower(),
                    # cards (PaymentSheet); the library's types now only know
                    # automatic_payment_methods, which the tests' emulator does not
                    "payment_method_types": ["card"],
                    "metadata": {"order_id": str(order_id)},
                },
                # Stripe answers a retry with the same key with the same PaymentIntent
                options={"idempotency_key": f"shopapi-order-{order_id}-payment"},
            )
        except stripe.StripeError as exc:
            log.warning("stripe: PaymentIntent for order %s failed: %s", order_id, exc)
            raise PaymentProviderUnavailable("The payment provider did not answer; retry") from exc
        assert intent.client_secret is not None
        return Intent(id=intent.id, client_secret=intent.client_secret)

    async def refund(self, order_id: int, intent_id: str) -> Refund:
        """Refund the whole payment once: a refund the provider already holds for it (a job
        that ran before and died before recording it) is returned instead of a second one."""
        existing = await self.client.v1.refunds.list_async(
            params={"payment_intent": intent_id, "limit": 1}
        )
        refund = (
            existing.data[0]
            if existing.data
            else await self.client.v1.refunds.create_async(
                params={"payment_intent": intent_id, "metadata": {"order_id": str(order_id)}},
                options={"idempotency_key": f"shopapi-order-{order_id}-refund"},
            )
        )
        return Refund(id=refund.id, succeeded=refund.status == "succeeded")

    def verify_webhook(self, body: bytes, signature: str | None) -> ProviderEvent:
        try:
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8"), signature, self.webhook_secret, WEBHOOK_TOLERANCE
            )
            event = _decode_stripe_event(body)
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise InvalidSignature("The Stripe-Signature header does not match the body") from exc
        except msgspec.MsgspecError as exc:  # signed, but not an event we can read
            log.warning("signed webhook body is not a Stripe event: %s", exc)
            raise InvalidSignature("The body is not a Stripe event") from exc
        except RecursionError as exc:  # msgspec walks nesting (even of ignored fields) deeply
            raise InvalidSignature("Not a Stripe event: nested too deeply") from exc
        obj = event.data.object
        kind = _KINDS.get(event.type, "other")
        if kind == "refunded" and not obj.refunded:  # a partial refund: not ours
            kind = "other"
        intent_id = obj.payment_intent if obj.object == "charge" else obj.id
        return ProviderEvent(
            id=event.id,
            type=event.type,
            kind=kind if obj.object in ("payment_intent", "charge") else "other",
            intent_id=intent_id if intent_id and intent_id.startswith("pi_") else None,
            amount_cents=obj.amount,
            currency=obj.currency.upper() if obj.currency else None,
        )


def make_provider(settings: Settings) -> PaymentProvider:
    return StripePayments(settings) if settings.payment_provider == "stripe" else ManualPayments()

"""Payments: starting an order's online payment, applying the provider's webhook events, refunds
and the expiry of unpaid orders.

What a payment means for an order is decided here and written in one transaction with the
provider event that caused it: each event id at most once (payment_events), an order paid at
most once (change_order_status only moves a pending order), a refund asked for at most once
per order (the refund job's lock, and the refund id it keeps). The provider itself
(shopapi.payment_providers) only talks to the outside.
"""

from __future__ import annotations

import logging
from typing import Any

from shopapi.context import AppContext, CurrentUser
from shopapi.db import Pool, connection, queries, transaction
from shopapi.errors import InvalidTransition, NotFound, PaymentNotOnline
from shopapi.jobs.context import WorkerContext
from shopapi.payment_providers import ProviderEvent
from shopapi.schemas.payments import PaymentStart
from shopapi.services import orders

log = logging.getLogger("shopapi.payments")

EXPIRY_BATCH = 200  # unpaid orders one expiry run cancels; the next run takes the rest


async def start_payment(ctx: AppContext, user: CurrentUser, order_id: int) -> PaymentStart:
    """The owner's pending order gets its one online payment (or the one already started),
    for the order's total in its currency; anyone else's order does not exist (404)."""
    provider = ctx.payments
    async with ctx.payment_starts.admitted(), transaction(ctx.pool) as conn:
        order = await queries.lock_order_for_payment(conn, order_id=order_id, user_id=user.id)
        if order is None:
            raise NotFound(f"Order {order_id} not found")
        if provider.name == "manual":
            raise PaymentNotOnline("This shop takes payments outside the app; staff mark it paid")
        if order["status"] != "pending":
            raise InvalidTransition(f"Order {order_id} is {order['status']}; it cannot be paid")
        if order["expired"]:
            # past its deadline, about to be cancelled by the worker: taking money now would
            # only mean a refund
            raise InvalidTransition(f"Order {order_id} expired unpaid; it cannot be paid")
        # read once the order is locked: a racing start that waited finds the first one's payment
        payment = await queries.started_payment(conn, order_id=order_id)
        if payment is None:
            intent = await provider.create_intent(order_id, order["total_cents"], order["currency"])
            status = await queries.record_payment(
                conn,
                order_id=order_id,
                provider=provider.name,
                intent_id=intent.id,
                client_secret=intent.client_secret,
                amount_cents=order["total_cents"],
                currency=order["currency"],
            )
            client_secret = intent.client_secret
        else:
            status = await queries.restart_payment(conn, order_id=order_id)
            client_secret = payment["client_secret"]
    return PaymentStart(
        provider=provider.name,
        client_secret=client_secret,
        publishable_key=provider.publishable_key or "",
        amount_cents=order["total_cents"],
        currency=order["currency"],
        status=status,
    )


async def apply_webhook(ctx: AppContext, body: bytes, signature: str | None) -> str:
    """Verify a provider's webhook delivery and apply its event once; returns what it did
    (logged). Raises InvalidSignature (400) before anything is read or written, and lets a
    database error through (5xx: the provider delivers the event again later)."""
    event = ctx.payments.verify_webhook(body, signature)
    async with transaction(ctx.pool) as conn:
        outcome = await _apply(conn, event)
    log.info(
        "payment event %s",
        outcome,
        extra={"event_id": event.id, "type": event.type, "intent_id": event.intent_id},
    )
    return outcome


async def _apply(conn: Any, event: ProviderEvent) -> str:
    claim = await queries.claim_provider_event(
        conn, event_id=event.id, type=event.type, intent_id=event.intent_id
    )
    if not claim["fresh"]:
        return "duplicate"
    if event.kind == "other" or event.intent_id is None:
        return "ignored"
    if claim["order_id"] is None:
        return "unknown_intent"
    order_id = claim["order_id"]
    if event.kind == "succeeded":
        return await _succeeded(conn, event, claim)
    if event.kind == "failed":
        if claim["status"] != "pending":
            return "ignored"
        moved = await queries.set_payment_status(
            conn, order_id=order_id, status="failed", from_statuses=["unpaid", "processing"]
        )
        if moved is None:
            return "ignored"
        await queries.record_payment_failed_event(conn, order_id=order_id)
        return "failed"
    # refunded: the provider confirms a refund it had not confirmed at once
    moved = await queries.set_payment_status(
        conn, order_id=order_id, status="refunded", from_statuses=["succeeded"]
    )
    return "ignored" if moved is None else "refunded"


async def _succeeded(conn: Any, event: ProviderEvent, payment: dict[str, Any]) -> str:
    order_id = payment["order_id"]
    if (event.amount_cents, event.currency) != (payment["amount_cents"], payment["currency"]):
        log.error(
            "payment for order %s does not match it: %s %s paid, %s %s due; order not paid",
            order_id,
            event.amount_cents,
            event.currency,
            payment["amount_cents"],
            payment["currency"],
            extra={"event_id": event.id, "order_id": order_id},
        )
        return "mismatch"
    if payment["payment_status"] in ("succeeded", "refunded"):
        return "ignored"  # another event for the same payment said so already
    if payment["status"] == "pending":
        # paid and succeeded in one statement (history by null, order.status_changed)
        await queries.change_order_status(
            conn,
            id=order_id,
            status="paid",
            from_statuses=["pending"],
            owner_id=None,
            by_user_id=None,
            payment_status="succeeded",
        )
        return "paid"
    await queries.set_payment_status(
        conn,
        order_id=order_id,
        status="succeeded",
        from_statuses=["unpaid", "processing", "failed"],
    )
    if payment["status"] == "cancelled":
        # cancelled (or expired) before the money arrived: it goes back, never kept
        await queries.defer_refund(conn, order_id=order_id)
        return "refund"
    return "ignored"  # staff marked it paid by hand meanwhile: the money is the payment


# ------------------------------------------------------------------ worker jobs


async def refund_payment(wctx: WorkerContext, order_id: int) -> str | None:
    """Give an order's online payment back in full, once; returns the refund id, or None
    when there is nothing (left) to refund. A run that dies after the provider refunded finds
    that refund at the provider the next time (StripePayments.refund), never a second one."""
    async with connection(wctx.pool) as conn:
        payment = await queries.get_payment(conn, order_id=order_id)
    if payment is None or payment["payment_status"] != "succeeded":
        log.info("refund not needed", extra={"order_id": order_id})
        return None
    refund = await wctx.payments.refund(order_id, payment["intent_id"])
    async with transaction(wctx.pool) as conn:
        await queries.record_refund(
            conn, order_id=order_id, refund_id=refund.id, succeeded=refund.succeeded
        )
    log.info("refunded", extra={"order_id": order_id, "refund_id": refund.id})
    return refund.id


async def expire_unpaid_orders(wctx: WorkerContext) -> int:
    """Cancel pending orders whose payment deadline passed (stock back through the ledger,
    history by null); returns how many. An order paid or cancelled meanwhile is left alone:
    change_order_status only moves a pending one, whoever races it."""
    async with connection(wctx.pool) as conn:
        ids = [row["id"] async for row in queries.expired_order_ids(conn, limit=EXPIRY_BATCH)]
    expired = 0
    for order_id in ids:
        if await orders.cancel_unpaid(wctx, order_id):
            expired += 1
    if expired:
        log.info("expired %d unpaid order(s)", expired)
    return expired


async def purge_payment_events(pool: Pool, older_than_seconds: int) -> int:
    async with connection(pool) as conn:
        return await queries.delete_old_payment_events(conn, older_than_seconds=older_than_seconds)

"""The emails events cause (sent at most once per event) and the emails of account links
(reset, verification: at most once per token).

An email is claimed (sent_emails) in the transaction that sends it: should SMTP fail, the
claim rolls back and the job is retried; should the job run again after a success (a crash
between the send and the job's end), the claim is found and nothing is sent twice.
"""

from __future__ import annotations

import logging
from typing import Any

from shopapi import instruments
from shopapi.db import connection, queries, transaction
from shopapi.jobs.context import WorkerContext
from shopapi.security import account_token

log = logging.getLogger("shopapi.notifications")

# order.status_changed: the moves the buyer hears about
STATUS_TEMPLATES = {
    "paid": "order_paid",
    "shipped": "order_shipped",
    "cancelled": "order_cancelled",
}


def template_for(event: dict[str, Any]) -> str | None:
    """The email an event sends to the buyer, if any."""
    if event["type"] == "order.created":
        return "order_confirmation"
    if event["type"] == "order.status_changed":
        return STATUS_TEMPLATES.get(event["data"]["to"])
    return None


async def send_event_email(wctx: WorkerContext, event_id: str) -> str | None:
    """Send the email of one event; returns its template, or None when there is none to
    send (no template for the event, event purged, buyer gone, or sent already)."""
    async with connection(wctx.pool) as conn:
        event = await queries.get_event(conn, id=event_id)
    template = None if event is None else template_for(event)
    if event is None or template is None:
        return None
    order = event["data"]["order"]
    async with transaction(wctx.pool) as conn:
        buyer = await queries.get_user(conn, id=order["user_id"])
        if buyer is None:
            return None
        if (
            await queries.claim_email(
                conn, event_id=event_id, template=template, recipient=buyer["email"]
            )
            is None
        ):
            log.info("email already sent", extra={"event_id": event_id, "template": template})
            return None
        message = wctx.mailer.render(
            template, to=buyer["email"], name=buyer["full_name"] or buyer["email"], order=order
        )
        # one Message-ID per event and template: should a crash make the job send it again,
        # mail systems that deduplicate by Message-ID show it once
        message["Message-ID"] = f"<{event_id}.{template}@shopapi>"
        await wctx.mailer.send(message)  # raises: the claim rolls back, the job is retried
    instruments.EMAILS_SENT.labels(template=template).inc()
    log.info("email sent", extra={"event_id": event_id, "template": template})
    return template


async def send_account_email(wctx: WorkerContext, token_id: int) -> str | None:
    """Send the email of a reset or verification token: its link and the token itself.
    Returns its template, or None when the token is no longer worth an email (used, voided
    by a newer one, expired, for an address the account no longer has, or sent already)."""
    async with transaction(wctx.pool) as conn:
        token = await queries.claim_account_email(conn, id=token_id)
        if token is None:
            log.info("account email not needed", extra={"token_id": token_id})
            return None
        template = token["purpose"]  # password_reset | email_verification
        secret = account_token(wctx.settings.signing_key, token["nonce"])
        link = getattr(wctx.settings, f"{template}_url").replace("{token}", secret)
        message = wctx.mailer.render(
            template,
            to=token["email"],
            name=token["full_name"] or token["email"],
            link=link,
            token=secret,
            expires_at=token["expires_at"],
        )
        message["Message-ID"] = f"<account-token-{token_id}@shopapi>"
        await wctx.mailer.send(message)  # raises: the claim rolls back, the job is retried
    instruments.EMAILS_SENT.labels(template=template).inc()
    log.info("email sent", extra={"token_id": token_id, "template": template})
    return template

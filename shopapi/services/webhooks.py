"""Merchant webhooks (ADMIN): subscriptions, their delivery log, redelivery."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from msgspec import UNSET

from shopapi import netguard
from shopapi.context import AppContext
from shopapi.db import connection, queries, transaction
from shopapi.errors import NotFound, ValidationFailed
from shopapi.schemas.common import PageOf
from shopapi.schemas.webhooks import (
    MAX_WEBHOOKS,
    DeliveryPublic,
    Redelivery,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookPublic,
    WebhookUpdate,
)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def _checked_url(ctx: AppContext, url: str) -> str:
    """An allowed target: http(s), resolving to public addresses (unless allowed), else 422."""
    try:
        _, host, port = netguard.url_target(url)
        await netguard.checked_addresses(
            host, port, allow_private=ctx.settings.webhook_allow_private
        )
    except netguard.AddressRefused as exc:
        raise ValidationFailed.single("url", str(exc)) from None
    return url


def _checked_events(events: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for index, event in enumerate(events):
        if event in seen:
            raise ValidationFailed.single(
                f"events[{index}]", f"{event} is already at events[{seen[event]}]"
            )
        seen[event] = index
    return events


async def create_webhook(ctx: AppContext, body: WebhookCreate) -> WebhookCreated:
    url = await _checked_url(ctx, body.url)
    events = _checked_events(list(body.events))
    async with transaction(ctx.pool) as conn:
        await queries.lock_webhooks_for_create(conn)
        row = await queries.create_webhook(
            conn,
            url=url,
            events=events,
            is_active=body.is_active,
            secret=new_secret(),
            max_webhooks=MAX_WEBHOOKS,
        )
    if row is None:
        raise ValidationFailed.single(
            "webhooks", f"at most {MAX_WEBHOOKS} webhooks; delete one first"
        )
    return msgspec.convert(row, WebhookCreated)


async def list_webhooks(ctx: AppContext, query: WebhookListQuery) -> PageOf[WebhookPublic]:
    window = ctx.pager.window(query.page, query.per_page)
    async with connection(ctx.pool) as conn:
        rows = [
            row
            async for row in queries.list_webhooks(conn, limit=window.limit, offset=window.offset)
        ]
        return await ctx.pager.page(
            rows, window, WebhookPublic, count=lambda: queries.count_webhooks(conn)
        )


async def get_webhook(ctx: AppContext, webhook_id: int) -> WebhookPublic:
    async with connection(ctx.pool) as conn:
        row = await queries.get_webhook(conn, id=webhook_id)
    if row is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return msgspec.convert(row, WebhookPublic)


async def update_webhook(ctx: AppContext, webhook_id: int, body: WebhookUpdate) -> WebhookPublic:
    params: dict[str, Any] = {
        "url": None if body.url is UNSET else await _checked_url(ctx, body.url),
        "events": None if body.events is UNSET else _checked_events(list(body.events)),
        "is_active": None if body.is_active is UNSET else body.is_active,
    }
    async with connection(ctx.pool) as conn:
        row = await queries.update_webhook(conn, id=webhook_id, **params)
    if row is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return msgspec.convert(row, WebhookPublic)


async def delete_webhook(ctx: AppContext, webhook_id: int) -> None:
    async with connection(ctx.pool) as conn:
        if await queries.delete_webhook(conn, id=webhook_id) is None:
            raise NotFound(f"Webhook {webhook_id} not found")


async def list_deliveries(
    ctx: AppContext, webhook_id: int, query: WebhookListQuery
) -> PageOf[DeliveryPublic]:
    """The delivery log, newest attempt first."""
    window = ctx.pager.window(query.page, query.per_page)
    async with connection(ctx.pool) as conn:
        if await queries.get_webhook(conn, id=webhook_id) is None:
            raise NotFound(f"Webhook {webhook_id} not found")
        rows = [
            row
            async for row in queries.list_deliveries(
                conn,
                webhook_id=webhook_id,
                limit=window.limit,
                offset=window.offset,
            )
        ]
        return await ctx.pager.page(
            rows,
            window,
            DeliveryPublic,
            count=lambda: queries.count_deliveries(conn, webhook_id=webhook_id),
        )


async def redeliver(ctx: AppContext, webhook_id: int, delivery_id: int) -> Redelivery:
    """Queue a new series of attempts for the event of one logged attempt."""
    async with connection(ctx.pool) as conn:
        job_ids = await queries.redeliver(conn, webhook_id=webhook_id, delivery_id=delivery_id)
    if not job_ids:
        raise NotFound(f"Delivery {delivery_id} of webhook {webhook_id} not found")
    return Redelivery()

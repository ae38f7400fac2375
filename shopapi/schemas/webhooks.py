"""Merchant webhooks: subscriptions, their delivery log, and the event envelope they get."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shopapi.schemas.common import PageQuery, Timestamp
from shopapi.schemas.patterns import NO_BLANKS

EventType = Literal[
    "order.created", "order.status_changed", "order.payment_failed", "product.out_of_stock"
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
MAX_WEBHOOKS = 20
# the scheme and the address are checked by the service (netguard), with field paths
WebhookUrl = Annotated[str, Meta(min_length=1, max_length=2048, pattern=NO_BLANKS)]
EventList = Annotated[list[EventType], Meta(min_length=1, max_length=len(EVENT_TYPES))]


class WebhookPublic(msgspec.Struct):
    id: int
    url: str
    events: list[EventType]
    is_active: bool
    created_at: Timestamp


class WebhookCreated(msgspec.Struct):
    """The create answer: the only time the signing secret is shown."""

    id: int
    url: str
    events: list[EventType]
    is_active: bool
    created_at: Timestamp
    secret: str


class WebhookCreate(msgspec.Struct, kw_only=True):
    url: WebhookUrl
    events: EventList
    is_active: bool = True


class WebhookUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH): a field left out keeps its value."""

    url: WebhookUrl | UnsetType = UNSET
    events: EventList | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class WebhookListQuery(PageQuery, kw_only=True):
    pass


class DeliveryPublic(msgspec.Struct):
    """One delivery attempt."""

    id: int
    event_id: str
    event_type: EventType
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    delivered_at: Timestamp
    next_attempt_at: Timestamp | None


class Redelivery(msgspec.Struct):
    queued: bool = True


class EventEnvelope(msgspec.Struct):
    """What each delivery POSTs (Shopapi-Event-Id, Shopapi-Event-Type and Shopapi-Signature
    headers with it): `data.order` is the order object; order.status_changed adds `from`
    and `to`; product.out_of_stock has `data.product` {id, name, stock}."""

    id: Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
    type: EventType
    created_at: Timestamp
    data: dict[str, Any]

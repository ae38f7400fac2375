"""Shipping methods: what a method costs, where it ships, and its staff bodies."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shopapi.schemas.common import PageQuery, PriceCents, Timestamp
from shopapi.schemas.countries import Country
from shopapi.schemas.patterns import FILLED_LINE

MethodName = Annotated[str, Meta(min_length=1, max_length=100, pattern=FILLED_LINE)]
# each code at most once; empty: ships everywhere
Countries = Annotated[list[Country], Meta(max_length=249)]


class ShippingMethodPublic(msgspec.Struct):
    id: int
    name: str
    price_cents: int
    free_over_cents: int | None
    countries: list[str]
    is_active: bool
    created_at: Timestamp
    updated_at: Timestamp


class ShippingMethodCreate(msgspec.Struct, kw_only=True):
    """`free_over_cents`: shipping is 0 when the order's subtotal is at least this (null:
    never free). `countries`: ISO 3166-1 alpha-2 codes it ships to; empty ships everywhere."""

    name: MethodName
    price_cents: PriceCents
    free_over_cents: PriceCents | None = None
    countries: Countries = msgspec.field(default_factory=list)
    is_active: bool = True


class ShippingMethodUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH); `free_over_cents: null` makes shipping never free."""

    name: MethodName | UnsetType = UNSET
    price_cents: PriceCents | UnsetType = UNSET
    free_over_cents: PriceCents | None | UnsetType = UNSET
    countries: Countries | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class ShippingMethodListQuery(PageQuery, kw_only=True):
    """By id; active methods only unless staff pass include_inactive=true."""

    include_inactive: bool = False


class ShippingMethodRef(msgspec.Struct):
    id: int
    name: str

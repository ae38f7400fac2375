"""Addresses: the address book entry, its create/update bodies, and the copy an order keeps."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shopapi.schemas.common import PageQuery, Timestamp
from shopapi.schemas.countries import Country
from shopapi.schemas.patterns import FILLED_LINE, ONE_LINE, PHONE

# printable text, one line: no control characters, line breaks or bidi overrides; required
# fields also need something other than blanks
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=FILLED_LINE)]
Line = Annotated[str, Meta(max_length=200, pattern=ONE_LINE)]
City = Annotated[str, Meta(min_length=1, max_length=100, pattern=FILLED_LINE)]
Region = Annotated[str, Meta(max_length=100, pattern=ONE_LINE)]
PostalCode = Annotated[str, Meta(min_length=1, max_length=20, pattern=FILLED_LINE)]
Phone = Annotated[str, Meta(max_length=32, pattern=PHONE)]


class ShippingAddress(msgspec.Struct, kw_only=True):
    """An address as sent inline with an order, and as the order keeps it (a copy: editing or
    deleting the address book entry never changes a past order)."""

    full_name: Name
    line1: Name
    city: City
    postal_code: PostalCode
    country: Country
    line2: Line = ""
    region: Region = ""
    phone: Phone = ""


class AddressCreate(ShippingAddress, kw_only=True):
    """The first address of a user is the default whatever is sent; `is_default: true` moves
    the default to this one."""

    is_default: bool = False


class AddressUpdate(msgspec.Struct, kw_only=True):
    """Partial update (PUT and PATCH): a field left out keeps its value."""

    full_name: Name | UnsetType = UNSET
    line1: Name | UnsetType = UNSET
    line2: Line | UnsetType = UNSET
    city: City | UnsetType = UNSET
    region: Region | UnsetType = UNSET
    postal_code: PostalCode | UnsetType = UNSET
    country: Country | UnsetType = UNSET
    phone: Phone | UnsetType = UNSET
    is_default: bool | UnsetType = UNSET


class AddressPublic(msgspec.Struct):
    id: int
    full_name: str
    line1: str
    line2: str
    city: str
    region: str
    postal_code: str
    country: str
    phone: str
    is_default: bool
    created_at: Timestamp
    updated_at: Timestamp


class AddressListQuery(PageQuery, kw_only=True):
    """By id; next_cursor is always null."""

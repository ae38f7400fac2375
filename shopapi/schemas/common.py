"""Types shared by every area: ids, timestamps, pagination."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta

# free text refuses only NUL (PostgreSQL text cannot hold it); re-exported for the areas
from shopapi.schemas.patterns import NO_NUL as NO_NUL

T = TypeVar("T")

Id = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
PositiveId = Annotated[int, Meta(ge=1, le=2**63 - 1)]
# timestamps are formatted by PostgreSQL (api_time) as RFC 3339 UTC with microseconds
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
PriceCents = Annotated[int, Meta(ge=0, le=10**12)]
Stock = Annotated[int, Meta(ge=0, le=10**9)]
Page = Annotated[int, Meta(ge=1, le=10**9)]
PerPage = Annotated[int, Meta(ge=1, le=100)]


class PageQuery(msgspec.Struct, kw_only=True):
    page: Page | None = None
    per_page: PerPage = 20


class PageOf(msgspec.Struct, Generic[T]):
    items: list[T]
    page: int | None
    per_page: int
    total: int
    next_cursor: str | None  # always sent, null on the last page and on lists without cursors


class Status(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    database: str
    redis: str


def sent_fields(body: msgspec.Struct, *names: str) -> dict[str, Any]:
    """A partial update's values for `names`, each None when the client did not send it (the
    update queries keep a column whose parameter is NULL)."""
    return {
        name: None if (value := getattr(body, name)) is msgspec.UNSET else value for name in names
    }

"""The one pager every list uses: page or cursor, the window to fetch, the total, the next cursor.

A list fetches `window.limit` rows (one more than a page: the extra row tells whether there
is a next page) from `window.offset`, or after the cursor's key. A cursor is the sort key of
the last row plus a fingerprint of the filters and sort it was issued for, signed with HMAC:
a cursor we did not issue, or replayed with other filters, is a 422.

Offset paging reaches at most `MAX_OFFSET_ROWS` rows (page × per_page): a deep OFFSET makes
PostgreSQL walk every skipped row, so past it the answer is a 422 pointing to `cursor` (keyset
pages cost the same wherever they are) or, on lists without cursors, stating the limit.

The total costs no count when it can be known otherwise: on the last page it is the rows
before it plus the rows on it; else a window count carried by the rows (`total_column`,
counted by the query as it paged, when the query has one), else `count()`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shopapi.admission import Admission
from shopapi.errors import ValidationFailed
from shopapi.schemas.common import PageOf

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list).decode


MAX_OFFSET_ROWS = 10_000


def _too_far(per_page: int, takes_cursor: bool) -> ValidationFailed:
    last_page = MAX_OFFSET_ROWS // per_page
    reach = (
        f"page × per_page may be at most {MAX_OFFSET_ROWS} "
        f"(page {last_page} at per_page {per_page})"
    )
    if takes_cursor:
        return ValidationFailed.single(
            "page", f"{reach}; to go further use cursor with the previous answer's next_cursor"
        )
    return ValidationFailed.single("page", f"{reach}; narrow the filters to reach other rows")


def _not_ours() -> ValidationFailed:
    return ValidationFailed.single("cursor", "is not a cursor this server issued")


class CursorCodec:
    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"cursor:" + key.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, last_key: list[Any], scope: str) -> str:
        payload = _encode([scope, *last_key])
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def decode(self, cursor: str, scope: str) -> list[Any]:
        """The last row's sort key; 422 for a forged, corrupted or mismatched cursor."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise _not_ours() from None
        payload, mac = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):
            raise _not_ours()
        values = _decode(payload)
        if not values or values[0] != scope:
            raise ValidationFailed.single(
                "cursor", "was issued for other filters or sort; repeat the same ones"
            )
        return values[1:]


@functools.lru_cache(maxsize=4)
def cursor_codec(key: str) -> CursorCodec:
    """The codec for a signing key, built once (it hashes the key)."""
    return CursorCodec(key)


def fingerprint(**filters: Any) -> str:
    """A short stable digest of the filters and sort a cursor belongs to."""
    return hashlib.sha256(_encode(sorted(filters.items()))).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows one page is: `page` None when it follows a cursor (`after`: its sort key)."""

    page: int | None
    per_page: int
    offset: int
    after: tuple[Any, ...]  # (sort key, id) of the cursor's last row, or (None, None)
    scope: str  # the fingerprint a next cursor is issued for

    @property
    def limit(self) -> int:
        return self.per_page + 1


class Pager:
    """Pages of one signing key's cursors (`settings.signing_key`), and the worker's slots for
    uncached public list queries (`slots`, 0: unbounded; `queue_timeout` seconds of waiting
    for one, then 503): a flood of distinct pages and searches, each a cache miss, then
    queues here instead of taking every pool connection from orders and logins."""

    def __init__(self, signing_key: str, slots: int = 0, queue_timeout: float = 1.0) -> None:
        self.codec = cursor_codec(signing_key)
        self._admission = Admission(
            slots, queue_timeout, "Too many catalog lists and searches at once, retry shortly"
        )

    def admitted(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Holds one list slot for the block; 503 with Retry-After when none frees in time."""
        return self._admission.admitted()

    def window(
        self,
        page: int | None,
        per_page: int,
        cursor: str | None = None,
        *,
        scope: str = "",
        key_types: tuple[type, ...] = (),
        decode: bool = True,
    ) -> Window:
        """The window a query asks for: by `page` (default 1) or by `cursor` (not both: 422),
        whose decoded key must match `key_types` (the sort key's type, then int for the id;
        a list without `key_types` takes no cursor)."""
        if cursor is None:
            page = page or 1
            if page * per_page > MAX_OFFSET_ROWS:
                raise _too_far(per_page, takes_cursor=bool(key_types))
            return Window(page, per_page, (page - 1) * per_page, (None, None), scope)
        if page is not None:
            raise ValidationFailed.single("cursor", "cannot be combined with page")
        if not decode:  # a scope that matches nothing: any cursor leads to the same empty page
            return Window(None, per_page, 0, (None, None), scope)
        last = self.codec.decode(cursor, scope)
        if len(last) != len(key_types) or not all(
            isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            for value, kind in zip(last, key_types, strict=True)
        ):
            raise _not_ours()
        return Window(None, per_page, 0, tuple(last), scope)

    async def page(
        self,
        rows: Sequence[dict[str, Any]],
        window: Window,
        item_type: type,
        *,
        count: Callable[[], Awaitable[int]] | None = None,
        total_column: str | None = None,
        cursor_key: Callable[[dict[str, Any]], list[Any]] | None = None,
    ) -> PageOf:
        """The answer for `rows` fetched with `window.limit`. `cursor_key`: the sort key of a
        row, for lists that hand out a next cursor."""
        more = len(rows) > window.per_page
        rows = rows[: window.per_page]
        if window.page is not None and not more and (rows or window.offset == 0):
            total = window.offset + len(rows)  # the last page tells the total: no count needed
        elif rows and total_column in rows[0]:
            total = rows[0][total_column]  # counted by the query as it paged
        else:
            assert count is not None, "a list that cannot tell its total must count it"
            total = await count()
        next_cursor = None
        if more and cursor_key is not None:
            next_cursor = self.codec.encode(cursor_key(rows[-1]), window.scope)
        return page_of(rows, item_type, window, total, next_cursor)

    @staticmethod
    def empty(window: Window, item_type: type) -> PageOf:
        """A page of nothing (a scope that matches no row by definition)."""
        return page_of([], item_type, window, 0, None)


def page_of(
    rows: Sequence[dict[str, Any]],
    item_type: type,
    window: Window,
    total: int,
    next_cursor: str | None,
) -> PageOf:
    items = msgspec.convert(rows, list[item_type], from_attributes=False)  # type: ignore[valid-type]
    return PageOf(
        items=items,
        page=window.page,
        per_page=window.per_page,
        total=total,
        next_cursor=next_cursor,
    )

"""Page answers and opaque keyset cursors.

A cursor is the sort key of the last row plus a fingerprint of the filters and sort it was
issued for, signed with HMAC: a cursor we did not issue, or replayed with other filters,
is a 422.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import msgspec

from shopapi.errors import ValidationFailed
from shopapi.schemas.common import PageOf

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list).decode


def page_of(
    rows: Sequence[dict[str, Any]], item_type: type, *, page: int | None, per_page: int,
    total: int, next_cursor: str | None = None,
) -> PageOf:
    items = msgspec.convert(rows, list[item_type], from_attributes=False)
    return PageOf(items=items, page=page, per_page=per_page, total=total, next_cursor=next_cursor)


class CursorCodec:
    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"cursor:" + key.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, last_key: list[Any], fingerprint: str) -> str:
        payload = _encode([fingerprint, *last_key])
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def decode(self, cursor: str, fingerprint: str) -> list[Any]:
        """The last row's sort key; 422 for a forged, corrupted or mismatched cursor."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise ValidationFailed.single("cursor", "is not a cursor this server issued") from None
        payload, mac = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):
            raise ValidationFailed.single("cursor", "is not a cursor this server issued")
        values = _decode(payload)
        if not values or values[0] != fingerprint:
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

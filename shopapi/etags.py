"""Entity tags of JSON answers, and the two comparisons RFC 9110 defines for them.

Pure functions (no HTTP framework): services compare If-Match with the ETag of a locked row,
the HTTP layer (`shopapi.resources.conditional`) compares If-None-Match.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

ETAG_LENGTH = 24  # '"' + 22 base64url characters of a 128-bit digest + '"'


def etag_of(body: bytes) -> str:
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + '"'


def _candidates(header: str) -> Iterable[str]:
    return (tag.strip() for tag in header.split(","))


def weak_match(header: str | None, etag: str) -> bool:
    """If-None-Match (weak comparison): True when the client's copy is current."""
    if not header:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _candidates(header))


def strong_match(header: str, etag: str | None) -> bool:
    """If-Match (strong comparison); `etag` None means there is no current representation."""
    if etag is None:
        return False
    return any(tag == "*" or tag == etag for tag in _candidates(header))

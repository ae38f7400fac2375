"""URL slugs: lower-case ASCII words joined by `-`, accents transliterated."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[a-z0-9]+")


def slugify(name: str) -> str:
    """Lower-case ASCII words joined by `-`: accents transliterated (NFKD, then non-ASCII
    dropped), apostrophes dropped ("Men's" -> "mens"), any other character separates words."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = _WORD.findall(ascii_name.lower().replace("'", ""))
    return "-".join(words) or "category"

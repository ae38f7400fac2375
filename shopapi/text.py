"""Text rules shared by every layer (services, the rate limiter, queries' parameters)."""

from __future__ import annotations

BLANKS = " \t\r\n"  # what names, searches and If-Match are trimmed of


def normalize_email(email: str) -> str:
    """The one spelling of an address: trimmed and lower-cased."""
    return email.strip().lower()


def like_escape(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (backslash is PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

"""Catalog read-through cache in Redis (to be completed by the catalog work).

`products_changed` is the one call every write path makes after its transaction commits,
so the next read sees the change on every worker.
"""

from __future__ import annotations

from shopapi.context import AppContext


def products_changed(ctx: AppContext, *product_ids: int) -> None:
    """Invalidate cached reads of these products (detail and any list that may show them)."""
    return None

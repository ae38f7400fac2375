"""The stock ledger invariant: for every product, stock equals the sum of its movements.

Checked by the test suites after every order scenario and by `shopapi check-ledger`.
"""

from __future__ import annotations

from typing import Any

from shopapi.db import Pool, connection, queries


async def check_ledger(pool: Pool) -> list[dict[str, Any]]:
    """Products whose stock differs from their ledger: `{product_id, stock, ledger_stock}`.
    An empty list means the ledger holds."""
    async with connection(pool) as conn:
        return [row async for row in queries.ledger_mismatches(conn)]

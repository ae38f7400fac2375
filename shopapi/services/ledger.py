"""The stock ledger invariant: for every product, stock equals the sum of its movements.

Checked by the test suites after every order scenario and by `shopapi check-ledger`.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from shopapi.db import connection, queries


def check_ledger(pool: ConnectionPool) -> list[dict[str, Any]]:
    """Products whose stock differs from their ledger: `{product_id, stock, ledger_stock}`.
    An empty list means the ledger holds."""
    with connection(pool) as conn:
        return list(queries.ledger_mismatches(conn))

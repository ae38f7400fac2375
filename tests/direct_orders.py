"""Orders placed straight through the API's placement statement (`queries.place_order`),
without HTTP: for tests and benchmarks that need many orders, or the statement's own plan.

One place spells out the statement's parameters, so a new parameter is added once.
"""

from __future__ import annotations

from typing import Any

import psycopg

from shopapi.db import queries

# a plain order: no Idempotency-Key, no shipment, no MAX_PENDING_ORDERS slot, manual payment
PLAIN = {
    "currency": "USD",
    "idempotency_key": None,
    "request_hash": None,
    "address": None,
    "address_id": None,
    "shipping_method_id": None,
    "max_pending": 0,
    "payment_provider": "manual",
    "payment_timeout": 0,
}
# a card order, as PAYMENT_PROVIDER=stripe places it (pays within the default 30 minutes)
STRIPE = {"payment_provider": "stripe", "payment_timeout": 1800}


def order_params(
    user_id: int, product_ids: list[int], quantities: list[int] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The statement's parameters for one order of `product_ids` (one of each by default)."""
    return {
        **PLAIN,
        "user_id": user_id,
        "product_ids": product_ids,
        "quantities": quantities if quantities is not None else [1] * len(product_ids),
        **overrides,
    }


async def place_direct(
    conn: psycopg.AsyncConnection[Any],
    user_id: int,
    product_ids: list[int],
    quantities: list[int] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Place one order on `conn` (autocommit, dict rows); asserts it was placed."""
    row = await queries.place_order(
        conn, **order_params(user_id, product_ids, quantities, **overrides)
    )
    assert row["order_json"] is not None, row
    return row


def seed_buyer_and_product(
    conn: psycopg.Connection[Any], stock: int, price_cents: int = 100
) -> tuple[int, int]:
    """A customer and one product with `stock` units, its stock ledger honest (one adjust)."""
    user = conn.execute(
        "INSERT INTO users (email, password_hash, full_name, role) "
        "VALUES ('bench@example.com', 'x', 'Bench', 'CUSTOMER') RETURNING id"
    ).fetchone()[0]
    product = conn.execute(
        "WITH c AS (INSERT INTO categories (name, slug) VALUES ('Bench', 'bench') RETURNING id) "
        "INSERT INTO products (name, price_cents, stock, category_id) "
        "SELECT 'Widget', %s, %s, id FROM c RETURNING id",
        (price_cents, stock),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO stock_movements (product_id, delta, reason) VALUES (%s, %s, 'adjust')",
        (product, stock),
    )
    return user, product

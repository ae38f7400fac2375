"""Orders under real concurrency: no overselling, no deadlock reaching clients, the ledger holds."""

from __future__ import annotations

import logging
import random
from collections import Counter

import psycopg
import pytest
from falcon import testing

from tests.conftest import (
    backends,
    db_rows,
    in_background,
    order_body,
    stock_of,
    together,
    wait_for,
)
from tests.helpers import units_held

pytestmark = pytest.mark.usefixtures("ledger_holds")


def test_fifty_buyers_racing_for_ten_units_buy_exactly_ten(
    app, make_user, make_product, database_url
):
    product = make_product(stock=10)
    buyers = [make_user() for _ in range(50)]
    answers: Counter = Counter()

    def buy(index: int, client: testing.TestClient) -> None:
        response = client.simulate_post(
            "/api/orders", json=order_body([(product["id"], 1)]), headers=buyers[index].headers
        )
        answers[(response.status_code, response.json.get("code"))] += 1

    together(50, lambda i: buy(i, testing.TestClient(app)))

    assert answers == {(201, None): 10, (409, "insufficient_stock"): 40}
    assert stock_of(database_url, product["id"]) == 0
    assert units_held(database_url) == {product["id"]: 10}
    assert db_rows(database_url, "SELECT count(DISTINCT user_id) FROM orders")[0][0] == 10


def test_multi_line_orders_in_opposite_line_orders_never_deadlock(
    app, make_user, make_product, database_url, caplog
):
    products = [make_product(stock=1000) for _ in range(4)]
    ids = [p["id"] for p in products]
    buyers = [make_user() for _ in range(8)]
    statuses: Counter = Counter()
    caplog.set_level(logging.WARNING, logger="shopapi.orders")

    def buy(index: int, client: testing.TestClient) -> None:
        lines = ids if index % 2 else ids[::-1]
        for round_ in range(6):
            quantities = [(index + round_ + n) % 3 + 1 for n in range(len(lines))]
            response = client.simulate_post(
                "/api/orders",
                json=order_body(zip(lines, quantities, strict=True)),
                headers=buyers[index % len(buyers)].headers,
            )
            statuses[response.status_code] += 1

    together(24, lambda i: buy(i, testing.TestClient(app)))

    assert statuses == {201: 24 * 6}
    # products are locked in id order, so not even a retried deadlock happened
    assert "Deadlock" not in caplog.text
    held = units_held(database_url)
    for product in products:
        assert product["stock"] == stock_of(database_url, product["id"]) + held[product["id"]]


def test_mixed_placements_cancels_moves_and_deletes_keep_every_unit_accounted_for(
    app, make_user, admin, make_product, database_url
):
    products = [make_product(stock=60) for _ in range(5)]
    ids = [p["id"] for p in products]
    buyers = [make_user() for _ in range(6)]
    unexpected: list[tuple[str, int, str]] = []

    def shop(index: int, client: testing.TestClient) -> None:
        rng = random.Random(index)
        buyer = buyers[index % len(buyers)]
        for _ in range(8):
            lines = rng.sample(ids, rng.randint(1, len(ids)))
            response = client.simulate_post(
                "/api/orders",
                json=order_body((pid, rng.randint(1, 6)) for pid in lines),
                headers=buyer.headers,
            )
            if response.status_code != 201:
                if response.json.get("code") != "insufficient_stock":
                    unexpected.append(("place", response.status_code, response.text))
                continue
            order_id = response.json["id"]
            action = rng.choice(["keep", "own-cancel", "pay-cancel", "ship", "delete"])
            if action == "own-cancel":
                calls = [("POST", f"/api/orders/{order_id}/cancel", None, buyer)]
            elif action == "pay-cancel":
                calls = [
                    ("PUT", f"/api/orders/{order_id}/status", {"status": s}, admin)
                    for s in ("paid", "cancelled")
                ]
            elif action == "ship":
                calls = [
                    ("PUT", f"/api/orders/{order_id}/status", {"status": s}, admin)
                    for s in ("paid", "shipped")
                ]
            elif action == "delete":
                calls = [("DELETE", f"/api/orders/{order_id}", None, admin)]
            else:
                calls = []
            for method, path, body, user in calls:
                response = client.simulate_request(method, path, json=body, headers=user.headers)
                if response.status_code not in (200, 204):
                    unexpected.append((method, response.status_code, response.text))

    together(16, lambda i: shop(i, testing.TestClient(app)))

    assert unexpected == []
    held = units_held(database_url)
    for product in products:
        # deleted orders were pending, so their stock came back
        assert product["stock"] == stock_of(database_url, product["id"]) + held.get(
            product["id"], 0
        )


def test_an_order_waiting_on_a_restock_sees_the_restocked_units(
    app, customer, make_product, database_url
):
    """The order's statement starts before a concurrent restock commits, waits for its lock,
    then must work from the latest stock (not its older snapshot: no false 409, no 500)."""
    product = make_product(stock=1)
    other = make_product(stock=5)

    with psycopg.connect(database_url) as restock:
        restock.execute("UPDATE products SET stock = stock + 4 WHERE id = %s", (product["id"],))
        restock.execute(
            "INSERT INTO stock_movements (product_id, delta, reason) VALUES (%s, 4, 'adjust')",
            (product["id"],),
        )
        buyer = in_background(
            lambda: testing.TestClient(app).simulate_post(
                "/api/orders",
                json=order_body([(other["id"], 2), (product["id"], 3)]),
                headers=customer.headers,
            )
        )
        wait_for(
            lambda: backends(database_url, waiting_on_lock=True),
            timeout=10,
            interval=0.01,
            what="the order to wait for the lock",
        )
        restock.commit()
        response = buyer.join()

    assert response.status_code == 201, response.text
    assert stock_of(database_url, product["id"]) == 2
    assert stock_of(database_url, other["id"]) == 3


def test_a_real_deadlock_is_retried_and_never_reaches_the_client(
    app, customer, make_product, database_url, caplog
):
    """A session outside the app closes a lock cycle with an order being placed; PostgreSQL
    aborts the order's statement as the deadlock victim and the service runs it again."""
    first = make_product(stock=10)
    second = make_product(stock=10)
    caplog.set_level(logging.WARNING, logger="shopapi.orders")

    with psycopg.connect(database_url) as outsider:
        # the app's statement (deadlock_timeout 1 s) must be the one to find the cycle
        outsider.execute("SET deadlock_timeout = '20s'")
        outsider.execute("SELECT FROM products WHERE id = %s FOR UPDATE", (second["id"],))
        buyer = in_background(
            lambda: testing.TestClient(app).simulate_post(
                "/api/orders",
                json=order_body([(first["id"], 1), (second["id"], 1)]),
                headers=customer.headers,
            )
        )
        # the order holds `first`, waits for `second`
        wait_for(
            lambda: backends(database_url, waiting_on_lock=True),
            timeout=10,
            interval=0.01,
            what="the order to wait for the lock",
        )
        # close the cycle; returns once PostgreSQL has aborted the order's statement
        outsider.execute("SELECT FROM products WHERE id = %s FOR UPDATE", (first["id"],))
        outsider.commit()
        response = buyer.join()

    assert response.status_code == 201, response.text
    assert "DeadlockDetected" in caplog.text
    assert stock_of(database_url, first["id"]) == 9
    assert stock_of(database_url, second["id"]) == 9
    assert db_rows(database_url, "SELECT count(*) FROM orders")[0][0] == 1

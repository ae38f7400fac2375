"""OWASP API6:2023 Unrestricted Access to Sensitive Business Flows: buying, checking out a cart,
retrying, cancelling and logging in cannot be automated into overselling, double charges, free
stock, hoarding stock in pending orders or credential stuffing, even across the worker
processes of a real gunicorn.

Complements tests/test_orders_concurrency.py, tests/test_idempotency.py, tests/test_checkout.py
and tests/test_order_shipping.py (races between threads of one process) and
tests/test_rate_limits.py (the login limit per IP + email) with races across two gunicorn
workers (orders, cart checkouts, the pending-order limit), every stock-returning path tried on
one order, replays after a cancel, and stuffing of many accounts from one address.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from falcon import testing

from shopapi.app import create_app
from shopapi.services.ledger import check_ledger
from tests.conftest import assert_problem, db_rows, make_settings, stock_of, together
from tests.helpers import place


def test_buyers_spread_over_two_gunicorn_workers_never_oversell(
    app_loop, live_server, make_user, make_product, database_url, pool
):
    server = live_server(workers=2)
    product = make_product(stock=5)
    buyers = [make_user() for _ in range(24)]
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}

    answers = together(
        24, lambda i: server.request("POST", "/api/orders", body, headers=buyers[i].headers)[:2]
    )

    outcome = Counter((status, (reply or {}).get("code")) for status, reply in answers)
    assert outcome == {(201, None): 5, (409, "insufficient_stock"): 19}
    assert stock_of(database_url, product["id"]) == 0
    assert db_rows(database_url, "SELECT count(*), count(DISTINCT user_id) FROM orders") == [(5, 5)]
    assert app_loop.run(check_ledger, pool) == []


def test_cart_checkouts_spread_over_two_gunicorn_workers_never_oversell(
    app_loop, live_server, make_user, make_product, database_url, pool
):
    server = live_server(workers=2)
    product = make_product(stock=5)
    buyers = [make_user() for _ in range(24)]
    for buyer in buyers:
        status, _, _ = server.request(
            "PUT", f"/api/cart/items/{product['id']}", {"quantity": 1}, headers=buyer.headers
        )
        assert status == 201

    answers = together(
        24, lambda i: server.request("POST", "/api/cart/checkout", {}, headers=buyers[i].headers)
    )

    outcome = Counter((status, (reply or {}).get("code")) for status, reply, _ in answers)
    assert outcome == {(201, None): 5, (409, "insufficient_stock"): 19}
    assert stock_of(database_url, product["id"]) == 0
    assert db_rows(database_url, "SELECT count(*), count(DISTINCT user_id) FROM orders") == [(5, 5)]
    # the winners' carts are empty, the losers' are as they were
    carts = dict(
        db_rows(
            database_url,
            "SELECT c.user_id, count(i.product_id) FROM carts c "
            "LEFT JOIN cart_items i ON i.cart_id = c.id GROUP BY c.user_id",
        )
    )
    won = {buyers[i].id for i, (status, _, _) in enumerate(answers) if status == 201}
    assert carts == {buyer.id: 0 if buyer.id in won else 1 for buyer in buyers}
    assert app_loop.run(check_ledger, pool) == []


def test_one_guest_cart_claimed_by_racing_accounts_over_two_workers_is_claimed_once(
    live_server, make_user, make_product, database_url
):
    """A guest token shared (or leaked) between accounts cannot copy its cart into several."""
    server = live_server(workers=2)
    products = [make_product(stock=5) for _ in range(3)]
    _, guest_cart, _ = server.request("POST", "/api/cart")
    token = {"X-Cart-Token": guest_cart["token"]}
    for product in products:
        path = f"/api/cart/items/{product['id']}"
        assert server.request("PUT", path, {"quantity": 2}, headers=token)[0] == 201
    claimers = [make_user() for _ in range(8)]

    answers = together(
        8,
        lambda i: server.request(
            "POST", "/api/cart/claim", headers={**claimers[i].headers, **token}
        )[:2],
    )

    outcome = Counter((status, (reply or {}).get("code")) for status, reply in answers)
    assert outcome == {(200, None): 1, (404, "not_found"): 7}
    (winner,) = [i for i, (status, _) in enumerate(answers) if status == 200]
    assert db_rows(
        database_url,
        "SELECT c.user_id, count(*), sum(i.quantity) FROM cart_items i "
        "JOIN carts c ON c.id = i.cart_id GROUP BY c.user_id",
    ) == [(claimers[winner].id, 3, 6)]
    assert db_rows(database_url, "SELECT count(*) FROM carts WHERE user_id IS NULL") == [(0,)]


def test_max_pending_orders_holds_for_one_customer_racing_over_two_workers(
    app_loop, live_server, make_user, make_product, database_url, pool
):
    """Hoarding stock in unpaid orders: one customer's racing orders, spread over two worker
    processes, never hold more than MAX_PENDING_ORDERS pending orders."""
    server = live_server(workers=2, MAX_PENDING_ORDERS="2")
    product = make_product(stock=100)
    hoarder = make_user()
    body = {"items": [{"product_id": product["id"], "quantity": 10}]}

    answers = together(
        8, lambda i: server.request("POST", "/api/orders", body, headers=hoarder.headers)[:2]
    )

    outcome = Counter((status, (reply or {}).get("code")) for status, reply in answers)
    assert outcome == {(201, None): 2, (409, "too_many_pending_orders"): 6}
    assert db_rows(database_url, "SELECT count(*), min(status), max(status) FROM orders") == [
        (2, "pending", "pending")
    ]
    assert stock_of(database_url, product["id"]) == 80
    # the limit is the customer's: someone else still buys
    other = make_user()
    assert server.request("POST", "/api/orders", body, headers=other.headers)[0] == 201
    assert app_loop.run(check_ledger, pool) == []


def test_retries_of_one_checkout_spread_over_two_workers_charge_once(
    app_loop, live_server, make_user, make_product, database_url, pool
):
    server = live_server(workers=2)
    product = make_product(stock=10, price_cents=2500)
    buyer = make_user()
    body = {"items": [{"product_id": product["id"], "quantity": 3}]}
    headers = {**buyer.headers, "Idempotency-Key": "checkout-42"}

    answers = together(12, lambda i: server.request("POST", "/api/orders", body, headers=headers))

    placed = {reply["id"] for status, reply, _ in answers if status == 201}
    others = {(status, reply["code"]) for status, reply, _ in answers if status != 201}
    assert len(placed) == 1 and others <= {(409, "request_in_progress")}
    assert (
        sum(h.get("Idempotent-Replayed") == "true" for s, _, h in answers if s == 201)
        == sum(s == 201 for s, _, _ in answers) - 1
    )
    assert stock_of(database_url, product["id"]) == 7
    assert db_rows(database_url, "SELECT count(*), sum(total_cents) FROM orders") == [(1, 7500)]
    assert app_loop.run(check_ledger, pool) == []


def test_every_way_to_give_stock_back_gives_it_back_once(
    app_loop, client, make_user, make_product, database_url, pool
):
    buyer, editor, admin = make_user(), make_user("EDITOR"), make_user("ADMIN")
    product = make_product(stock=10)
    key = {"Idempotency-Key": "cart-7"}
    order = place(client, buyer, [(product["id"], 4)], headers=key).json
    url = f"/api/orders/{order['id']}"

    assert client.simulate_post(f"{url}/cancel", headers=buyer.headers).status_code == 200
    assert_problem(
        client.simulate_post(f"{url}/cancel", headers=buyer.headers), 409, "invalid_transition"
    )
    for status in ("cancelled", "pending", "paid"):
        response = client.simulate_put(
            f"{url}/status", json={"status": status}, headers=editor.headers
        )
        assert_problem(response, 409, "invalid_transition")
    # a retry of the original checkout replays it: no new order, no new deduction
    replay = place(client, buyer, [(product["id"], 4)], headers=key)
    assert replay.status_code == 201 and replay.json["id"] == order["id"]
    assert client.simulate_delete(url, headers=admin.headers).status_code == 204

    assert stock_of(database_url, product["id"]) == 10
    movements = db_rows(
        database_url,
        "SELECT reason, delta FROM stock_movements WHERE product_id = %s ORDER BY id",
        (product["id"],),
    )
    assert movements == [("adjust", 10), ("order", -4), ("cancel", 4)]
    assert app_loop.run(check_ledger, pool) == []


@pytest.fixture()
def limited_client(async_redis, database_url, pool, redis_client):
    """Limits on: 5 requests an hour per address or user, 3 logins per address + email."""
    left = 3600 - time.time() % 3600
    if left < 5:  # windows follow the clock: never start at an hour's last seconds
        time.sleep(left + 0.1)
    settings = make_settings(
        database_url,
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_DEFAULT="5/hour",
        RATE_LIMIT_LOGIN="3/hour",
    )
    return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))


def test_credential_stuffing_of_many_accounts_from_one_address_is_stopped(
    limited_client, make_user, database_url
):
    victim = make_user(email="victim@example.com", password="victim-password")

    def attempt(email: str, password: str = "Summer2026!", ip: str = "203.0.113.9"):
        return limited_client.simulate_post(
            "/api/auth/login", remote_addr=ip, json={"email": email, "password": password}
        )

    # each email has its own login count, so only the per-address limit can stop this
    statuses = [attempt(f"leaked{n}@example.com").status_code for n in range(12)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    # the right password from that address is refused as well: a 429 tells nothing
    refused = attempt(victim.email, "victim-password")
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) > 0
    assert db_rows(database_url, "SELECT count(*) FROM refresh_tokens") == [(0,)]
    # the victim, elsewhere, is not locked out by the attacker
    assert attempt(victim.email, "victim-password", ip="198.51.100.20").status_code == 200

"""Stripe's webhook under a real fault: PostgreSQL stopped while a payment's event arrives.

The endpoint must answer 5xx while it cannot record the event (Stripe then delivers it again
later), never 2xx for an event it did not apply; once PostgreSQL is back the redelivered event
is applied exactly once, and any further redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest

from tests.background import wait_until
from tests.conftest import REDIS_URL, db_rows
from tests.faults.helpers import (
    BACKGROUND_LINES,
    ledger_mismatches,
    seed_shop,
    server_env,
    start_server,
    stop_server,
)
from tests.stripe_emulator import signed_event

pytestmark = pytest.mark.faults

WEBHOOK = "/api/payments/stripe/webhook"


def deliver(url: str, body: bytes, signature: str) -> int:
    """One delivery as Stripe makes it: the status code, or 0 when no answer came."""
    request = urllib.request.Request(
        url + WEBHOOK,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_the_webhook_while_postgresql_is_down_is_5xx_then_the_event_applies_once(
    pg_cluster, stripe_emulator
):
    url = pg_cluster.create_database("shopapi_payment_faults")
    shop = seed_shop(url, [3], customers=1, price_cents=900)
    buyer, (product_id,) = shop.customers[0], shop.product_ids
    server = start_server(
        server_env(url, REDIS_URL, **stripe_emulator.settings(), DB_POOL_TIMEOUT="1")
    )
    try:
        status, order, _ = server.request(
            "POST",
            "/api/orders",
            {"items": [{"product_id": product_id, "quantity": 1}]},
            buyer.headers,
        )
        assert status == 201, order
        status, payment, _ = server.request(
            "POST", f"/api/orders/{order['id']}/payment", headers=buyer.headers
        )
        assert status == 200, payment
        intent_id = payment["client_secret"].split("_secret_")[0]
        assert stripe_emulator.pay(intent_id).status == "succeeded"
        body, signature = signed_event("payment_intent.succeeded", intent_id, 900)

        pg_cluster.stop("fast")
        down = time.monotonic()
        while_down = [deliver(server.url, body, signature) for _ in range(3)]
        pg_cluster.start()
        back = time.monotonic()
        # Stripe retries until a 2xx; so does this loop
        answered = wait_until(
            lambda: (code := deliver(server.url, body, signature)) == 200 and code, timeout=30
        )
        recovery = time.monotonic() - back
        # a redelivery after the success (Stripe may send one): retried the same way (the
        # other gunicorn worker's pool may still hold a connection from before the restart)
        again = wait_until(
            lambda: (code := deliver(server.url, body, signature)) == 200 and code, timeout=30
        )
        history = db_rows(
            url,
            "SELECT status, by_user_id FROM order_status_history WHERE order_id = %s ORDER BY id",
            (order["id"],),
        )
        recorded = db_rows(url, "SELECT count(*) FROM payment_events")[0][0]
        state = db_rows(
            url, "SELECT status, payment_status FROM orders WHERE id = %s", (order["id"],)
        )
    finally:
        stop_server(server)

    BACKGROUND_LINES.append(
        f"7. Stripe webhook with PostgreSQL stopped ({back - down:.1f} s): answers {while_down}, "
        f"applied once {recovery:.1f} s after PostgreSQL was back"
    )
    assert all(500 <= code < 600 for code in while_down), while_down
    assert answered == 200 and again == 200
    assert history == [("pending", buyer.id), ("paid", None)]  # paid once
    assert recorded == 1
    assert state == [("paid", "succeeded")]
    assert asyncio.run(ledger_mismatches(url)) == []  # stock = sum of its movements

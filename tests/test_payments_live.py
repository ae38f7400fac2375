"""A card payment end to end, on real parts only: gunicorn serving shopapi with
PAYMENT_PROVIDER=stripe, `shopapi worker`, localstripe (a real local Stripe server that signs and
POSTs its own webhooks), a real SMTP server and a merchant's webhook receiver.

The buyer's phone is played with Stripe's own library, as the mobile SDK does with the
`client_secret`: a card PaymentMethod attached to the order's PaymentIntent, then confirmed.
"""

from __future__ import annotations

import json

import pytest

from tests.background import Receiver, SmtpServer, WorkerProcess, wait_until
from tests.conftest import app_env, db_rows, stock_of
from tests.faults.helpers import seed_shop
from tests.live import LiveServer
from tests.stripe_emulator import CARD_DECLINED, StripeEmulator

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("ledger_holds")]

MERCHANT_SECRET = "whsec_merchant_live"  # noqa: S105 (a test receiver's key)


@pytest.fixture()
def shop_running(database_url, stripe_emulator: StripeEmulator, smtp: SmtpServer, receiver):
    """gunicorn and a worker on Stripe settings, localstripe's webhook pointed at gunicorn, a
    merchant subscribed to order.status_changed and order.payment_failed."""
    env = app_env(
        database_url,
        **stripe_emulator.settings(),
        SMTP_URL=smtp.url,
        EMAIL_ENABLED="true",
        RELAY_INTERVAL="0.05",
        JOB_RETRY_BASE="0.2",
        WORKER_METRICS_PORT="0",
        LOG_LEVEL="INFO",
    )
    db_rows(
        database_url,
        "INSERT INTO webhooks (url, events, secret) "
        "VALUES (%s, '{order.status_changed,order.payment_failed}', %s) RETURNING id",
        (receiver.url, MERCHANT_SECRET),
    )
    server = LiveServer(env).start()
    worker = WorkerProcess(env).start()
    stripe_emulator.register_webhook(f"{server.url}/api/payments/stripe/webhook")
    try:
        yield server, worker
    finally:
        worker.close()
        server.stop()


def _order(server: LiveServer, headers: dict, order_id: int) -> dict:
    status, order, _ = server.request("GET", f"/api/orders/{order_id}", headers=headers)
    assert status == 200, order
    return order


def _merchant_events(receiver: Receiver, event_type: str) -> list[dict]:
    return [
        json.loads(r.body)
        for r in receiver.requests()
        if r.verified(MERCHANT_SECRET) and r.headers.get("shopapi-event-type") == event_type
    ]


def test_a_card_payment_makes_the_order_paid_emails_the_buyer_and_tells_the_merchant(
    database_url, stripe_emulator, smtp, receiver, shop_running
):
    server, worker = shop_running
    shop = seed_shop(database_url, [10], customers=1, price_cents=1250)
    buyer, (product_id,) = shop.customers[0], shop.product_ids
    status, order, _ = server.request(
        "POST", "/api/orders", {"items": [{"product_id": product_id, "quantity": 2}]}, buyer.headers
    )
    assert status == 201, order
    assert order["payment"] == {"provider": "stripe", "status": "unpaid"}
    assert order["expires_at"] is not None  # ORDER_PAYMENT_TIMEOUT: 1800 s with stripe

    status, payment, _ = server.request(
        "POST", f"/api/orders/{order['id']}/payment", headers=buyer.headers
    )
    assert status == 200, payment
    assert (payment["amount_cents"], payment["currency"], payment["status"]) == (
        2500,
        "USD",
        "processing",
    )
    intent_id = payment["client_secret"].split("_secret_")[0]
    assert stripe_emulator.pay(intent_id).status == "succeeded"

    # localstripe signs and POSTs payment_intent.succeeded about a second later
    paid = wait_until(
        lambda: (o := _order(server, buyer.headers, order["id"]))["status"] == "paid" and o,
        timeout=20,
    )
    assert paid["payment"] == {"provider": "stripe", "status": "succeeded"}
    assert paid["status_history"][-1]["status"] == "paid"
    assert paid["status_history"][-1]["by_user_id"] is None
    wait_until(lambda: any(m["X-Shopapi-Template"] == "order_paid" for m in smtp.messages))
    wait_until(lambda: _merchant_events(receiver, "order.status_changed"))
    [changed] = _merchant_events(receiver, "order.status_changed")
    assert (changed["data"]["from"], changed["data"]["to"]) == ("pending", "paid")
    assert changed["data"]["order"]["payment"]["status"] == "succeeded"
    assert db_rows(database_url, "SELECT count(*) FROM payment_events")[0][0] == 1

    # staff cancel the paid order: stock back once, the worker refunds it at Stripe
    status, cancelled, _ = server.request(
        "PUT",
        f"/api/orders/{order['id']}/status",
        {"status": "cancelled"},
        shop.editor.headers,
    )
    assert status == 200, cancelled
    assert stock_of(database_url, product_id) == 10
    refunded = wait_until(
        lambda: (
            (o := _order(server, buyer.headers, order["id"]))["payment"]["status"] == "refunded"
            and o
        ),
        timeout=20,
    )
    assert refunded["status"] == "cancelled"
    [refund] = stripe_emulator.refunds(intent_id)
    assert refund.amount == 2500
    wait_until(lambda: any(m["X-Shopapi-Template"] == "order_cancelled" for m in smtp.messages))
    [cancel_mail] = [m for m in smtp.messages if m["X-Shopapi-Template"] == "order_cancelled"]
    assert "refunded in full" in cancel_mail.get_body(("plain",)).get_content()
    assert not worker.exited(), worker.log_tail()


def test_a_declined_card_leaves_the_order_pending_and_failed(
    database_url, stripe_emulator, receiver, shop_running
):
    server, _ = shop_running
    shop = seed_shop(database_url, [5], customers=1)
    buyer, (product_id,) = shop.customers[0], shop.product_ids
    _, order, _ = server.request(
        "POST", "/api/orders", {"items": [{"product_id": product_id, "quantity": 1}]}, buyer.headers
    )
    _, payment, _ = server.request(
        "POST", f"/api/orders/{order['id']}/payment", headers=buyer.headers
    )
    intent_id = payment["client_secret"].split("_secret_")[0]
    with pytest.raises(Exception, match="declined"):
        stripe_emulator.pay(intent_id, card=CARD_DECLINED)

    failed = wait_until(
        lambda: (
            (o := _order(server, buyer.headers, order["id"]))["payment"]["status"] == "failed" and o
        ),
        timeout=20,
    )
    assert failed["status"] == "pending"  # the buyer may try again
    assert stock_of(database_url, product_id) == 4
    wait_until(lambda: _merchant_events(receiver, "order.payment_failed"))
    [event] = _merchant_events(receiver, "order.payment_failed")
    assert event["data"]["order"]["id"] == order["id"]
    assert event["data"]["order"]["payment"]["status"] == "failed"

"""`shopapi worker` end to end: a real worker process, a real SMTP server (aiosmtpd) and a real
HTTP receiver. An order brings exactly one email and one signed delivery per webhook."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.background import Receiver, WorkerProcess, wait_until
from tests.conftest import app_env, db_rows
from tests.helpers import place
from tests.live import free_port

pytestmark = [pytest.mark.usefixtures("ledger_holds"), pytest.mark.live]


def worker_env(database_url, smtp, **extra) -> dict[str, str]:
    return app_env(
        database_url,
        APP_ENV="production",
        SMTP_URL=smtp.url,
        EMAIL_ENABLED="true",
        EMAIL_FROM="shop@example.com",
        RELAY_INTERVAL="0.05",
        JOB_RETRY_BASE="0.3",
        WORKER_STALLED_AFTER="2",
        LOG_LEVEL="INFO",
        **extra,
    )


@pytest.fixture()
def worker(database_url, smtp):
    started: list[WorkerProcess] = []

    def start(**extra) -> WorkerProcess:
        process = WorkerProcess(worker_env(database_url, smtp, **extra)).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def subscribe(client, admin, url, events=("order.created",)) -> dict:
    response = client.simulate_post(
        "/api/webhooks", json={"url": url, "events": list(events)}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    return response.json


def test_an_order_sends_one_confirmation_and_one_signed_delivery_per_webhook(
    client, admin, customer, make_product, database_url, smtp, receiver, worker
):
    hook = subscribe(client, admin, receiver.url)
    other = Receiver()
    try:
        hook_b = subscribe(client, admin, other.url, ("order.created", "order.status_changed"))
        worker()
        order = place(client, customer, [(make_product(stock=3)["id"], 2)]).json

        [delivery] = wait_until(receiver.requests)
        [delivery_b] = wait_until(other.requests)
        [mail] = wait_until(lambda: smtp.to("customer@example.com"))
        time.sleep(1.0)  # anything duplicated would have arrived by now
    finally:
        other.close()

    assert delivery.verified(hook["secret"]) and delivery_b.verified(hook_b["secret"])
    assert not delivery.verified(hook_b["secret"])
    envelope = json.loads(delivery.body)
    [(event_id,)] = db_rows(
        database_url, "SELECT id::text FROM events WHERE type = 'order.created'"
    )
    assert envelope["id"] == event_id and envelope["type"] == "order.created"
    assert envelope["data"] == {"order": order}
    assert delivery.headers["shopapi-event-id"] == event_id
    assert delivery.headers["shopapi-event-type"] == "order.created"
    assert json.loads(delivery_b.body) == envelope

    assert mail["X-Shopapi-Template"] == "order_confirmation"
    assert mail["From"] == "shop@example.com"
    assert f"#{order['id']}" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert f"{order['total_cents'] // 100}." in text and "<table>" in html
    assert len(receiver.requests()) == 1 and len(smtp.messages) == 1

    log = client.simulate_get(f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers)
    [attempt] = log.json["items"]
    assert (attempt["event_id"], attempt["attempt"], attempt["status_code"]) == (event_id, 1, 200)
    assert attempt["error"] is None and attempt["next_attempt_at"] is None


def test_paying_shipping_and_cancelling_send_their_emails(
    client, admin, customer, make_product, smtp, worker
):
    worker()
    product = make_product(stock=5)
    shipped = place(client, customer, [(product["id"], 1)]).json
    cancelled = place(client, customer, [(product["id"], 1)]).json
    for status in ("paid", "shipped"):
        client.simulate_put(
            f"/api/orders/{shipped['id']}/status", json={"status": status}, headers=admin.headers
        )
    client.simulate_post(f"/api/orders/{cancelled['id']}/cancel", headers=customer.headers)

    wait_until(lambda: len(smtp.messages) == 5)
    time.sleep(0.5)
    sent = sorted((m["X-Shopapi-Template"], m["Subject"]) for m in smtp.messages)
    assert sent == sorted(
        [
            ("order_confirmation", f"Your order #{shipped['id']} is confirmed"),
            ("order_confirmation", f"Your order #{cancelled['id']} is confirmed"),
            ("order_paid", f"Payment received for your order #{shipped['id']}"),
            ("order_shipped", f"Your order #{shipped['id']} has shipped"),
            ("order_cancelled", f"Your order #{cancelled['id']} was cancelled"),
        ]
    )
    [cancel_mail] = [m for m in smtp.messages if m["X-Shopapi-Template"] == "order_cancelled"]
    assert "nothing will be charged" in cancel_mail.get_body(("plain",)).get_content()


def test_a_refused_order_sends_nothing(
    client, customer, make_product, smtp, receiver, worker, admin
):
    subscribe(client, admin, receiver.url)
    worker()
    assert place(client, customer, [(make_product(stock=1)["id"], 5)]).status_code == 409
    time.sleep(1.0)
    assert smtp.messages == [] and receiver.requests() == []


def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt_with_backoff(
    client, admin, customer, make_product, database_url, receiver, worker
):
    receiver.script = [500, 500, 503]
    hook = subscribe(client, admin, receiver.url)
    worker()
    place(client, customer, [(make_product()["id"], 1)])

    wait_until(lambda: len(receiver.requests()) == 4, timeout=30)
    got = receiver.requests()
    assert [r.answered for r in got] == [500, 500, 503, 200]
    assert len({r.headers["shopapi-event-id"] for r in got}) == 1
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    # JOB_RETRY_BASE=0.3: 0.3 s, 1.2 s, 4.8 s (+ the worker's polling)
    assert gaps[0] >= 0.3 and gaps[1] >= 1.2 and gaps[2] >= 4.8, gaps

    log = wait_until(
        lambda: (
            (
                r := client.simulate_get(
                    f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers
                ).json
            )["total"]
            == 4
            and r
        )
    )
    attempts = list(reversed(log["items"]))  # newest first
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, 500, 503, 200]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 500", "HTTP 503", None]
    assert (
        all(a["next_attempt_at"] for a in attempts[:3]) and attempts[3]["next_attempt_at"] is None
    )


def test_deliveries_stop_after_webhook_max_attempts(
    client, admin, customer, make_product, receiver, worker
):
    receiver.default = 500
    hook = subscribe(client, admin, receiver.url)
    worker(WEBHOOK_MAX_ATTEMPTS="2")
    place(client, customer, [(make_product()["id"], 1)])
    wait_until(lambda: len(receiver.requests()) == 2)
    time.sleep(1.5)  # a third attempt would have come after 1.2 s
    assert len(receiver.requests()) == 2
    items = client.simulate_get(
        f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers
    ).json["items"]
    assert [i["attempt"] for i in items] == [2, 1] and items[0]["next_attempt_at"] is None


def test_a_redelivery_posts_the_event_again(
    client, admin, customer, make_product, receiver, worker
):
    hook = subscribe(client, admin, receiver.url)
    worker()
    place(client, customer, [(make_product()["id"], 1)])
    wait_until(receiver.requests)
    # the receiver has the POST before the worker has logged the attempt: wait for the row
    first = wait_until(
        lambda: client.simulate_get(
            f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers
        ).json["items"]
    )
    delivery_id = first[0]["id"]
    again = client.simulate_post(
        f"/api/webhooks/{hook['id']}/deliveries/{delivery_id}/redeliver", headers=admin.headers
    )
    assert again.status_code == 202
    wait_until(lambda: len(receiver.requests()) == 2)
    a, b = receiver.requests()
    assert a.body == b.body and b.verified(hook["secret"])


def test_sigterm_lets_the_running_delivery_finish(
    client, admin, customer, make_product, database_url, receiver, worker
):
    receiver.script = ["timeout"]
    receiver.hang = 2.0  # answers 200 after 2 s, inside the 5 s limit
    subscribe(client, admin, receiver.url)
    process = worker()
    place(client, customer, [(make_product()["id"], 1)])
    wait_until(receiver.requests)
    started = time.monotonic()
    assert process.terminate() == 0, process.log_tail()
    assert time.monotonic() - started >= 1.0  # it waited for the delivery
    [(status_code,)] = db_rows(database_url, "SELECT status_code FROM webhook_deliveries")
    assert status_code == 200
    assert (
        db_rows(database_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")[0][
            0
        ]
        == 0
    )


def test_the_worker_serves_its_metrics(client, customer, make_product, smtp, worker):
    port = free_port()
    worker(WORKER_METRICS_PORT=str(port))
    place(client, customer, [(make_product()["id"], 1)])
    wait_until(lambda: smtp.messages)

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()

    text = wait_until(lambda: 'task="send_event_email"' in (t := scrape()) and t)
    assert 'shopapi_jobs_total{status="succeeded",task="send_event_email"} 1.0' in text
    assert 'shopapi_emails_sent_total{template="order_confirmation"} 1.0' in text
    assert "shopapi_webhook_deliveries_total" in text


def test_the_worker_logs_json_lines_with_the_event_id(
    client, customer, make_product, database_url, smtp, worker
):
    process = worker()
    place(client, customer, [(make_product()["id"], 1)])
    wait_until(lambda: smtp.messages)
    [(event_id,)] = db_rows(database_url, "SELECT id::text FROM events")
    lines = [
        json.loads(line) for line in process.log.read_text().splitlines() if line.startswith("{")
    ]
    sent = [line for line in lines if line["message"] == "email sent"]
    assert sent and sent[0]["event_id"] == event_id and sent[0]["template"] == "order_confirmation"


def test_the_worker_sends_the_verification_and_reset_emails_their_links_work(
    client, database_url, smtp, worker
):
    """The jobs users.sql defers by name (send_account_email, {token_id}) run in a real worker:
    registration brings the verification email, a reset request the reset email."""
    import re

    worker(
        PASSWORD_RESET_URL="myshop://reset?token={token}",
        EMAIL_VERIFICATION_URL="https://shop.example/verify?token={token}",
    )
    body = {"email": "worker-mail@example.com", "password": "password123"}
    assert client.simulate_post("/api/auth/register", json=body).status_code == 201
    (verification,) = wait_until(lambda: smtp.messages, 20)
    assert verification["X-Shopapi-Template"] == "email_verification"
    text = verification.get_body(("plain",)).get_content()
    token = re.search(r"https://shop\.example/verify\?token=(\S+)", text).group(1)
    verified = client.simulate_post("/api/auth/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.json["email_verified"] is True

    assert (
        client.simulate_post("/api/auth/password-reset", json={"email": body["email"]}).status_code
        == 202
    )
    wait_until(lambda: len(smtp.messages) == 2, 20)
    reset = smtp.messages[1]
    assert reset["To"] == body["email"] and reset["X-Shopapi-Template"] == "password_reset"
    token = re.search(
        r"myshop://reset\?token=(\S+)", reset.get_body(("plain",)).get_content()
    ).group(1)
    confirm = {"token": token, "password": "from-the-email"}
    assert client.simulate_post("/api/auth/password-reset/confirm", json=confirm).status_code == 204
    login = {"email": body["email"], "password": "from-the-email"}
    assert client.simulate_post("/api/auth/login", json=login).status_code == 200
    # both jobs succeeded (the worker deletes successful jobs) and each token was emailed once
    wait_until(
        lambda: (
            db_rows(
                database_url,
                "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'send_account_email'",
            )
            == [(0,)]
        ),
        10,
    )
    assert db_rows(
        database_url, "SELECT count(*) FROM account_tokens WHERE emailed_at IS NOT NULL"
    ) == [(2,)]
    assert len(smtp.messages) == 2

"""The worker's pieces in this process, on the real database, a real SMTP server and a real
HTTP receiver: emails at most once, delivery attempts and their log, retries, housekeeping,
stalled jobs, and a whole worker run."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
from types import SimpleNamespace

import psycopg
import pytest

from shopapi.jobs import tasks
from shopapi.jobs.worker import JsonLines, run_worker
from shopapi.services import deliveries, notifications
from shopapi.services.email import money
from tests.background import wait_until
from tests.conftest import db_rows, make_settings, with_settings
from tests.helpers import place

pytestmark = pytest.mark.usefixtures("ledger_holds")


def execute(database_url, query, params=None) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(query, params)


def one_event(database_url, type_="order.created") -> str:
    [(event_id,)] = db_rows(database_url, "SELECT id::text FROM events WHERE type = %s", (type_,))
    return event_id


def hook(database_url, url, events="{order.created}", active=True) -> int:
    return db_rows(
        database_url,
        "INSERT INTO webhooks (url, events, secret, is_active) VALUES (%s, %s, 'whsec_t', %s) "
        "RETURNING id",
        (url, events, active),
    )[0][0]


# ------------------------------------------------------------------ email


def test_money_is_formatted_from_integer_cents():
    assert (money(1999, "USD"), money(5, "EUR"), money(-250, "USD")) == (
        "19.99 USD",
        "0.05 EUR",
        "-2.50 USD",
    )


def test_an_event_email_is_sent_once_however_often_its_job_runs(
    client, customer, make_product, database_url, smtp, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)

    sent = app_loop.run(notifications.send_event_email, wctx, event_id)
    again = app_loop.run(notifications.send_event_email, wctx, event_id)

    assert (sent, again) == ("order_confirmation", None)
    assert [m["To"] for m in smtp.messages] == ["customer@example.com"]
    assert smtp.messages[0]["Message-ID"] == f"<{event_id}.order_confirmation@shopapi>"
    assert db_rows(database_url, "SELECT template, recipient FROM sent_emails") == [
        ("order_confirmation", "customer@example.com")
    ]


def test_smtp_down_raises_and_keeps_no_claim_so_the_retry_sends_it(
    client, customer, make_product, database_url, smtp, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)
    smtp.stop()
    with pytest.raises(OSError):
        app_loop.run(notifications.send_event_email, wctx, event_id)
    assert db_rows(database_url, "SELECT count(*) FROM sent_emails") == [(0,)]

    smtp.start()
    assert app_loop.run(notifications.send_event_email, wctx, event_id) == "order_confirmation"
    assert len(smtp.messages) == 1


def test_events_without_an_email_send_nothing(
    client, admin, customer, make_product, database_url, smtp, wctx, app_loop
):
    order = place(client, customer, [(make_product(stock=1)["id"], 1)]).json
    for status in ("paid", "shipped", "delivered"):
        client.simulate_put(
            f"/api/orders/{order['id']}/status", json={"status": status}, headers=admin.headers
        )
    [(delivered,)] = db_rows(
        database_url,
        "SELECT id::text FROM events WHERE type = 'order.status_changed' AND data->>'to' = %s",
        ("delivered",),
    )
    # delivered has no email (paid, shipped and cancelled do), nor has a product event
    for event_id in (delivered, one_event(database_url, "product.out_of_stock")):
        assert app_loop.run(notifications.send_event_email, wctx, event_id) is None
    unknown = "00000000-0000-0000-0000-000000000000"
    assert app_loop.run(notifications.send_event_email, wctx, unknown) is None
    assert smtp.messages == []


def test_without_smtp_url_the_email_is_logged_and_disabled_email_is_not_sent(
    client, customer, make_product, database_url, smtp, wctx, app_loop, caplog
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)
    logged = with_settings(wctx, database_url)  # development: no SMTP_URL
    with caplog.at_level(logging.INFO, logger="shopapi.email"):
        app_loop.run(notifications.send_event_email, logged, event_id)
    assert "Your order" in caplog.text and "customer@example.com" in caplog.text
    execute(database_url, "DELETE FROM sent_emails")
    off = with_settings(wctx, database_url, SMTP_URL=smtp.url, EMAIL_ENABLED="false")
    app_loop.run(notifications.send_event_email, off, event_id)
    assert smtp.messages == []


# ------------------------------------------------------------------ webhook deliveries


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id":"x"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert deliveries.sign("whsec_k", 1700000000, body) == f"t=1700000000,v1={expected}"


def test_retry_delays_grow_fourfold():
    assert [deliveries.retry_delay(15, n) for n in (1, 2, 3, 7)] == [15, 60, 240, 61440]
    # the default 8 attempts span about a day
    assert sum(deliveries.retry_delay(15, n) for n in range(1, 8)) == 81915  # 22.75 h


def test_a_delivery_is_signed_logged_and_a_failure_schedules_the_next_attempt(
    client, customer, make_product, database_url, receiver, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)
    webhook_id = hook(database_url, receiver.url)
    receiver.script = [500]

    failed = app_loop.run(deliveries.deliver, wctx, event_id, webhook_id, 1)
    delivered = app_loop.run(deliveries.deliver, wctx, event_id, webhook_id, 2)

    assert (failed.delivered, failed.status_code, failed.error) == (False, 500, "HTTP 500")
    delay = failed.retry_at - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=8) < delay <= datetime.timedelta(seconds=10)
    assert (delivered.delivered, delivered.retry_at) == (True, None)
    assert all(r.verified("whsec_t") for r in receiver.requests())
    assert receiver.requests()[0].headers["host"] == receiver.url.split("/")[2]
    rows = db_rows(
        database_url,
        "SELECT attempt, status_code, error, next_attempt_at IS NOT NULL FROM webhook_deliveries "
        "ORDER BY id",
    )
    assert rows == [(1, 500, "HTTP 500", True), (2, 200, None, False)]


def test_the_last_attempt_schedules_none(
    client, customer, make_product, database_url, receiver, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    receiver.default = 500
    last = app_loop.run(
        deliveries.deliver,
        wctx,
        one_event(database_url),
        hook(database_url, receiver.url),
        wctx.settings.webhook_max_attempts,
    )
    assert (last.delivered, last.retry_at) == (False, None)


def test_private_targets_are_refused_at_delivery_time_and_nothing_is_sent(
    client, customer, make_product, database_url, receiver, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    guarded = with_settings(wctx, database_url, WEBHOOK_ALLOW_PRIVATE="false")
    attempt = app_loop.run(
        deliveries.deliver, guarded, one_event(database_url), hook(database_url, receiver.url), 1
    )
    assert attempt.status_code is None and attempt.error.startswith("refused")
    assert attempt.retry_at is not None  # the address may change back: tried again later
    assert receiver.requests() == []


def test_unreachable_and_silent_receivers_are_failed_attempts(
    client, customer, make_product, database_url, receiver, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)
    closed = app_loop.run(
        deliveries.deliver, wctx, event_id, hook(database_url, "http://127.0.0.1:9/x"), 1
    )
    assert closed.status_code is None and "ConnectError" in closed.error
    receiver.script = ["timeout"]
    silent = app_loop.run(deliveries.deliver, wctx, event_id, hook(database_url, receiver.url), 1)
    assert (silent.status_code, silent.error) == (None, "timed out after 5 s")


def test_deleted_or_inactive_webhooks_get_nothing(
    client, customer, make_product, database_url, receiver, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)])
    event_id = one_event(database_url)
    off = hook(database_url, receiver.url, active=False)
    assert app_loop.run(deliveries.deliver, wctx, event_id, off, 1).error is None
    assert app_loop.run(deliveries.deliver, wctx, event_id, 999, 1).retry_at is None
    assert receiver.requests() == []
    assert db_rows(database_url, "SELECT count(*) FROM webhook_deliveries") == [(0,)]


# ------------------------------------------------------------------ retries


def test_backoff_retries_when_told_else_after_growing_delays_up_to_the_limit():
    strategy = tasks.Backoff()
    strategy.configure(max_attempts=3, base=2.0)
    at = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    job = SimpleNamespace(attempts=0)
    assert strategy.get_retry_decision(exception=tasks.RetryAt(at, "x"), job=job).retry_at == at
    now = datetime.datetime.now(datetime.UTC)
    first = strategy.get_retry_decision(exception=OSError(), job=job).retry_at
    second = strategy.get_retry_decision(exception=OSError(), job=SimpleNamespace(attempts=1))
    assert 1.5 < (first - now).total_seconds() <= 2.1
    assert 7.5 < (second.retry_at - now).total_seconds() <= 8.1
    assert strategy.get_retry_decision(exception=OSError(), job=SimpleNamespace(attempts=2)) is None


# ------------------------------------------------------------------ housekeeping


def test_housekeeping_purges_old_keys_expired_tokens_and_old_events(
    client, customer, make_product, database_url, wctx, app_loop
):
    place(client, customer, [(make_product()["id"], 1)], headers={"Idempotency-Key": "old"})
    execute(
        database_url,
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days'; "
        "UPDATE events SET relayed_at = now(), created_at = now() - interval '31 days'",
    )
    execute(
        database_url,
        "INSERT INTO sessions (user_id, family_id) "
        "VALUES (%s, '00000000-0000-0000-0000-00000000000a'), "
        "       (%s, '00000000-0000-0000-0000-00000000000b')",
        (customer.id,) * 2,
    )
    execute(
        database_url,
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at, revoked_at) "
        "VALUES (%s, '00000000-0000-0000-0000-00000000000a', 'a', now() - interval '1 s', NULL), "
        "       (%s, '00000000-0000-0000-0000-00000000000b', 'b', now() + interval '1 day', now())",
        (customer.id,) * 2,
    )
    execute(
        database_url,
        "INSERT INTO account_tokens (user_id, purpose, email, nonce, token_hash, expires_at, "
        "                            used_at) "
        "VALUES (%s, 'password_reset', 'x@example.com', 'n', 'used', now() + interval '1 h', now()),"
        "       (%s, 'password_reset', 'x@example.com', 'n', 'old', now() - interval '1 s', NULL),"
        "       (%s, 'email_verification', 'x@example.com', 'n', 'live', now() + interval '1 h', "
        "        NULL)",
        (customer.id,) * 3,
    )
    execute(
        database_url,
        "INSERT INTO carts (token_hash, expires_at) "
        "VALUES ('expired', now() - interval '1 s'), ('live', now() + interval '1 h')",
    )
    execute(
        database_url,
        "INSERT INTO payment_events (event_id, type, intent_id, received_at) "
        "VALUES ('evt_old', 'payment_intent.succeeded', 'pi_old', now() - interval '31 days'), "
        "       ('evt_recent', 'payment_intent.succeeded', 'pi_recent', now() - interval '1 day')",
    )
    place(client, customer, [(make_product()["id"], 1)])  # a fresh event stays

    removed = {name: app_loop.run(purge, wctx) for name, purge in tasks.HOUSEKEEPING.items()}

    assert removed == {
        "idempotency_keys": 1,
        "refresh_tokens": 1,
        "account_tokens": 2,
        "events": 1,
        "guest_carts": 1,
        "payment_events": 1,
    }
    assert db_rows(database_url, "SELECT token_hash FROM carts") == [(b"live",)]
    assert db_rows(database_url, "SELECT token_hash FROM refresh_tokens") == [(b"b",)]
    # the login whose only token expired is over; the one with a (revoked) token stays
    assert db_rows(database_url, "SELECT family_id::text FROM sessions") == [
        ("00000000-0000-0000-0000-00000000000b",)
    ]
    assert db_rows(database_url, "SELECT token_hash FROM account_tokens") == [(b"live",)]
    assert db_rows(database_url, "SELECT count(*) FROM events") == [(1,)]
    # Stripe redelivers for 3 days: a recent event id is still remembered
    assert db_rows(database_url, "SELECT event_id FROM payment_events") == [("evt_recent",)]


def test_a_stalled_job_is_run_again(database_url, wctx, app_loop):
    execute(
        database_url,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "VALUES ('emails', 'send_event_email', '{}', 'doing')",
    )

    async def sweep() -> int:
        async with tasks.configure(wctx.settings).open_async() as app:
            context = SimpleNamespace(app=app, additional_context={"shop": wctx})
            return await tasks.retry_stalled_jobs.func(context, timestamp=0)

    assert app_loop.run(sweep) == 1
    assert db_rows(database_url, "SELECT status::text FROM procrastinate_jobs") == [("todo",)]


# ------------------------------------------------------------------ a whole worker, in-process


def test_a_worker_relays_events_and_runs_their_jobs(
    client, admin, customer, make_product, database_url, smtp, receiver, wctx, app_loop
):
    hook(database_url, receiver.url)
    settings = make_settings(
        database_url,
        SMTP_URL=smtp.url,
        EMAIL_ENABLED="true",
        RELAY_INTERVAL="0.05",
        WORKER_METRICS_PORT="0",
    )
    running = asyncio.run_coroutine_threadsafe(
        run_worker(settings, install_signal_handlers=False), app_loop.loop
    )
    try:
        place(client, customer, [(make_product()["id"], 1)])
        wait_until(lambda: smtp.messages and receiver.requests())
    finally:
        running.cancel()
        with pytest.raises(BaseException):  # noqa: B017 (cancelled, from the other loop)
            running.result(10)
    assert db_rows(database_url, "SELECT relayed_at IS NOT NULL FROM events") == [(True,)]


def test_json_log_lines_carry_the_extras():
    record = logging.makeLogRecord(
        {"msg": "email %s", "args": ("sent",), "levelname": "INFO", "name": "x", "event_id": "e1"}
    )
    line = JsonLines().format(record)
    assert '"message":"email sent"' in line and '"event_id":"e1"' in line

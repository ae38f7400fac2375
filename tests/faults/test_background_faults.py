"""Background work under real faults: a worker SIGKILLed mid-delivery, PostgreSQL restarted
with events pending, a receiver failing then answering, the SMTP server down for a while.

Every test ends with the books of the events: each order's order.created event delivered
(a 2xx answered to a correctly signed POST) and emailed; `lost` must be 0, `duplicated`
(deliveries or emails seen twice for one event) is reported: at-least-once allows it after
a crash, never in normal operation.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.background import Receiver, SmtpServer, WorkerProcess, wait_until
from tests.conftest import app_env
from tests.direct_orders import place_direct
from tests.faults.helpers import BACKGROUND_LINES, seed_shop

pytestmark = pytest.mark.faults

SECRET = "whsec_fault-tests"  # noqa: S105 (a test receiver's key)


@dataclass
class Books:
    events: int
    delivered: int
    lost: int
    duplicated: int
    emails: int
    emails_lost: int
    emails_duplicated: int

    def line(self, fault: str, recovery: str) -> str:
        return (
            f"{fault}: events {self.events}, delivered {self.delivered}, lost {self.lost}, "
            f"duplicated {self.duplicated}; emails sent {self.emails}, lost {self.emails_lost}, "
            f"duplicated {self.emails_duplicated}; recovery {recovery}"
        )


def books(url: str, receiver: Receiver, smtp: SmtpServer | None) -> Books:
    with psycopg.connect(url) as conn:
        event_ids = {
            row[0]
            for row in conn.execute("SELECT id::text FROM events WHERE type = 'order.created'")
        }
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    assert len(event_ids) == orders  # one event per order, written with it
    posted = Counter(
        r.headers["shopapi-event-id"]
        for r in receiver.requests()
        if r.verified(SECRET) and r.answered == 200
    )
    mailed = Counter(m["Subject"] for m in (smtp.messages if smtp else []))
    return Books(
        events=len(event_ids),
        delivered=len(event_ids & set(posted)),
        lost=len(event_ids - set(posted)),
        duplicated=sum(n - 1 for n in posted.values() if n > 1),
        emails=sum(mailed.values()),
        emails_lost=max(0, len(event_ids) - len(mailed)) if smtp else 0,
        emails_duplicated=sum(n - 1 for n in mailed.values() if n > 1),
    )


def subscribe(url: str, receiver: Receiver) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO webhooks (url, events, secret) VALUES (%s, '{order.created}', %s)",
            (receiver.url, SECRET),
        )


def place_orders(url: str, user_id: int, product_ids: list[int]) -> None:
    """Real placements: the statement the API runs, one order per product id."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(
            url, row_factory=dict_row, autocommit=True
        ) as conn:
            for product_id in product_ids:
                await place_direct(conn, user_id, [product_id])

    asyncio.run(run())


def worker_env(url: str, smtp: SmtpServer | None, **extra: str) -> dict[str, str]:
    return app_env(
        url,
        APP_ENV="production",
        SMTP_URL=smtp.url if smtp else "",
        EMAIL_ENABLED="true" if smtp else "false",
        RELAY_INTERVAL="0.05",
        JOB_RETRY_BASE="0.2",
        WORKER_STALLED_AFTER="2",
        LOG_LEVEL="INFO",
        **extra,
    )


@pytest.fixture()
def workers():
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        process = WorkerProcess(env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def test_a_worker_killed_mid_delivery_loses_nothing(database_url, smtp, receiver, workers):
    shop = seed_shop(database_url, [50], customers=1)
    subscribe(database_url, receiver)
    receiver.script, receiver.hang = ["timeout"], 3.0  # the first POST hangs: kill lands then
    first = workers(worker_env(database_url, smtp))
    place_orders(database_url, shop.customers[0].id, shop.product_ids)

    wait_until(receiver.requests)  # the delivery is in flight
    first.kill()
    killed = time.monotonic()
    workers(worker_env(database_url, smtp))
    wait_until(lambda: books(database_url, receiver, smtp).delivered == 1, timeout=30)
    recovery = time.monotonic() - killed
    time.sleep(1.0)

    result = books(database_url, receiver, smtp)
    BACKGROUND_LINES.append(
        result.line("6a. worker SIGKILL mid-delivery", f"delivered {recovery:.1f} s after the kill")
    )
    assert result.lost == 0 and result.emails_lost == 0
    assert result.duplicated <= 1  # the killed attempt reached the receiver: at-least-once


def test_postgresql_restarted_with_events_pending_delivers_them_all(
    pg_cluster, smtp, receiver, workers
):
    url = pg_cluster.create_database("shopapi_background_faults")
    shop = seed_shop(url, [100] * 20, customers=1)
    subscribe(url, receiver)
    receiver.default, receiver.hang = 200, 0
    worker = workers(worker_env(url, smtp, DB_POOL_TIMEOUT="2"))
    place_orders(url, shop.customers[0].id, shop.product_ids)  # 20 orders, 20 events

    pg_cluster.stop("fast")
    down = time.monotonic()
    time.sleep(2.0)
    pg_cluster.start()
    back = time.monotonic()
    try:
        wait_until(
            lambda: (b := books(url, receiver, smtp)).delivered == 20 and b.emails >= 20,
            timeout=45,
        )
    except AssertionError:
        raise AssertionError(f"{books(url, receiver, smtp)}\n{worker.log_tail(6000)}") from None
    recovery = time.monotonic() - back
    time.sleep(1.0)

    result = books(url, receiver, smtp)
    BACKGROUND_LINES.append(
        result.line(
            f"6b. PostgreSQL restart ({back - down:.1f} s down) with events pending",
            f"all delivered {recovery:.1f} s after PostgreSQL was back",
        )
    )
    assert not worker.exited(), worker.log_tail()
    assert result.lost == 0 and result.emails_lost == 0
    # an email SMTP accepted while the claim's commit died with PostgreSQL is sent again
    # (at least once); at most the jobs running at that moment (WORKER_CONCURRENCY = 4)
    assert result.emails_duplicated <= 4


def test_a_receiver_failing_three_times_gets_the_fourth_attempt(database_url, receiver, workers):
    shop = seed_shop(database_url, [5], customers=1)
    subscribe(database_url, receiver)
    receiver.script, receiver.hang = [500, "timeout", 503], 5.5  # past the 5 s limit
    workers(worker_env(database_url, None))
    started = time.monotonic()
    place_orders(database_url, shop.customers[0].id, shop.product_ids)

    wait_until(lambda: books(database_url, receiver, None).delivered == 1, timeout=40)
    took = time.monotonic() - started
    with psycopg.connect(database_url) as conn:
        log = conn.execute(
            "SELECT attempt, status_code, error, delivered_at, next_attempt_at "
            "FROM webhook_deliveries ORDER BY attempt"
        ).fetchall()
    assert [(a, s, e) for a, s, e, _, _ in log] == [
        (1, 500, "HTTP 500"),
        (2, None, "timed out after 5 s"),
        (3, 503, "HTTP 503"),
        (4, 200, None),
    ]
    waits = [(nxt - at).total_seconds() for _, _, _, at, nxt in log[:3]]
    assert [round(w, 1) for w in waits] == [0.2, 0.8, 3.2]  # JOB_RETRY_BASE x 4^(n-1)
    assert log[3][4] is None
    result = books(database_url, receiver, None)
    BACKGROUND_LINES.append(
        result.line(
            "6c. receiver 500, timeout, 503, then 200",
            f"delivered on attempt 4, {took:.1f} s after the order "
            f"(scheduled waits {', '.join(f'{w:.1f}' for w in waits)} s)",
        )
    )
    assert result.lost == 0 and result.duplicated == 0


def test_emails_wait_for_the_smtp_server_to_come_back(database_url, smtp, receiver, workers):
    shop = seed_shop(database_url, [10] * 5, customers=1)
    workers(worker_env(database_url, smtp))
    smtp.stop()
    place_orders(database_url, shop.customers[0].id, shop.product_ids)
    time.sleep(2.0)  # attempts fail meanwhile (0.2 s, 0.8 s later ...)
    with psycopg.connect(database_url) as conn:
        failed = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'send_event_email' "
            "AND attempts > 0"
        ).fetchone()[0]
    smtp.start()
    back = time.monotonic()
    wait_until(lambda: len(smtp.messages) >= 5, timeout=30)
    recovery = time.monotonic() - back
    time.sleep(1.0)

    mails = Counter(m["Subject"] for m in smtp.messages)
    lost = 5 - len(mails)
    duplicated = sum(n - 1 for n in mails.values())
    BACKGROUND_LINES.append(
        f"6d. SMTP server down 2 s: events 5, emails sent {len(smtp.messages)}, lost {lost}, "
        f"duplicated {duplicated}; {failed} job(s) had failed attempts; recovery: all sent "
        f"{recovery:.1f} s after SMTP was back"
    )
    assert failed > 0 and lost == 0 and duplicated == 0

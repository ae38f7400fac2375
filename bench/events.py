"""Events per second through the background tier, end to end, on this machine.

    .venv/bin/python bench/events.py [--orders 2000] [--workers 2]

A fresh database; one customer, one product, one webhook subscribed to order.created on a
local HTTP receiver, and an aiosmtpd sink for the emails. `--workers` real `shopapi worker`
processes are started first; then the orders are placed (the API's placement statement, as
fast as one connection goes), and the clock runs from the first order to the moment the
last event has been relayed, its webhook delivery received and its email sent. Every order
is one event and two jobs (email, delivery).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shopapi.db import migrate  # noqa: E402
from tests.background import Receiver, SmtpServer, WorkerProcess, wait_until  # noqa: E402
from tests.direct_orders import place_direct, seed_buyer_and_product  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    return url


def seed(url: str, receiver: Receiver) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        user, product = seed_buyer_and_product(conn, stock=1_000_000)
        conn.execute(
            "INSERT INTO webhooks (url, events, secret) VALUES (%s, '{order.created}', 'whsec_b')",
            (receiver.url,),
        )
    return user, product


async def place(url: str, user: int, product: int, orders: int) -> None:
    async with await psycopg.AsyncConnection.connect(
        url, row_factory=dict_row, autocommit=True
    ) as conn:
        for _ in range(orders):
            await place_direct(conn, user, [product])


def drained(url: str, orders: int, receiver: Receiver, smtp: SmtpServer) -> bool:
    with psycopg.connect(url) as conn:
        pending = conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE relayed_at IS NULL) + "
            "(SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
            " AND queue_name IN ('emails', 'webhooks'))"
        ).fetchone()[0]
    return pending == 0 and len(receiver.requests()) >= orders and len(smtp.messages) >= orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="WORKER_CONCURRENCY")
    parser.add_argument("--database", default="shopapi_bench_events")
    args = parser.parse_args()

    url = fresh_database(args.database)
    receiver, smtp = Receiver(), SmtpServer().start()
    user, product = seed(url, receiver)
    env = {
        "APP_ENV": "test",
        "DATABASE_URL": url,
        "SMTP_URL": smtp.url,
        "EMAIL_ENABLED": "true",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "RELAY_INTERVAL": "0.05",
        "WORKER_CONCURRENCY": str(args.concurrency),
        "LOG_LEVEL": "INFO",  # as deployed: one JSON line per email and per delivery
    }
    workers: list[WorkerProcess] = []
    try:
        workers += [WorkerProcess(env).start() for _ in range(args.workers)]
        started = time.monotonic()
        asyncio.run(place(url, user, product, args.orders))
        placed = time.monotonic() - started
        wait_until(lambda: drained(url, args.orders, receiver, smtp), timeout=600, pace=0.1)
        took = time.monotonic() - started
    finally:
        for worker in workers:
            worker.terminate()
            worker.close()
        receiver.close()
        smtp.stop()
    unique = len({r.headers["shopapi-event-id"] for r in receiver.requests()})
    print(
        f"{args.orders} orders placed in {placed:.1f} s; all delivered and emailed "
        f"{took:.1f} s after the first"
    )
    print(
        f"events/s {args.orders / took:.0f}, deliveries/s {len(receiver.requests()) / took:.0f}, "
        f"emails/s {len(smtp.messages) / took:.0f}, jobs/s {2 * args.orders / took:.0f} "
        f"(unique deliveries {unique}, duplicates {len(receiver.requests()) - unique})"
    )
    print("| workers | concurrency | orders | seconds | events/s | jobs/s |")
    print(
        f"| {args.workers} | {args.concurrency} | {args.orders} | {took:.1f} | "
        f"{args.orders / took:.0f} | {2 * args.orders / took:.0f} |"
    )


if __name__ == "__main__":
    main()

"""Stripe webhook events per second into the API, on this machine (issue 17: >= 500/s).

    .venv/bin/python bench/stripe_webhooks.py [--events 5000] [--connections 16]

A fresh database with `--events` pending Stripe orders, each with its PaymentIntent recorded
(ids `pi_bench_<order>`: no Stripe is called, the webhook never calls Stripe); gunicorn as
bin/bench runs it (production settings, 2 workers, JSON request logs at INFO); then one signed
`payment_intent.succeeded` per order, signed as Stripe signs them (HMAC-SHA256 with the
endpoint's secret), is POSTed once by wrk (-t1 -c`--connections`, bench/wrk/stripe_webhook.lua).
Each event is verified, recorded in payment_events and moves its order pending -> paid (with
history and the order.status_changed event) in one transaction. Afterwards every order must be
paid exactly once and every event recorded; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.direct_orders import STRIPE, place_direct, seed_buyer_and_product  # noqa: E402
from tests.live import LiveServer  # noqa: E402
from tests.stripe_emulator import WEBHOOK_SECRET, signed_event  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from events import fresh_database  # noqa: E402


async def place(url: str, orders: int) -> None:
    """`orders` one-line Stripe orders (the API's placement statement) and their payments."""
    with psycopg.connect(url) as conn:
        user, product = seed_buyer_and_product(conn, stock=orders, price_cents=1999)
    async with await psycopg.AsyncConnection.connect(
        url, row_factory=dict_row, autocommit=True
    ) as conn:
        for _ in range(orders):
            await place_direct(conn, user, [product], **STRIPE)
        await conn.execute(
            "INSERT INTO payments (order_id, provider, intent_id, client_secret, amount_cents, "
            "currency) SELECT id, 'stripe', 'pi_bench_' || id, 'pi_bench_' || id || '_secret', "
            "total_cents, currency FROM orders"
        )


def events_file(url: str) -> Path:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, total_cents FROM orders ORDER BY id").fetchall()
    path = Path(tempfile.mkstemp(prefix="stripe-events-", suffix=".tsv")[1])
    with path.open("w") as out:
        for order_id, total in rows:
            body, signature = signed_event(
                "payment_intent.succeeded",
                f"pi_bench_{order_id}",
                total,
                "usd",
                event_id=f"evt_bench_{order_id}",
            )
            out.write(f"{signature}\t{body.decode()}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--database", default="shopapi_bench_webhooks")
    args = parser.parse_args()

    url = fresh_database(args.database)
    asyncio.run(place(url, args.events))
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DATABASE_URL": url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
        "EMAIL_ENABLED": "false",
        "PAYMENT_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # never called by the webhook
        "LOG_LEVEL": "INFO",
        "GUNICORN_LOG_LEVEL": "warning",
    }
    server = LiveServer(env, workers=args.workers).start()
    path = events_file(url)  # signed now: well within the 300 s tolerance
    try:
        started = time.monotonic()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{args.connections}",
                # wrk runs for all of -d (a stopped thread does not end it): an estimate at
                # 150 events/s; the rate itself is read from the events' received_at
                f"-d{args.events // 150 + 5}s",
                "--latency",
                "-s",
                str(ROOT / "bench" / "wrk" / "stripe_webhook.lua"),
                server.url,
            ],
            env={**os.environ, "EVENTS_FILE": str(path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        took = time.monotonic() - started
    finally:
        server.stop()
        path.unlink()
    with psycopg.connect(url) as conn:
        paid, recorded, seconds, paid_twice = conn.execute(
            "SELECT (SELECT count(*) FROM orders WHERE status = 'paid'), "
            "(SELECT count(*) FROM payment_events), "
            "(SELECT extract(epoch FROM max(received_at) - min(received_at)) "
            " FROM payment_events), "
            "(SELECT count(*) FROM (SELECT order_id FROM order_status_history "
            " WHERE status = 'paid' GROUP BY order_id HAVING count(*) > 1) t)"
        ).fetchone()
    rps = (recorded - 1) / float(seconds)  # first to last event applied
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50, p99 = (re.search(rf"\s{q}%\s+(\S+)", out).group(1) for q in ("50", "99"))
    print(out)
    print(
        f"{paid} of {args.events} orders paid, {recorded} events recorded, "
        f"{paid_twice} paid twice, non-2xx {non2xx.group(1) if non2xx else 0}; {took:.1f} s"
    )
    print("| gunicorn workers | connections | events | events/s | p50 | p99 |")
    print(f"| {args.workers} | {args.connections} | {args.events} | {rps:.0f} | {p50} | {p99} |")
    if paid != args.events or recorded != args.events or paid_twice or non2xx:
        sys.exit("FAILED: not every event applied exactly once")


if __name__ == "__main__":
    main()

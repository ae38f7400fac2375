"""Slow dependencies: a statement stuck on a lock ends at DB_STATEMENT_TIMEOUT_MS, a request
that gets no connection within DB_POOL_TIMEOUT ends too, both as a quick clean 503 with
nothing written, and a hung Redis costs requests no more than its timeout.

The contract point: a request the database could not serve in time is 503
`service_unavailable` with `Retry-After` (not 409, which asks the client to change something,
nor 504, which is for gateways): its transaction was rolled back, so the same request, with
the same Idempotency-Key, is safe to send again.
"""

from __future__ import annotations

import random
import time
import uuid

import psycopg
import pytest

from tests.conftest import in_background, stock_of
from tests.faults.helpers import (
    Buyer,
    Clients,
    Traffic,
    audit,
    backends,
    call,
    clean_problem,
    order_body,
    seed_shop,
    server_env,
    summarize,
    wait_for,
)

pytestmark = pytest.mark.faults


def test_an_order_stuck_on_a_row_lock_ends_at_the_statement_timeout_with_a_quick_503(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[10, 10], customers=1)
    server = servers(
        server_env(database_url, redis_server.url, DB_STATEMENT_TIMEOUT_MS=500), workers=1
    )
    port, (stuck, other) = server.port, shop.product_ids
    customer, traffic = shop.customers[0], Traffic()
    headers = {**customer.headers, "Idempotency-Key": "stuck-order"}

    with psycopg.connect(database_url) as locker:
        # an outside session (a long admin transaction, a stuck job) holds the product's row
        locker.execute("SELECT id FROM products WHERE id = %s FOR UPDATE", (stuck,))
        blocked = traffic.add(
            call(port, "POST", "/api/orders", order_body([(stuck, 1)]), headers, kind="order")
        )
        # the only worker is free again at once
        free = traffic.add(
            call(
                port,
                "POST",
                "/api/orders",
                order_body([(other, 1)]),
                {**customer.headers, "Idempotency-Key": uuid.uuid4().hex},
                kind="order",
            )
        )
        assert backends(database_url, waiting_on_lock=True) == []  # nothing left waiting
        locker.rollback()

    assert clean_problem(blocked, 503, "service_unavailable"), blocked.body
    assert blocked.headers["retry-after"] == "1"
    assert "in time" in blocked.body["detail"]
    assert 0.5 <= blocked.elapsed < 2.0
    assert free.status == 201 and free.elapsed < 1.0
    assert stock_of(database_url, stuck) == 10  # nothing written for the refused order
    # the key was not kept for the failed attempt: the same request now goes through
    retried = traffic.add(
        call(port, "POST", "/api/orders", order_body([(stuck, 1)]), headers, kind="order")
    )
    assert retried.status == 201 and "idempotent-replayed" not in retried.headers

    books = audit(shop)
    summarize(
        "5a. order stuck on a row lock, DB_STATEMENT_TIMEOUT_MS=500",
        traffic,
        books,
        f"503 after {blocked.elapsed:.2f} s, next request served in "
        f"{free.elapsed * 1000:.0f} ms by the same worker",
    )
    books.assert_sound()


def test_a_request_that_gets_no_connection_in_time_gets_503_not_a_hang(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[10, 10], customers=1)
    # one worker: its event loop serves every request, with a pool of one connection
    server = servers(
        server_env(
            database_url,
            redis_server.url,
            DB_POOL_MIN=1,
            DB_POOL_MAX=1,
            DB_POOL_TIMEOUT=0.5,
            CACHE_ENABLED="false",
        ),
        workers=1,
    )
    port, (stuck, other) = server.port, shop.product_ids
    customer, traffic = shop.customers[0], Traffic()

    with psycopg.connect(database_url) as locker:
        locker.execute("SELECT id FROM products WHERE id = %s FOR UPDATE", (stuck,))
        holder = in_background(
            lambda: traffic.add(
                call(
                    port,
                    "POST",
                    "/api/orders",
                    order_body([(stuck, 1)]),
                    {**customer.headers, "Idempotency-Key": uuid.uuid4().hex},
                    kind="order",
                )
            )
        )
        # the order holds the pool's only connection while it waits on the lock
        wait_for(
            lambda: backends(database_url, waiting_on_lock=True),
            timeout=10,
            what="the order holding the connection",
        )
        starved = traffic.add(call(port, "GET", f"/api/products/{other}", kind="read"))
        alive = traffic.add(call(port, "GET", "/healthz", kind="alive"))
        locker.rollback()
    order = holder.join(timeout=10)
    after = traffic.add(call(port, "GET", f"/api/products/{other}", kind="read"))

    assert clean_problem(starved, 503, "service_unavailable"), starved.body
    assert starved.headers["retry-after"] == "1"
    assert 0.5 <= starved.elapsed < 1.5
    assert alive.status == 200 and alive.elapsed < 0.5
    assert order.status == 201  # the slow request itself completes
    assert after.status == 200 and after.elapsed < 0.5  # the pool is not poisoned

    books = audit(shop)
    summarize(
        "5b. pool of 1 held (one asgi worker), DB_POOL_TIMEOUT=0.5",
        traffic,
        books,
        f"503 after {starved.elapsed:.2f} s; served again "
        f"{(after.ended - starved.ended) * 1000:.0f} ms later",
    )
    books.assert_sound()


def test_a_hung_redis_costs_requests_no_more_than_its_timeout(database_url, redis_server, servers):
    shop = seed_shop(database_url, stocks=[100_000] * 4, customers=2)
    server = servers(
        server_env(
            database_url,
            redis_server.url,
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_DEFAULT="100000/minute",
            REDIS_TIMEOUT=0.25,
        ),
        workers=2,
    )
    port, traffic, rng = server.port, Traffic(), random.Random(5)
    buyers = [Buyer(port, customer, traffic, shop.product_ids) for customer in shop.customers]

    def read() -> None:
        traffic.add(call(port, "GET", f"/api/products/{rng.choice(shop.product_ids)}", kind="read"))

    clients = Clients(read, read, *(buyer.place for buyer in buyers)).start()
    started = time.monotonic()
    try:
        time.sleep(1.0)
        frozen = time.monotonic()
        redis_server.freeze()  # SIGSTOP: connections open, nothing answers
        time.sleep(2.0)
        redis_server.thaw()
        thawed = time.monotonic()
        wait_for(
            lambda: any(
                r.started > thawed and r.headers.get("x-cache") == "hit" for r in traffic.of("read")
            ),
            timeout=10,
            what="X-Cache: hit after Redis answers again",
        )
        hit_again = (
            min(
                r.ended
                for r in traffic.of("read")
                if r.started > thawed and r.headers.get("x-cache") == "hit"
            )
            - thawed
        )
    finally:
        redis_server.thaw()
        clients.stop()

    hung = [r for r in traffic.of() if frozen < r.started < thawed]
    assert hung and all(r.status in (200, 201) for r in hung), traffic.errors()
    assert traffic.errors() == {}
    # a request waits for Redis a few times its 0.25 s timeout at most (queueing included)
    assert max(r.elapsed for r in hung) < 1.5
    slow = [r for r in hung if r.elapsed > 0.2]
    before = [r for r in traffic.of() if r.started < frozen]
    books = audit(shop, buyers)
    summarize(
        "5c. Redis hung (SIGSTOP 2 s) under load, REDIS_TIMEOUT=0.25",
        traffic,
        books,
        f"X-Cache hit {hit_again:.2f} s after Redis answered again; "
        f"{len(slow)}/{len(hung)} requests during the hang took > 0.2 s "
        f"(max {max(r.elapsed for r in hung):.2f} s); throughput "
        f"{len(before) / (frozen - started):.0f}/s before, "
        f"{len(hung) / (thawed - frozen):.0f}/s during",
    )
    books.assert_sound()


def test_orders_placed_while_redis_hangs_do_not_each_wait_for_its_timeout(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[100_000], customers=1)
    server = servers(server_env(database_url, redis_server.url, REDIS_TIMEOUT=0.25), workers=1)
    traffic = Traffic()
    buyer = Buyer(server.port, shop.customers[0], traffic, shop.product_ids)
    buyer.place()  # warm: the worker's user state and Redis connections exist
    redis_server.freeze()
    try:
        orders = [buyer.place() for _ in range(8)]
    finally:
        redis_server.thaw()

    assert all(r.status == 201 for r in orders)
    books = audit(shop, [buyer])
    books.assert_sound()
    waited = [round(r.elapsed, 2) for r in orders if r.elapsed > 0.2]
    summarize(
        "5d. 8 orders in a row while Redis hangs (1 worker)",
        traffic,
        books,
        f"{len(waited)} of 8 orders waited > 0.2 s for Redis: {waited}",
    )
    # the first order pays the timeout and starts the 1 s back-off; the next ones, within
    # it, must not wait again
    assert len(waited) <= 2, waited

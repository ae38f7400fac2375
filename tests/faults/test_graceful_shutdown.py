"""SIGTERM to gunicorn: requests in flight finish with their full answer, none is cut inside a
transaction, connections made after it are refused untouched, and gunicorn exits 0."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import psycopg
import pytest

from tests.conftest import in_background
from tests.faults.helpers import (
    Buyer,
    Clients,
    Traffic,
    audit,
    backends,
    call,
    order_body,
    seed_shop,
    server_env,
    summarize,
    wait_for,
)

pytestmark = pytest.mark.faults


def test_sigterm_lets_slow_requests_in_flight_finish_and_exits_0(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[100, 100], customers=3)
    server = servers(server_env(database_url, redis_server.url), workers=2)
    port, product = server.port, shop.product_ids[0]
    traffic = Traffic()

    def order(customer) -> None:
        traffic.add(
            call(
                port,
                "POST",
                "/api/orders",
                order_body([(product, 1)]),
                {**customer.headers, "Idempotency-Key": uuid.uuid4().hex},
                kind="order",
            )
        )

    with psycopg.connect(database_url) as locker:
        # every statement on products now waits: both workers get a request stuck inside
        # PostgreSQL, a product list (a cache miss) and an order
        locker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        threads = [
            in_background(
                lambda: traffic.add(call(port, "GET", "/api/products?per_page=100", kind="list"))
            )
        ]
        wait_for(
            lambda: len(backends(database_url, waiting_on_lock=True)) == 1,
            timeout=10,
            what="the product list waiting inside PostgreSQL",
        )
        threads.append(in_background(lambda: order(shop.customers[0])))
        wait_for(
            lambda: len(backends(database_url, waiting_on_lock=True)) == 2,
            timeout=10,
            what="the order waiting inside PostgreSQL",
        )
        # two more orders: the workers' event loops take them too, and they wait on the lock
        threads += [in_background(lambda c=c: order(c)) for c in shop.customers[1:]]
        wait_for(
            lambda: len(backends(database_url, waiting_on_lock=True)) == 4,
            timeout=10,
            what="all four requests waiting inside PostgreSQL",
        )

        server.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        time.sleep(0.5)
        assert server.proc.poll() is None, "gunicorn did not wait for its busy workers"
        locker.rollback()  # the slow requests may go on now
    exit_code = server.proc.wait(timeout=35)
    stopped = time.monotonic() - term_at
    for thread in threads:
        thread.join(timeout=10)

    [listed] = traffic.of("list")
    assert listed.status == 200 and len(listed.body["items"]) == 2
    # every order taken before SIGTERM is answered in full, and each answer is an order in
    # the database: nothing cut inside a transaction, nothing written unanswered
    answered = [r for r in traffic.of("order") if r.status is not None]
    assert len(traffic.of("order")) == 3
    assert [r.status for r in answered] == [201] * 3
    assert exit_code == 0
    with psycopg.connect(database_url) as conn:
        assert sorted(row[0] for row in conn.execute("SELECT id FROM orders")) == sorted(
            r.body["id"] for r in answered
        )

    books = audit(shop)
    summarize(
        "4a. SIGTERM with 4 requests stuck in PostgreSQL",
        traffic,
        books,
        f"exit code {exit_code} {stopped:.1f} s after SIGTERM; every request in flight "
        f"answered in full",
    )
    books.assert_sound()


def test_sigterm_under_order_load_answers_every_order_it_wrote_and_exits_0(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[100_000] * 3, customers=6)
    server = servers(server_env(database_url, redis_server.url), workers=2)
    traffic = Traffic()
    # one attempt per order, and a buyer stops at the first request without an answer: the
    # server is going away, a retry could only be refused
    buyers = [
        Buyer(server.port, customer, traffic, shop.product_ids, retry_for=0)
        for customer in shop.customers
    ]

    def ordering(buyer: Buyer):
        gone = threading.Event()

        def step() -> None:
            if not gone.is_set() and buyer.place().status is None:
                gone.set()

        return step

    clients = Clients(*(ordering(buyer) for buyer in buyers), pace=0.0).start()
    try:
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        exit_code = server.proc.wait(timeout=35)
        stopped = time.monotonic() - term_at
    finally:
        clients.stop()

    assert exit_code == 0
    # an answer, when there is one, is whole; no answer means no worker took the request
    assert all(r.error is None for r in traffic.of() if r.status is not None)
    assert {r.status for r in traffic.of()} <= {201, None}
    books = audit(shop, buyers)
    assert books.unconfirmed == []  # no order was written without its 201 reaching the buyer
    summarize(
        "4b. SIGTERM under order load (6 buyers)",
        traffic,
        books,
        f"exit code {exit_code} {stopped:.2f} s after SIGTERM; every order written was "
        f"answered 201",
    )
    books.assert_sound()

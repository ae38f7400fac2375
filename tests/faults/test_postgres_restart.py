"""PostgreSQL restarts under load: /readyz goes 503 and back, requests meanwhile get a quick
clean 503, the pools reconnect by themselves, and no order is half-written."""

from __future__ import annotations

import random
import time

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from shopapi.db import UNREACHABLE_WAIT, connection, queries
from tests.conftest import make_settings, open_pool
from tests.faults.helpers import (
    Buyer,
    Clients,
    Traffic,
    audit,
    call,
    clean_problem,
    seed_shop,
    server_env,
    summarize,
    wait_for,
)

pytestmark = pytest.mark.faults

OUTAGE = 2.5  # seconds PostgreSQL stays down
QUICK = 1.5  # seconds any answer may take, queueing behind the other clients included


def settled(traffic: Traffic, since: float, window: float) -> bool:
    """The last `window` seconds (all after `since`) saw requests, and all of them succeeded."""
    now = time.monotonic()
    recent = [r for r in traffic.of() if r.started > now - window]
    return now - since > window and len(recent) > 10 and all(r.status in (200, 201) for r in recent)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarting_under_load_answers_clean_503s_and_recovers_by_itself(
    pg_cluster, redis_server, servers, mode
):
    url = pg_cluster.create_database(f"shopapi_faults_restart_{mode}")
    shop = seed_shop(url, stocks=[100_000] * 4, customers=3)
    # DB_POOL_TIMEOUT stays at its default (5 s): the pools must not make clients wait for it
    server = servers(server_env(url, redis_server.url), workers=2)
    port = server.port
    traffic = Traffic()
    rng = random.Random(2)
    buyers = [
        Buyer(port, customer, traffic, shop.product_ids, retry_for=15)
        for customer in shop.customers
    ]

    def read_product() -> None:  # cached: may keep answering from Redis
        pid = rng.choice(shop.product_ids)
        traffic.add(call(port, "GET", f"/api/products/{pid}", kind="read"))

    def read_orders() -> None:  # always PostgreSQL
        traffic.add(
            call(
                port,
                "GET",
                "/api/orders?per_page=5",
                headers=rng.choice(shop.customers).headers,
                kind="read",
            )
        )

    def probe() -> None:
        traffic.add(call(port, "GET", "/readyz", kind="ready"))
        traffic.add(call(port, "GET", "/healthz", kind="alive"))

    clients = Clients(read_product, read_orders, probe, *(b.place for b in buyers)).start()
    try:
        time.sleep(1.0)
        cut = time.monotonic()
        pg_cluster.stop(mode)
        time.sleep(OUTAGE)
        pg_cluster.start()
        back = time.monotonic()
        ready = wait_for(
            lambda: next(
                (r for r in traffic.of("ready") if r.started > back and r.status == 200), None
            ),
            timeout=15,
            what="/readyz 200 after the restart",
        )
        # every worker's pool reconnects by itself: 1.5 s in which everything succeeds
        wait_for(
            lambda: settled(traffic, back, 1.5),
            timeout=20,
            what="1.5 s without a failed request after the restart",
        )
    finally:
        clients.stop()
        if not pg_cluster.running():
            pg_cluster.start()

    probes = traffic.of("ready")
    down = [r for r in probes if cut < r.started < back]
    assert any(
        r.status == 503 and r.body == {"status": "unready", "database": "down", "redis": "ok"}
        for r in down
    ), [r.outcome for r in down]
    assert probes[-1].status == 200

    # every answer is a success or a clean, quick 503 with Retry-After: no 500, no hang
    unclean = traffic.unexpected(
        lambda r: (
            r.status in (200, 201)
            or (r.kind == "ready" and r.status == 503)
            or clean_problem(r, 503, "service_unavailable")
            and r.headers.get("retry-after")
        )
    )
    assert [(r.kind, r.outcome, r.body) for r in unclean] == []
    slow = [
        (r.kind, r.outcome, round(r.started - cut, 2), round(r.elapsed, 2))
        for r in traffic.of()
        if r.elapsed >= QUICK
    ]
    assert slow == []
    during = [r for r in traffic.of("order", "read") if cut + 0.1 < r.started < back]
    assert any(r.status == 503 for r in during)
    assert all(not b.unresolved and not b.refused for b in buyers)
    last_failure = max(r.ended for r in traffic.of() if r.status not in (200, 201))
    assert last_failure - back < 5.0  # every worker's pool reconnected within a few seconds

    books = audit(shop, buyers)
    summarize(
        f"2. PostgreSQL restart ({mode}, {OUTAGE} s down) under load",
        traffic,
        books,
        f"first /readyz 200 {ready.ended - back:.2f} s after PostgreSQL was back, "
        f"last failed request {max(0.0, last_failure - back):.2f} s after",
    )
    books.assert_sound()


async def ping(pool) -> int:
    async with connection(pool) as conn:
        return await queries.ping(conn)


def test_a_pool_that_saw_the_database_go_away_fails_fast_until_it_reconnects(pg_cluster, app_loop):
    url = pg_cluster.create_database("shopapi_faults_pool")
    shop = seed_shop(url, stocks=[5], customers=0)
    pool = open_pool(app_loop, make_settings(url, DB_POOL_MIN=1, DB_POOL_MAX=2, DB_POOL_TIMEOUT=5))
    waits = []
    try:
        app_loop.run(ping, pool)
        pg_cluster.stop("fast")
        try:
            for _ in range(3):  # the first finds its connection dead, the next know it
                started = time.monotonic()
                # a connection used a moment ago is handed out unchecked (db.CHECK_AFTER_IDLE):
                # the first request then fails on it; either way nobody waits DB_POOL_TIMEOUT
                with pytest.raises((PoolTimeout, psycopg.OperationalError)):
                    app_loop.run(ping, pool)
                waits.append(time.monotonic() - started)
        finally:
            pg_cluster.start()
        back = time.monotonic()

        def answers() -> bool:
            try:
                return app_loop.run(ping, pool) == 1
            except PoolTimeout:
                return False

        wait_for(answers, timeout=10, what="the pool to reconnect by itself")
        reconnected = time.monotonic() - back
        assert not pool.reachability.unreachable
    finally:
        app_loop.run(pool.close)

    # DB_POOL_TIMEOUT is 5 s: not one checkout waited for it
    assert max(waits) < UNREACHABLE_WAIT + 0.5, waits
    assert reconnected < 5.0
    audit(shop).assert_sound()

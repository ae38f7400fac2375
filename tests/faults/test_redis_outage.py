"""Redis stops under load: catalog reads fall back to PostgreSQL, rate limits to memory, no 5xx,
and caching comes back by itself without serving what changed while Redis was away."""

from __future__ import annotations

import random
import time

import pytest

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

OUTAGE = 2.0  # seconds Redis stays down
NEW_PRICE = 1234


def redis_calls(redis_server, command: str) -> int:
    """How many times Redis ran `command` since it started (INFO commandstats)."""
    with redis_server.client() as conn:
        return conn.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_redis_stopping_under_load_degrades_to_postgres_and_recovers_by_itself(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[100_000] * 4, customers=3)
    server = servers(
        server_env(
            database_url,
            redis_server.url,
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_DEFAULT="100000/minute",
            RATE_LIMIT_LOGIN="5/minute",
        ),
        workers=2,
    )
    port, target = server.port, shop.product_ids[0]
    traffic = Traffic()
    rng = random.Random(1)

    # warm: the cache answers before the outage
    def read_detail() -> None:
        pid = rng.choice(shop.product_ids)
        traffic.add(call(port, "GET", f"/api/products/{pid}", kind="read"))

    def read_list() -> None:
        traffic.add(call(port, "GET", "/api/products?per_page=20", kind="read"))

    wait_for(
        lambda: read_detail() or any(r.headers.get("x-cache") == "hit" for r in traffic.of("read")),
        timeout=5,
        what="a cache hit before the outage",
    )

    buyers = [Buyer(port, customer, traffic, shop.product_ids) for customer in shop.customers]
    clients = Clients(
        read_detail, read_detail, read_list, *(buyer.place for buyer in buyers)
    ).start()
    try:
        time.sleep(1.0)
        cut = time.monotonic()
        redis_server.stop(keep_data=True)  # a restart with persistence: old entries come back

        # while Redis is away: a staff write, and a login flood over its limit
        time.sleep(0.2)
        write = traffic.add(
            call(
                port,
                "PATCH",
                f"/api/products/{target}",
                {"price_cents": NEW_PRICE},
                shop.editor.headers,
                kind="write",
            )
        )
        logins = [
            traffic.add(
                call(
                    port,
                    "POST",
                    "/api/auth/login",
                    {"email": "probe@example.com", "password": "wrong-pass"},
                    kind="login",
                )
            )
            for _ in range(12)
        ]
        time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))
        degraded = [r for r in traffic.of("read", "order") if r.started > cut + 0.3]

        redis_server.start()
        back = time.monotonic()
        # caching and Redis-counted rate limits resume without a restart
        wait_for(
            lambda: any(
                r.headers.get("x-cache") == "hit" and r.started > back for r in traffic.of("read")
            ),
            timeout=10,
            what="X-Cache: hit after Redis came back",
        )
        hit_again = (
            min(
                r.ended
                for r in traffic.of("read")
                if r.headers.get("x-cache") == "hit" and r.started > back
            )
            - back
        )
        wait_for(
            lambda: redis_calls(redis_server, "incr") > 0,
            timeout=10,
            what="rate limits counted in Redis again",
        )
        limits_again = time.monotonic() - back
        time.sleep(1.0)  # both workers serve the catalog from Redis again for a while
        settled = time.monotonic()
        fresh = [call(port, "GET", f"/api/products/{target}", kind="check") for _ in range(10)]
        listed = call(port, "GET", "/api/products?per_page=20", kind="check")
    finally:
        clients.stop()

    # the write was accepted without Redis, and every later read shows it
    assert write.status == 200 and write.body["price_cents"] == NEW_PRICE, write.body
    assert [r.body["price_cents"] for r in fresh] == [NEW_PRICE] * 10
    listed_prices = {p["id"]: p["price_cents"] for p in listed.body["items"]}
    assert listed_prices[target] == NEW_PRICE
    stale = [
        r
        for r in traffic.of("read")
        if r.started > write.ended
        and r.status == 200
        and r.body.get("id") == target
        and r.body["price_cents"] != NEW_PRICE
    ]
    assert [r for r in stale if r.started > settled] == []

    # during the outage: answers from PostgreSQL, limits still counted (in memory)
    assert degraded and all(r.status in (200, 201) for r in degraded), traffic.errors(
        "read", "order"
    )
    assert all(r.headers.get("x-cache") == "miss" for r in degraded if r.kind == "read")
    assert all("ratelimit-limit" in r.headers for r in degraded)
    assert {r.status for r in logins} == {401, 429}, [r.outcome for r in logins]
    assert sum(r.status == 429 for r in logins) >= 2  # each worker grants 5 // 2 (item 7)
    assert all(
        clean_problem(r, 429, "rate_limited") and r.headers.get("retry-after")
        for r in logins
        if r.status == 429
    )

    # no 5xx and no dropped connection, except a request caught in flight at the cut
    failed = [r for r in traffic.of() if r.status is None or r.status >= 500]
    assert [r.outcome for r in failed if not r.spans(cut)] == []
    assert len(failed) <= 2
    assert all(not buyer.unresolved and not buyer.refused for buyer in buyers)

    books = audit(shop, buyers)
    summarize(
        "1. Redis stop (2 s, data kept) under load",
        traffic,
        books,
        f"X-Cache hit {hit_again:.2f} s after Redis returned, limits in Redis after "
        f"{limits_again:.1f} s; {len(stale)} stale reads before the writer's worker "
        f"caught up",
    )
    books.assert_sound()


def test_a_write_made_while_redis_was_away_is_not_hidden_by_an_older_cache_entry(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[10], customers=0)
    env = server_env(database_url, redis_server.url)
    # two instances behind one load balancer, sharing PostgreSQL and Redis
    writer, reader = servers(env, workers=1), servers(env, workers=1)
    target = shop.product_ids[0]
    path = f"/api/products/{target}"
    traffic = Traffic()
    read = lambda: traffic.add(call(reader.port, "GET", path, kind="read"))  # noqa: E731
    assert read().headers["x-cache"] == "miss"
    assert read().headers["x-cache"] == "hit"

    redis_server.stop(keep_data=True)
    during = read()  # the reader notices the outage: served from PostgreSQL
    write = traffic.add(
        call(
            writer.port,
            "PATCH",
            path,
            {"price_cents": NEW_PRICE},
            shop.editor.headers,
            kind="write",
        )
    )
    assert write.status == 200
    assert read().body["price_cents"] == NEW_PRICE
    time.sleep(1.2)  # past the reader's cache back-off
    redis_server.start()
    after = read()

    books = audit(shop)
    summarize(
        "1b. Redis back with its data, read on another instance",
        traffic,
        books,
        f"reader saw price {after.body['price_cents']} (X-Cache "
        f"{after.headers.get('x-cache')}) after the write of {NEW_PRICE}",
    )
    books.assert_sound()
    assert during.status == 200 and during.headers["x-cache"] == "miss"
    assert after.body["price_cents"] == NEW_PRICE, (
        f"stale answer after Redis returned: price {after.body['price_cents']}, "
        f"X-Cache {after.headers.get('x-cache')}"
    )


def test_without_redis_the_workers_of_one_server_share_a_limit_instead_of_each_granting_it(
    database_url, redis_server, servers
):
    """Issue 18 item 7: while Redis is down each worker counts on its own; each now grants only
    its share, limit // workers, so one client spread over both workers of a live gunicorn
    gets at most the configured limit in a window. Before, each worker granted the whole limit:
    up to twice the limit here. The bound stated: total <= LIMIT (LIMIT is a multiple of 2)."""
    from concurrent.futures import ThreadPoolExecutor

    limit, requests = 20, 200
    seed_shop(database_url, stocks=[5], customers=0)
    server = servers(
        server_env(
            database_url,
            redis_server.url,
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_DEFAULT=f"{limit}/day",  # one window for the whole test (UTC days)
        ),
        workers=2,
    )
    redis_server.stop(keep_data=False)
    day = int(time.time() // 86400)
    # fresh connections from 8 threads: the kernel hands them to both workers
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: call(server.port, "GET", "/api/categories"), range(requests))
        )
    assert all(r.status in (200, 429) for r in replies), [r.outcome for r in replies]
    granted = [r for r in replies if r.status == 200]
    assert all(r.headers["ratelimit-limit"] == str(limit // 2) for r in granted)
    assert all(
        clean_problem(r, 429, "rate_limited") and r.headers.get("retry-after")
        for r in replies
        if r.status == 429
    )
    windows = int(time.time() // 86400) - day + 1  # 1 unless midnight (UTC) passed meanwhile
    # at least one worker's share, at most the limit: the kernel usually spreads the fresh
    # connections over both workers (20 granted), but may hand them all to one (10 granted,
    # seen once in CI); either way no worker grants more than its share (the header above)
    assert limit // 2 <= len(granted) <= limit * windows, len(granted)

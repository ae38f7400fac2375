"""Orders through nginx across three instances, PgBouncer in transaction mode in front of the
primary: the last units are never oversold, and an instance SIGKILLed under load loses and
duplicates no order (clients retry with their Idempotency-Key; nginx routes around it)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg

from tests.cluster.cluster import Cluster, join_all, kill_instance
from tests.cluster.figures import Figures
from tests.faults.helpers import Buyer, Traffic, audit, seed_shop, wait_for


def upstreams_of(cluster: Cluster, since: int) -> Counter:
    """Which instances nginx sent the requests logged since line `since` to."""
    assert cluster.nginx is not None
    return Counter(e["upstream"] for e in cluster.nginx.access_entries()[since:])


def test_buyers_racing_through_nginx_for_the_last_units_never_oversell(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[5], customers=24)
    product = shop.product_ids[0]
    traffic = Traffic()
    buyers = [Buyer(cluster.port, account, traffic, [product]) for account in shop.customers]
    logged = len(cluster.nginx.access_entries())
    start = threading.Barrier(len(buyers), timeout=30)

    def buy(buyer: Buyer) -> None:
        start.wait()
        buyer.place([(product, 1)])

    threads = [threading.Thread(target=buy, args=(b,), daemon=True) for b in buyers]
    for thread in threads:
        thread.start()
    join_all(threads, 60)

    books = audit(shop, buyers)
    Figures.of(
        "racing buyers, 24 for 5 units", traffic, books, note=f"{books.orders_in_db} orders"
    ).report()
    books.assert_sound()
    outcomes = Counter(r.status for r in traffic.of())
    assert outcomes[201] == 5 and books.orders_in_db == 5, outcomes
    assert {r.code for r in traffic.of() if r.status != 201} == {"insufficient_stock"}
    # the race really spanned the instances (nginx's worker processes each balance on their
    # own, and one restarted moments ago may still be marked failed)
    assert len(upstreams_of(cluster, logged)) >= 2


def test_an_instance_killed_under_order_load_loses_and_duplicates_nothing(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[10_000] * 4, customers=8)
    traffic = Traffic()
    buyers = [
        Buyer(cluster.port, account, traffic, shop.product_ids, retry_for=20)
        for account in shop.customers
    ]
    stop = threading.Event()
    logged = len(cluster.nginx.access_entries())
    earlier, last_earlier = _orders(cluster)  # the suite's other tests' orders

    def keep_buying(buyer: Buyer) -> None:
        while not stop.is_set():
            buyer.place()

    threads = [threading.Thread(target=keep_buying, args=(b,), daemon=True) for b in buyers]
    victim = cluster.instances[1]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        kill_instance(victim)
        time.sleep(2.5)
        stop.set()
        join_all(threads, 60)
        books = audit(shop, buyers)
        confirmed = sum(len(b.confirmed) for b in buyers)
        retried = sum(n - 1 for b in buyers for n in b.attempts.values())
        unresolved = sum(len(b.unresolved) for b in buyers)
        after_kill = Counter(
            r.outcome for r in traffic.of() if r.started > killed_at + 0.5 and r.status != 201
        )
        Figures.of(
            "instance SIGKILLed under order load",
            traffic,
            books,
            note=f"{confirmed} orders confirmed, {retried} retries, {unresolved} unresolved",
        ).report()
        books.assert_sound()
        assert unresolved == 0
        # every order committed was confirmed to its client (none left behind by the kill)
        assert confirmed == books.orders_in_db - earlier
        assert [oid for oid in books.unconfirmed if oid > last_earlier] == []
        # nginx stopped sending to the dead instance: past the kill, every order succeeded
        assert not after_kill, after_kill
        served = upstreams_of(cluster, logged)
        assert any(f"127.0.0.1:{victim.port}" in upstream for upstream in served), served
        # the job workers (on the direct URL, LISTENing) relayed every order's event
        wait_for(lambda: _unrelayed(cluster) == 0, 15, what="the workers to relay every event")
    finally:
        stop.set()  # whatever failed, the buyers stop
        cluster.restart_instance(1)


def _unrelayed(cluster: Cluster) -> int:
    with psycopg.connect(cluster.url) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE relayed_at IS NULL").fetchone()[0]


def _orders(cluster: Cluster) -> tuple[int, int]:
    """How many orders the database holds, and the last one's id."""
    with psycopg.connect(cluster.url) as conn:
        count, last = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM orders").fetchone()
    return count, last

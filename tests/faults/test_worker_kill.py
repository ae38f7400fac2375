"""A gunicorn worker SIGKILLed mid-order: buyers retrying with their Idempotency-Key end with
exactly one order each, gunicorn replaces the worker, and the stock books balance."""

from __future__ import annotations

import os
import random
import signal
import time

import psycopg
import pytest

from tests.conftest import in_background
from tests.faults.helpers import (
    Buyer,
    Clients,
    Traffic,
    audit,
    backends,
    process_with_local_port,
    seed_shop,
    server_env,
    summarize,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.faults


def respawned(master: int, killed: int, workers: int = 2) -> list[int]:
    pids = worker_pids(master)
    return pids if len(pids) == workers and killed not in pids else []


def busy_worker(database_url: str, master: int) -> int | None:
    """A worker whose order statement PostgreSQL is running right now, if any."""
    for backend in backends(database_url):
        if backend["state"] == "active" and "INSERT INTO orders" in (backend["query"] or ""):
            pid = process_with_local_port(worker_pids(master), backend["client_port"])
            if pid is not None:
                return pid
    return None


def test_worker_killed_mid_order_and_under_load_leaves_exactly_one_order_per_key(
    database_url, redis_server, servers
):
    shop = seed_shop(database_url, stocks=[100_000, 100_000, 100_000, 150], customers=6)
    server = servers(server_env(database_url, redis_server.url), workers=2)
    master, port = server.proc.pid, server.port
    scarce = shop.product_ids[-1]
    traffic = Traffic()
    buyers = [
        Buyer(port, customer, traffic, shop.product_ids, rng=random.Random(i))
        for i, customer in enumerate(shop.customers)
    ]

    # 1. deterministic: the order is inside PostgreSQL, waiting on a row lock held here, when
    #    its worker dies; its statement is still queued for the lock when the retry arrives
    victim = buyers[0]
    with psycopg.connect(database_url) as locker:
        locker.execute("SELECT id FROM products WHERE id = %s FOR UPDATE", (scarce,))
        buying = in_background(lambda: victim.place([(scarce, 2)], key="killed-mid-order"))
        orphan = wait_for(
            lambda: backends(database_url, waiting_on_lock=True),
            timeout=10,
            what="the order waiting on the row lock",
        )[0]
        worker = process_with_local_port(worker_pids(master), orphan["client_port"])
        assert worker is not None, "no worker holds the waiting backend's connection"
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        # the client saw its connection drop and retried with the same key: the retry waits
        # behind the dead worker's statement, which PostgreSQL still runs
        wait_for(
            lambda: any(
                b["pid"] != orphan["pid"] for b in backends(database_url, waiting_on_lock=True)
            ),
            timeout=10,
            what="the retried order waiting on the row lock",
        )
        locker.rollback()
    first = buying.join(timeout=20)
    assert first.status == 201, first.body
    assert victim.attempts["killed-mid-order"] == 2
    assert traffic.of("order")[0].status is None  # the attempt the kill cut off
    # the dead worker's statement committed first: the retry replays its order
    replayed = first.headers.get("idempotent-replayed") == "true"
    wait_for(lambda: respawned(master, worker), timeout=15, what="gunicorn to replace the worker")
    respawn = time.monotonic() - killed_at

    # 2. under load: twice, a worker killed while PostgreSQL runs its order (or any worker,
    #    if none is caught there within a second) while six buyers order
    clients = Clients(*(buyer.place for buyer in buyers), pace=0.01).start()
    try:
        for _ in range(2):
            time.sleep(0.8)
            victim_pid = wait_for(
                lambda: busy_worker(database_url, master),
                timeout=1.0,
                interval=0.005,
                what="a busy worker",
                default=None,
            )
            os.kill(victim_pid or worker_pids(master)[0], signal.SIGKILL)
            wait_for(
                lambda pid=victim_pid: respawned(master, pid),
                timeout=15,
                what="gunicorn to replace the worker",
            )
        time.sleep(0.5)
    finally:
        clients.stop()

    assert all(not b.unresolved for b in buyers), [b.unresolved for b in buyers]
    refused = [r for b in buyers for r in b.refused.values()]
    assert all(r.status == 409 and r.code == "insufficient_stock" for r in refused), [
        (r.status, r.body) for r in refused
    ]
    cut_off = [r for r in traffic.of() if r.status is None or r.status >= 500]
    assert all(r.status is None for r in cut_off)  # a dropped connection, never a 5xx
    retried = sum(1 for b in buyers for n in b.attempts.values() if n > 1)

    books = audit(shop, buyers)
    assert books.unconfirmed == []  # every order written was answered to its buyer in the end
    summarize(
        "3. worker SIGKILL x3 (1 inside PostgreSQL) under order load",
        traffic,
        books,
        f"replacement worker forked {respawn:.1f} s after the kill; {retried} orders retried with their key, "
        f"each once in the database (mid-order kill "
        f"{'replayed' if replayed else 'placed by the retry'})",
    )
    books.assert_sound()

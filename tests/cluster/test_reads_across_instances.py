"""Reads and per-user state across the three instances: the writer's next read on another
instance is never older than the write (whatever the replica's lag), a stopped replica sends
catalog reads to the primary without a 5xx, the login limit is counted once for all instances,
and a deactivated user is refused by every instance at once."""

from __future__ import annotations

import random
import time
import uuid

import psycopg

from shopapi.security import TokenCodec
from tests.cluster.cluster import DB_NAME, Cluster, wait_caught_up
from tests.cluster.figures import Figures
from tests.conftest import TEST_SECRET, order_body
from tests.faults.helpers import Clients, Traffic, call, seed_shop


def _standby_prices(cluster: Cluster, ids: list[int]) -> dict[int, int]:
    with psycopg.connect(cluster.standby.url(DB_NAME)) as conn:
        rows = conn.execute(
            "SELECT id, price_cents FROM products WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return dict(rows)


def test_the_writers_next_read_on_another_instance_is_never_stale(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[100] * 4, customers=1, price_cents=1000)
    wait_caught_up(cluster.standby)
    editor, buyer = shop.editor, shop.customers[0]
    traffic = Traffic()
    stale = 0
    writes = 0

    def write_then_read(writer_port: int, reader_port: int, pid: int, price: int) -> None:
        nonlocal stale, writes
        wrote = traffic.add(
            call(
                writer_port, "PATCH", f"/api/products/{pid}", {"price_cents": price}, editor.headers
            )
        )
        assert wrote.status == 200, wrote.body
        writes += 1
        read = traffic.add(call(reader_port, "GET", f"/api/products/{pid}"))
        assert read.status == 200, read.body
        stale += read.body["price_cents"] != price

    a, b, c = (server.port for server in cluster.instances)
    # 1. replay paused: the replica lags for as long as the test says
    cluster.standby.replay(paused=True)
    try:
        for step, pid in enumerate(shop.product_ids):
            write_then_read(a if step % 2 else b, c if step % 2 else a, pid, 2000 + step)
        # an order on one instance, the product's stock read on another
        pid = shop.product_ids[0]
        ordered = traffic.add(
            call(
                b,
                "POST",
                "/api/orders",
                order_body([(pid, 3)]),
                {**buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
            )
        )
        assert ordered.status == 201, ordered.body
        read = traffic.add(call(c, "GET", f"/api/products/{pid}"))
        stale += read.body["stock"] != 97
        # the replica really was behind: it still holds the opening prices
        assert set(_standby_prices(cluster, shop.product_ids).values()) == {1000}
    finally:
        cluster.standby.replay(paused=False)
    # 2. replay running, as in production: lag is whatever it is
    rng = random.Random(19)
    ports = [a, b, c]
    for step in range(30):
        writer, reader = rng.sample(ports, 2)
        write_then_read(writer, reader, rng.choice(shop.product_ids), 3000 + step)
    # 3. the replica does serve reads once it has replayed the writes
    wait_caught_up(cluster.standby)
    before = cluster.standby.clock()
    for page in range(1, 6):  # distinct pages: cache misses, filled from the database
        listed = traffic.add(call(a, "GET", f"/api/products?per_page={page}&page=2"))
        assert listed.status == 200
    served_by_replica = cluster.standby.app_backends_busy_since(before)

    Figures.of(
        "write on one instance, read on another",
        traffic,
        stale_reads=stale,
        note=f"{writes} writes, {served_by_replica} connections reading the caught-up replica",
    ).report()
    assert stale == 0
    assert served_by_replica >= 1


def test_a_stopped_replica_sends_catalog_reads_to_the_primary(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[50] * 6, customers=1)
    wait_caught_up(cluster.standby)
    traffic = Traffic()
    rng = random.Random(7)

    def list_page() -> None:
        # varied filters: mostly cache misses, so the database is read
        low = rng.randint(0, 5000)
        traffic.add(
            call(
                cluster.port, "GET", f"/api/products?min_price_cents={low}&per_page=5", kind="list"
            )
        )

    def detail() -> None:
        traffic.add(
            call(
                cluster.port, "GET", f"/api/products/{rng.choice(shop.product_ids)}", kind="detail"
            )
        )

    def category() -> None:
        traffic.add(call(cluster.port, "GET", f"/api/categories/{shop.category_id}", kind="cat"))

    clients = Clients(list_page, list_page, detail, category, pace=0.01).start()
    try:
        time.sleep(1.0)
        stopped_at = time.monotonic()
        cluster.standby.stop("fast")
        time.sleep(2.5)
    finally:
        clients.stop()
        cluster.ensure_standby()
    after = [r for r in traffic.of() if r.started >= stopped_at]
    Figures.of(
        "replica stopped under catalog reads",
        traffic,
        note=f"{len(after)} reads after the stop",
    ).report()
    assert traffic.errors() == {}, traffic.errors()
    assert len(after) >= 20


def test_the_login_rate_limit_is_counted_once_across_instances(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[1], customers=1)
    email = shop.customers[0].email
    logged = len(cluster.nginx.access_entries())
    traffic = Traffic()
    for _ in range(9):  # RATE_LIMIT_LOGIN=5/minute per address and email
        traffic.add(
            call(
                cluster.port,
                "POST",
                "/api/auth/login",
                {"email": email, "password": "wrong-password"},
            )
        )
    statuses = [r.status for r in traffic.of()]
    upstreams = {e["upstream"] for e in cluster.nginx.access_entries()[logged:]}
    Figures.of(
        "login limit across instances",
        traffic,
        note=f"answers {statuses}, {len(upstreams)} instances",
    ).report()
    assert statuses == [401] * 5 + [429] * 4
    # spread by nginx (each of its worker processes balances on its own)
    assert len(upstreams) >= 2


def test_a_deactivated_user_is_refused_by_every_instance_at_once(shop_cluster):
    cluster = shop_cluster
    shop = seed_shop(cluster.url, stocks=[1], customers=2)
    user, admin = shop.customers
    with psycopg.connect(cluster.url) as conn:
        conn.execute("UPDATE users SET role = 'ADMIN' WHERE id = %s", (admin.id,))
    admin_headers = {
        "Authorization": f"Bearer {TokenCodec(TEST_SECRET, 3600, 3600).issue_access(admin.id, 'ADMIN')}"
    }
    traffic = Traffic()

    def me_everywhere() -> list[int | None]:
        # four calls per instance: both of its workers, whichever the kernel picks
        return [
            traffic.add(call(server.port, "GET", "/api/auth/me", headers=user.headers)).status
            for server in cluster.instances
            for _ in range(4)
        ]

    assert me_everywhere() == [200] * 12  # every worker now remembers the user as active
    off = traffic.add(
        call(cluster.port, "PATCH", f"/api/users/{user.id}", {"is_active": False}, admin_headers)
    )
    assert off.status == 200, off.body
    refused = me_everywhere()  # at once: no pause after the answer
    Figures.of("user deactivated", traffic, note=f"after it: {refused}").report()
    assert refused == [401] * 12

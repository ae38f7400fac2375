"""In-process, on the cluster's real primary, standby and PgBouncer: where catalog reads go
(shopapi/replica.py), and why prepared statements must be off through PgBouncer."""

from __future__ import annotations

import logging

import psycopg
import pytest
import redis.asyncio
from falcon import testing

from shopapi.app import create_app
from shopapi.db import queries
from shopapi.replica import WRITE_POSITION, ReadRouting
from tests.cluster.cluster import DB_NAME, wait_caught_up
from tests.conftest import make_settings, open_pool
from tests.faults.helpers import seed_shop
from tests.live import free_port


@pytest.fixture()
def routed_app(shop_cluster, async_redis, app_loop):
    """An app on the cluster's primary (directly) with the standby as its read replica."""
    settings = make_settings(
        shop_cluster.url,
        DATABASE_READ_URL=shop_cluster.standby.url(DB_NAME),
        CACHE_ENABLED="false",
    )
    app = create_app(settings, redis=async_redis)
    yield app
    app_loop.run(app.ctx.close)


def test_reads_use_the_replica_once_it_replayed_the_last_write_else_the_primary(
    shop_cluster, routed_app, redis_client
):
    cluster, reads = shop_cluster, routed_app.ctx.reads
    shop = seed_shop(cluster.url, stocks=[10], customers=1, price_cents=1000)
    pid = shop.product_ids[0]
    client = testing.TestClient(routed_app)
    wait_caught_up(cluster.standby)
    assert client.simulate_get(f"/api/products/{pid}").json["price_cents"] == 1000
    assert (reads.on_replica, reads.lagging) == (1, 0)

    cluster.standby.replay(paused=True)
    try:
        headers = shop.editor.headers
        changed = client.simulate_patch(
            f"/api/products/{pid}", json={"price_cents": 1500}, headers=headers
        )
        assert changed.status_code == 200
        assert int(redis_client.get(WRITE_POSITION)) > 0
        assert client.simulate_get(f"/api/products/{pid}").json["price_cents"] == 1500
        assert reads.lagging == 1  # the replica had not replayed the write: the primary read
    finally:
        cluster.standby.replay(paused=False)
    wait_caught_up(cluster.standby)
    assert client.simulate_get(f"/api/products/{pid}").json["price_cents"] == 1500
    assert (reads.on_replica, reads.lagging) == (2, 1)


def test_an_unreachable_replica_is_skipped_for_a_while(shop_cluster, async_redis, app_loop, caplog):
    caplog.set_level(logging.WARNING, logger="shopapi.replica")
    settings = make_settings(shop_cluster.url)
    primary = open_pool(app_loop, settings)
    nowhere = open_pool(app_loop, settings, f"postgresql://127.0.0.1:{free_port()}/x")
    reads = ReadRouting(primary, nowhere, async_redis)

    async def two_reads():
        return [await reads.read(lambda conn: queries.ping(conn)) for _ in range(2)]

    try:
        assert app_loop.run(two_reads) == [1, 1]  # both from the primary
    finally:
        app_loop.run(primary.close)
        app_loop.run(nowhere.close)
    assert (reads.failed, reads.on_replica) == (1, 0)  # the second did not try it again
    assert any("replica failed" in r.getMessage() for r in caplog.records)


def test_without_redis_reads_use_the_primary_and_writes_still_answer(
    shop_cluster, app_loop, caplog
):
    caplog.set_level(logging.WARNING, logger="shopapi.replica")
    settings = make_settings(shop_cluster.url)
    primary = open_pool(app_loop, settings)
    replica = open_pool(app_loop, settings, shop_cluster.standby.url(DB_NAME))
    dead = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.2, retry=None)
    reads = ReadRouting(primary, replica, dead)

    async def write_then_read():
        await reads.writes.note_write()  # cannot record the position: logged, not raised
        return await reads.read(lambda conn: queries.ping(conn))

    try:
        assert app_loop.run(write_then_read) == 1
    finally:
        app_loop.run(primary.close)
        app_loop.run(replica.close)
        app_loop.run(dead.aclose)
    assert (reads.on_replica, reads.lagging, reads.failed) == (0, 0, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not record a write's WAL position" in m for m in messages)
    assert any("catalog reads use the primary" in m for m in messages)


def test_without_a_replica_a_write_records_nothing(app, app_loop, redis_client):
    app_loop.run(app.ctx.reads.writes.note_write)
    assert redis_client.get(WRITE_POSITION) is None


def test_prepared_statements_break_through_pgbouncer_unless_off(shop_cluster):
    url = shop_cluster.pgbouncer.url()

    def two_clients(threshold: int | None) -> None:
        with (
            psycopg.connect(url, autocommit=True, prepare_threshold=threshold) as a,
            psycopg.connect(url, autocommit=True, prepare_threshold=threshold) as b,
        ):
            for i in range(3):
                a.execute("SELECT %s::int", (i,))
                b.execute("SELECT %s::int + 1", (i,))

    # transaction pooling hands both clients the same server connection in turn: the name
    # psycopg prepared for one is already taken (or missing) for the other
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        two_clients(0)
    two_clients(None)  # DATABASE_PREPARE_THRESHOLD=off

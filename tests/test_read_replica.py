"""DATABASE_READ_URL: catalog reads go to the replica, writes and everything else to the primary.

A real second database stands in for the replica: it holds different rows, so each answer shows
which database served it.
"""

import psycopg
import pytest
from falcon import testing

from shopapi.app import create_app
from shopapi.db import migrate, queries
from tests.conftest import TEST_DB, make_settings, recreate_database, run_sql


@pytest.fixture()
def replica_url():
    name = f"{TEST_DB}_replica"
    url = recreate_database(name)
    migrate(url)
    yield url
    recreate_database(name, drop_only=True)


def test_catalog_reads_use_the_replica_and_writes_the_primary(
    async_redis, settings, pool, replica_url, make_category, editor, database_url, app_loop
):
    replica_settings = make_settings(
        settings.database_url, DATABASE_READ_URL=replica_url, CACHE_ENABLED="false"
    )
    app = create_app(replica_settings, pool=pool, redis=async_redis)
    assert app.ctx.read_pool is not None
    client = testing.TestClient(app)
    try:
        run_sql(
            app_loop,
            app.ctx.read_pool,
            lambda conn: queries.insert_category(
                conn, name="Only on the replica", slug="replica", description=""
            ),
        )
        primary_category = make_category("Only on the primary")

        listed = client.simulate_get("/api/categories").json["items"]
        assert [c["name"] for c in listed] == ["Only on the replica"]

        created = client.simulate_post(
            "/api/categories", json={"name": "Written"}, headers=editor.headers
        )
        assert created.status_code == 201
        with psycopg.connect(database_url) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM categories").fetchall()}
        assert names == {primary_category["name"], "Written"}
    finally:
        app_loop.run(app.ctx.close)  # (closes the replica pool it built)


def test_without_a_read_url_reads_use_the_primary(app):
    assert app.ctx.read_pool is None and app.ctx.reader is app.ctx.pool

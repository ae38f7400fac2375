"""Schema: yoyo migrations apply, roll back completely and apply again on a real PostgreSQL."""

import psycopg
import pytest

from shopapi.db import migrate
from tests.conftest import TEST_DB, recreate_database

pytestmark = pytest.mark.no_db


@pytest.fixture()
def scratch_url():
    name = f"{TEST_DB}_migrations"
    yield recreate_database(name)
    recreate_database(name, drop_only=True)


def _tables(url):
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT LIKE '%yoyo%'"
        ).fetchall()
    return {r[0] for r in rows}


EXPECTED = {
    "users",
    "refresh_tokens",
    "categories",
    "products",
    "stock_movements",
    "orders",
    "order_items",
    "order_status_history",
    "idempotency_keys",
    "addresses",
    "shipping_methods",
    "carts",
    "cart_items",
}


def test_apply_rollback_apply(scratch_url):
    applied = migrate(scratch_url)
    assert applied >= 3
    assert EXPECTED <= _tables(scratch_url)
    assert migrate(scratch_url) == 0  # nothing left to apply
    assert migrate(scratch_url, rollback_all=True) == applied
    assert _tables(scratch_url) == set()
    assert migrate(scratch_url) == applied
    assert EXPECTED <= _tables(scratch_url)


def test_schema_guards_stock_and_email(database_url):
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO categories (name, slug) VALUES ('c', 'c')")
            conn.execute(
                "INSERT INTO products (name, price_cents, stock, category_id) "
                "VALUES ('p', 1, -1, (SELECT id FROM categories LIMIT 1))"
            )
        conn.rollback()
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('A@x.io', 'h')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users (email, password_hash) VALUES ('a@X.io', 'h')")
        conn.rollback()


def test_products_have_a_search_vector_with_gin_index(database_url):
    with psycopg.connect(database_url) as conn:
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'products'"
            ).fetchall()
        }
    assert any("gin (search)" in d for d in indexes)


def test_yoyo_command_line_applies_rolls_back_and_reapplies(scratch_url):
    """What ops run: `yoyo apply` / `yoyo rollback --all` with the repo's yoyo.ini."""
    import subprocess
    import sys
    from pathlib import Path

    from shopapi.config import ROOT
    from shopapi.db import yoyo_url

    yoyo = str(Path(sys.executable).parent / "yoyo")
    url = yoyo_url(scratch_url)
    for argv in (["apply"], ["rollback", "--all"], ["apply"]):
        result = subprocess.run(
            [yoyo, *argv, "--database", url], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    assert _tables(scratch_url) >= EXPECTED


def test_checkout_migration_keeps_existing_orders_whole(scratch_url):
    """0010_checkout on a database with orders: subtotal = total, no shipping, manual and
    unpaid, and the pending orders hold pending slots 1..n; rolled back, the old view works."""
    from yoyo import get_backend, read_migrations

    from shopapi.db import SQL_DIR, yoyo_url

    backend = get_backend(yoyo_url(scratch_url))
    migrations = read_migrations(str(SQL_DIR / "migrations"))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: m.id < "0010")))
    with psycopg.connect(scratch_url) as conn:
        (user,) = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('old@x.io', 'h') RETURNING id"
        ).fetchone()
        for status in ("pending", "pending", "paid"):
            conn.execute(
                "INSERT INTO orders (user_id, status, total_cents, currency) "
                "VALUES (%s, %s, 1234, 'USD')",
                (user, status),
            )
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations))
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute(
            "SELECT subtotal_cents, shipping_cents, total_cents, shipping_address, "
            "shipping_method, payment::text, expires_at FROM order_documents ORDER BY id"
        ).fetchall()
        slots = conn.execute("SELECT pending_slot FROM orders ORDER BY id").fetchall()
    assert (
        rows
        == [(1234, 0, 1234, None, None, '{"provider" : "manual", "status" : "unpaid"}', None)] * 3
    )
    assert slots == [(1,), (2,), (None,)]
    with backend.lock():
        backend.rollback_migrations(
            backend.to_rollback(migrations.filter(lambda m: m.id >= "0010"))
        )
    with psycopg.connect(scratch_url) as conn:
        columns = [c.name for c in conn.execute("SELECT * FROM order_documents").description]
    assert columns[-2:] == ["items", "status_history"]


def test_api_time_is_inlined_into_the_statements_that_call_it(database_url):
    """A SQL function is inlined only when its body is no more volatile than its declaration:
    declared IMMUTABLE around the STABLE to_char, api_time ran through the SQL-function
    executor, its body parsed and planned again in every statement (0012 made it STABLE)."""
    with psycopg.connect(database_url) as conn:
        volatility = conn.execute(
            "SELECT provolatile FROM pg_proc WHERE oid = 'api_time(timestamptz)'::regprocedure"
        ).fetchone()[0]
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN (VERBOSE, COSTS off) SELECT api_time(created_at) FROM products"
            ).fetchall()
        )
    assert volatility == "s"
    assert "to_char" in plan and "api_time" not in plan, plan
    assert api_time_sample(database_url) == "2026-01-02T03:04:05.000006Z"


def api_time_sample(url: str) -> str:
    # the same RFC 3339 text as before, whatever the session's time zone
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")
        return conn.execute(
            "SELECT api_time('2026-01-02T03:04:05.000006Z'::timestamptz)"
        ).fetchone()[0]


def test_the_text_match_cost_is_raised_and_a_role_that_cannot_only_gets_a_warning(
    database_url,
):
    """0013 prices @@ at 100 (the ranked search's plan choice, docs/query-plans.md); run by a
    role that does not own ts_match_vq (a managed database's admin) it warns and goes on."""
    from pathlib import Path

    migration = Path(__file__).resolve().parent.parent / "sql/migrations/0013_text_match_cost.sql"
    cost = "SELECT procost FROM pg_proc WHERE oid = 'ts_match_vq(tsvector, tsquery)'::regprocedure"
    with psycopg.connect(database_url) as conn:
        assert conn.execute(cost).fetchone()[0] == 100
        warnings: list[str] = []
        conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
        conn.execute("CREATE ROLE shopapi_not_the_owner NOLOGIN")  # undone by the rollback
        conn.execute("ALTER FUNCTION ts_match_vq(tsvector, tsquery) COST 1")
        conn.execute("SET ROLE shopapi_not_the_owner")
        conn.execute(migration.read_text())
        conn.execute("RESET ROLE")
        assert conn.execute(cost).fetchone()[0] == 1
        conn.rollback()
    assert any("ts_match_vq keeps its cost of 1" in w for w in warnings), warnings


def test_the_search_compares_a_stored_lowered_name_and_keeps_it_current(database_url):
    """0014: the name-prefix test of a search reads the stored `name_lower`, not lower(name)
    per row walked (60 % of a common word's walk at 100k); the column follows renames, the
    stock updates of orders leave it alone, and a prefix still finds its product through the
    column's own index."""
    with psycopg.connect(database_url) as conn:
        category = conn.execute(
            "INSERT INTO categories (name, slug) VALUES ('Kitchen 14', 'kitchen-14') RETURNING id"
        ).fetchone()[0]
        product = conn.execute(
            "INSERT INTO products (name, price_cents, stock, category_id) "
            "VALUES ('ÉCLAIR Kettle', 1, 5, %s) RETURNING id",
            [category],
        ).fetchone()[0]

        def name_lower() -> str:
            return conn.execute(
                "SELECT name_lower FROM products WHERE id = %s", [product]
            ).fetchone()[0]

        assert name_lower() == "éclair kettle"
        conn.execute("UPDATE products SET stock = stock - 1 WHERE id = %s", [product])
        assert name_lower() == "éclair kettle"
        conn.execute("UPDATE products SET name = 'Kettle ÉCLAIR' WHERE id = %s", [product])
        assert name_lower() == "kettle éclair"

        search = (
            "SELECT id FROM catalog_products(false, NULL, NULL, NULL, false, %(q)s, %(prefix)s)"
        )
        words = {"q": "ket", "prefix": "ket%"}  # no word of the tsvector: the prefix finds it
        assert [r[0] for r in conn.execute(search, words).fetchall()] == [product]
        plan = "\n".join(
            row[0]
            for row in conn.execute("EXPLAIN (VERBOSE, COSTS off) " + search, words).fetchall()
        )
        assert "name_lower" in plan and "lower(" not in plan, plan
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'products'"
        ).fetchall()
        assert any("(name_lower text_pattern_ops)" in r[0] for r in indexes)
        conn.rollback()

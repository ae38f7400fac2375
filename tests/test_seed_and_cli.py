"""Seed data (bin/seed) is idempotent and matches the contract's accounts; in production it
creates no demo account unless asked and the first admin instead (issue 18 item 5); CLI
commands work."""

import os
import re
import subprocess
import sys

import psycopg
import pytest

from shopapi.config import ROOT
from shopapi.seed import USERS, seed
from tests.conftest import app_env, db_rows


def _counts(database_url):
    return db_rows(
        database_url,
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM "
        "categories), (SELECT count(*) FROM products), "
        "(SELECT count(*) FROM stock_movements), (SELECT count(*) FROM shipping_methods)",
    )[0]


def test_seed_twice_changes_nothing(app_loop, pool, settings, database_url):
    app_loop.run(seed, pool, settings, products=25)
    first = _counts(database_url)
    assert first[0] == 3 and first[1] >= 3 and first[2] >= 25 + 3
    app_loop.run(seed, pool, settings, products=25)
    assert _counts(database_url) == first


def _methods(database_url):
    return db_rows(
        database_url,
        "SELECT name, price_cents, free_over_cents, countries, is_active, updated_at "
        "FROM shipping_methods ORDER BY id",
    )


def test_seed_adds_the_two_shipping_methods_once(app_loop, pool, settings, database_url, client):
    created = app_loop.run(seed, pool, settings)
    assert created["shipping_methods"] == 2
    first = _methods(database_url)
    assert [row[:5] for row in first] == [
        ("Standard", 499, 5000, [], True),
        ("Express", 1499, None, [], True),
    ]
    again = app_loop.run(seed, pool, settings)
    assert again["shipping_methods"] == 0
    assert _methods(database_url) == first  # not even touched (updated_at unchanged)
    listed = client.simulate_get("/api/shipping-methods").json
    assert [(m["name"], m["price_cents"], m["free_over_cents"]) for m in listed["items"]] == [
        ("Standard", 499, 5000),
        ("Express", 1499, None),
    ]


def test_seed_leaves_a_shipping_method_of_that_name_alone(app_loop, pool, settings, database_url):
    """Staff may have renamed or repriced a seeded method: the seed does not undo it."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO shipping_methods (name, price_cents, countries, is_active) "
            "VALUES ('STANDARD', 999, '{DE}', false)"
        )
    created = app_loop.run(seed, pool, settings)
    assert created["shipping_methods"] == 1
    assert [row[:5] for row in _methods(database_url)] == [
        ("STANDARD", 999, None, ["DE"], False),
        ("Express", 1499, None, [], True),
    ]


def test_seed_products_tops_up_to_n(app_loop, pool, settings, database_url):
    app_loop.run(seed, pool, settings, products=10)
    app_loop.run(seed, pool, settings, products=30)
    generated = db_rows(
        database_url, "SELECT count(*) FROM products WHERE name LIKE 'Generated product %'"
    )
    assert generated[0][0] == 30


def test_seeded_accounts_log_in_with_their_roles(app_loop, pool, settings, client):
    app_loop.run(seed, pool, settings)
    for email, password, role in [
        ("admin@example.com", "adminpass123", "ADMIN"),
        ("editor@example.com", "editorpass123", "EDITOR"),
        ("customer@example.com", "customerpass", "CUSTOMER"),
    ]:
        login = client.simulate_post("/api/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        me = client.simulate_get(
            "/api/auth/me", headers={"Authorization": f"Bearer {login.json['access_token']}"}
        )
        assert me.json["role"] == role


def test_seed_keeps_the_ledger_balanced(app_loop, pool, settings, database_url):
    app_loop.run(seed, pool, settings, products=20)
    unbalanced = db_rows(
        database_url,
        """
        SELECT p.id FROM products p
          LEFT JOIN stock_movements m ON m.product_id = p.id
         GROUP BY p.id HAVING p.stock <> coalesce(sum(m.delta), 0)""",
    )
    assert unbalanced == []


def _cli(database_url, *args):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "APP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
    }
    return subprocess.run(
        [sys.executable, "-m", "shopapi.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bin_seed_runs_as_a_script(database_url):
    env = {**os.environ, "DATABASE_URL": database_url, "APP_ENV": "test", "BCRYPT_ROUNDS": "4"}
    result = subprocess.run(
        [str(ROOT / "bin" / "seed")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "seeded" in result.stdout
    assert _counts(database_url)[0] == 3


# ------------------------------------------------------------------ production (issue 18 item 5)


def _prod_seed(database_url, *args, **env):
    """bin/seed as a production stack runs it (compose's `seed` service: APP_ENV=production)."""
    return subprocess.run(
        [str(ROOT / "bin" / "seed"), *args],
        cwd=ROOT,
        env={**os.environ, **app_env(database_url, APP_ENV="production", **env)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _login(client, email, password):
    return client.simulate_post("/api/auth/login", json={"email": email, "password": password})


def _role(client, login):
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    return client.simulate_get("/api/auth/me", headers=headers).json["role"]


def _users(database_url):
    return db_rows(database_url, "SELECT email, role FROM users ORDER BY id")


def test_production_seed_creates_no_demo_account_and_a_generated_admin_once(database_url, client):
    result = _prod_seed(database_url)
    assert result.returncode == 0, result.stderr
    assert _users(database_url) == [("admin@localhost", "ADMIN")]
    for email, password, _, _ in USERS:  # admin@example.com/adminpass123 among them
        assert _login(client, email, password).status_code == 401, email
    # no demo catalog either; the shipping methods a checkout needs are there
    assert _counts(database_url)[1:] == (0, 0, 0, 2)
    printed = re.findall(r"^password of admin@localhost: (\S+)$", result.stdout, re.M)
    assert len(printed) == 1 and len(printed[0]) >= 20
    login = _login(client, "admin@localhost", printed[0])
    assert login.status_code == 200, login.text
    assert _role(client, login) == "ADMIN"
    stored = db_rows(database_url, "SELECT password_hash FROM users")[0][0]
    assert printed[0] not in stored  # only the hash is kept

    again = _prod_seed(database_url)  # idempotent: an admin exists, nothing new, nothing shown
    assert again.returncode == 0, again.stderr
    assert "password" not in again.stdout
    assert _users(database_url) == [("admin@localhost", "ADMIN")]
    assert _login(client, "admin@localhost", printed[0]).status_code == 200


def test_production_seed_creates_the_admin_from_admin_email_and_password(database_url, client):
    password = "a long admin passphrase 7"
    result = _prod_seed(database_url, ADMIN_EMAIL=" Ops@Shop.Example ", ADMIN_PASSWORD=password)
    assert result.returncode == 0, result.stderr
    assert "created ADMIN ops@shop.example" in result.stdout
    assert password not in result.stdout + result.stderr
    assert _users(database_url) == [("ops@shop.example", "ADMIN")]
    login = _login(client, "ops@shop.example", password)
    assert login.status_code == 200, login.text
    assert _role(client, login) == "ADMIN"
    assert _login(client, "admin@example.com", "adminpass123").status_code == 401

    # idempotent: another run, even with another password, leaves the account as it is
    again = _prod_seed(
        database_url, ADMIN_EMAIL="ops@shop.example", ADMIN_PASSWORD="another long password"
    )
    assert again.returncode == 0, again.stderr
    assert "ADMIN ops@shop.example exists" in again.stdout
    assert _users(database_url) == [("ops@shop.example", "ADMIN")]
    assert _login(client, "ops@shop.example", password).status_code == 200
    assert _login(client, "ops@shop.example", "another long password").status_code == 401


def test_production_seed_with_demo_creates_the_demo_accounts_and_warns(database_url, client):
    result = _prod_seed(database_url, "--demo", "--products", "5")
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "admin@example.com/adminpass123" in result.stderr
    assert [email for email, _ in _users(database_url)] == [email for email, *_ in USERS]
    assert _login(client, "admin@example.com", "adminpass123").status_code == 200
    assert _counts(database_url)[2] >= 5 + 8
    again = _prod_seed(database_url, "--demo", "--products", "5")
    assert again.returncode == 0, again.stderr
    assert len(_users(database_url)) == 3


def test_production_seed_never_promotes_an_existing_account(database_url, make_user, client):
    """Whoever registered the admin's address first must not become an admin with their own
    password: the seed refuses and changes nothing."""
    squatter = make_user(email="ops@shop.example", password="squatter-password")
    result = _prod_seed(
        database_url, ADMIN_EMAIL="ops@shop.example", ADMIN_PASSWORD="a long admin passphrase 7"
    )
    assert result.returncode == 2
    assert "does not promote" in result.stderr
    assert _users(database_url) == [("ops@shop.example", "CUSTOMER")]
    assert _role(client, _login(client, squatter.email, "squatter-password")) == "CUSTOMER"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"ADMIN_EMAIL": "ops@shop.example", "ADMIN_PASSWORD": "adminpass123"}, "published"),
        ((), {"ADMIN_EMAIL": "ops@shop.example", "ADMIN_PASSWORD": "short-pass"}, "at least 12"),
        ((), {"ADMIN_PASSWORD": "a long admin passphrase 7"}, "ADMIN_EMAIL is not"),
        ((), {"ADMIN_EMAIL": "not an email"}, "not an email address"),
        (("--products", "10"), {}, "--demo"),
    ],
)
def test_production_seed_refuses_what_it_cannot_do_safely(database_url, args, env, message):
    result = _prod_seed(database_url, *args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert _counts(database_url) == (0, 0, 0, 0, 0)


def test_outside_production_the_seed_keeps_the_demo_accounts(app_loop, pool, settings):
    """Development and tests keep the contract's accounts without a flag."""
    assert not settings.is_production
    assert app_loop.run(seed, pool, settings)["users"] == 3


def test_cli_migrate_is_a_no_op_on_a_migrated_database(database_url):
    result = _cli(database_url, "migrate")
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout


def test_shopapi_dev_migrates_seeds_and_serves(database_url):
    """The newcomer's command (bin/dev runs `shopapi dev`): gunicorn answers with seeded data."""
    import signal
    import time
    import urllib.request

    from tests.live import free_port

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "APP_ENV": "development",
        "BCRYPT_ROUNDS": "4",
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopapi.cli", "dev", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and body is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/categories", timeout=2
                ) as resp:
                    body = resp.read()
            except OSError:
                time.sleep(0.2)
        assert body is not None and b"Books" in body

        # and a background worker beside gunicorn: it registers itself in the job engine
        def workers() -> int:
            with psycopg.connect(database_url) as conn:
                return conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0]

        while workers() == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers() == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0


def test_cli_check_ledger_reports_a_product_out_of_balance(database_url, make_product):
    balanced = _cli(database_url, "check-ledger")
    assert balanced.returncode == 0, balanced.stderr
    assert "ledger ok" in balanced.stdout
    product = make_product(stock=7)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE products SET stock = 9 WHERE id = %s", (product["id"],))
    result = _cli(database_url, "check-ledger")
    assert result.returncode == 1, result.stderr
    assert f"product {product['id']}: stock 9 != ledger 7" in result.stdout
    assert "1 product(s) out of balance" in result.stdout

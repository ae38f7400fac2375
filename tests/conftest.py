"""Fixtures on real services: a dedicated PostgreSQL database (migrated once per session,
emptied before each test) and a dedicated Redis database (flushed before each test).

Environment knobs (so parallel runs never collide):
  TEST_DATABASE_ADMIN_URL  server to create the test database on
                           (default postgresql://postgres@127.0.0.1:5432/postgres)
  SHOPAPI_TEST_DB          test database name (default shopapi_test)
  TEST_REDIS_URL           Redis for tests (default redis://127.0.0.1:6379/15)
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio
from falcon import testing
from psycopg import sql

from shopapi import user_state
from shopapi.app import create_app
from shopapi.config import Settings
from shopapi.db import Pool, make_pool, migrate, queries, transaction
from shopapi.security import hash_password

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_DB = os.environ.get("SHOPAPI_TEST_DB", "shopapi_test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"

# every table the app writes, emptied between tests
TABLES = (
    "payment_events",
    "payments",
    "cart_items",
    "carts",
    "addresses",
    "sent_emails",
    "webhook_deliveries",
    "webhooks",
    "events",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
    "idempotency_keys",
    "order_status_history",
    "order_items",
    "orders",
    "shipping_methods",
    "stock_movements",
    "products",
    "categories",
    "account_tokens",
    "refresh_tokens",
    "sessions",
    "users",
)


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def recreate_database(name: str, *, drop_only: bool = False) -> str:
    """An empty database `name` on the test server (dropped first if it exists); its URL."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop_only:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _database_url(name)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = recreate_database(TEST_DB)
    migrate(url)
    yield url


def app_env(database_url: str, redis_url: str = REDIS_URL, **overrides: Any) -> dict[str, str]:
    """The app's environment on the test services (test settings, the test key, cheap bcrypt,
    no rate limits), `overrides` winning; every value a string."""
    defaults = {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        # production servers started by the tests send no email unless a test says so
        "EMAIL_ENABLED": "false",
        # the tests' webhook receivers listen on loopback
        "WEBHOOK_ALLOW_PRIVATE": "true",
        # scenarios place dozens of orders per buyer; tests of the limit set their own
        "MAX_PENDING_ORDERS": "0",
    }
    return {**defaults, **{key: str(value) for key, value in overrides.items()}}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings.from_env(env=app_env(database_url, **{"DB_POOL_MAX": 20, **overrides}))


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


class QueryCounter(psycopg.AsyncCursor):
    """Counts statements sent through the app's pool (for the no-N+1 tests)."""

    count = 0
    lock = threading.Lock()

    async def execute(self, query, params=None, **kwargs):
        if query:  # the pool's connection check sends an empty query: not a statement
            with QueryCounter.lock:
                QueryCounter.count += 1
        return await super().execute(query, params, **kwargs)


class AppLoop:
    """The one event loop every test request runs on, in a thread of its own.

    The app's asyncio parts (the event-loop pool, the asyncio Redis clients) belong to the loop
    that first uses them, as in a worker process. Falcon's TestClient would run each request on
    a loop of the calling thread, so tests racing requests from several threads would tear
    them apart: here TestClient hands every request to this loop and waits for the answer.
    Requests from several threads then interleave on it as on a worker's loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="app-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine_function, *args, **kwargs):
        coroutine = coroutine_function(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


@pytest.fixture(scope="session", autouse=True)
def app_loop() -> Iterator[AppLoop]:
    app_loop = AppLoop()
    patch = pytest.MonkeyPatch()
    patch.setattr(testing.client, "async_to_sync", app_loop.run)
    yield app_loop
    patch.undo()
    app_loop.run(_cancel_leftover_tasks)
    app_loop.loop.call_soon_threadsafe(app_loop.loop.stop)
    app_loop.thread.join(10)
    if not app_loop.thread.is_alive():
        app_loop.loop.close()


LEFTOVER_WAIT = 5.0  # seconds the app loop's teardown waits for cancelled tasks to end


async def _cancel_leftover_tasks() -> None:
    """Tasks still pending on the app loop at the end (the user-state listener of an app a
    test never closed) are cancelled and awaited while the loop runs. Left pending, they were
    garbage-collected after the loop had stopped, their cleanup met "no running event loop",
    and pytest turned that unraisable error into a failed run after every test had passed."""
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return
    # bounded: a task that outlives its cancellation must not hold the run (one did, forever)
    _, pending = await asyncio.wait(leftovers, timeout=LEFTOVER_WAIT)
    if pending:
        names = sorted(task.get_name() for task in pending)
        print(f"app loop teardown: {len(pending)} task(s) did not end when cancelled: {names}")


def open_pool(
    app_loop: AppLoop, settings: Settings, conninfo: str | None = None, **connect_kwargs: Any
) -> Pool:
    """A pool of the app's kind, opened on the app loop (close it with `app_loop.run(p.close)`)."""
    pool = make_pool(settings, conninfo, **connect_kwargs)
    app_loop.run(pool.ensure_open)
    return pool


@pytest.fixture(scope="session")
def pool(settings: Settings, app_loop: AppLoop) -> Iterator[Pool]:
    pool = open_pool(app_loop, settings, cursor_factory=QueryCounter)
    yield pool
    app_loop.run(pool.close)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """For tests to look into Redis (and flush it); the app has its asyncio client."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="session")
def async_redis(app_loop: AppLoop) -> Iterator[redis.asyncio.Redis]:
    """The app's kind of Redis client (its connections live on the app loop), shared by every
    app the tests build on the test database."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=2)
    yield client
    app_loop.run(client.aclose)


def run_sql(app_loop: AppLoop, pool: Pool, work: Callable[[Any], Any]) -> Any:
    """`await work(conn)` in one transaction on `pool`, from a test (on the app loop)."""

    async def run() -> Any:
        async with transaction(pool) as conn:
            return await work(conn)

    return app_loop.run(run)


# DELETE + identity restart: ~3 ms a test, where TRUNCATE ... RESTART IDENTITY costs ~60 ms
_IDENTITY_TABLES = (
    "carts",
    "addresses",
    "shipping_methods",
    "webhooks",
    "webhook_deliveries",
    "order_status_history",
    "orders",
    "stock_movements",
    "products",
    "categories",
    "account_tokens",
    "refresh_tokens",
    "sessions",
    "users",
)
_CLEAN_SQL = "; ".join(
    [f"DELETE FROM {table}" for table in TABLES]
    + [f"ALTER TABLE {table} ALTER COLUMN id RESTART" for table in _IDENTITY_TABLES]
)


@pytest.fixture(scope="session")
def _cleaner(database_url: str):
    with psycopg.connect(database_url, autocommit=True) as conn:
        app_tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT LIKE '%yoyo%'"
            ).fetchall()
        }
        missing = app_tables - set(TABLES)
        assert not missing, f"add {missing} to TABLES in tests/conftest.py"
        yield conn


@pytest.fixture(autouse=True)
def _clean_state(request, _cleaner, redis_client: redis.Redis) -> None:
    """Every test starts from empty tables and an empty Redis database."""
    if request.node.get_closest_marker("no_db"):
        return
    _cleaner.execute(_CLEAN_SQL)
    redis_client.flushdb()
    # ids restart with the tables: what workers remember of users must go too
    user_state.forget_everything()


@pytest.fixture()
def app(settings: Settings, pool, async_redis, app_loop):
    app = create_app(settings, pool=pool, redis=async_redis)
    yield app
    app_loop.run(app.ctx.close)  # its listener task and bcrypt threads


@pytest.fixture()
def client(app) -> testing.TestClient:
    return testing.TestClient(app)


@pytest.fixture()
def app_client(database_url, pool, async_redis, app_loop):
    """`app_client(SETTING=value, ...)`: a TestClient on an app with those settings (its
    `.app`), closed after the test."""
    built = []

    def build(**overrides) -> testing.TestClient:
        settings = make_settings(database_url, **overrides)
        built.append(create_app(settings, pool=pool, redis=async_redis))
        return testing.TestClient(built[-1])

    yield build
    for app in built:
        app_loop.run(app.ctx.close)


@pytest.fixture()
def query_counter():
    """`with query_counter() as counted: ...; counted.n` statements in the block."""

    class Counted:
        n = 0

    from contextlib import contextmanager

    @contextmanager
    def counting():
        counted = Counted()
        start = QueryCounter.count
        yield counted
        counted.n = QueryCounter.count - start

    return counting


# ------------------------------------------------------------------ factories


@dataclass
class User:
    id: int
    email: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture()
def make_user(app, pool, app_loop):
    """`make_user(role="EDITOR")`: a user in the database with a valid access token."""
    counter = iter(range(1, 1_000_000))

    def make(
        role: str = "CUSTOMER",
        *,
        email: str | None = None,
        password: str = "password123",
        full_name: str = "Test User",
        is_active: bool = True,
    ) -> User:
        email = email or f"user{next(counter)}-{role.lower()}@example.com"

        async def insert(conn):
            row = await queries.insert_user(
                conn,
                email=email,
                full_name=full_name,
                role=role,
                password_hash=hash_password(password, 4),
            )
            if not is_active:
                await queries.update_user(
                    conn,
                    id=row["id"],
                    email=None,
                    full_name=None,
                    role=None,
                    is_active=False,
                    password_hash=None,
                    end_tokens=True,
                )
            return row

        row = run_sql(app_loop, pool, insert)
        token = app.ctx.tokens.issue_access(row["id"], role)
        return User(row["id"], email, password, role, token)

    return make


@pytest.fixture()
def admin(make_user) -> User:
    return make_user("ADMIN", email="admin@example.com")


@pytest.fixture()
def editor(make_user) -> User:
    return make_user("EDITOR", email="editor@example.com")


@pytest.fixture()
def customer(make_user) -> User:
    return make_user("CUSTOMER", email="customer@example.com")


def assert_problem(response, status: int, code: str) -> dict:
    """The contract's error shape: problem+json with a stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    return body


def db_rows(database_url: str, query: str, params: tuple = ()) -> list[tuple]:
    """Read the database directly, to prove what a request did or did not write."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params or None).fetchall()


def stock_of(database_url: str, product_id: int) -> int:
    return db_rows(database_url, "SELECT stock FROM products WHERE id = %s", (product_id,))[0][0]


def order_body(lines: Iterable[tuple[int, int]]) -> dict:
    """The body of POST /api/orders for `lines` [(product_id, quantity), ...]."""
    return {"items": [{"product_id": pid, "quantity": qty} for pid, qty in lines]}


def backends(url: str, *, waiting_on_lock: bool | None = None) -> list[dict[str, Any]]:
    """The app's sessions on this database (application_name shopapi), as pg_stat_activity
    sees them: which are waiting on a lock, what they run, the client's port."""
    sql = (
        "SELECT pid, client_port, state, wait_event_type, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'shopapi'"
    )
    if waiting_on_lock is not None:
        sql += (
            " AND wait_event_type = 'Lock'"
            if waiting_on_lock
            else " AND wait_event_type IS DISTINCT FROM 'Lock'"
        )
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# ------------------------------------------------------------------ waiting and threads


_RAISE = object()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    default: Any = _RAISE,
) -> Any:
    """Poll until `predicate()` is truthy; its value, else after `timeout` s `default` (or
    AssertionError when there is none)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if default is not _RAISE:
                return default
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Background:
    """`fn()` running in a daemon thread (see in_background)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self._error = exc

    def join(self, timeout: float = 30) -> Any:
        """fn's result, or its exception re-raised; fails if it still runs after `timeout` s."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the background call still runs after {timeout} s"
        if self._error is not None:
            raise self._error
        return self._result


def in_background(fn: Callable[[], Any]) -> Background:
    """Start `fn()` in a daemon thread; `.join()` returns its result (or raises its error)."""
    return Background(fn)


def together(count: int, work: Callable[[int], Any], *, timeout: float = 60) -> list:
    """Run `work(index)` in `count` threads released at once by a barrier; their results in
    index order. Re-raises the first failure; fails if a thread still runs after `timeout` s.
    A thread that sends requests through the app makes its own `testing.TestClient(app)`."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the calling thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"a racing thread still runs after {timeout} s"
    if failures:
        raise failures[0]
    return results


@pytest.fixture()
def make_category(pool, app_loop):
    """`make_category(name="Books")`: a category row (slug derived naively)."""
    counter = iter(range(1, 1_000_000))

    def make(name: str | None = None, description: str = "") -> dict:
        name = name or f"Category {next(counter)}"
        slug = "-".join(name.lower().split())
        return run_sql(
            app_loop,
            pool,
            lambda conn: queries.insert_category(
                conn, name=name, slug=slug, description=description
            ),
        )

    return make


@pytest.fixture()
def make_product(pool, make_category, app_loop):
    """`make_product(stock=10, price_cents=1999)`: an active product with its ledger row."""
    counter = iter(range(1, 1_000_000))
    default_category: dict = {}

    def make(
        *,
        name: str | None = None,
        price_cents: int = 1000,
        stock: int = 10,
        category_id: int | None = None,
        description: str = "",
        is_active: bool = True,
        image_url: str | None = None,
    ) -> dict:
        if category_id is None:
            if not default_category:
                default_category.update(make_category("Default"))
            category_id = default_category["id"]
        name = name or f"Product {next(counter)}"

        async def insert(conn):
            row = await queries.insert_product(
                conn,
                name=name,
                description=description,
                price_cents=price_cents,
                stock=stock,
                image_url=image_url,
                category_id=category_id,
                is_active=is_active,
            )
            if stock:
                await queries.insert_stock_movement(
                    conn,
                    product_id=row["id"],
                    delta=stock,
                    reason="adjust",
                    order_id=None,
                    by_user_id=None,
                )
            return row

        row = run_sql(app_loop, pool, insert)
        return {
            "id": row["id"],
            "name": name,
            "price_cents": price_cents,
            "stock": stock,
            "category_id": category_id,
        }

    return make


@pytest.fixture()
def ledger_holds(app_loop, pool):
    """The scenario ends with the ledger invariant: stock = sum of movements
    (`pytestmark = pytest.mark.usefixtures("ledger_holds")` in the order modules)."""
    from shopapi.services.ledger import check_ledger

    yield
    assert app_loop.run(check_ledger, pool) == []


@pytest.fixture()
def smtp():
    """A real SMTP server (aiosmtpd) on a free loopback port, its inbox readable."""
    from tests.background import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture()
def wctx(database_url, pool, smtp, app_loop):
    """What a worker's jobs get (the app's pool, a mailer sending to the test SMTP server, a
    webhook HTTP client), for running job code in-process."""
    import httpx

    from shopapi.jobs.context import WorkerContext
    from shopapi.services.email import Mailer

    settings = make_settings(
        database_url,
        SMTP_URL=smtp.url,
        EMAIL_ENABLED="true",
        JOB_RETRY_BASE="10",
        PASSWORD_RESET_URL="myshop://reset?token={token}",
        EMAIL_VERIFICATION_URL="https://shop.example/verify?token={token}",
    )

    async def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(follow_redirects=False, timeout=5, trust_env=False)

    http = app_loop.run(client)
    yield WorkerContext(settings=settings, pool=pool, mailer=Mailer(settings), http=http)
    app_loop.run(http.aclose)


def with_settings(wctx, database_url: str, **overrides: Any):
    """`wctx` on other settings (made from the test defaults and `overrides` alone)."""
    import dataclasses

    from shopapi.services.email import Mailer

    settings = make_settings(database_url, **overrides)
    return dataclasses.replace(wctx, settings=settings, mailer=Mailer(settings))


@pytest.fixture()
def receiver():
    """A real HTTP receiver for webhook deliveries (tests/background.py: Receiver)."""
    from tests.background import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def stripe_emulator():
    """A real local Stripe (localstripe), one per test session (tests/stripe_emulator.py)."""
    from tests.stripe_emulator import StripeEmulator

    emulator = StripeEmulator().start()
    yield emulator
    emulator.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on its item (`item.rep_call`): fixtures of the fault and cluster
    suites print the servers' logs after a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report

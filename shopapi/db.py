"""The connection pools, the named SQL and the one way to open a transaction.

One `psycopg_pool.AsyncConnectionPool` per worker process (and one more for a read replica
when DATABASE_READ_URL is set), opened at app start-up. Connections are in autocommit mode,
so a read is a single round trip; a write opens `transaction(pool)`, which commits on
success and rolls back on any exception. Only services open transactions; query functions
take the connection as their first argument: `await queries.get_user(conn, id=...)`.

A database outage fails fast: once this process has seen the database unreachable (a
connection broke, a check or a new connection failed), requests wait `UNREACHABLE_WAIT` for a
connection instead of DB_POOL_TIMEOUT, until the pool reconnects by itself. The event loop
then keeps serving what needs no database (liveness, cached catalog reads), and clients get a
quick 503 rather than a stall (tests/faults/test_postgres_restart.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiosql
import psycopg
from aiosql.adapters.apyformat import AsyncPyFormatAdapter
from psycopg import _queries as psycopg_queries
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shopapi.config import ROOT, Settings

log = logging.getLogger("shopapi.db")

STATEMENT_CACHE_BYTES = 16384

SQL_DIR = ROOT / "sql"

_INDENT = re.compile(r"\n[ \t]+")


# psycopg converts each statement's %(name)s placeholders to $n on every execute, caching
# the result only for statements up to 4 KiB (a guard against ORM-generated text). Ours are a
# fixed set of named statements, and place_order is 6.9 KiB: uncached its conversion alone
# costs ~125 us per order here. Cache statements up to 16 KiB (tests/test_orders.py checks
# that place_order's conversion is a cache hit).
if getattr(psycopg_queries, "MAX_CACHED_STATEMENT_LENGTH", 0) < STATEMENT_CACHE_BYTES:
    psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = STATEMENT_CACHE_BYTES


# Statements planned with each run's values and never prepared. Their best plan depends on
# the values: a ranked search of a word in 5 % of the products reads its matches through the
# GIN index (3 ms at 10k), one in every product walks the newest first (0.4 ms at 100k).
# Prepared (psycopg does after 5 runs), PostgreSQL soon keeps one generic plan for every word:
# the walk, 22 ms for the 5 % word (docs/query-plans.md). Planning costs ~1 ms instead.
UNPREPARED = frozenset({"list_products_by_relevance"})


class _Adapter(AsyncPyFormatAdapter):
    """aiosql's adapter for psycopg's AsyncConnection, sending statements without their
    indentation: the files keep their aligned columns for people, the wire and psycopg's
    statement cache do not need them. The statements in UNPREPARED are never prepared."""

    def process_sql(self, query_name: str, op_type: Any, sql: str) -> str:
        return _INDENT.sub("\n", super().process_sql(query_name, op_type, sql))

    async def select(  # type: ignore[override]
        self, conn: Any, query_name: str, sql: str, parameters: Any, record_class: Any = None
    ) -> AsyncIterator[Any]:
        # prepare=None: psycopg's threshold decides (the pool's prepare_threshold)
        prepare = False if query_name in UNPREPARED else None
        cur = await conn.execute(sql, parameters, prepare=prepare)
        try:
            for row in await cur.fetchall():
                yield row
        finally:
            await cur.close()

    async def select_value(self, conn: Any, query_name: str, sql: str, parameters: Any) -> Any:
        # (the async base indexes the row by position; our rows are dicts)
        async with conn.cursor() as cur:
            await cur.execute(sql, parameters)
            row = await cur.fetchone()
        return next(iter(row.values())) if row else None


aiosql.register_adapter("shopapi_psycopg", _Adapter)

# Every named statement of sql/queries/*.sql: `await queries.<name>(conn, ...)`; a query
# returning rows is an async generator (`[row async for row in queries.<name>(conn, ...)]`).
queries: Any = aiosql.from_path(SQL_DIR / "queries", "shopapi_psycopg")


# seconds a request waits for a connection while the database is known to be unreachable
UNREACHABLE_WAIT = 0.2
# a connection back in the pool for less than this is handed out unchecked: under load the
# check would be a round trip per request, and one that broke since fails its request (503)
# and is discarded; one that sat idle longer (e.g. through a restart) is checked first
CHECK_AFTER_IDLE = 1.0


class Reachability:
    """What this process last learned about its database (reachable or not), and the checkout
    that acts on it.

    The pool's own `check=` retries a failed check for the whole DB_POOL_TIMEOUT; checking
    here instead lets the first failed check shorten the wait to `UNREACHABLE_WAIT`.
    """

    def __init__(self) -> None:
        self.unreachable = False
        self._errors_seen = 0
        # when each connection last went back to the pool
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def configure(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's `configure` hook: a new connection proves the database answers."""
        await conn.set_autocommit(True)
        self.unreachable = False

    async def getconn(self, pool: Pool, timeout: float | None) -> psycopg.AsyncConnection:
        """A checked connection within `timeout` (None: the pool's), else PoolTimeout."""
        deadline = time.monotonic() + (pool.timeout if timeout is None else timeout)
        while True:
            with self._timing_out(pool):
                conn = await pool.getconn(self._wait(deadline))
            if self._recently_used(conn):
                return conn
            try:
                # a connection killed by a database restart is dropped, never handed out
                await AsyncConnectionPool.check_connection(conn)
            except Exception:
                self.unreachable = True
                await pool.putconn(conn)  # the pool discards it and opens another
                continue
            self.unreachable = False
            return conn

    def returned(self, conn: psycopg.AsyncConnection) -> None:
        self._returned[conn] = time.monotonic()

    def _wait(self, deadline: float) -> float:
        wait = deadline - time.monotonic()
        return min(wait, UNREACHABLE_WAIT) if self.unreachable else wait

    def _recently_used(self, conn: psycopg.AsyncConnection) -> bool:
        return time.monotonic() - self._returned.get(conn, 0.0) < CHECK_AFTER_IDLE

    @contextmanager
    def _timing_out(self, pool: Pool) -> Iterator[None]:
        try:
            yield
        except PoolTimeout:
            # down if new connections have been failing, rather than all of them being busy
            errors = pool.get_stats().get("connections_errors", 0)
            if errors != self._errors_seen:  # (a counter: pop_stats() would reset it)
                self.unreachable = True
            self._errors_seen = errors
            raise


class Pool(AsyncConnectionPool):
    """A worker's pool, with what it learned of its database's reachability.

    `statement_timeout_ms`: what the startup options ask for; the first connection checks
    that the session got it (and UTC), and warns once when not: a pooler in front may have
    dropped the options (see `check_session_settings`)."""

    def __init__(self, conninfo: str, statement_timeout_ms: int | None = None, **kwargs: Any):
        self.reachability = Reachability()
        self._opening = asyncio.Lock()
        self._unchecked_timeout = statement_timeout_ms
        super().__init__(conninfo, configure=self._configure, open=False, **kwargs)

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        await self.reachability.configure(conn)
        if self._unchecked_timeout is not None:
            expected, self._unchecked_timeout = self._unchecked_timeout, None
            await check_session_settings(conn, expected, self.name)

    async def ensure_open(self) -> None:
        """Open without waiting for the database (start-up, or the first use on hosts that send
        no ASGI lifespan event): a database that is down must not stop the app from serving."""
        if self.closed:
            async with self._opening:
                if self.closed:
                    await self.open(wait=False)


def make_pool(settings: Settings, conninfo: str | None = None, **connect_kwargs: Any) -> Pool:
    """One pool per worker process, opened in the worker's event loop (`ensure_open`).
    `connect_kwargs` are psycopg connection arguments (tests count statements with a
    `cursor_factory`)."""
    options = (
        f"-c statement_timeout={settings.db_statement_timeout_ms} "
        "-c idle_in_transaction_session_timeout=10000 -c timezone=UTC"
    )
    return Pool(
        conninfo or settings.dsn,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout,
        kwargs={
            "row_factory": dict_row,
            "options": options,
            "application_name": "shopapi",
            # None behind a transaction pooler: a statement prepared on one server
            # connection is unknown on the next transaction's
            "prepare_threshold": settings.database_prepare_threshold,
            **connect_kwargs,
        },
        # no check=: Reachability.getconn checks every connection it hands out
        reconnect_timeout=30,
        name="shopapi",
    )


async def check_session_settings(
    conn: psycopg.AsyncConnection, statement_timeout_ms: int, pool_name: str
) -> None:
    """Warn when the session does not run with DB_STATEMENT_TIMEOUT_MS and UTC: a pooler that
    refuses or drops the startup options (PgBouncer before 1.21 in transaction mode, with
    `ignore_startup_parameters = options`) leaves them to the role's settings (`ALTER ROLE
    ... SET statement_timeout = ...`, see README "Running at scale")."""
    row = await queries.session_settings(conn)
    if row["statement_timeout_ms"] != statement_timeout_ms or row["utc_offset_seconds"] != 0:
        log.warning(
            "database sessions of pool %s run with statement_timeout %s ms and UTC offset %s s, "
            "not %s ms and UTC: set them on the database role when a pooler drops the "
            "connection's startup options",
            pool_name,
            row["statement_timeout_ms"],
            row["utc_offset_seconds"],
            statement_timeout_ms,
        )


@asynccontextmanager
async def connection(
    pool: Pool, timeout: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection for reads: each statement is its own (autocommit) transaction.
    `timeout`: seconds to wait for a connection (default DB_POOL_TIMEOUT), then PoolTimeout."""
    await pool.ensure_open()
    reachability = pool.reachability
    conn = await reachability.getconn(pool, timeout)
    try:
        async with conn:  # as pool.connection(): commit on success, roll back on error
            yield conn
    except psycopg.OperationalError:
        if conn.broken:  # the server went away under this request
            reachability.unreachable = True
        raise
    finally:
        reachability.returned(conn)
        await pool.putconn(conn)


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction: commit when the block ends, roll back if it raises."""
    async with connection(pool) as conn, conn.transaction():
        yield conn


def yoyo_url(dsn: str) -> str:
    """yoyo needs the psycopg 3 scheme; accept the plain one from DATABASE_URL."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def migrate(dsn: str, *, rollback_all: bool = False) -> int:
    """Apply (or roll back) sql/migrations with yoyo's API (blocking: run where no event loop
    is, the CLI and tests); returns how many ran."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(dsn))
    migrations = read_migrations(str(SQL_DIR / "migrations"))
    with backend.lock():
        if rollback_all:
            todo = backend.to_rollback(migrations)
            backend.rollback_migrations(todo)
        else:
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
    return len(todo)

"""The connection pool and the one way to open a transaction.

Connections are in autocommit mode, so a read is a single round trip; a write opens
`transaction(pool)`, which commits on success and rolls back on any exception.
Only services open transactions; query functions take the connection as their first argument.

A database outage fails fast: once this process has seen the database unreachable (a
connection broke, a check or a new connection failed), requests wait `UNREACHABLE_WAIT` for a
connection instead of DB_POOL_TIMEOUT, until the pool reconnects by itself. Sync workers then
stay free for what needs no database (liveness, cached catalog reads), and clients get a quick
503 rather than a stall (tests/faults/test_postgres_restart.py).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiosql
import psycopg
from aiosql.adapters.apyformat import AsyncPyFormatAdapter
from aiosql.adapters.pyformat import PyFormatAdapter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from shopapi.config import ROOT, Settings

SQL_DIR = ROOT / "sql"

_INDENT = re.compile(r"\n[ \t]+")


class _Unindented:
    """Statements sent without their indentation: the files keep their aligned columns for
    people, and psycopg caches its parsing of a statement only up to 4 KiB (place_order is
    4.5 KiB indented, 3.4 KiB not)."""

    def process_sql(self, query_name, op_type, sql):
        return _INDENT.sub("\n", super().process_sql(query_name, op_type, sql))


class _Adapter(_Unindented, PyFormatAdapter):
    """aiosql's psycopg adapter, unindented."""


class _AsyncAdapter(_Unindented, AsyncPyFormatAdapter):
    """aiosql's adapter for psycopg's AsyncConnection, unindented."""


aiosql.register_adapter("shopapi_psycopg", _Adapter)
aiosql.register_adapter("shopapi_apsycopg", _AsyncAdapter)

# Every named statement of sql/queries/*.sql, callable as queries.<name>(conn, ...) on the
# thread pool, and as `await aqueries.<name>(aconn, ...)` on the event loop.
queries = aiosql.from_path(SQL_DIR / "queries", "shopapi_psycopg")
aqueries = aiosql.from_path(SQL_DIR / "queries", "shopapi_apsycopg")


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
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary())

    def configure(self, conn: psycopg.Connection) -> None:
        """The pool's `configure` hook: a new connection proves the database answers."""
        conn.autocommit = True
        self.unreachable = False

    def getconn(self, pool: ConnectionPool, timeout: float | None) -> psycopg.Connection:
        """A checked connection within `timeout` (None: the pool's), else PoolTimeout."""
        deadline = time.monotonic() + (pool.timeout if timeout is None else timeout)
        while True:
            with self._timing_out(pool):
                conn = pool.getconn(self._wait(deadline))
            if self._recently_used(conn):
                return conn
            try:
                # a connection killed by a database restart is dropped, never handed out
                ConnectionPool.check_connection(conn)
            except Exception:
                self.unreachable = True
                pool.putconn(conn)  # the pool discards it and opens another in the background
                continue
            self.unreachable = False
            return conn

    async def getconn_async(self, pool: AsyncConnectionPool,
                            timeout: float | None) -> psycopg.AsyncConnection:
        """`getconn` for the event loop's pool."""
        deadline = time.monotonic() + (pool.timeout if timeout is None else timeout)
        while True:
            with self._timing_out(pool):
                conn = await pool.getconn(self._wait(deadline))
            if self._recently_used(conn):
                return conn
            try:
                await AsyncConnectionPool.check_connection(conn)
            except Exception:
                self.unreachable = True
                await pool.putconn(conn)
                continue
            self.unreachable = False
            return conn

    def _wait(self, deadline: float) -> float:
        wait = deadline - time.monotonic()
        return min(wait, UNREACHABLE_WAIT) if self.unreachable else wait

    def _recently_used(self, conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
        return time.monotonic() - self._returned.get(conn, 0.0) < CHECK_AFTER_IDLE

    @contextmanager
    def _timing_out(self, pool: ConnectionPool | AsyncConnectionPool) -> Iterator[None]:
        try:
            yield
        except PoolTimeout:
            self._timed_out(pool)
            raise

    async def configure_async(self, conn: psycopg.AsyncConnection) -> None:
        await conn.set_autocommit(True)
        self.unreachable = False

    def returned(self, conn: psycopg.Connection | psycopg.AsyncConnection) -> None:
        self._returned[conn] = time.monotonic()

    def _timed_out(self, pool: ConnectionPool | AsyncConnectionPool) -> None:
        # down if new connections have been failing, rather than all of them being busy
        errors = pool.get_stats().get("connections_errors", 0)
        if errors != self._errors_seen:  # (a counter: pop_stats() would reset it)
            self.unreachable = True
        self._errors_seen = errors


class AsyncPool(AsyncConnectionPool):
    reachability: Reachability
    opening: asyncio.Lock


class Pool(ConnectionPool):
    reachability: Reachability
    twin: AsyncPool | None = None  # see async_twin()


def _pool_options(settings: Settings, connect_kwargs: dict) -> dict:
    options = (
        f"-c statement_timeout={settings.db_statement_timeout_ms} "
        "-c idle_in_transaction_session_timeout=10000 -c timezone=UTC"
    )
    return {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "timeout": settings.db_pool_timeout,
        "kwargs": {"row_factory": dict_row, "options": options, "application_name": "shopapi",
                   **connect_kwargs},
        # no check=: Reachability.getconn checks every connection it hands out
        "reconnect_timeout": 30,
        "name": "shopapi",
    }


def make_pool(
    settings: Settings, conninfo: str | None = None, *, open: bool = True, **connect_kwargs
) -> Pool:
    """One pool per worker process; gunicorn imports the app after fork, so never shared."""
    reachability = Reachability()
    pool = Pool(conninfo or settings.dsn, configure=reachability.configure, open=open,
                **_pool_options(settings, connect_kwargs))
    pool.reachability = reachability
    return pool


def async_twin(pool: Pool, **connect_kwargs) -> AsyncPool:
    """The event loop's pool (hot paths: order placement, product reads) for the database and
    settings of `pool`, one per pool (`connect_kwargs` override the connection arguments of
    the first call). It opens on first use, inside the loop that then owns its connections:
    one per worker process (the tests run every app on one loop too)."""
    if getattr(pool, "twin", None) is None:
        reachability = Reachability()
        pool.twin = AsyncPool(pool.conninfo, kwargs={**pool.kwargs, **connect_kwargs},
                              min_size=pool.min_size, max_size=pool.max_size,
                              timeout=pool.timeout, reconnect_timeout=pool.reconnect_timeout,
                              name=f"{pool.name}-async", open=False,
                              configure=reachability.configure_async)
        pool.twin.reachability = reachability
        pool.twin.opening = asyncio.Lock()
    return pool.twin


@contextmanager
def connection(pool: Pool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A connection for reads: each statement is its own (autocommit) transaction.
    `timeout`: seconds to wait for a connection (default DB_POOL_TIMEOUT), then PoolTimeout."""
    reachability = pool.reachability
    conn = reachability.getconn(pool, timeout)
    try:
        with conn:  # as pool.connection(): commit on success, roll back on error
            yield conn
    except psycopg.OperationalError:
        if conn.broken:  # the server went away under this request
            reachability.unreachable = True
        raise
    finally:
        reachability.returned(conn)
        pool.putconn(conn)


@contextmanager
def transaction(pool: Pool) -> Iterator[psycopg.Connection]:
    """One transaction: commit when the block ends, roll back if it raises."""
    with connection(pool) as conn, conn.transaction():
        yield conn


async def _open(pool: AsyncPool) -> None:
    if pool.closed:
        async with pool.opening:
            if pool.closed:
                await pool.open(wait=False)


@asynccontextmanager
async def aconnection(
    pool: AsyncPool, timeout: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """`connection` on the event loop: each statement is its own (autocommit) transaction."""
    await _open(pool)
    reachability = pool.reachability
    conn = await reachability.getconn_async(pool, timeout)
    try:
        async with conn:  # commit on success, roll back on error
            yield conn
    except psycopg.OperationalError:
        if conn.broken:
            reachability.unreachable = True
        raise
    finally:
        reachability.returned(conn)
        await pool.putconn(conn)


def yoyo_url(dsn: str) -> str:
    """yoyo needs the psycopg 3 scheme; accept the plain one from DATABASE_URL."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix):]
    return dsn


def migrate(dsn: str, *, rollback_all: bool = False) -> int:
    """Apply (or roll back) sql/migrations with yoyo's API; returns how many ran."""
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


def migrations_dir() -> Path:
    return SQL_DIR / "migrations"

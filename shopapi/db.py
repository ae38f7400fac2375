"""The connection pool and the one way to open a transaction.

Connections are in autocommit mode, so a read is a single round trip; a write opens
`transaction(pool)`, which commits on success and rolls back on any exception.
Only services open transactions; query functions take the connection as their first argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiosql
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from shopapi.config import ROOT, Settings

SQL_DIR = ROOT / "sql"

# Every named statement of sql/queries/*.sql, callable as queries.<area>.<name>(conn, ...).
queries = aiosql.from_path(SQL_DIR / "queries", "psycopg")


def _configure(conn: psycopg.Connection) -> None:
    conn.autocommit = True


def make_pool(
    settings: Settings, conninfo: str | None = None, *, open: bool = True, **connect_kwargs
) -> ConnectionPool:
    """One pool per worker process; gunicorn imports the app after fork, so never shared."""
    options = (
        f"-c statement_timeout={settings.db_statement_timeout_ms} "
        "-c idle_in_transaction_session_timeout=10000 -c timezone=UTC"
    )
    return ConnectionPool(
        conninfo or settings.dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout,
        kwargs={"row_factory": dict_row, "options": options, "application_name": "shopapi",
                **connect_kwargs},
        configure=_configure,
        # drop connections killed by a database restart before handing them out
        check=ConnectionPool.check_connection,
        reconnect_timeout=30,
        open=open,
        name="shopapi",
    )


@contextmanager
def connection(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A connection for reads: each statement is its own (autocommit) transaction."""
    with pool.connection() as conn:
        yield conn


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """One transaction: commit when the block ends, roll back if it raises."""
    with pool.connection() as conn, conn.transaction():
        yield conn


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

"""Running behind a transaction pooler (issue 19, item 1): DATABASE_DIRECT_URL for
session-bound work (the job engine's LISTEN, migrations), DATABASE_PREPARE_THRESHOLD to stop
psycopg preparing statements, and a warning when the session settings sent as startup
options did not arrive (a pooler dropped them). Through a real PgBouncer:
tests/cluster/test_read_routing.py."""

from __future__ import annotations

import logging

import psycopg
import pytest

from shopapi import cli
from shopapi.config import ConfigError, Settings
from shopapi.db import connection
from shopapi.jobs import tasks
from tests.conftest import make_settings, open_pool
from tests.live import free_port


def test_prepare_threshold_is_psycopgs_by_default_and_off_says_never():
    assert Settings.from_env(env={}).database_prepare_threshold == 5
    for off in ("off", "none", "OFF"):
        env = {"DATABASE_PREPARE_THRESHOLD": off}
        assert Settings.from_env(env=env).database_prepare_threshold is None
    assert (
        Settings.from_env(env={"DATABASE_PREPARE_THRESHOLD": "0"}).database_prepare_threshold == 0
    )
    with pytest.raises(ConfigError, match="DATABASE_PREPARE_THRESHOLD"):
        Settings.from_env(env={"DATABASE_PREPARE_THRESHOLD": "-1"})


def test_the_direct_url_defaults_to_the_database_url():
    pooled = "postgresql://pgbouncer:6432/shop"
    assert Settings.from_env(env={"DATABASE_URL": pooled}).direct_dsn == pooled
    direct = "postgresql://primary:5432/shop"
    both = Settings.from_env(env={"DATABASE_URL": pooled, "DATABASE_DIRECT_URL": direct})
    assert (both.dsn, both.direct_dsn) == (pooled, direct)


def test_the_pools_connections_prepare_as_the_setting_says(database_url, app_loop):
    async def threshold(pool):
        async with connection(pool) as conn:
            return conn.prepare_threshold

    for raw, expected in (("off", None), ("5", 5)):
        pool = open_pool(app_loop, make_settings(database_url, DATABASE_PREPARE_THRESHOLD=raw))
        try:
            assert app_loop.run(threshold, pool) == expected
        finally:
            app_loop.run(pool.close)


def test_a_session_without_the_startup_settings_is_warned_about(database_url, app_loop, caplog):
    async def use(pool):
        async with connection(pool) as conn:
            await conn.execute("SELECT 1")

    settings = make_settings(database_url)
    caplog.set_level(logging.WARNING, logger="shopapi.db")
    # as through a pooler that drops `options`: the server's own statement_timeout (0)
    dropped = open_pool(app_loop, settings, options="-c timezone=UTC")
    kept = open_pool(app_loop, settings)
    try:
        app_loop.run(use, dropped)
        app_loop.run(use, kept)
    finally:
        app_loop.run(dropped.close)
        app_loop.run(kept.close)
    warnings = [r.getMessage() for r in caplog.records if r.name == "shopapi.db"]
    assert len(warnings) == 1, warnings
    assert "statement_timeout 0 ms" in warnings[0] and "5000 ms" in warnings[0]


def test_the_job_engine_listens_on_the_direct_url(database_url):
    nowhere = f"postgresql://127.0.0.1:{free_port()}/pooled"
    settings = make_settings(nowhere, DATABASE_DIRECT_URL=database_url)
    previous = tasks.ENGINE_POOL.settings
    tasks.ENGINE_POOL.settings = settings
    try:
        engine_pool = tasks.ENGINE_POOL(open=False)
    finally:
        tasks.ENGINE_POOL.settings = previous
    assert engine_pool.conninfo == database_url


def test_migrate_runs_on_the_direct_url(database_url, monkeypatch, capsys):
    # DATABASE_URL names a port nobody listens on: only the direct URL can work
    monkeypatch.setenv("DATABASE_URL", f"postgresql://127.0.0.1:{free_port()}/pooled")
    monkeypatch.setenv("DATABASE_DIRECT_URL", database_url)
    monkeypatch.setenv("APP_ENV", "test")
    assert cli.main(["migrate"]) == 0
    assert "applied 0 migration(s)" in capsys.readouterr().out
    with psycopg.connect(database_url) as conn:  # (and it is migrated)
        assert conn.execute("SELECT to_regclass('orders') IS NOT NULL").fetchone()[0]

"""Fixtures that own real processes: a Redis, a PostgreSQL cluster and gunicorn servers of our
own, each stopped in teardown whatever the test did to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import REDIS_URL
from tests.faults.helpers import (
    BACKGROUND_LINES,
    PG_BIN,
    SUMMARIES,
    PostgresCluster,
    RedisServer,
    log_tail,
    server_missing,
    start_server,
    stop_server,
)
from tests.live import LiveServer


@pytest.fixture(scope="session", autouse=True)
def _test_redis() -> Iterator[None]:
    """The suite-wide TEST_REDIS_URL (flushed before every test by tests/conftest.py): when it
    names a loopback port nobody listens on, run a redis-server of our own there."""
    parts = urlsplit(REDIS_URL)
    try:
        redis.Redis.from_url(
            REDIS_URL, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        ).ping()
    except redis.ConnectionError:
        if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
            raise
        server = RedisServer(parts.port).start()
        yield
        server.close()
        return
    yield


@pytest.fixture()
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own: stopping it never disturbs the shared one on 6379."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (initdb once per session) that tests may stop."""
    if not PostgresCluster.available():
        server_missing(f"PostgreSQL server binaries (initdb, pg_ctl) are not in {PG_BIN}")
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture()
def servers(request) -> Iterator[Callable[..., LiveServer]]:
    """`servers(env, workers=2)`: a started gunicorn; all are stopped (SIGKILL if need be)
    in teardown, and a failing test shows the end of their logs."""
    started: list[LiveServer] = []

    def start(env: dict[str, str], workers: int = 2) -> LiveServer:
        server = start_server(env, workers)
        started.append(server)
        return server

    yield start
    failed = getattr(request.node, "rep_call", None)
    for server in started:
        if failed is not None and failed.failed:
            print(f"--- gunicorn log {server.log} ---\n{log_tail(server)}")
        stop_server(server)
        server.log.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARIES:
        terminalreporter.section("fault summary (tests/faults)")
        for summary in SUMMARIES:
            terminalreporter.write_line(summary.line())
    for line in BACKGROUND_LINES:
        terminalreporter.write_line(line)

"""The scaled-out shape on one machine, every part real and on loopback (issue 19):

    clients ─▶ nginx (deploy/nginx.conf) ─▶ 3 gunicorn masters, 2 workers each
                                              │ DATABASE_URL ─▶ PgBouncer (transaction mode) ─▶ primary
                                              │ DATABASE_READ_URL ─▶ streaming standby
                                              └ REDIS_URL ─▶ the test Redis (shared)
    2 `shopapi worker` processes ─▶ DATABASE_DIRECT_URL ─▶ primary (LISTEN needs a session)

The primary is a throwaway initdb cluster (as the fault suite's), the standby a
`pg_basebackup -R` copy of it replaying its WAL, PgBouncer the Debian package's binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.background import WorkerProcess
from tests.faults.helpers import (
    PG_BIN,
    PostgresCluster,
    log_tail,
    server_env,
    stop_server,
    wait_for,
    worker_pids,
)
from tests.live import LiveServer, free_port
from tests.nginx import NO_NGINX, RunningNginx, nginx_binary, running_nginx

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
DB_NAME = "shop"
INSTANCES = 3
JOB_WORKERS = 2
# What the startup `options` would set, on the database itself: PgBouncer 1.18 refuses the
# `options` parameter (it is told to ignore it), so sessions through it get these instead.
SESSION_SETTINGS = {
    "statement_timeout": "5000",
    "idle_in_transaction_session_timeout": "10000",
    "timezone": "UTC",
}


def missing_parts() -> str | None:
    """Why the cluster cannot run here, or None (nginx_binary() itself fails the test under
    SHOPAPI_REQUIRE_REAL_SERVERS=1)."""
    if not PostgresCluster.available() or not (PG_BIN / "pg_basebackup").exists():
        return (
            f"PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not in {PG_BIN} "
            "(found by pg_config --bindir or /usr/lib/postgresql/N/bin; PG_BIN= names another)"
        )
    if not os.access(PGBOUNCER, os.X_OK):
        return "pgbouncer is not installed (bin/test installs Debian's package)"
    if nginx_binary() is None:
        return NO_NGINX
    return None


class Standby(PostgresCluster):
    """A streaming replica of `primary`: `pg_basebackup -R` (standby.signal and
    primary_conninfo written), then started on a port of its own."""

    def __init__(self, primary: PostgresCluster) -> None:
        super().__init__()
        self.primary = primary

    def init(self) -> Standby:
        self._run(
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "-c",
            "fast",
        )
        return self

    def replay(self, *, paused: bool) -> None:
        """Pause or resume WAL replay: a replica lagging for as long as a test wants."""
        with psycopg.connect(self.url(DB_NAME), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()"
            )

    def caught_up(self) -> bool:
        """Has it replayed everything the primary has written so far?"""
        with psycopg.connect(self.primary.url(DB_NAME), autocommit=True) as primary:
            written = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with psycopg.connect(self.url(DB_NAME), autocommit=True) as standby:
            return bool(
                standby.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,)
                ).fetchone()[0]
            )

    def clock(self) -> object:
        """The standby's now(), to compare its backends' query_start with."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            return conn.execute("SELECT clock_timestamp()").fetchone()[0]

    def app_backends_busy_since(self, moment: object) -> int:
        """The app's connections to the standby that started a statement after `moment`
        (pg_stat_activity is current at once; pg_stat_database flushes up to 10 s late)."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = 'shopapi' AND query_start > %s",
                (DB_NAME, moment),
            ).fetchone()[0]


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of `primary`, run as the
    postgres user (it refuses root), trust auth with a userlist in its folder."""

    def __init__(self, primary: PostgresCluster, pool_size: int = 20) -> None:
        self.primary = primary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="shopapi-pgbouncer-"))
        self.pool_size = pool_size
        self.proc: subprocess.Popen | None = None

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PgBouncer:
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.primary.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "users.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 1000
; psycopg sends the session settings as `options`, which PgBouncer 1.18 refuses: the
; database carries them instead (ALTER DATABASE ... SET, see README "Running at scale")
ignore_startup_parameters = options
server_connect_timeout = 3
server_login_retry = 1
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
"""
        )
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres", "postgres")
        self.proc = subprocess.Popen(
            [PGBOUNCER, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **({"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}),
        )
        try:
            wait_for(self.answers, 10, what=f"pgbouncer on port {self.port}")
        except AssertionError:
            self.close()  # not left running behind the error
            raise
        return self

    def answers(self) -> bool:
        try:
            with psycopg.connect(
                self.url("postgres"), connect_timeout=1, prepare_threshold=None
            ) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_instance(server: LiveServer) -> None:
    """SIGKILL of a whole instance at once, master and workers, as a node or pod dying."""
    assert server.proc is not None
    for pid in [server.proc.pid, *worker_pids(server.proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(timeout=10)


@dataclass
class Cluster:
    primary: PostgresCluster
    standby: Standby
    pgbouncer: PgBouncer
    env: dict[str, str]
    instances: list[LiveServer] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    nginx: RunningNginx | None = None

    @property
    def url(self) -> str:
        """The primary, directly: what tests seed and audit through."""
        return self.primary.url(DB_NAME)

    @property
    def port(self) -> int:
        """nginx's: where clients go."""
        assert self.nginx is not None
        return self.nginx.port

    def restart_instance(self, index: int) -> None:
        """An instance killed by a test, started again on its port (nginx's upstream); in the
        list before it is healthy, so the teardown stops it even if the start is cut short."""
        old = self.instances[index]
        stop_server(old)
        self.instances[index] = LiveServer(self.env, workers=2, port=old.port)
        self.instances[index].start(timeout=60)

    def ensure_standby(self) -> None:
        if not self.standby.running():
            self.standby.start()
        self.standby.replay(paused=False)

    def logs(self) -> str:
        return "\n".join(
            f"--- instance {i} ({s.port}) ---\n{log_tail(s)}" for i, s in enumerate(self.instances)
        )


def instance_env(
    primary: PostgresCluster,
    standby: Standby,
    pgbouncer: PgBouncer,
    redis_url: str,
    **overrides: str,
) -> dict[str, str]:
    """Every instance's and worker's settings: one SECRET_KEY, one Redis, the pooled primary
    for requests, the standby for catalog reads, the primary directly for session-bound work;
    `overrides` last (bench/cluster_scale.py lifts the general rate limit)."""
    settings = dict(
        DATABASE_DIRECT_URL=primary.url(DB_NAME),
        # direct to the standby: a replica that is down refuses at once (no pooler's wait) and
        # reads fall back to the primary; a pooler there is possible (its pool in front of it)
        DATABASE_READ_URL=standby.url(DB_NAME),
        DATABASE_PREPARE_THRESHOLD="off",
        TRUSTED_PROXIES="1",
        TRUSTED_PROXY_NETWORKS="127.0.0.1/32",
        # limits on, counted in the shared Redis; the general one out of the tests' way (all
        # their traffic comes from one address), the login one tested
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_DEFAULT="100000/minute",
        RATE_LIMIT_LOGIN="5/minute",
        WORKER_METRICS_PORT="0",
        WORKER_CONCURRENCY="2",
        DB_POOL_MAX="4",
    )
    return server_env(pgbouncer.url(), redis_url, **{**settings, **overrides})


@contextlib.contextmanager
def running_cluster(redis_url: str, **overrides: str) -> Iterator[Cluster]:
    """The whole shape, started in dependency order and stopped whatever happened;
    `overrides`: settings of every instance and worker (instance_env)."""
    primary = PostgresCluster()
    standby = Standby(primary)
    pgbouncer = PgBouncer(primary)
    cluster: Cluster | None = None
    try:
        primary.init()
        primary.start()
        primary.create_database(DB_NAME)  # migrated, directly
        with psycopg.connect(primary.url(), autocommit=True) as admin:
            for name, value in SESSION_SETTINGS.items():
                admin.execute(f"ALTER DATABASE {DB_NAME} SET {name} = '{value}'")
        standby.init()
        standby.start()
        pgbouncer.start()
        env = instance_env(primary, standby, pgbouncer, redis_url, **overrides)
        cluster = Cluster(primary, standby, pgbouncer, env)
        # at INFO: WorkerProcess.start waits for the worker's "worker started" line
        worker_env = {**env, "LOG_LEVEL": "INFO"}
        cluster.workers = [WorkerProcess(worker_env).start() for _ in range(JOB_WORKERS)]
        # started side by side: each master imports the app while the others do
        cluster.instances = [LiveServer(env, workers=2) for _ in range(INSTANCES)]
        for server in cluster.instances:
            server.spawn()
        for server in cluster.instances:
            server.wait_healthy(60)
        with running_nginx([f"127.0.0.1:{s.port}" for s in cluster.instances]) as nginx:
            cluster.nginx = nginx
            yield cluster
    finally:
        if cluster is not None:
            for server in cluster.instances:
                stop_server(server)
                server.log.unlink(missing_ok=True)
            for worker in cluster.workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.terminate(15)
                worker.close()
                worker.log.unlink(missing_ok=True)
        pgbouncer.close()
        standby.destroy()
        primary.destroy()


def wait_caught_up(standby: Standby, timeout: float = 10) -> None:
    wait_for(standby.caught_up, timeout, what="the standby to replay the primary's WAL")


def join_all(threads: list[threading.Thread], timeout: float = 60) -> None:
    """Join the test's client threads within `timeout` s in all; fail if any is still running
    (a join that timed out returns as quietly as one that did not)."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, (
        f"{len(stuck)} of {len(threads)} client threads still running after {timeout} s"
    )


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))

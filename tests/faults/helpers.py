"""Tools that break things for real, on loopback only, and the books every fault test ends with.

- `RedisServer`: our own redis-server on a free port (never the shared one on 6379): stop it
  with or without keeping its data, freeze it (SIGSTOP), start it again on the same port.
- `PostgresCluster`: a throwaway PostgreSQL cluster (initdb under /tmp, run as the postgres
  user when we are root) that can be stopped and started under load; its binaries are found by
  `postgres_bin_dir` (the one place for the cluster suite too).
- `server_missing`: what a test does when a real server it runs is not installed: skip, or fail
  under SHOPAPI_REQUIRE_REAL_SERVERS=1 (.ci/run).
- `call` / `Traffic` / `Buyer` / `run_clients`: HTTP clients that record every answer (status,
  problem code, timing, or "no answer") and buyers that retry with their Idempotency-Key.
- `seed_shop` / `audit`: the shop a test starts from, and the check it ends with: no order lost,
  none half-written, no oversell, every unit of stock accounted for, the ledger empty.
- `backends`, `order_body`, `wait_for` live in tests/conftest.py (shared with the other tests)
  and are imported from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
import redis
from psycopg.rows import dict_row
from redis.backoff import NoBackoff
from redis.retry import Retry

from shopapi.db import make_pool, migrate, queries
from shopapi.security import TokenCodec, hash_password
from shopapi.services.ledger import check_ledger
from tests.conftest import (  # noqa: F401
    TEST_SECRET,
    app_env,
    backends,
    make_settings,
    order_body,
    wait_for,
)
from tests.live import LiveServer, free_port


def real_servers_required() -> bool:
    """SHOPAPI_REQUIRE_REAL_SERVERS=1 (.ci/run sets it): a test that would skip because nginx,
    pgbouncer or PostgreSQL's server binaries are missing fails instead."""
    return os.environ.get("SHOPAPI_REQUIRE_REAL_SERVERS", "") not in ("", "0")


def server_missing(why: str) -> NoReturn:
    """A test cannot run because a real server it starts (nginx, pgbouncer, PostgreSQL's server
    binaries) is not installed: skipped, saying `why`, or failed under
    SHOPAPI_REQUIRE_REAL_SERVERS=1, where a skipped suite must not look like a passed one."""
    if real_servers_required():
        pytest.fail(
            f"{why}; under SHOPAPI_REQUIRE_REAL_SERVERS=1 a missing server fails, never skips",
            pytrace=False,
        )
    pytest.skip(why)


def postgres_bin_dir(versions_dir: Path = Path("/usr/lib/postgresql")) -> Path:
    """Where initdb, pg_ctl and pg_basebackup are: $PG_BIN when set; else `pg_config --bindir`
    when initdb is there (Debian's pg_config may be libpq's alone, naming a folder without it);
    else the newest /usr/lib/postgresql/N/bin holding initdb (Debian's and Ubuntu's layout, one
    folder per major version: not always 15). When none has it, the first place looked at, for
    the message (PostgresCluster.available() is then False)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if bindir:
                candidates.append(Path(bindir))
    versions = [p for p in versions_dir.glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    return candidates[0] if candidates else versions_dir / "N" / "bin"


PG_BIN = postgres_bin_dir()


# ------------------------------------------------------------------ Redis


class RedisServer:
    """A redis-server of our own on a free loopback port, nothing saved unless asked."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="shopapi-faults-redis-"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> RedisServer:
        # --dir/--dbfilename only matter to stop(keep_data=True): SHUTDOWN SAVE writes the
        # dump there and the next start loads it, like a Redis restarted with persistence
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.dir),
                "--dbfilename",
                "dump.rdb",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, timeout, what=f"redis-server on port {self.port}")
        return self

    def client(self, timeout: float = 1.0) -> redis.Redis:
        # no retries: redis-py's default backs off for seconds on a refused connection
        return redis.Redis(
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def answers(self) -> bool:
        try:
            with self.client(0.2) as conn:
                return bool(conn.ping())
        except redis.RedisError:
            return False

    def stop(self, *, keep_data: bool) -> None:
        """Stop the server: SHUTDOWN SAVE (the data comes back on start) or SIGKILL (a crash:
        everything in memory is gone)."""
        assert self.proc is not None and self.proc.poll() is None
        if keep_data:
            # the server closes the connection as it exits
            with self.client() as conn, contextlib.suppress(redis.ConnectionError):
                conn.shutdown(save=True)
        else:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
            self.proc.kill()
        self.proc.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ PostgreSQL


class PostgresCluster:
    """A throwaway PostgreSQL cluster on a free loopback port (data dir under /tmp).

    PostgreSQL refuses to run as root: as root every command runs as the postgres user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="shopapi-faults-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")

    @staticmethod
    def available() -> bool:
        return (PG_BIN / "initdb").exists() and shutil.which("runuser") is not None

    def _run(self, *args: str, timeout: float = 60) -> None:
        try:
            subprocess.run(
                [*self._as, *args],
                check=True,
                timeout=timeout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except subprocess.CalledProcessError as exc:
            # say why (pg_ctl's own words and the server log's end), not only the exit code
            log = self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:1])} {args[-1]} failed ({exc.returncode}): "
                f"{(exc.stderr or b'').decode(errors='replace')}\nserver log:\n{log}"
            ) from exc

    def init(self) -> PostgresCluster:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        return self

    def start(self) -> None:
        # fsync=off: the machine does not crash here, only PostgreSQL does, and what it wrote
        # is in the OS cache. synchronous_commit stays on: a commit that was answered must
        # survive `stop immediate` (with it off, the audit does catch the lost orders)
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=50 "
            "-c shared_buffers=32MB"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, open transactions rolled back, clean shutdown;
        `immediate`: the server dies without a checkpoint (crash recovery on the next start)."""
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        migrate(url)
        return url

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ gunicorn processes


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn workers: the live children of the master."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == master_pid and state != "Z":
            pids.append(int(entry))
    return sorted(pids)


def process_with_local_port(pids: Iterable[int], port: int) -> int | None:
    """Which of `pids` owns the TCP socket whose local port is `port` (e.g. the worker behind
    a PostgreSQL backend's client_port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    return None


def start_server(env: dict[str, str], workers: int = 2, timeout: float = 30) -> LiveServer:
    return LiveServer(env, workers=workers).start(timeout=timeout)


def stop_server(server: LiveServer) -> None:
    """Teardown: SIGTERM with a short grace, then SIGKILL (of the master and its workers)."""
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    workers = worker_pids(proc.pid)
    server.stop(timeout=10)
    for pid in workers:  # left behind only if the master had to be killed
        try:
            ours = f"127.0.0.1:{server.port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        if ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def log_tail(server: LiveServer, size: int = 3000) -> str:
    try:
        return server.log.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def server_env(database_url: str, redis_url: str, **overrides: Any) -> dict[str, str]:
    """Production settings (as deployed), small pools, everything else from `overrides`."""
    return app_env(
        database_url,
        redis_url,
        **{
            "APP_ENV": "production",
            "GUNICORN_LOG_LEVEL": "warning",
            "DB_POOL_MIN": "1",
            "DB_POOL_MAX": "4",
            **overrides,
        },
    )


# ------------------------------------------------------------------ HTTP clients


@dataclass
class Reply:
    """One request as the client lived it; `status` None means no answer at all."""

    kind: str
    status: int | None
    body: Any
    headers: dict[str, str]
    started: float  # time.monotonic()
    ended: float
    error: str | None = None

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def outcome(self) -> str | int:
        return self.status if self.status is not None else f"no answer ({self.error})"

    def spans(self, moment: float) -> bool:
        return self.started <= moment <= self.ended


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    kind: str = "",
    timeout: float = 15,
) -> Reply:
    """One HTTP request on a fresh connection (as a mobile client after a pause)."""
    data = json.dumps(body).encode() if body is not None else None
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        raw = resp.read()
        status, resp_headers = resp.status, {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        return Reply(kind, None, None, {}, started, time.monotonic(), type(exc).__name__)
    finally:
        conn.close()
    ended = time.monotonic()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        return Reply(kind, status, raw, resp_headers, started, ended, "body is not JSON")
    return Reply(kind, status, parsed, resp_headers, started, ended)


class Traffic:
    """Every reply of a test, thread-safe; the numbers of its summary line."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self._lock = threading.Lock()

    def add(self, reply: Reply) -> Reply:
        with self._lock:
            self.replies.append(reply)
        return reply

    def of(self, *kinds: str) -> list[Reply]:
        with self._lock:
            return [r for r in self.replies if not kinds or r.kind in kinds]

    def errors(self, *kinds: str) -> Counter:
        """What clients saw other than 2xx/304, by status (or "no answer")."""
        return Counter(
            r.outcome
            for r in self.of(*kinds)
            if r.status is None or not (200 <= r.status < 300 or r.status == 304)
        )

    def unexpected(self, allowed: Callable[[Reply], bool], *kinds: str) -> list[Reply]:
        return [r for r in self.of(*kinds) if not allowed(r)]


def clean_problem(reply: Reply, status: int, code: str) -> bool:
    """The contract's error shape with this status and code."""
    return (
        reply.status == status
        and reply.code == code
        and reply.headers.get("content-type", "").startswith("application/problem+json")
        and isinstance(reply.body, dict)
        and reply.body.get("status") == status
    )


class Clients:
    """A handful of client threads, each calling its step in a loop until `stop()`, pausing
    `pace` s between calls (a few hundred requests, not a benchmark)."""

    def __init__(self, *steps: Callable[[], Any], pace: float = 0.02) -> None:
        self._stop = threading.Event()
        self._failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(step, pace), daemon=True) for step in steps
        ]

    def _loop(self, step: Callable[[], Any], pace: float) -> None:
        try:
            while not self._stop.is_set():
                step()
                self._stop.wait(pace)
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self._failures.append(exc)

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "a client thread is stuck"
        if self._failures:
            raise self._failures[0]


# ------------------------------------------------------------------ the shop


@dataclass
class Account:
    id: int
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Shop:
    url: str
    category_id: int
    stock: dict[int, int]  # product id -> opening stock
    price: dict[int, int]  # product id -> opening price
    customers: list[Account]
    editor: Account

    @property
    def product_ids(self) -> list[int]:
        return sorted(self.stock)


def seed_shop(url: str, stocks: list[int], customers: int, price_cents: int = 1000) -> Shop:
    """A category, products with their opening stock in the ledger, customers and an editor,
    written straight to the database; access tokens signed with the test key."""
    tokens = TokenCodec(TEST_SECRET, 3600, 3600)
    password_hash = hash_password("password123", 4)
    run = uuid.uuid4().hex[:8]
    return asyncio.run(_seed_shop(url, stocks, customers, price_cents, tokens, password_hash, run))


async def _seed_shop(
    url: str,
    stocks: list[int],
    customers: int,
    price_cents: int,
    tokens: TokenCodec,
    password_hash: str,
    run: str,
) -> Shop:
    # one transaction: the connection as a context manager commits when the block ends
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        category = await queries.insert_category(
            conn, name=f"Faults {run}", slug=f"faults-{run}", description=""
        )
        stock, price = {}, {}
        for index, units in enumerate(stocks):
            row = await queries.insert_product(
                conn,
                name=f"Fault product {run} {index}",
                description="",
                stock=units,
                price_cents=price_cents,
                image_url=None,
                category_id=category["id"],
                is_active=True,
            )
            if units:
                await queries.insert_stock_movement(
                    conn,
                    product_id=row["id"],
                    delta=units,
                    reason="adjust",
                    order_id=None,
                    by_user_id=None,
                )
            stock[row["id"]], price[row["id"]] = units, price_cents

        async def account(role: str, name: str) -> Account:
            email = f"{name}-{run}@example.com"
            row = await queries.insert_user(
                conn, email=email, password_hash=password_hash, full_name=name, role=role
            )
            return Account(row["id"], email, role, tokens.issue_access(row["id"], role))

        buyers = [await account("CUSTOMER", f"buyer{i}") for i in range(customers)]
        editor = await account("EDITOR", "editor")
    return Shop(url, category["id"], stock, price, buyers, editor)


@dataclass
class Buyer:
    """A customer placing orders with an Idempotency-Key each, retrying the same key on no
    answer, 5xx or 409 request_in_progress until a final answer or the deadline."""

    port: int
    account: Account
    traffic: Traffic
    products: list[int]
    retry_for: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    confirmed: dict[str, dict] = field(default_factory=dict)  # key -> the 201 order
    refused: dict[str, Reply] = field(default_factory=dict)  # key -> final 4xx
    unresolved: list[str] = field(default_factory=list)  # keys with no final answer
    attempts: Counter = field(default_factory=Counter)

    def random_lines(self) -> list[tuple[int, int]]:
        picked = self.rng.sample(self.products, self.rng.randint(1, min(3, len(self.products))))
        return [(pid, self.rng.randint(1, 3)) for pid in sorted(picked)]

    def place(
        self,
        lines: list[tuple[int, int]] | None = None,
        *,
        key: str | None = None,
        port: int | None = None,
    ) -> Reply:
        key = key or uuid.uuid4().hex
        body = order_body(lines or self.random_lines())
        headers = {**self.account.headers, "Idempotency-Key": key}
        deadline = time.monotonic() + self.retry_for
        while True:
            self.attempts[key] += 1
            reply = self.traffic.add(
                call(port or self.port, "POST", "/api/orders", body, headers, kind="order")
            )
            retry = (
                reply.status is None
                or reply.status >= 500
                or (reply.status == 409 and reply.code == "request_in_progress")
            )
            if not retry:
                if reply.status == 201:
                    self.confirmed[key] = reply.body
                else:
                    self.refused[key] = reply
                return reply
            if time.monotonic() >= deadline:
                self.unresolved.append(key)
                return reply
            time.sleep(0.05 + self.rng.random() * 0.1)


# ------------------------------------------------------------------ the books


@dataclass
class Audit:
    orders_in_db: int
    lost: list[str]  # orders a client got 201 for that the database does not hold as sent
    oversold: list[int]  # products with more units in orders than they ever had
    unaccounted: list[dict]  # opening stock != stock + units held by non-cancelled orders
    half_written: list[str]  # orders whose rows disagree with each other or the ledger
    ledger: list[dict]  # check_ledger(): stock != sum of movements
    duplicates: list[str]  # Idempotency-Keys with more than one order, orders with no key
    unconfirmed: list[int]  # orders committed whose client never got the 201 (info)

    def assert_sound(self) -> None:
        assert self.lost == [], f"orders lost: {self.lost}"
        assert self.oversold == [], f"oversold products: {self.oversold}"
        assert self.unaccounted == [], f"stock not accounted for: {self.unaccounted}"
        assert self.half_written == [], f"half-written orders: {self.half_written}"
        assert self.ledger == [], f"ledger mismatches: {self.ledger}"
        assert self.duplicates == [], f"duplicate orders: {self.duplicates}"


_HALF_WRITTEN = {
    "order without items": """
        SELECT o.id FROM orders o
         WHERE NOT EXISTS (SELECT FROM order_items i WHERE i.order_id = o.id)""",
    "total differs from its lines": """
        SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id
         GROUP BY o.id HAVING o.total_cents <> sum(i.line_total_cents)""",
    "line without its stock movement": """
        SELECT i.order_id FROM order_items i
          LEFT JOIN stock_movements m ON m.order_id = i.order_id
                AND m.product_id = i.product_id AND m.reason = 'order'
         GROUP BY i.order_id, i.product_id, i.quantity
        HAVING count(m.id) <> 1 OR coalesce(sum(m.delta), 0) <> -i.quantity""",
    "stock movement without its line": """
        SELECT m.order_id FROM stock_movements m
         WHERE m.reason = 'order'
           AND NOT EXISTS (SELECT FROM order_items i
                            WHERE i.order_id = m.order_id AND i.product_id = m.product_id)""",
    "order without its pending history": """
        SELECT o.id FROM orders o
         WHERE NOT EXISTS (SELECT FROM order_status_history h
                            WHERE h.order_id = o.id AND h.status = 'pending')""",
    "cancel movement of an order not cancelled": """
        SELECT m.order_id FROM stock_movements m JOIN orders o ON o.id = m.order_id
         WHERE m.reason = 'cancel' AND o.status <> 'cancelled'""",
    "idempotency key of a missing order": """
        SELECT k.order_id FROM idempotency_keys k
         WHERE NOT EXISTS (SELECT FROM orders o WHERE o.id = k.order_id)""",
}


def audit(shop: Shop, buyers: Iterable[Buyer] = ()) -> Audit:
    """Read the whole database and check the books against what clients were told."""
    buyers = list(buyers)
    with psycopg.connect(shop.url) as conn:
        orders = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT o.id, coalesce(array_agg(ARRAY[i.product_id, i.quantity::bigint] "
                "ORDER BY i.product_id) FILTER (WHERE i.product_id IS NOT NULL), '{}') "
                "FROM orders o LEFT JOIN order_items i ON i.order_id = o.id GROUP BY o.id"
            )
        }
        stock = dict(conn.execute("SELECT id, stock FROM products").fetchall())
        held = dict(
            conn.execute(
                "SELECT i.product_id, sum(i.quantity) FROM order_items i "
                "JOIN orders o ON o.id = i.order_id WHERE o.status <> 'cancelled' "
                "GROUP BY i.product_id"
            ).fetchall()
        )
        half_written = [
            f"{what}: order {row[0]}"
            for what, sql in _HALF_WRITTEN.items()
            for row in conn.execute(sql).fetchall()
        ]
        keys = conn.execute("SELECT user_id, key, order_id FROM idempotency_keys").fetchall()
        keyless = [
            row[0]
            for row in conn.execute(
                "SELECT o.id FROM orders o WHERE NOT EXISTS "
                "(SELECT FROM idempotency_keys k WHERE k.order_id = o.id)"
            )
        ]

    lost = []
    confirmed_ids = set()
    for buyer in buyers:
        for key, order in buyer.confirmed.items():
            confirmed_ids.add(order["id"])
            sent = [[line["product_id"], line["quantity"]] for line in order["items"]]
            if orders.get(order["id"]) != sorted(sent):
                lost.append(f"order {order['id']} (key {key})")
    oversold = [
        pid
        for pid, units in shop.stock.items()
        if stock.get(pid, 0) < 0 or held.get(pid, 0) > units
    ]
    unaccounted = [
        {
            "product_id": pid,
            "opening": units,
            "stock": stock.get(pid),
            "held_by_orders": held.get(pid, 0),
        }
        for pid, units in shop.stock.items()
        if units != stock.get(pid, 0) + held.get(pid, 0)
    ]
    per_key = Counter((user_id, key) for user_id, key, _ in keys)
    duplicates = [
        f"key {key} of user {user}: {n} orders" for (user, key), n in per_key.items() if n > 1
    ]
    if buyers:  # every order of these tests carries a key
        duplicates += [f"order {oid} has no Idempotency-Key" for oid in keyless]
    ledger = asyncio.run(ledger_mismatches(shop.url))
    return Audit(
        orders_in_db=len(orders),
        lost=lost,
        oversold=oversold,
        unaccounted=unaccounted,
        half_written=half_written,
        ledger=[dict(row) for row in ledger],
        duplicates=duplicates,
        unconfirmed=sorted(set(orders) - confirmed_ids),
    )


async def ledger_mismatches(url: str) -> list[dict]:
    pool = make_pool(make_settings(url, DB_POOL_MIN=1, DB_POOL_MAX=1))
    try:
        return await check_ledger(pool)
    finally:
        await pool.close()


# ------------------------------------------------------------------ the summary lines


@dataclass
class FaultSummary:
    fault: str
    sent: int
    errors: Counter
    orders_lost: int
    oversells: int
    recovery: str

    def line(self) -> str:
        errors = ", ".join(
            f"{status}: {n}" for status, n in sorted(self.errors.items(), key=lambda kv: str(kv[0]))
        )
        return (
            f"{self.fault}: {self.sent} requests, client errors "
            f"{'{' + errors + '}' if errors else 'none'}, orders lost {self.orders_lost}, "
            f"oversells {self.oversells}, recovery {self.recovery}"
        )


SUMMARIES: list[FaultSummary] = []
# the background-work faults report events, deliveries and emails instead of requests
BACKGROUND_LINES: list[str] = []


def summarize(fault: str, traffic: Traffic, books: Audit, recovery: str) -> FaultSummary:
    summary = FaultSummary(
        fault, len(traffic.of()), traffic.errors(), len(books.lost), len(books.oversold), recovery
    )
    SUMMARIES.append(summary)
    print(summary.line())
    return summary

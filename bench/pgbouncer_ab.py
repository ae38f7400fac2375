"""Orders and uncached product reads through PgBouncer (transaction mode, prepared statements
off) vs straight to PostgreSQL (psycopg's default prepare threshold), paired (issue 19 item 3).

    eval "$(.venv/bin/python -m shopapi.devservices --test-env)"
    .venv/bin/python -m bench.pgbouncer_ab          # DUR=8s ROUNDS=2 CONNECTIONS=16

One gunicorn (2 workers, production settings, cache off, no rate limits) at a time on a fresh
database `shopapi_bench_ab` of the machine's PostgreSQL, with Debian's pgbouncer in front of it
for the `pgbouncer` variant (and a third variant: direct with prepared statements off, to
split the hop from the prepares); the variants alternate in every round (the first one of a round
changes each round), each scenario a wrk run of DUR. Prints a markdown table of medians.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from types import SimpleNamespace

import psycopg

from bench.loopback import ROUNDS, small_shop, table, wrk
from shopapi.db import migrate
from tests.cluster.cluster import SESSION_SETTINGS, PgBouncer
from tests.conftest import ADMIN_URL, REDIS_URL, recreate_database
from tests.faults.helpers import server_env, start_server, stop_server

DB = "shopapi_bench_ab"
# the middle one splits the pooler hop from the cost of not preparing
VARIANTS = ["direct", "direct, prepare off", "pgbouncer"]


def main() -> int:
    url = recreate_database(DB)
    migrate(url)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        for name, value in SESSION_SETTINGS.items():
            admin.execute(f"ALTER DATABASE {DB} SET {name} = '{value}'")
    _, tokens = small_shop(url)
    port = psycopg.conninfo.conninfo_to_dict(url).get("port") or 5432
    bouncer = PgBouncer(SimpleNamespace(port=int(port))).start()  # type: ignore[arg-type]
    urls = {
        "direct": (url, "5"),
        "direct, prepare off": (url, "off"),
        "pgbouncer": (bouncer.url(DB), "off"),
    }
    results: dict[tuple[str, str], list[dict]] = defaultdict(list)
    try:
        for round_no in range(ROUNDS):
            order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]  # paired, both ways
            for variant in order:
                dsn, threshold = urls[variant]
                env = server_env(
                    dsn,
                    REDIS_URL,
                    DATABASE_PREPARE_THRESHOLD=threshold,
                    CACHE_ENABLED="false",
                    RATE_LIMIT_ENABLED="false",
                    DB_POOL_MAX="10",
                )
                server = start_server(env, workers=2)
                try:
                    for scenario, name in (("order", "order_create"), ("detail", "detail_nocache")):
                        result = wrk(scenario, server.port, tokens)
                        results[(name, variant)].append(result)
                        print(f"round {round_no + 1} {variant:9} {name:15} {result}", flush=True)
                finally:
                    stop_server(server)
                    server.log.unlink(missing_ok=True)
    finally:
        bouncer.close()
        tokens.unlink(missing_ok=True)
        recreate_database(DB, drop_only=True)
    print(table(results, VARIANTS))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("APP_ENV", "test")
    sys.exit(main())

"""Orders/s and cached product reads/s through nginx, 3 instances vs 1, in the cluster of
tests/cluster (PgBouncer, streaming replica, 2 job workers, shared Redis) (issue 19 item 5).

    eval "$(.venv/bin/python -m shopapi.devservices --test-env)"
    .venv/bin/python -m bench.cluster_scale          # DUR=8s ROUNDS=2 CONNECTIONS=16

Two nginx run deploy/nginx.conf in front of the same cluster: one balancing over the three
instances, one sending everything to the first. The two alternate in every round; every
instance, worker, database and nginx shares this machine's cores, so on a 2-core box "3" can
only show what spreading costs or saves, not more capacity.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

from bench.loopback import N_PRODUCTS, ROUNDS, small_shop, table, wrk
from tests.cluster.cluster import running_cluster
from tests.conftest import REDIS_URL
from tests.faults.helpers import call
from tests.nginx import running_nginx

VARIANTS = ["1 instance", "3 instances"]


def main() -> int:
    results: dict[tuple[str, str], list[dict]] = defaultdict(list)
    with running_cluster(REDIS_URL) as cluster:
        shop, tokens = small_shop(cluster.url)
        first = cluster.instances[0]
        with running_nginx([f"127.0.0.1:{first.port}"]) as single:
            ports = {"1 instance": single.port, "3 instances": cluster.port}
            for pid in shop.product_ids:  # every product cached before the read runs
                assert call(cluster.port, "GET", f"/api/products/{pid}").status == 200
            try:
                for round_no in range(ROUNDS):
                    order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
                    for variant in order:
                        for scenario, name in (("detail", "detail_cached"), ("order", "orders")):
                            result = wrk(scenario, ports[variant], tokens, N_PRODUCTS)
                            results[(name, variant)].append(result)
                            print(
                                f"round {round_no + 1} {variant:11} {name:13} {result}", flush=True
                            )
            finally:
                tokens.unlink(missing_ok=True)
    print(table(results, VARIANTS))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("APP_ENV", "test")
    sys.exit(main())

"""What bench/pgbouncer_ab.py and bench/cluster_scale.py share: a small shop written straight
to a database, and wrk runs (bench/wrk/*.lua) against a loopback port, medians in a table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from shopapi.config import ROOT
from tests.faults.helpers import Shop, seed_shop

WRK_DIR = ROOT / "bench" / "wrk"
DUR = os.environ.get("DUR", "8s")
ROUNDS = int(os.environ.get("ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
N_PRODUCTS = 200


def small_shop(url: str, customers: int = 20) -> tuple[Shop, Path]:
    """N_PRODUCTS products (ids 1..N on a fresh database) with stock for any run, customers,
    and a file of their access tokens (signed with the test key the servers use)."""
    shop = seed_shop(url, stocks=[10_000_000] * N_PRODUCTS, customers=customers)
    tokens = Path(tempfile.mkstemp(prefix="shopapi-bench-tokens-")[1])
    tokens.write_text("\n".join(account.token for account in shop.customers) + "\n")
    return shop, tokens


def wrk(scenario: str, port: int, tokens: Path, n_products: int = N_PRODUCTS) -> dict:
    """One wrk run (`detail` or `order`); its RESULT line as a dict."""
    env = {
        **os.environ,
        "WRK_DIR": str(WRK_DIR),
        "TOKENS_FILE": str(tokens),
        "N_PRODUCTS": str(n_products),
    }
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{DUR}",
            "-s",
            str(WRK_DIR / f"{scenario}.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def table(results: dict[tuple[str, str], list[dict]], variants: list[str]) -> str:
    """Markdown: per scenario, each variant's median rps and p99 over the rounds."""
    scenarios = sorted({scenario for scenario, _ in results})
    head = "| scenario | " + " | ".join(f"{v} rps (p99 ms)" for v in variants) + " | ratio |"
    lines = [head, "|---" * (len(variants) + 2) + "|"]
    for scenario in scenarios:
        cells, rps = [], []
        for variant in variants:
            runs = results.get((scenario, variant), [])
            median = statistics.median(r["rps"] for r in runs) if runs else 0.0
            p99 = statistics.median(r["p99_ms"] for r in runs) if runs else 0.0
            errors = sum(r["non2xx"] + r["socket_errors"] for r in runs)
            cells.append(
                f"{median:.0f} ({p99:.1f}){' ' + str(errors) + ' errors' if errors else ''}"
            )
            rps.append(median)
        ratio = f"{rps[-1] / rps[0]:.2f}" if rps and rps[0] else "-"
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)

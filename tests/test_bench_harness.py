"""The benchmark harness (bin/bench, bench/, the locustfile) is runnable: cheap checks, no load."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shopapi.db import queries
from tests.conftest import db_rows

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
SCRIPTS = ("hello.lua", "detail.lua", "list.lua", "order.lua")


def seed_nouns() -> list[str]:
    """The nouns bin/seed writes into generated product names (sql/queries/seed.sql)."""
    words = re.search(r"ARRAY\[([^\]]+)\]", queries.seed_generated_products.sql).group(1)
    return re.findall(r"'(\w+)'", words)


def generate_pgbench(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "bench/pgbench_order.py", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.mark.no_db
def test_bench_help_documents_the_options_and_the_locust_command():
    result = subprocess.run(
        ["bin/bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--only", "--scenarios", "--locust"):
        assert option in result.stdout
    assert "locust -f tests/performance/locustfile.py --headless" in result.stdout


@pytest.mark.no_db
@pytest.mark.parametrize("args", [["--bogus"], ["--scenarios", "hello,nope"], ["--only", "x"]])
def test_bench_refuses_unknown_arguments_before_doing_anything(args):
    result = subprocess.run(
        ["bin/bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "bin/bench:" in result.stderr


@pytest.mark.no_db
@pytest.mark.parametrize("script", SCRIPTS)
def test_wrk_script_loads_without_a_lua_error(script, tmp_path):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bin/bench installs it)")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("token\n")
    # port 1 is closed: wrk loads and runs the script's setup, then fails to connect
    result = subprocess.run(
        ["wrk", "-t1", "-c1", "-d1s", "-s", str(WRK_DIR / script), "http://127.0.0.1:1/"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"WRK_DIR": str(WRK_DIR), "TOKENS_FILE": str(tokens), "PATH": "/usr/bin:/bin"},
    )
    output = result.stdout + result.stderr
    assert "unable to connect" in output
    assert str(WRK_DIR) not in output, output  # wrk prefixes Lua errors with the script path


@pytest.mark.no_db
def test_search_terms_are_the_nouns_the_seed_puts_in_product_names():
    nouns = seed_nouns()
    assert len(nouns) == 20
    lua = (WRK_DIR / "list.lua").read_text()
    terms = re.findall(r'"(\w+)"', re.search(r"local terms = \{([^}]*)\}", lua).group(1))
    assert terms == nouns
    # the locustfile is parsed, never imported (locust patches the standard library)
    tree = ast.parse((ROOT / "tests" / "performance" / "locustfile.py").read_text())
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert list(ast.literal_eval(assigned["NOUNS"])) == nouns


@pytest.mark.no_db
def test_pgbench_script_defines_every_variable_the_order_statement_uses():
    script = generate_pgbench("--user-ids", "4-103", "--products", "10000")
    defined = set(re.findall(r"^\\set (\w+) ", script, flags=re.M))
    assert defined == {"uid", "p1", "p2", "q1", "q2"}
    assert "\\set uid random(4, 103)" in script
    assert "\\set p2 random(5001, 10000)" in script
    sql = "\n".join(line for line in script.splitlines() if not line.startswith(("\\", "--")))
    used = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", sql))
    assert used == defined
    assert "%(" not in sql and "--" not in sql
    assert sql.rstrip().endswith(";") and sql.count(";") == 1


def test_pgbench_script_places_a_real_order(database_url, make_user, make_product, tmp_path):
    if shutil.which("pgbench") is None:
        pytest.skip("pgbench is not installed (bin/bench installs it)")
    buyer = make_user()
    first, second = make_product(stock=10, price_cents=250), make_product(stock=10)
    assert (first["id"], second["id"]) == (1, 2)
    script = generate_pgbench("--user-ids", f"{buyer.id}-{buyer.id}", "--products", "2")
    path = tmp_path / "place_order.pgbench"
    path.write_text(script)
    result = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-t", "1", "-f", str(path), database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    orders = db_rows(database_url, "SELECT user_id, status FROM orders")
    assert orders == [(buyer.id, "pending")]
    lines = db_rows(database_url, "SELECT product_id, quantity FROM order_items ORDER BY 1")
    assert [product for product, _ in lines] == [1, 2]
    assert all(1 <= quantity <= 3 for _, quantity in lines)
    ledger = db_rows(
        database_url,
        "SELECT p.id FROM products p JOIN stock_movements m "
        "ON m.product_id = p.id GROUP BY p.id, p.stock "
        "HAVING p.stock <> sum(m.delta)",
    )
    assert ledger == []


@pytest.mark.no_db
def test_summary_reports_medians_ratios_and_the_pgbench_share(tmp_path):
    rows = [
        {
            "kind": "wrk",
            "server": "peer",
            "scenario": "order_create",
            "round": r,
            "rps": rps,
            "p50_ms": 10.0,
            "p99_ms": 20.0,
            "non2xx": 0,
            "socket_errors": 0,
            "requests": 500,
            "duration": "5s",
        }
        for r, rps in ((1, 90.0), (2, 100.0), (3, 400.0))
    ] + [
        {
            "kind": "wrk",
            "server": "shopapi",
            "scenario": "order_create",
            "round": 1,
            "rps": 200.0,
            "p50_ms": 5.0,
            "p99_ms": 9.0,
            "non2xx": 3,
            "socket_errors": 0,
            "requests": 1000,
            "duration": "5s",
        },
        {
            "kind": "wrk",
            "server": "shopapi",
            "scenario": "hello",
            "round": 1,
            "rps": 900.0,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "non2xx": 9,
            "socket_errors": 0,
            "requests": 4500,
            "duration": "5s",
        },
        {
            "kind": "pgbench",
            "server": "shopapi",
            "script": "queries.place_order",
            "clients": 8,
            "jobs": 2,
            "seconds": 5,
            "tps": 800.0,
            "failed": 0,
            "p50_ms": 1.0,
            "p99_ms": 3.0,
        },
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = subprocess.run(
        [sys.executable, "bench/summarize.py", str(results)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "| order_create | 100 | 200 | ×2.00 | 10.0 / 20.0 | 5.0 / 9.0 | 0 / 3 |" in summary
    assert "| hello | — | 900 | — |" in summary
    assert "API order_create = 25% of it" in summary
    # 409s are expected in the order run; anything but 2xx elsewhere is flagged
    assert "⚠ shopapi hello: 9 of 4500" in summary
    assert "order_create: 3" not in summary

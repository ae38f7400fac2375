"""The benchmark harness (bin/bench, bench/, the locustfile) is runnable: cheap checks, no load."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shopapi.db import queries
from tests.conftest import db_rows
from tests.helpers import QuietHandler, WrkTarget

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
SCRIPTS = ("hello.lua", "detail.lua", "list.lua", "order.lua", "checkout.lua")


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


def test_order_reset_empties_orders_their_payments_and_the_outbox_and_keeps_the_ledger(
    database_url, client, make_user, make_product, tmp_path
):
    """bench/sql/reset_orders.sql, as bin/bench runs it, on a database holding an order with
    its payment, its events and what the worker made of them (an email claim, a delivery)."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed (bin/bench installs it)")
    from tests.helpers import place

    buyer = make_user()
    product = make_product(stock=10)
    order = place(client, buyer, [(product["id"], 10)]).json  # order.created, out_of_stock
    [(event_id,)] = db_rows(database_url, "SELECT id FROM events WHERE type = 'order.created'")
    db_rows(
        database_url,
        "WITH p AS (INSERT INTO payments (order_id, provider, intent_id, client_secret, "
        " amount_cents, currency) VALUES (%s, 'stripe', 'pi_r', 'pi_r_secret', 1, 'USD')), "
        "h AS (INSERT INTO webhooks (url, events, secret) VALUES ('http://x.test', "
        " '{order.created}', 'whsec_r') RETURNING id), "
        "d AS (INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, "
        " duration_ms) SELECT id, %s, 'order.created', 1, 5 FROM h) "
        "INSERT INTO sent_emails (event_id, template, recipient) "
        "VALUES (%s, 'order_confirmation', 'x@example.com') RETURNING 1",
        (order["id"], event_id, event_id),
    )
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "stock=7",
         "-f", str(ROOT / "bench" / "sql" / "reset_orders.sql"), database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for table in ("orders", "payments", "events", "webhook_deliveries", "sent_emails"):
        assert db_rows(database_url, f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608
    assert db_rows(database_url, "SELECT stock FROM products") == [(7,)]
    assert db_rows(database_url, "SELECT sum(delta), min(reason) FROM stock_movements") == [
        (7, "adjust")
    ]


@pytest.mark.no_db
def test_bench_help_documents_the_options_and_the_locust_command():
    result = subprocess.run(
        ["bin/bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--only", "--scenarios", "--locust"):
        assert option in result.stdout
    assert "locust -f tests/performance/locustfile.py --headless" in result.stdout
    assert re.search(r"subset of: .*\bcheckout\b", result.stdout)
    assert "MAX_PENDING_ORDERS=0" in result.stdout


def bench_function(name: str, script: str = "bench") -> str:
    """The text of one shell function of bin/`script`, `name() {` to its closing brace."""
    text = (ROOT / "bin" / script).read_text()
    body = text[text.index(f"{name}() {{") :]
    return body[: body.index("\n}\n") + 3]


@pytest.mark.no_db
@pytest.mark.parametrize(
    ("args", "gated"),
    [
        ("", True),  # .ci/run: the whole suite
        ("-v -s -x -ra --tb=short -p no:cacheprovider", True),  # how it reports, not what
        ("tests/cluster", False),  # README: bin/test tests/cluster
        ("-k orders", False),
        ("-m faults", False),
        ("--lf", False),
        ("tests/test_orders.py::test_x -v", False),
        ("-p xdist", False),  # an option not known to leave the selection whole
    ],
)
def test_bin_test_gates_coverage_on_the_full_run_only(args, gated):
    full_run = bench_function("full_run", "test")
    result = subprocess.run(["bash", "-c", f"{full_run}\nfull_run {args}"], timeout=10)
    assert (result.returncode == 0) is gated


@pytest.mark.no_db
def test_ci_runs_the_gated_full_suite_where_a_missing_real_server_fails():
    text = (ROOT / "bin" / "test").read_text()
    assert "gate=(--cov-fail-under=90)" in text
    assert 'pytest --cov --cov-report=term-missing:skip-covered "${gate[@]}" "$@"' in text
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    # the README's test command as it is written there (no arguments: gated), with the switch
    assert ci[-2:] == ["export SHOPAPI_REQUIRE_REAL_SERVERS=1", "./bin/test"]
    readme = (ROOT / "README.md").read_text().splitlines()
    assert any(line.split("#")[0].strip() == "./bin/test" for line in readme)


@pytest.mark.no_db
def test_bench_lifts_the_pending_order_cap_of_the_server_it_starts():
    """Without MAX_PENDING_ORDERS=0 the 11th order of a bench customer is a 409."""
    start = bench_function("start_shopapi")
    assert re.search(r"^\s+MAX_PENDING_ORDERS=0 \\$", start, flags=re.M)
    assert "shopapi.asgi:app" in start


def _run_phases(*phases: str) -> list[str]:
    """bin/bench's own run_phase, run by bash with every step it calls replaced by a line of
    what it would do (`start shopapi 1000`, `tokens shopapi 1000`: server, PASSWORD_HASH_QUEUE),
    as a full bench (every scenario wanted) would call it: each phase `NAME scenario...`."""
    run_phase = bench_function("run_phase")
    stubs = """
exec 3>&1  # the stubs' lines, wherever run_phase sends a step's own output
SERVERS="peer shopapi" ROUNDS=1 BASE=b PEER_BASE=pb OUT=o N_CUSTOMERS=100 PEER_DIR=p
wants() { true; }
serves() { [ "$1" = shopapi ] || [ "$2" != checkout ]; }
start_peer() { echo "start peer $HASH_QUEUE" >&3; }
start_shopapi() { echo "start shopapi $HASH_QUEUE" >&3; }
python3() { echo "tokens $(basename "$3" .txt | cut -d- -f2) $HASH_QUEUE" >&3; }
preflight() { :; }; preflight_order() { :; }; preflight_checkout() { :; }
before_run() { :; }; run_wrk() { :; }; after_run() { :; }
record_rss() { :; }; stop_server() { :; }
"""
    calls = "".join(f"echo 'phase {p}'; run_phase {p}\n" for p in phases)
    result = subprocess.run(
        ["bash", "-c", stubs + run_phase + calls], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_bench_servers_take_the_token_logins_and_login_flood_keeps_the_default_queue():
    """The token step logs 100 customers in at once, which PASSWORD_HASH_QUEUE's default (4)
    would shed with 503: only a phase that orders logs them in, on servers started with a
    queue of 1000. The login_flood scenario measures that shedding, so its phase keeps 4 (a
    full bench once logged 100 customers in there too and died on the 503s)."""
    start = bench_function("start_shopapi")
    assert re.search(r"^\s+PASSWORD_HASH_QUEUE=\$HASH_QUEUE \\$", start, flags=re.M)
    assert _run_phases(
        "cache_on hello detail_cached order_create",
        "cache_on checkout",
        "cache_on login_flood",
        "cache_off list_search detail_nocache",
    ) == [
        "phase cache_on hello detail_cached order_create",
        "start peer 1000",
        "start shopapi 1000",
        "tokens peer 1000",
        "tokens shopapi 1000",
        "phase cache_on checkout",
        "start shopapi 1000",
        "tokens shopapi 1000",
        "phase cache_on login_flood",
        "start peer 4",
        "start shopapi 4",
        "phase cache_off list_search detail_nocache",
        "start peer 1000",
        "start shopapi 1000",
    ]


@pytest.mark.no_db
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--bogus"], {}),
        (["--scenarios", "hello,nope"], {}),
        (["--only", "x"], {}),
        (["--only", "peer", "--scenarios", "checkout"], {}),  # the peer has no cart
        (["--scenarios", "hello,checkout"], {"CONN": "101"}),  # 100 customers, one a thread
    ],
)
def test_bench_refuses_unknown_arguments_before_doing_anything(args, env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        ["bin/bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        # should a refusal regress, the run dies at once (exit 1) on its first step, the
        # results folder, instead of starting servers: OUT's parent is a file
        env={"PATH": "/usr/bin:/bin", "OUT": str(blocker / "out"), **env},
    )
    assert result.returncode == 2, result.stderr
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


class FakeCartServer(WrkTarget):
    """Just enough of the cart API for checkout.lua: PUT a line, checkout, empty the cart.

    Every request is logged as (client port, token, method, path, body, status); every 5th
    checkout answers 409 insufficient_stock with the cart left as it was, as shopapi does.
    """

    def __init__(self) -> None:
        super().__init__(FakeCartHandler)
        self.log: list[tuple[int, str, str, str, str, int]] = []
        self.carts: dict[str, dict[int, int]] = {}
        self.checkouts = 0


class FakeCartHandler(QuietHandler):
    server: FakeCartServer

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        srv = self.server
        with srv.lock:
            cart = srv.carts.setdefault(token, {})
            if self.command == "PUT" and self.path.startswith("/api/cart/items/"):
                product_id = int(self.path.rsplit("/", 1)[1])
                status = 200 if product_id in cart else 201
                cart[product_id] = json.loads(body)["quantity"]
            elif self.command == "POST" and self.path == "/api/cart/checkout":
                srv.checkouts += 1
                if not cart:
                    status = 422
                elif srv.checkouts % 5 == 0:
                    status = 409
                else:
                    status = 201
                    cart.clear()
            elif self.command == "DELETE" and self.path == "/api/cart":
                status = 204
                cart.clear()
            else:
                status = 404
            srv.log.append((self.client_address[1], token, self.command, self.path, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = do_DELETE = answer


@pytest.mark.no_db
def test_checkout_script_drives_one_cart_per_thread_and_counts_the_answers(tmp_path):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bin/bench installs it)")
    tokens = [f"token{i}" for i in range(1, 7)]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    server = FakeCartServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            # as bin/bench runs it: one connection per thread
            [
                "wrk",
                "-t4",
                "-c4",
                "-d2s",
                "-s",
                str(WRK_DIR / "checkout.lua"),
                f"http://127.0.0.1:{server.server_port}/",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={
                "WRK_DIR": str(WRK_DIR),
                "TOKENS_FILE": str(tmp_path / "tokens.txt"),
                "N_PRODUCTS": "50",
                "PATH": "/usr/bin:/bin",
            },
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    res = json.loads(re.search(r"^RESULT (.*)$", result.stdout, flags=re.M).group(1))
    log = server.log

    # thread i is customer i: four connections, each with its own token, the first four
    by_port: dict[int, set[str]] = {}
    for port, token, *_ in log:
        by_port.setdefault(port, set()).add(token)
    assert all(len(t) == 1 for t in by_port.values()), by_port
    assert sorted(t for (t,) in by_port.values()) == tokens[:4]

    # each customer: (PUT 1-3 distinct new lines, qty 1-3; checkout; DELETE after a 409)*
    checkouts = conflicts = 0
    for token in tokens[:4]:
        mine = [(m, path, body, status) for _, t, m, path, body, status in log if t == token]
        lines: list[int] = []
        after_409 = False
        for method, path, body, status in mine:
            if after_409:
                assert (method, path) == ("DELETE", "/api/cart")
                after_409 = False
            elif method == "PUT":
                assert status == 201  # the cart was empty when the iteration began
                product_id = int(path.rsplit("/", 1)[1])
                assert 1 <= product_id <= 50 and product_id not in lines
                assert 1 <= json.loads(body)["quantity"] <= 3
                lines.append(product_id)
                assert len(lines) <= 3
            else:
                assert (method, path, body) == ("POST", "/api/cart/checkout", "{}")
                assert 1 <= len(lines) <= 3
                checkouts += status == 201
                conflicts += status == 409
                after_409, lines = status == 409, []
    assert {s for *_, s in log} <= {200, 201, 204, 409}  # never an empty cart's 422
    assert conflicts >= 1

    # the RESULT line: report.lua's fields plus the counts (the answers wrk saw before it
    # stopped: at most one a connection fewer than the server sent)
    for field in ("requests", "rps", "p50_ms", "p99_ms", "non2xx", "socket_errors"):
        assert field in res
    assert checkouts - 4 <= res["checkouts"] <= checkouts
    assert conflicts - 4 <= res["checkout_409"] <= conflicts
    assert res["checkout_422"] == 0 and res["other_non2xx"] == 0
    assert res["non2xx"] == res["checkout_409"]
    assert res["checkouts_per_s"] == pytest.approx(res["checkouts"] / res["seconds"], rel=0.01)
    sent = len(log)
    assert (
        sent - 4
        <= res["puts_ok"] + res["checkouts"] + res["checkout_409"] + res["carts_cleared"]
        <= sent
    )


@pytest.mark.no_db
def test_summary_shows_checkout_for_shopapi_alone_with_its_checkouts_per_second(tmp_path):
    def row(server: str, scenario: str, rps: float, **counts: int) -> dict:
        return {
            "kind": "wrk",
            "server": server,
            "scenario": scenario,
            "round": 1,
            "conn": 16,
            "threads": 16 if scenario == "checkout" else 1,
            "rps": rps,
            "p50_ms": 4.0,
            "p99_ms": 12.0,
            "requests": int(rps * 5),
            "duration": "5s",
            "non2xx": counts.get("non2xx", 0),
            "socket_errors": 0,
            **counts,
        }

    def summarize(rows: list[dict]) -> str:
        results = tmp_path / "results.jsonl"
        results.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return subprocess.run(
            [sys.executable, "bench/summarize.py", str(results)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    rows = [
        row("peer", "order_create", 100.0),
        row("shopapi", "order_create", 200.0),
        row("shopapi", "checkout", 300.0, checkouts_per_s=120.0, non2xx=2, checkout_409=2),
        row("peer", "hello", 500.0),
    ]
    summary = summarize(rows)
    table = [line for line in summary.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in table[1:]]
    assert names == ["hello", "order_create", "checkout"]
    assert "| checkout | — | 300 | — | — | 4.0 / 12.0 | — / 2 |" in summary
    assert "- checkout: 120 checkouts/s = 300 requests/s, cart of 1–3 lines" in summary
    assert "wrk -t16 -c16" in summary
    assert "2 × 409 insufficient_stock" in summary and "0 × 422" in summary
    assert "⚠" not in summary  # a rare 409 is an answer of the run, not a failure

    rows[2] = row(
        "shopapi",
        "checkout",
        300.0,
        checkouts_per_s=120.0,
        non2xx=3,
        checkout_409=2,
        checkout_422=1,
    )
    summary = summarize(rows)
    assert "1 × 422 (an empty cart: must be 0)" in summary
    assert "⚠ shopapi checkout: 1 of 1500" in summary

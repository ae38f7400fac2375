"""What an anonymous client can make a list cost (issue 18, item 3): the offset cap on every
list, the limits of `q`, the bounded ranked search and totals, the worker's list slots."""

from __future__ import annotations

import re

import psycopg
import pytest

from shopapi.db import queries
from tests.conftest import (
    assert_problem,
    backends,
    db_rows,
    in_background,
    run_sql,
    wait_for,
)

LIST_KEYS = {"items", "page", "per_page", "total", "next_cursor"}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json["items"]]


# ------------------------------------------------------------------ offset cap

# (path, who asks, whether the list takes a cursor)
LISTS = [
    ("/api/products", None, True),
    ("/api/orders", "customer", True),
    ("/api/users", "admin", False),
    ("/api/categories", None, False),
    ("/api/products/1/stock-movements", "admin", False),
    ("/api/shipping-methods", None, False),
    ("/api/webhooks", "admin", False),
    ("/api/webhooks/1/deliveries", "admin", False),
    ("/api/me/addresses", "customer", False),
]


@pytest.mark.parametrize(("path", "who", "takes_cursor"), LISTS)
def test_offset_paging_stops_at_ten_thousand_rows_on_every_list(
    client, admin, customer, path, who, takes_cursor
):
    headers = {"admin": admin.headers, "customer": customer.headers, None: {}}[who]
    # the deepest offset page allowed still answers (an empty page past the end)...
    for params in ({"page": 500, "per_page": 20}, {"page": 100, "per_page": 100}):
        reached = client.simulate_get(path, params=params, headers=headers)
        assert reached.status_code in (200, 404), reached.text  # 404: the parent does not exist
    # ...one row further is a 422 that says how to go on
    for params in ({"page": 501, "per_page": 20}, {"page": 101, "per_page": 100}, {"page": 10**9}):
        body = assert_problem(
            client.simulate_get(path, params=params, headers=headers), 422, "validation_error"
        )
        assert "10000" in body["detail"]
        assert body["errors"][0]["field"] == "page"
        assert ("cursor" in body["detail"]) is takes_cursor


def test_a_cursor_goes_past_the_offset_cap(client, make_product):
    for _ in range(3):
        make_product()
    first = client.simulate_get("/api/products", params={"per_page": 1})
    after = client.simulate_get(
        "/api/products", params={"per_page": 1, "cursor": first.json["next_cursor"]}
    )
    assert after.status_code == 200 and after.json["page"] is None


# ------------------------------------------------------------------ q and in_stock


def test_search_of_at_most_twenty_words_and_two_hundred_characters(client, make_product):
    lamp = make_product(name="Desk lamp")
    twenty = " ".join(["lamp"] * 20)
    assert ids(client.simulate_get("/api/products", params={"q": twenty})) == [lamp["id"]]
    for q in (
        " ".join(["lamp"] * 21),
        # words are runs of letters and digits, as the full-text parser splits them
        "-".join(["lamp"] * 21),
        "lamp " + "x" * 196,
    ):
        body = assert_problem(
            client.simulate_get("/api/products", params={"q": q}), 422, "validation_error"
        )
        assert body["errors"][0]["field"] == "q"


def test_in_stock_false_is_refused_not_ignored(client, make_product):
    in_stock = make_product(stock=5)
    make_product(stock=0)
    body = assert_problem(
        client.simulate_get("/api/products", params={"in_stock": "false"}), 422, "validation_error"
    )
    assert body["errors"][0]["field"] == "in_stock"
    assert ids(client.simulate_get("/api/products", params={"in_stock": "true"})) == [
        in_stock["id"]
    ]
    assert len(ids(client.simulate_get("/api/products"))) == 2


# ------------------------------------------------------------------ bounded ranked search


def test_ranked_search_ranks_only_the_newest_candidates(app_client, make_product):
    client = app_client(SEARCH_CANDIDATES=3)
    oldest_name_match = make_product(name="Reading lamp")
    older = [make_product(name=f"Shade {n}", description="for a lamp") for n in range(2)]
    name_match = make_product(name="Floor lamp")
    newest = make_product(name="Cable", description="lamp cable")
    make_product(name="Chair")
    response = client.simulate_get("/api/products", params={"q": "lamp"})
    # the three newest matches, the name match first; the oldest matches are not ranked
    assert ids(response) == [name_match["id"], newest["id"], older[1]["id"]]
    assert response.json["total"] == 3
    assert oldest_name_match["id"] not in ids(response)
    # pages and cursors walk the same three, each answer with the same total
    page_two = client.simulate_get("/api/products", params={"q": "lamp", "per_page": 2, "page": 2})
    assert ids(page_two) == [older[1]["id"]] and page_two.json["total"] == 3
    first = client.simulate_get("/api/products", params={"q": "lamp", "per_page": 2})
    walked = ids(first)
    cursor_page = client.simulate_get(
        "/api/products", params={"q": "lamp", "per_page": 2, "cursor": first.json["next_cursor"]}
    )
    walked += ids(cursor_page)
    assert walked == ids(response) and cursor_page.json["total"] == 3
    assert cursor_page.json["next_cursor"] is None
    past = client.simulate_get("/api/products", params={"q": "lamp", "per_page": 2, "page": 5})
    assert past.json["items"] == [] and past.json["total"] == 3
    # an explicit sort searches every match, the oldest name match included
    by_name = client.simulate_get("/api/products", params={"q": "lamp", "sort": "name"})
    assert oldest_name_match["id"] in ids(by_name) and by_name.json["total"] == 5


def test_ranked_search_keeps_filters(app_client, make_product, make_category):
    client = app_client(SEARCH_CANDIDATES=2)
    kitchen = make_category("Kitchen")
    in_kitchen = make_product(name="Kitchen lamp", category_id=kitchen["id"])
    for n in range(3):
        make_product(name=f"Lamp {n}")  # newer matches in another category
    response = client.simulate_get(
        "/api/products", params={"q": "lamp", "category_id": kitchen["id"]}
    )
    # the candidates are the newest matches of the filters, not of the whole catalog
    assert ids(response) == [in_kitchen["id"]] and response.json["total"] == 1


def _many_products(database_url: str, count: int, category_id: int) -> None:
    db_rows(
        database_url,
        """
        INSERT INTO products (name, description, price_cents, stock, category_id)
        SELECT 'Bulk ' || n, 'everyday item', 100 + n, 0, %s
          FROM generate_series(1, %s) n
        RETURNING 0""",
        (category_id, count),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE products")


def test_totals_past_ten_thousand_are_estimates_and_say_so(
    client, database_url, make_category, make_product
):
    bulk = make_category("Bulk")
    _many_products(database_url, 10_050, bulk["id"])
    few = [make_product(name=f"Rare thing {n}") for n in range(3)]
    body = client.simulate_get("/api/products", params={"per_page": 5}).json
    assert body["total_is_estimate"] is True
    assert body["total"] > 10_000  # PostgreSQL's estimate of the 10,053 rows
    assert set(body) == LIST_KEYS | {"total_is_estimate"}
    # a filter set within the limit is counted exactly, and the answer keeps the list shape
    exact = client.simulate_get("/api/products", params={"per_page": 2, "q": "rare"}).json
    assert exact["total"] == 3 and set(exact) == LIST_KEYS
    assert [item["id"] for item in exact["items"]] == [few[2]["id"], few[1]["id"]]
    searched = client.simulate_get(
        "/api/products", params={"per_page": 2, "q": "everyday", "sort": "price_cents"}
    ).json
    assert searched["total_is_estimate"] is True and searched["total"] > 10_000
    # a ranked search of a word in 10,050 products ranks the newest 300: that is its total
    ranked = client.simulate_get("/api/products", params={"q": "everyday"}).json
    assert ranked["total"] == 300 and set(ranked) == LIST_KEYS
    assert (
        client.simulate_get("/api/products", params={"q": "everyday", "page": 16}).json["items"]
        == []
    )


def ranked_search_params(word: str) -> dict:
    """list_products_by_relevance's parameters as the app sends them for `?q=word`: page 1,
    active products, no filter, SEARCH_CANDIDATES' default."""
    return {
        "currency": "USD",
        "include_inactive": False,
        "category_id": None,
        "min_price": None,
        "max_price": None,
        "in_stock": False,
        "q": word,
        "prefix": word + "%",
        "candidates": 300,
        "after_key": None,
        "after_id": None,
        "limit": 21,
        "offset": 0,
    }


def _candidate_step(database_url: str, word: str, match_cost: int = 100) -> str:
    """The plan PostgreSQL makes for the ranked search of `word`, sent as the app sends it
    (unprepared, its values bound): how it finds the newest candidates. `match_cost`: the
    cost of @@ while it plans (0013 sets 100; PostgreSQL's own is 1), undone afterwards."""
    sql = queries.list_products_by_relevance.sql
    params = ranked_search_params(word)
    with psycopg.connect(database_url, prepare_threshold=None) as conn:
        conn.execute(f"ALTER FUNCTION ts_match_vq(tsvector, tsquery) COST {int(match_cost)}")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params).fetchall())
        conn.rollback()
    # the walk goes down products_created_idx or its active-only twin (0004)
    if re.search(r"Index Scan Backward using products_(active_)?created_idx", plan):
        return "walk"
    if "Bitmap Index Scan on products_search_idx" in plan:
        return "read matches"
    raise AssertionError(plan)


def test_the_ranked_search_reads_the_matches_of_a_common_word_and_walks_for_a_ubiquitous_one(
    database_url, make_category
):
    """Migration 0013 prices @@ as what it costs. On bin/seed's 10k generated products (the
    bench's catalog) a word in 10 % of them is read from the GIN index (1,000 rows), not found
    by walking ~3,000 of the newest; a word in every product is still found by the walk (300
    rows instead of 10,000). Priced at 1, PostgreSQL walked for the 10 % word too."""
    bulk = make_category("Bulk")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            queries.seed_generated_products.sql,
            {"first": 1, "last": 10_000, "category_ids": [bulk["id"]]},
        )
        conn.execute("VACUUM ANALYZE products")
        chair = "SELECT count(*) FROM products WHERE search @@ to_tsquery('english', 'chair')"
        assert conn.execute(chair).fetchone()[0] == 1_000
    assert _candidate_step(database_url, "chair") == "read matches"
    assert _candidate_step(database_url, "generated") == "walk"
    assert _candidate_step(database_url, "chair", match_cost=1) == "walk"


# ------------------------------------------------------------------ the worker's list slots


def _lock_products(database_url: str) -> psycopg.Connection:
    """A transaction holding products exclusively: a list query that reaches it waits."""
    conn = psycopg.connect(database_url)
    conn.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
    return conn


def _waiting_list_queries(database_url: str) -> int:
    return len(backends(database_url, waiting_on_lock=True))


def test_uncached_lists_beyond_the_worker_slots_get_503(app_client, database_url, make_category):
    category = make_category("Lamps")
    client = app_client(CACHE_ENABLED=False, LIST_QUERIES=1, LIST_QUEUE_TIMEOUT=0.3)
    lock = _lock_products(database_url)
    try:
        held = in_background(lambda: client.simulate_get("/api/products"))
        wait_for(lambda: _waiting_list_queries(database_url) == 1, 10, what="a blocked list")
        # the one slot is taken: another list (of a table nobody locked) waits 0.3 s, then 503
        for path in ("/api/categories", "/api/shipping-methods"):
            shed = client.simulate_get(path)
            body = assert_problem(shed, 503, "service_unavailable")
            assert shed.headers["retry-after"] == "1" and "retry" in body["detail"]
        # reads that are not lists do not wait for list slots
        assert client.simulate_get(f"/api/categories/{category['id']}").status_code == 200
    finally:
        lock.rollback()
        lock.close()
    assert held.join().status_code == 200
    assert client.simulate_get("/api/categories").status_code == 200  # the slot came back
    assert client.simulate_get("/api/shipping-methods").status_code == 200


def test_uncached_lists_queue_for_a_slot_within_the_timeout(app_client, database_url, make_product):
    make_product()
    client = app_client(CACHE_ENABLED=False, LIST_QUERIES=1, LIST_QUEUE_TIMEOUT=10)
    lock = _lock_products(database_url)
    try:
        first = in_background(lambda: client.simulate_get("/api/products"))
        wait_for(lambda: _waiting_list_queries(database_url) == 1, 10, what="a blocked list")
        second = in_background(lambda: client.simulate_get("/api/products", params={"page": 2}))
        # the second waits for the slot, not in PostgreSQL: still one query at the lock
        wait_for(lambda: False, 0.5, default=None)
        assert _waiting_list_queries(database_url) == 1
    finally:
        lock.rollback()
        lock.close()
    assert first.join().status_code == 200
    queued = second.join()
    assert queued.status_code == 200 and queued.json["items"] == []


def test_the_ranked_search_is_planned_for_its_words_never_prepared(app_loop, pool):
    """psycopg prepares a statement after 5 runs and PostgreSQL then keeps one generic plan
    for every value: for the ranked search that is the walk of the newest products, 22 ms for
    a word in 5 % of 10k products where its own plan reads the GIN matches in 3 ms. It is
    sent unprepared (shopapi.db.UNPREPARED) every time; other statements still get prepared."""

    async def work(conn):
        for _ in range(8):
            rows = queries.list_products_by_relevance(conn, **ranked_search_params("lamp"))
            assert [row async for row in rows] == []
            assert await queries.get_product(conn, id=1, currency="USD") is None
        cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
        return [row["statement"] for row in await cur.fetchall()]

    statements = run_sql(app_loop, pool, work)

    assert any("FROM product_documents d\nWHERE d.id = $2" in s for s in statements), statements
    assert not any("ts_rank" in s for s in statements), statements

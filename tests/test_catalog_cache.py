"""The catalog cache and ETags: hits and misses, no stale read after a write, Redis failures."""

import logging
import random
import time
from dataclasses import replace

import pytest
import redis.asyncio
from falcon import testing

from shopapi import cache
from shopapi.app import create_app
from shopapi.instruments import CACHE_HIT, CACHE_MISS
from tests.conftest import REDIS_URL, db_rows


class CountingRedis(redis.asyncio.Redis):
    """A real client that counts the commands it sends (one per round trip here)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    async def execute_command(self, *args, **options):
        self.calls += 1
        return await super().execute_command(*args, **options)


def products_changed(app_loop, app, *product_ids: int) -> None:
    """What an order tells the cache after its commit: these products' stock moved."""
    app_loop.run(app.ctx.cache.invalidate, *cache.stock_keys(product_ids))


def set_stock(database_url, product_id: int, stock: int) -> None:
    """Stock moved by something other than the product API (an order), without the cache."""
    db_rows(
        database_url,
        "UPDATE products SET stock = %s WHERE id = %s RETURNING id",
        (stock, product_id),
    )


def get(client, url, **params):
    response = client.simulate_get(url, params=params or None)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture()
def second_client(async_redis, settings, pool, redis_client):
    """Another worker: its own app on the same PostgreSQL and Redis."""
    return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))


def test_product_detail_is_a_miss_then_a_hit(client, make_product):
    product = make_product(name="Vase")
    url = f"/api/products/{product['id']}"
    hits, misses = CACHE_HIT._value.get(), CACHE_MISS._value.get()
    first = get(client, url)
    second = get(client, url)
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == "application/json"
    assert (CACHE_HIT._value.get() - hits, CACHE_MISS._value.get() - misses) == (1, 1)


def test_a_cached_read_touches_no_database_and_makes_one_redis_round_trip(
    settings, pool, make_product, query_counter, app_loop
):
    product = make_product()
    counting = CountingRedis.from_url(REDIS_URL)
    app_client = testing.TestClient(create_app(settings, pool=pool, redis=counting))
    url = f"/api/products/{product['id']}"
    get(app_client, url)  # warm
    for path in (url, "/api/products"):
        get(app_client, path)  # warm the list too
        before = counting.calls
        with query_counter() as counted:
            response = get(app_client, path)
        assert response.headers["x-cache"] == "hit"
        assert counted.n == 0
        assert counting.calls - before == 1
    app_loop.run(counting.aclose)


def test_lists_and_categories_are_cached_too(client, make_product, make_category):
    category = make_category("Lamps")
    make_product(category_id=category["id"])
    for url in ("/api/products", "/api/categories", f"/api/categories/{category['id']}"):
        assert get(client, url).headers["x-cache"] == "miss"
        assert get(client, url).headers["x-cache"] == "hit"
    # another query is another entry
    assert get(client, "/api/products", per_page=5).headers["x-cache"] == "miss"


def test_staff_edit_is_visible_on_the_next_read_of_every_worker(
    client, second_client, editor, make_product
):
    product = make_product(price_cents=100)
    url = f"/api/products/{product['id']}"
    for c in (client, second_client):
        get(c, url)
        get(c, "/api/products")
    client.simulate_patch(url, headers=editor.headers, json={"price_cents": 250})
    detail = get(second_client, url)
    assert detail.json["price_cents"] == 250 and detail.headers["x-cache"] == "miss"
    assert get(second_client, "/api/products").json["items"][0]["price_cents"] == 250
    assert get(client, url).headers["x-cache"] == "hit"


def test_created_and_deleted_products_show_in_lists_at_once(
    client, admin, make_product, make_category
):
    kept = make_product()
    get(client, "/api/products")
    get(client, "/api/products")
    created = client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={"name": "New", "price_cents": 1, "category_id": kept["category_id"]},
    ).json
    listed = get(client, "/api/products")
    assert [p["id"] for p in listed.json["items"]] == [created["id"], kept["id"]]
    client.simulate_delete(f"/api/products/{created['id']}", headers=admin.headers)
    assert [p["id"] for p in get(client, "/api/products").json["items"]] == [kept["id"]]
    assert client.simulate_get(f"/api/products/{created['id']}").status_code == 404


def test_deactivated_product_leaves_detail_and_lists_at_once(client, editor, make_product):
    product = make_product()
    url = f"/api/products/{product['id']}"
    get(client, url)
    get(client, "/api/products")
    client.simulate_patch(url, headers=editor.headers, json={"is_active": False})
    assert client.simulate_get(url).status_code == 404
    assert get(client, "/api/products").json["total"] == 0


def test_products_changed_invalidates_only_what_shows_those_products(
    client, app, make_product, database_url, app_loop
):
    older = make_product(stock=5)
    newer = make_product(stock=5)
    pages = [("/api/products", {"per_page": 1, "page": n}) for n in (1, 2)]
    for url, params in pages:
        get(client, url, **params)
    get(client, f"/api/products/{older['id']}")
    get(client, f"/api/products/{newer['id']}")

    set_stock(database_url, older["id"], 2)  # an order committed...
    products_changed(app_loop, app, older["id"])  # ...and told the cache

    detail = get(client, f"/api/products/{older['id']}")
    assert detail.json["stock"] == 2 and detail.headers["x-cache"] == "miss"
    page_with_older = get(client, "/api/products", per_page=1, page=2)
    assert page_with_older.json["items"][0]["stock"] == 2
    assert page_with_older.headers["x-cache"] == "miss"
    # what does not show that product stays cached
    assert get(client, f"/api/products/{newer['id']}").headers["x-cache"] == "hit"
    assert get(client, "/api/products", per_page=1, page=1).headers["x-cache"] == "hit"


def test_in_stock_lists_follow_stock_changed_by_orders(
    client, app, make_product, database_url, app_loop
):
    selling = make_product(stock=1)
    other = make_product(stock=3)
    assert get(client, "/api/products", in_stock="true", per_page=1).json["total"] == 2
    set_stock(database_url, selling["id"], 0)
    products_changed(app_loop, app, selling["id"])
    # `selling` was not on that page, but it left the list: the total moved
    page = get(client, "/api/products", in_stock="true", per_page=1)
    assert page.json["total"] == 1 and page.json["items"][0]["id"] == other["id"]


def test_category_rename_shows_in_cached_products(client, editor, make_product, make_category):
    category = make_category("Old name")
    product = make_product(category_id=category["id"])
    url = f"/api/products/{product['id']}"
    get(client, url), get(client, url)
    get(client, f"/api/categories/{category['id']}")
    client.simulate_patch(
        f"/api/categories/{category['id']}", headers=editor.headers, json={"name": "New name"}
    )
    assert get(client, url).json["category"]["name"] == "New name"
    assert get(client, "/api/products").json["items"][0]["category"]["name"] == "New name"
    assert get(client, f"/api/categories/{category['id']}").json["name"] == "New name"


def test_new_category_shows_in_cached_category_lists(client, editor, make_category):
    make_category("First")
    get(client, "/api/categories")
    get(client, "/api/categories")
    client.simulate_post("/api/categories", headers=editor.headers, json={"name": "Second"})
    listed = get(client, "/api/categories")
    assert listed.json["total"] == 2 and listed.headers["x-cache"] == "miss"


def test_a_list_fill_racing_with_a_product_change_is_not_stored(app, make_product, app_loop):
    product = make_product()
    lookup = cache.product_list_key("race-test", False)
    loads = []

    async def load():
        loads.append(1)
        if len(loads) == 1:  # an order commits while the page is being read
            await app.ctx.cache.invalidate(*cache.stock_keys([product["id"]]))
        return cache.pack(b"{}"), [product["id"]]

    assert app_loop.run(app.ctx.cache.read_through, lookup, load)[1] == "miss"
    assert app_loop.run(app.ctx.cache.read_through, lookup, load)[1] == "miss"
    assert app_loop.run(app.ctx.cache.read_through, lookup, load)[1] == "hit"
    assert len(loads) == 2


def test_lost_version_keys_never_bring_back_an_old_entry(
    client, make_product, redis_client, database_url
):
    product = make_product(price_cents=100)
    url = f"/api/products/{product['id']}"
    get(client, url)
    db_rows(database_url, "UPDATE products SET price_cents = 5 RETURNING id")
    # eviction takes every version key (and the counter) but not the entry
    versions = [
        k for k in redis_client.scan_iter("cat:*") if k.startswith(b"cat:pv:") or k.count(b":") == 1
    ]
    assert b"cat:gen" in versions and b"cat:cv" in versions
    redis_client.delete(*versions)
    response = get(client, url)
    assert response.headers["x-cache"] == "miss" and response.json["price_cents"] == 5


def test_if_none_match_gives_304_without_a_body(client, make_product):
    product = make_product()
    for url in (f"/api/products/{product['id']}", "/api/products", "/api/categories"):
        first = get(client, url)
        etag = first.headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = client.simulate_get(url, headers={"If-None-Match": header})
            assert again.status_code == 304, (url, header)
            assert again.content == b""
            assert again.headers["etag"] == etag
        assert client.simulate_get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_etag_changes_when_the_product_changes(client, editor, make_product):
    product = make_product()
    url = f"/api/products/{product['id']}"
    etag = get(client, url).headers["etag"]
    client.simulate_patch(url, headers=editor.headers, json={"name": "Renamed"})
    assert client.simulate_get(url, headers={"If-None-Match": etag}).status_code == 200


def test_cache_disabled_reads_from_postgres_only(
    async_redis, settings, pool, redis_client, make_product
):
    product = make_product()
    off = testing.TestClient(
        create_app(replace(settings, cache_enabled=False), pool=pool, redis=async_redis)
    )
    for _ in range(2):
        response = get(off, f"/api/products/{product['id']}")
        assert "x-cache" not in response.headers
        assert response.headers["etag"]
    get(off, "/api/products")
    assert redis_client.dbsize() == 0


@pytest.fixture()
def dead_redis_client(settings, pool, app_loop):
    dead = redis.asyncio.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    yield testing.TestClient(create_app(settings, pool=pool, redis=dead))
    app_loop.run(dead.aclose)


def test_redis_down_serves_reads_from_postgres_and_logs_a_warning(
    dead_redis_client, make_product, make_category, caplog
):
    product = make_product(name="Survivor")
    category = make_category("Still here")
    with caplog.at_level(logging.WARNING, logger="shopapi.cache"):
        detail = get(dead_redis_client, f"/api/products/{product['id']}")
        assert detail.json["name"] == "Survivor" and detail.headers["x-cache"] == "miss"
        assert get(dead_redis_client, "/api/products").json["total"] == 1
        assert get(dead_redis_client, f"/api/categories/{category['id']}").json["id"]
        assert get(dead_redis_client, "/api/categories").json["total"] == 2  # + "Default"
    assert any("Redis failed" in r.getMessage() for r in caplog.records)


def test_redis_down_does_not_block_writes(
    dead_redis_client, make_user, make_category, database_url
):
    admin = make_user("ADMIN")
    category = make_category()
    response = dead_redis_client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={"name": "Written", "price_cents": 10, "category_id": category["id"], "stock": 2},
    )
    assert response.status_code == 201
    patched = dead_redis_client.simulate_patch(
        f"/api/products/{response.json['id']}", headers=admin.headers, json={"stock": 3}
    )
    assert patched.status_code == 200
    assert db_rows(database_url, "SELECT name, stock FROM products") == [("Written", 3)]


def test_lost_invalidation_is_caught_up_before_the_cache_is_used_again(
    settings, pool, redis_client, make_user, make_product, monkeypatch, app_loop
):
    """A bump that fails (Redis unreachable) must not leave the old entry to be served later."""
    monkeypatch.setattr(cache, "BACKOFF", 0.01)
    fragile = redis.asyncio.Redis.from_url(
        REDIS_URL, socket_timeout=0.2, socket_connect_timeout=0.2
    )
    app_client = testing.TestClient(create_app(settings, pool=pool, redis=fragile))
    admin = make_user("ADMIN")
    product = make_product(price_cents=100)
    url = f"/api/products/{product['id']}"
    get(app_client, url)
    assert get(app_client, url).headers["x-cache"] == "hit"  # cached at price 100
    # this worker loses Redis (connection refused) while the edit commits...
    fragile.connection_pool.connection_kwargs["port"] = 1
    fragile.connection_pool.reset()  # drop the open connections: new ones go to the dead port
    patched = app_client.simulate_patch(url, headers=admin.headers, json={"price_cents": 300})
    assert patched.status_code == 200
    # ...and gets it back
    fragile.connection_pool.connection_kwargs["port"] = 6379
    fragile.connection_pool.reset()
    time.sleep(0.02)  # past the back-off
    response = get(app_client, url)
    assert response.json["price_cents"] == 300
    app_loop.run(fragile.aclose)


def test_list_totals_are_cached_apart_from_pages(
    client, app, editor, make_product, query_counter, app_loop
):
    newest = None
    for _ in range(3):
        newest = make_product()
    get(client, "/api/products", per_page=1)  # page + count
    with query_counter() as counted:
        second = get(client, "/api/products", per_page=1, page=2)
    assert second.headers["x-cache"] == "miss" and second.json["total"] == 3
    with query_counter() as count_too:
        get(client, "/api/products", per_page=1, page=1, min_price_cents=1)
    assert counted.n == count_too.n - 1  # page 2 reused page 1's total
    # an order touching the newest product refills its page, not the total
    products_changed(app_loop, app, newest["id"])
    with query_counter() as refill:
        first = get(client, "/api/products", per_page=1)
    assert first.headers["x-cache"] == "miss" and refill.n == counted.n
    # a staff write moves membership: the total is counted again
    client.simulate_post(
        "/api/products",
        headers=editor.headers,
        json={"name": "Fourth", "price_cents": 1, "category_id": newest["category_id"]},
    )
    assert get(client, "/api/products", per_page=1, page=2).json["total"] == 4


# ------------------------------------------------------------------ bounded memory (issue 18, 4)

# the keys the cache writes without a TTL: the counter and the global versions, five in all
UNEXPIRING = {cache.GEN, cache.CATALOG_VERSION, cache.LIST_VERSION, cache.STOCK_VERSION}
UNEXPIRING |= {cache.CATEGORY_LIST_VERSION}


def test_reads_of_unknown_product_ids_leave_the_redis_key_count_unchanged(
    app_client, make_product, redis_client
):
    """Issue 18 item 4: 10,000 GETs of random unknown ids, through the hot path (the rate
    limiter's prefetch) and without it, create no key at all. Before, each unknown id left a
    version key without a TTL behind: Redis grew without bound from anonymous requests."""
    rng = random.Random(18)
    known = make_product()
    limited = app_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_DEFAULT="100000000/day")
    plain = app_client()  # no limiter: the cache's own MGET
    for client in (limited, plain):  # warm: the counter, the versions, a window's counter
        assert get(client, f"/api/products/{known['id']}").status_code == 200
        assert client.simulate_get("/api/products/999999999").status_code == 404
    day = int(time.time() // 86400)
    keys_before, size_before = set(redis_client.scan_iter("*")), redis_client.dbsize()

    ids = rng.sample(range(10**6, 10**15), 10_000)
    for n, product_id in enumerate(ids):
        client = limited if n % 5 else plain
        response = client.simulate_get(f"/api/products/{product_id}")
        assert response.status_code == 404, response.text

    assert set(redis_client.scan_iter("*")) == keys_before
    if int(time.time() // 86400) == day:  # (a new day would add a rate-limit window's counter)
        assert redis_client.dbsize() == size_before
    # the known product is still one key hit
    assert get(limited, f"/api/products/{known['id']}").headers["x-cache"] == "hit"


def test_every_key_the_cache_writes_expires_except_five_global_ones(
    client, app, app_loop, editor, make_product, make_category, redis_client
):
    """Issue 18 item 4: after a mixed workload (detail, lists, totals, search, categories,
    writes, stock changes, a delete) every key has a TTL but the counter and the four global
    versions; products' versions live longer than CACHE_TTL (the module docstring says why an
    expired version never serves a stale entry)."""
    category = make_category(name="Lamps")
    products = [make_product(category_id=category["id"], name=f"Lamp {n}") for n in range(4)]
    ids = [p["id"] for p in products]
    for pid in ids:
        get(client, f"/api/products/{pid}")
        get(client, f"/api/products/{pid}")
    for params in ({}, {"in_stock": "true"}, {"q": "lamp"}, {"sort": "price_cents", "page": 2}):
        get(client, "/api/products", per_page=2, **params)
    get(client, "/api/categories")
    get(client, f"/api/categories/{category['id']}")
    patched = client.simulate_patch(
        f"/api/products/{ids[0]}", json={"price_cents": 777}, headers=editor.headers
    )
    assert patched.status_code == 200, patched.text
    products_changed(app_loop, app, ids[1], ids[2])  # what an order tells the cache
    deleted = client.simulate_delete(f"/api/products/{ids[3]}", headers=editor.headers)
    assert deleted.status_code == 204, deleted.text
    renamed = client.simulate_patch(
        f"/api/categories/{category['id']}", json={"name": "Lights"}, headers=editor.headers
    )
    assert renamed.status_code == 200, renamed.text
    for pid in ids[:3]:
        get(client, f"/api/products/{pid}")
    get(client, "/api/products", per_page=2)

    keys = {k.decode(): redis_client.ttl(k) for k in redis_client.scan_iter("*")}
    assert {k for k, ttl in keys.items() if ttl == -1} <= UNEXPIRING, keys
    assert all(k.startswith(cache.PREFIX) for k in keys), keys  # nothing else wrote here
    versions = {k: ttl for k, ttl in keys.items() if k.startswith(cache.PRODUCT_VERSION)}
    assert set(versions) == {cache.product_version(pid) for pid in ids}  # the deleted one too
    assert all(app.ctx.cache.ttl < ttl <= app.ctx.cache.version_ttl for ttl in versions.values())
    entries = [k for k in keys if k not in UNEXPIRING and k not in versions]
    assert len(entries) >= 8 and all(0 < keys[k] <= app.ctx.cache.ttl for k in entries)


def test_a_write_during_the_first_fill_of_a_product_is_not_hidden(app, make_product, app_loop):
    """A product read that found no version key fills at the counter's value; a write bumped
    while it read PostgreSQL keeps that fill out of the cache (the next read fills anew)."""
    product = make_product()
    loads = []

    async def load():
        loads.append(1)
        if len(loads) == 1:  # a write commits and bumps while the row is being read
            await app.ctx.cache.invalidate(cache.product_version(product["id"]))
        return cache.pack(b'{"n": %d}' % len(loads)), []

    read = app.ctx.cache.read_product
    assert app_loop.run(read, product["id"], load) == (cache.pack(b'{"n": 1}'), "miss")
    assert app_loop.run(read, product["id"], load) == (cache.pack(b'{"n": 2}'), "miss")
    assert app_loop.run(read, product["id"], load) == (cache.pack(b'{"n": 2}'), "hit")
    assert len(loads) == 2


def test_an_expired_product_version_never_brings_back_an_old_entry(
    client, app, app_loop, make_product, redis_client, database_url
):
    """A product's version expires (here: deleted, as expiry or eviction would) while its
    entry lives: after a write the entry is never served again; without a write the product
    is cached again."""
    product = make_product(price_cents=100)
    url, version = f"/api/products/{product['id']}", cache.product_version(product["id"])
    assert get(client, url).headers["x-cache"] == "miss"
    assert get(client, url).headers["x-cache"] == "hit"

    redis_client.delete(version)  # expired, nothing written meanwhile
    assert get(client, url).json["price_cents"] == 100
    assert get(client, url).headers["x-cache"] == "hit"  # cached again

    set_stock(database_url, product["id"], 3)  # a write, bumped after its commit
    products_changed(app_loop, app, product["id"])
    redis_client.delete(version)  # and its version expires before the old entry
    again = get(client, url)
    assert again.headers["x-cache"] == "miss" and again.json["stock"] == 3
    assert get(client, url).json["stock"] == 3

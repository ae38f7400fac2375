"""A cached product read costs one Redis round trip in all, rate limits included: its cache keys
ride in the rate limiter's batch (shopapi/middleware/rate_limit.py, through the
`products.cached_read_keys` callback create_app gives it)."""

import pytest
import redis.connection
from falcon import testing

from shopapi.app import create_app
from tests.conftest import make_settings


@pytest.fixture()
def sends(monkeypatch):
    """Counts what is written to Redis sockets: a batch is one send, like one command.
    A spy that wraps the real method (nothing is simulated)."""
    calls = []
    real_async = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counting_async(self, command, check_health=True):
        calls.append(command)
        return await real_async(self, command, check_health)

    monkeypatch.setattr(
        redis.asyncio.connection.AbstractConnection, "send_packed_command", counting_async
    )
    return calls


def _client(async_redis, database_url, pool, **overrides):
    options = {
        "RATE_LIMIT_ENABLED": "true",
        "CACHE_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "1000/minute",
        **overrides,
    }
    settings = make_settings(database_url, **options)
    return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))


def test_cached_product_read_is_one_redis_round_trip_with_rate_limits_on(
    async_redis, database_url, pool, make_product, sends, query_counter
):
    client = _client(async_redis, database_url, pool)
    product = make_product(price_cents=4242)
    first = client.simulate_get(f"/api/products/{product['id']}")
    assert first.headers["x-cache"] == "miss"
    sends.clear()
    with query_counter() as counted:
        hit = client.simulate_get(f"/api/products/{product['id']}")
    assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
    assert hit.json["price_cents"] == 4242
    assert "ratelimit-remaining" in hit.headers
    assert counted.n == 0
    assert len(sends) == 1  # INCR + EXPIRE + MGET in one pipeline


def test_a_write_is_still_seen_by_the_next_prefetched_read(
    async_redis, database_url, pool, make_product, editor
):
    client = _client(async_redis, database_url, pool)
    product = make_product(price_cents=100)
    assert client.simulate_get(f"/api/products/{product['id']}").json["price_cents"] == 100
    assert (
        client.simulate_patch(
            f"/api/products/{product['id']}", json={"price_cents": 200}, headers=editor.headers
        ).status_code
        == 200
    )
    again = client.simulate_get(f"/api/products/{product['id']}")
    assert again.json["price_cents"] == 200 and again.headers["x-cache"] == "miss"


def test_with_the_cache_off_the_limiter_fetches_nothing_and_reads_go_to_postgres(
    async_redis, database_url, pool, make_product, sends, query_counter
):
    client = _client(async_redis, database_url, pool, CACHE_ENABLED="false")
    product = make_product()
    client.simulate_get(f"/api/products/{product['id']}")
    sends.clear()
    with query_counter() as counted:
        read = client.simulate_get(f"/api/products/{product['id']}")
    assert read.status_code == 200 and "x-cache" not in read.headers
    assert counted.n == 1
    assert len(sends) == 1 and b"MGET" not in sends[0][0]  # the counters alone

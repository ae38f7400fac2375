"""A cached product read costs one Redis round trip in all, rate limits included: its cache keys
ride in the rate limiter's pipeline (shopapi/middleware/rate_limit.py, cache.prefetch_keys)."""

import pytest
import redis.connection
from falcon import testing

from shopapi.app import create_app
from tests.conftest import make_settings


@pytest.fixture()
def sends(monkeypatch):
    """Counts what is written to Redis sockets: a pipeline is one send, like one command.
    A spy that wraps the real method (nothing is simulated)."""
    calls = []
    real = redis.connection.AbstractConnection.send_packed_command
    real_async = redis.asyncio.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        calls.append(command)
        return real(self, command, check_health)

    async def counting_async(self, command, check_health=True):
        calls.append(command)
        return await real_async(self, command, check_health)

    # threads use the blocking client, the event loop (rate limits + prefetch) the asyncio one
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command",
                        counting_async)
    return calls


def _client(async_redis, database_url, pool, redis_client, **overrides):
    settings = make_settings(database_url, RATE_LIMIT_ENABLED="true", CACHE_ENABLED="true",
                             RATE_LIMIT_DEFAULT="1000/minute", **overrides)
    return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))


def test_cached_product_read_is_one_redis_round_trip_with_rate_limits_on(
        database_url, pool, redis_client, make_product, sends, query_counter):
    client = _client(database_url, pool, redis_client)
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
        database_url, pool, redis_client, make_product, editor):
    client = _client(database_url, pool, redis_client)
    product = make_product(price_cents=100)
    assert client.simulate_get(f"/api/products/{product['id']}").json["price_cents"] == 100
    assert client.simulate_patch(f"/api/products/{product['id']}", json={"price_cents": 200},
                                 headers=editor.headers).status_code == 200
    again = client.simulate_get(f"/api/products/{product['id']}")
    assert again.json["price_cents"] == 200 and again.headers["x-cache"] == "miss"


def test_no_prefetch_when_the_cache_client_is_another_database(
        database_url, pool, make_product, sends):
    other = redis.Redis.from_url("redis://127.0.0.1:6379/14")  # limits count in db 15
    client = _client(database_url, pool, other)
    product = make_product()
    client.simulate_get(f"/api/products/{product['id']}")
    sends.clear()
    hit = client.simulate_get(f"/api/products/{product['id']}")
    assert hit.headers["x-cache"] == "hit"
    assert len(sends) == 2  # counters, then the cache's own MGET in its own database
    other.flushdb()

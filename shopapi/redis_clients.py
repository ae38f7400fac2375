"""The Redis clients of a worker: one for the event loop, one for blocking code on threads.

Short timeouts: a dead Redis must degrade the API, never stall it. No retries: redis-py 7's
default retries with backoff would turn one hung command into seconds.
"""

from __future__ import annotations

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from shopapi.config import Settings


def _options(settings: Settings) -> dict:
    return {"socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
            "health_check_interval": 30}


def make_redis(settings: Settings) -> redis.Redis:
    """For code on the thread pool (and the CLI): cache writes, user-state pub/sub."""
    return redis.Redis.from_url(settings.redis_dsn, retry=Retry(NoBackoff(), 0),
                                **_options(settings))


def make_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """For code on the event loop: the rate-limit counters and the cached reads riding with
    them. Its connections belong to the loop that first uses them (one per worker)."""
    return redis.asyncio.Redis.from_url(settings.redis_dsn, retry=AsyncRetry(NoBackoff(), 0),
                                        **_options(settings))


_SHARED = ("host", "port", "db", "username", "password", "socket_timeout",
           "socket_connect_timeout", "health_check_interval")


def async_client_like(client: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client of the very server and database `client` talks to (same timeouts)."""
    kwargs = client.connection_pool.connection_kwargs
    options = {name: kwargs[name] for name in _SHARED if name in kwargs}
    if "path" in kwargs:
        options["unix_socket_path"] = kwargs["path"]
    return redis.asyncio.Redis(retry=AsyncRetry(NoBackoff(), 0), **options)

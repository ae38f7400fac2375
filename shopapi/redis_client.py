"""The worker's Redis client, and the batches the rate limiter sends on its connections.

Short timeouts: a dead Redis must degrade the API, never stall it. No retries: redis-py 7's
default retries with backoff would turn one hung command into seconds.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shopapi.config import Settings


def make_redis(settings: Settings) -> redis.asyncio.Redis:
    """The worker's one client, shared by the catalog cache, the rate limiter and the
    user-state listener. Its connections belong to the event loop that first uses them."""
    return redis.asyncio.Redis.from_url(
        settings.redis_dsn,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )


class Batches:
    """Sends a batch of commands in one write and reads every reply: the rate limiter's round
    trip, made on every request, without redis-py's pool and Pipeline. Their checkout, release
    and bookkeeping cost more CPU than the round trip itself (measured here: 170 µs of CPU for
    a pipelined INCR + EXPIRE + MGET, 95 µs this way).

    The connections are redis-py's own, with `client`'s settings (timeouts, database). One
    serves one batch at a time and is kept for the next; one that failed, timed out or was
    interrupted is closed and never reused. A kept connection that Redis closed meanwhile
    (a restart) is replaced by a new one for the same batch.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        pool = client.connection_pool
        self._connect = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[redis.asyncio.connection.AbstractConnection] = []

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        while True:
            kept = bool(self._idle)
            conn = self._idle.pop() if kept else self._connect()
            try:
                await conn.send_packed_command(conn.pack_commands(commands))
                replies = [await conn.read_response() for _ in commands]
            except (redis.ConnectionError, ConnectionError):
                await _close(conn)
                if kept:  # closed by Redis while idle: nothing was counted, try a new one
                    continue
                raise
            except BaseException:  # an error reply, a timeout, a cancelled request: replies
                await _close(conn)  # may be left unread on it
                raise
            self._idle.append(conn)
            return replies


async def _close(conn: redis.asyncio.connection.AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)

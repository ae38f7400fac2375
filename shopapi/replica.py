"""Catalog reads on a streaming replica (DATABASE_READ_URL): never older than a write already
answered, and still served when the replica is down.

Read-your-writes, whatever the replica's lag: every write that catalog reads show (products,
categories, shipping methods, stock through orders) calls `catalog_written` after its commit and
before its answer. That reads the primary's WAL position (every commit answered so far lies
below it) and raises `WRITE_POSITION` in Redis to it, then invalidates the cache. A catalog
read that reaches the database (a cache miss, or the cache off) reads that position, and uses
the replica only if the replica has replayed that far (`pg_last_wal_replay_lsn()`), else the
primary. The cache reads its versions before the miss's load, and writers record their
position before they bump the versions: a fill that saw the new versions also sees a position
at least the write's, so no entry is filled from a replica that has not replayed the write.
This holds across instances (the position is in the Redis they share), for the writer and for
everyone else from the write's answer on.

The price, only with a replica configured: one more primary round trip and one Redis round
trip per catalog write or order, one Redis GET and one replica round trip per catalog read
that misses the cache. When Redis cannot say the position (down), reads go to the primary.

The replica failing (down, unreachable, no free connection within REPLICA_WAIT, or an error
mid-read): the read is run again on the primary, this worker's next reads go straight there for
SKIP_AFTER_FAILURE s (then one read tries the replica again), and a warning is logged at most
every LOG_EVERY s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import psycopg
import redis
import redis.asyncio
from psycopg_pool import PoolTimeout

from shopapi.db import Pool, connection, queries

if TYPE_CHECKING:
    from shopapi.cache import CatalogCache

log = logging.getLogger("shopapi.replica")

T = TypeVar("T")

# the highest primary WAL position (bytes) of a write catalog reads must show
WRITE_POSITION = "db:written"
# a day without writes and the key goes: every replica replayed that long ago
WRITE_POSITION_TTL = 86_400
# seconds a read waits for a replica connection before going to the primary
REPLICA_WAIT = 0.5
# after the replica failed, seconds this worker reads the primary without trying it
SKIP_AFTER_FAILURE = 1.0
LOG_EVERY = 5.0

_LUA_RAISE = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_REDIS_FAILURES = (redis.RedisError, OSError)
_DB_FAILURES = (psycopg.OperationalError, PoolTimeout)

Work = Callable[[psycopg.AsyncConnection], Awaitable[T]]


class ReadRouting:
    """Where a worker's catalog reads go: `read(work)` runs `work(conn)` on the replica when it
    is current enough and answers, else on the primary. Without a replica, on the primary."""

    def __init__(
        self, primary: Pool, replica: Pool | None, client: redis.asyncio.Redis | None
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.client = client
        self.writes = WritePositions(primary, client if replica is not None else None)
        self._logged_at = 0.0
        self._skip_until = 0.0  # time.monotonic() until which the replica is not tried
        # what happened to reads on the replica (tests and the cluster suite read these)
        self.on_replica = self.lagging = self.failed = 0

    async def read(self, work: Work[T]) -> T:
        if self.replica is not None and time.monotonic() >= self._skip_until:
            position = await self._written_position()
            if position is not None:
                try:
                    async with connection(self.replica, timeout=REPLICA_WAIT) as conn:
                        if position == 0 or await queries.replica_caught_up(
                            conn, position=position
                        ):
                            self.on_replica += 1
                            return await work(conn)
                    self.lagging += 1
                except _DB_FAILURES as exc:
                    self.failed += 1
                    self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE
                    self._warn(f"replica failed ({type(exc).__name__}: {exc}); reading the primary")
        async with connection(self.primary) as conn:
            return await work(conn)

    async def _written_position(self) -> int | None:
        """The position reads must reach; None when Redis cannot say (read the primary)."""
        if self.client is None:
            return None
        try:
            raw = await self.client.get(WRITE_POSITION)
        except _REDIS_FAILURES as exc:
            self._warn(f"Redis failed ({type(exc).__name__}); catalog reads use the primary")
            return None
        return int(raw) if raw else 0

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning("read replica: %s", message)


class WritePositions:
    """The writing side of read-your-writes: raises WRITE_POSITION in Redis after a write.
    The API's writes come through ReadRouting; the job worker (expired orders give stock
    back) has one of its own. Without Redis (no replica configured) it does nothing."""

    def __init__(self, primary: Pool, client: redis.asyncio.Redis | None) -> None:
        self.primary = primary
        self._raise = client.register_script(_LUA_RAISE) if client is not None else None

    async def note_write(self) -> None:
        """After a commit that catalog reads show: make every later catalog read at least as
        new. Failing here does not fail the (committed) write: it is logged."""
        if self._raise is None:
            return
        try:
            async with connection(self.primary) as conn:
                position = int(await queries.written_wal_position(conn))
            await self._raise([WRITE_POSITION], [position, WRITE_POSITION_TTL])
        except (*_REDIS_FAILURES, *_DB_FAILURES) as exc:
            log.warning(
                "read-your-writes: could not record a write's WAL position (%s: %s); the "
                "replica may serve older data until it catches up",
                type(exc).__name__,
                exc,
            )


async def catalog_written(
    writes: WritePositions | None, cache: CatalogCache, version_keys: tuple[str, ...]
) -> None:
    """After the commit of a write that catalog reads show (the API's or the worker's): the
    write's position first, then the cache versions, so no miss refills an entry from a
    replica that has not replayed the write. `writes`: None without a replica."""
    if writes is not None:
        await writes.note_write()
    if version_keys:
        await cache.invalidate(*version_keys)

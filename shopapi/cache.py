"""The catalog's read-through cache in Redis: one `CatalogCache` per worker, built by
`create_app` and carried on the app context.

Cached answers are the msgspec-encoded bytes of the response, stored as
`flag (b"1" visible to the public, b"0" staff only) + ETag (24 bytes) + body`, so a hit is
written to the socket as is: no database, no decoding, one Redis round trip. A product is
one MGET of its entry and its versions (the entry starts with the versions it was filled
at); the other entries carry their versions in the key, read by a Lua script.

    key                                holds                        a write makes it miss by
    cat:p:{id}                         one product, active or not   bumping cat:pv:{id} or cat:cv
    cat:pl:{digest}:{cv}:{lv}[:{sv}]   one product list page        bumping cat:lv (or cat:sv),
                                                                    or cat:pv:{id} of a product
                                                                    on the page (checked on read)
    cat:pt:{digest}:{cv}:{lv}[:{sv}]   the total of a filter set    as a list page, but orders
                                                                    only touch in_stock totals
    cat:c:{id}:{cv}                    one category                 bumping cat:cv
    cat:cl:{digest}:{cv}:{clv}         one category list page       bumping cat:cv or cat:clv

Entries live CACHE_TTL seconds; version keys never expire. Writers call `invalidate` with the
version keys their write moves, after the commit:

- product create/update/delete through the API: `product_version(id)` and `LIST_VERSION`
  (name, price, category or is_active may move it in or out of any list, or reorder one);
- stock changes (orders placed, cancelled, deleted): `stock_keys(ids)`, i.e. only those
  products' versions plus `STOCK_VERSION`, which only `in_stock=true` lists carry in their key.
  Stock is not a sort key and only moves membership of `in_stock` lists, so every other list
  page stays cached unless it shows one of those products. This is the trade-off chosen over a
  global bump per order (which would make every cached read miss under mixed traffic): list
  pages pay a few more GETs inside the script (one per product on the page), and
  `in_stock=true` lists are rebuilt after every order;
- category update/delete: `CATALOG_VERSION`, in every key (a product shows its category's
  name); category create: only `CATEGORY_LIST_VERSION`.

Versions are drawn from one monotonic counter, `GEN` (started at Redis' clock in µs), so a
version key lost to eviction comes back with a value never used before, and a list fill can
tell whether a product on its page changed while the page was read from PostgreSQL: if so
the page is answered but not stored. A reader reads the versions before it reads PostgreSQL,
and writers bump after their commit, so no read after a write's answer can see the old entry.

Redis down or slow: reads are served from PostgreSQL, a warning is logged, and the cache is
skipped for `BACKOFF` seconds so a dead Redis costs one timeout per worker per backoff. A bump
that fails is retried as a bump of the catalog version before this worker uses the cache
again; other workers may serve the old entry until it expires (at most CACHE_TTL). Turning the
cache off (CACHE_ENABLED=false) stops all Redis traffic, bumps included: turning it back on
within CACHE_TTL may serve entries cached before. With a read replica (DATABASE_READ_URL) a
fill may read a lagging replica: use synchronous replication with remote_apply for
read-your-writes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import redis
import redis.asyncio

from shopapi.etags import ETAG_LENGTH, etag_of
from shopapi.instruments import CACHE_HIT, CACHE_MISS

log = logging.getLogger("shopapi.cache")

PREFIX = "cat:"
GEN = PREFIX + "gen"  # the counter every version is drawn from
CATALOG_VERSION = PREFIX + "cv"  # categories: in every key
LIST_VERSION = PREFIX + "lv"  # product lists
STOCK_VERSION = PREFIX + "sv"  # in_stock=true product lists
CATEGORY_LIST_VERSION = PREFIX + "clv"  # category lists (a new category)
PRODUCT_VERSION = PREFIX + "pv:"  # + product id
PRODUCT = PREFIX + "p:"  # + product id: the entry of one product
BACKOFF = 1.0  # seconds the cache is skipped after a Redis failure
VISIBLE, STAFF_ONLY = b"1", b"0"

# version(k): the key's version, set from the counter when missing (first use or eviction)
_LUA_VERSION = f"""
local function gen()
  local g = redis.call('GET', '{GEN}')
  if not g then
    local t = redis.call('TIME')
    g = t[1] .. string.format('%06d', t[2])
    redis.call('SET', '{GEN}', g)
  end
  return g
end
local function version(k)
  local v = redis.call('GET', k)
  if not v then v = gen(); redis.call('SET', k, v) end
  return v
end
"""

# KEYS: version keys; ARGV[1]: key prefix; ARGV[2]: '1' for a product list page, whose entry
# starts with "id=version ..." and a newline. A hit returns the value; a miss {key, gen}.
_LUA_GET = (
    _LUA_VERSION
    + f"""
local key = ARGV[1]
for _, k in ipairs(KEYS) do key = key .. ':' .. version(k) end
local value = redis.call('GET', key)
if value and ARGV[2] == '1' then
  local nl = string.find(value, '\\n', 1, true)
  for id, v in string.gmatch(string.sub(value, 1, nl - 1), '(%d+)=(%d+)') do
    if redis.call('GET', '{PRODUCT_VERSION}' .. id) ~= v then value = false; break end
  end
  if value then value = string.sub(value, nl + 1) end
end
return value or {{key, gen()}}
"""
)

# KEYS: versions to read, each set from the counter when missing. Returns their values.
_LUA_VERSIONS = (
    _LUA_VERSION
    + """
local out = {}
for i, k in ipairs(KEYS) do out[i] = version(k) end
return out
"""
)

# ARGV: key, gen seen before the database read, ttl, value, product ids on the page.
# Refuses (0) when one of those products changed since: the page might hold its old state.
_LUA_STORE_LIST = (
    _LUA_VERSION
    + f"""
local deps = {{}}
for i = 5, #ARGV do
  local v = version('{PRODUCT_VERSION}' .. ARGV[i])
  if tonumber(v) > tonumber(ARGV[2]) then return 0 end
  deps[#deps + 1] = ARGV[i] .. '=' .. v
end
redis.call('SET', ARGV[1], table.concat(deps, ' ') .. '\\n' .. ARGV[4], 'EX', ARGV[3])
return 1
"""
)

# KEYS: versions to move forward, all to one fresh value of the counter.
_LUA_BUMP = (
    _LUA_VERSION
    + f"""
gen()
local g = redis.call('INCR', '{GEN}')
for _, k in ipairs(KEYS) do redis.call('SET', k, g) end
return g
"""
)

_FAILURES = (redis.RedisError, OSError)


# ------------------------------------------------------------------ answers


@dataclass(slots=True)
class Answer:
    """A catalog answer ready to send: body bytes, their ETag, and how the cache served it."""

    body: bytes
    etag: str
    cache: str | None = None  # "hit", "miss", or None when the cache is off

    @classmethod
    def of(cls, body: bytes) -> Answer:
        return cls(body, etag_of(body))


def pack(body: bytes, *, visible: bool = True) -> bytes:
    """The cached form of an answer: visibility flag + ETag + body."""
    return (VISIBLE if visible else STAFF_ONLY) + etag_of(body).encode() + body


def unpack(value: bytes, cache: str | None) -> Answer:
    return Answer(value[1 + ETAG_LENGTH :], value[1 : 1 + ETAG_LENGTH].decode(), cache)


def is_visible(value: bytes) -> bool:
    return value[:1] == VISIBLE


# ------------------------------------------------------------------ keys

# Where an entry lives: (version keys, [key prefix, "1" for a product list page else "0"]),
# the KEYS and ARGV of _LUA_GET.
Lookup = tuple[list[str], list[str]]
# Fills an entry on a miss: the packed value and, for a product list page, its product ids.
# It raises (NotFound...) to answer without caching anything.
Load = Callable[[], Awaitable[tuple[bytes, list[int]]]]


def digest(*parts: object) -> str:
    """A short stable key suffix for a list query's normalized parameters."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def product_version(product_id: int) -> str:
    return f"{PRODUCT_VERSION}{product_id}"


def product_keys(product_id: int) -> list[str]:
    """What a product read needs from Redis: the entry and the two versions it must match."""
    return [f"{PRODUCT}{product_id}", product_version(product_id), CATALOG_VERSION]


def stock_keys(product_ids: Iterable[int]) -> list[str]:
    """The versions a stock change of these products moves (see the module docstring)."""
    return [product_version(pid) for pid in product_ids] + [STOCK_VERSION]


def product_list_key(query_digest: str, in_stock: bool) -> Lookup:
    versions = [CATALOG_VERSION, LIST_VERSION]
    if in_stock:
        versions.append(STOCK_VERSION)
    return versions, [f"{PREFIX}pl:{query_digest}", "1"]


def product_total_key(filters_digest: str, in_stock: bool) -> Lookup:
    """The `total` of a product filter set, shared by all its pages and sorts."""
    versions, _ = product_list_key(filters_digest, in_stock)
    return versions, [f"{PREFIX}pt:{filters_digest}", "0"]


def category_key(category_id: int) -> Lookup:
    return [CATALOG_VERSION], [f"{PREFIX}c:{category_id}", "0"]


def category_list_key(query_digest: str) -> Lookup:
    return [CATALOG_VERSION, CATEGORY_LIST_VERSION], [f"{PREFIX}cl:{query_digest}", "0"]


# ------------------------------------------------------------------ the cache


class CatalogCache:
    """Read-through and invalidation of catalog answers on the worker's Redis client;
    `client` None (CACHE_ENABLED=false or CACHE_TTL=0) turns every call into a pass-through."""

    def __init__(self, client: redis.asyncio.Redis | None, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self.skip_until = 0.0  # time.monotonic() until which Redis is not tried
        self.missed_bump = False  # an invalidation may have been lost: catch up first
        if client is not None:
            self._get = client.register_script(_LUA_GET)
            self._versions = client.register_script(_LUA_VERSIONS)
            self._store_list = client.register_script(_LUA_STORE_LIST)
            self._bump = client.register_script(_LUA_BUMP)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    # -------------------------------------------------------------- reading

    async def read_through(self, lookup: Lookup, load: Load) -> tuple[bytes, str | None]:
        """The packed entry of `lookup` at the current versions, from Redis or else from
        `load`; and how it was served ("hit", "miss", None with the cache off)."""
        if not await self._usable():
            return await self._past_the_cache(load)
        keys, args = lookup
        try:
            found = await self._get(keys, args)
        except _FAILURES as exc:
            self._failed(exc, "reading")
            return await self._past_the_cache(load)
        if not isinstance(found, list):
            CACHE_HIT.inc()
            return found, "hit"
        CACHE_MISS.inc()
        key, gen = found
        value, ids = await load()
        try:
            if args[1] == "1":  # a product list page: stored only if its products did not change
                await self._store_list(args=[key, gen, self.ttl, value, *ids])
            else:
                await self.client.set(key, value, ex=self.ttl)  # type: ignore[union-attr]
        except _FAILURES as exc:
            self._failed(exc, "storing")
        return value, "miss"

    def prefetch_keys(self, product_id: int) -> list[str] | None:
        """The keys of a product read, for the rate limiter to MGET in its own batch (the read
        then costs no round trip of its own); None when the cache would not read them."""
        return product_keys(product_id) if self.client is not None else None

    def prefetched_hit(self, prefetched: list[bytes | None] | None) -> bytes | None:
        """A product's packed entry, when the values the rate limiter prefetched prove it
        current (no I/O); None when `read_product` must run."""
        if prefetched is None or self.client is None or self.missed_bump:
            return None
        if time.monotonic() < self.skip_until:
            return None
        value, pv, cv = prefetched
        if pv is None or cv is None:
            return None
        return _current_entry(value, b"%s %s\n" % (pv, cv))

    async def read_product(
        self, product_id: int, load: Load, prefetched: list[bytes | None] | None = None
    ) -> tuple[bytes, str | None]:
        """`read_through` for one product, the hottest read: a plain MGET of the entry and its
        two versions (no script), or their values already fetched with the rate-limit
        counters; the entry starts with the versions it was filled at."""
        if not await self._usable():
            return await self._past_the_cache(load)
        key, version_key, _ = keys = product_keys(product_id)
        client = self.client
        assert client is not None  # (_usable)
        try:
            value, pv, cv = prefetched if prefetched is not None else await client.mget(keys)
            if pv is None or cv is None:  # first read, or evicted
                pv, cv = await self._versions([version_key, CATALOG_VERSION])
        except _FAILURES as exc:
            self._failed(exc, "reading")
            return await self._past_the_cache(load)
        header = b"%s %s\n" % (pv, cv)
        current = _current_entry(value, header)
        if current is not None:
            return current, "hit"
        CACHE_MISS.inc()
        value = (await load())[0]
        try:
            await client.set(key, header + value, ex=self.ttl)
        except _FAILURES as exc:
            self._failed(exc, "storing")
        return value, "miss"

    # -------------------------------------------------------------- invalidating

    async def invalidate(self, *version_keys: str) -> None:
        """Move these versions forward (after the write's commit): every entry filled at the
        old ones misses from now on, in every worker."""
        if self.client is None:
            return
        if time.monotonic() < self.skip_until:
            # Redis failed moments ago: do not make this write wait for its timeout again
            self.missed_bump = True
            return
        try:
            await self._bump(list(version_keys))
        except _FAILURES as exc:
            self._failed(exc, "invalidating")  # (which also marks the bump as missed)

    # -------------------------------------------------------------- failures

    async def _past_the_cache(self, load: Load) -> tuple[bytes, str | None]:
        """The answer straight from `load`: no cache at all (off), or a miss while Redis is
        failing or backing off."""
        if self.client is None:
            return (await load())[0], None
        CACHE_MISS.inc()
        return (await load())[0], "miss"

    async def _usable(self) -> bool:
        if self.client is None or time.monotonic() < self.skip_until:
            return False
        if self.missed_bump:
            # a write's bump was lost: make every entry of the past miss before trusting any
            try:
                await self._bump([CATALOG_VERSION])  # in every key
            except _FAILURES as exc:
                self._failed(exc, "catching up a lost invalidation")
                return False
            self.missed_bump = False
        return True

    def _failed(self, exc: Exception, doing: str) -> None:
        if time.monotonic() >= self.skip_until:
            log.warning(
                "catalog cache: Redis failed while %s (%s: %s); serving from PostgreSQL",
                doing,
                type(exc).__name__,
                exc,
            )
        self.skip_until = time.monotonic() + BACKOFF
        # writes elsewhere may have lost their invalidation during the outage: on recovery,
        # make every entry from before it miss (for every worker, via the catalog version)
        self.missed_bump = True


def _current_entry(value: bytes | None, header: bytes) -> bytes | None:
    """The cached entry's packed answer when it was filled at the current versions."""
    if value is not None and value.startswith(header):
        CACHE_HIT.inc()
        return value[len(header) :]
    return None

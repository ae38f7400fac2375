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

Entries live CACHE_TTL seconds (memory: see below). Writers call `invalidate` with the version
keys their write moves, after the commit:

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

Versions are drawn from one monotonic counter, `GEN` (started at Redis' clock in µs): a bump
sets its keys to `INCR GEN`, and a missing version key is (re)created as the counter's current
value. A list fill can so tell whether a product on its page changed while the page was read
from PostgreSQL: if so the page is answered but not stored. A reader reads the versions before
it reads PostgreSQL, and writers bump after their commit, so no read after a write's answer can
see the old entry.

Memory is bounded (issue 18, item 4): every key the cache writes expires, except the counter and
the four global versions (`cv`, `lv`, `sv`, `clv`), five keys in all.

- Entries: CACHE_TTL. Nothing is written for an id that does not exist: a product read that
  finds no version key takes the counter's value from the same MGET as its stand-in version and
  creates the version key only after PostgreSQL returned the product (`_LUA_STORE_NEW`); a
  NotFound writes nothing. The other entries are written only after a successful load too.
- Product versions (`cat:pv:{id}`): `version_ttl` = max(VERSION_TTL, 2 × CACHE_TTL), set on
  creation and refreshed by every bump. They exist only for products that existed when a read
  filled them or a write bumped them, and a deleted product's one expires.

Why a version key that expires (or is evicted) cannot let a stale entry be served:
(1) every value a version key ever takes is the counter's value at that moment (a bump's INCR,
or the current value on re-creation), and the counter never goes back, so a key's successive
values never decrease, through expiry and re-creation too; (2) a write W bumps its versions to
B after its commit, so from its answer on the key holds a value >= B, even after it expired and
came back; (3) an entry is served only when its recorded version equals the key's current value
V >= B, and its filler read V (from the key, or as the counter's value when the key was
missing) before reading PostgreSQL; the key or the counter held V, and V >= B only exists in
the counter from W's bump on, so the filler's database read began after W's commit and saw it.
Equality after re-creation (the counter unchanged since the entry was filled) means no write
at all was bumped in between, so the entry is still current. The counter itself has no TTL;
should it still be lost (an allkeys eviction policy, a Redis restart without its data), it
restarts at Redis' clock in µs, above every value handed out before. compose runs Redis with
`maxmemory` and `noeviction` (see docker-compose.yml and README: rate-limit counters must never
be evicted); when Redis is full, writes fail and the cache serves from PostgreSQL as below.

Redis down or slow: reads are served from PostgreSQL, a warning is logged, and the cache is
skipped for `BACKOFF` seconds so a dead Redis costs one timeout per worker per backoff. A bump
that fails is retried as a bump of the catalog version before this worker uses the cache
again; other workers may serve the old entry until it expires (at most CACHE_TTL). Turning the
cache off (CACHE_ENABLED=false) stops all Redis traffic, bumps included: turning it back on
within CACHE_TTL may serve entries cached before. With a read replica (DATABASE_READ_URL) a
fill reads the replica only once it has replayed the last catalog write (shopapi/replica.py:
writers record their WAL position before they bump, so a fill that saw a bump waits for it).
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
VERSION_TTL = 86_400  # seconds a product's version key lives at least (see the docstring)
VISIBLE, STAFF_ONLY = b"1", b"0"

# version(k[, ttl]): the key's version, set from the counter when missing (first use, expiry
# or eviction); `ttl` (seconds) for a product's version, none for the global ones
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
local function version(k, ttl)
  local v = redis.call('GET', k)
  if not v then
    v = gen()
    if ttl then redis.call('SET', k, v, 'EX', ttl) else redis.call('SET', k, v) end
  end
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

# KEYS: a product's version, the catalog version. For a product read whose MGET found the
# catalog version or the counter missing: {the product's version or false, the catalog
# version, the counter}, creating only the last two (global: bounded in number).
_LUA_PEEK = (
    _LUA_VERSION
    + """
local cv = version(KEYS[2])
return {redis.call('GET', KEYS[1]) or false, cv, gen()}
"""
)

# KEYS: a product's version, its entry. ARGV: the counter's value read before the database
# read (the stand-in for the version key that was missing then), the entry, its ttl, the
# version's ttl. The product exists (it was just loaded): its version key is created when
# still missing, and the entry stored only if the key now holds the stand-in (see the module
# docstring: otherwise a write may have happened during the read; the next read fills).
_LUA_STORE_NEW = (
    _LUA_VERSION
    + """
local v = version(KEYS[1], ARGV[4])
if v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""
)

# ARGV: key, gen seen before the database read, ttl, product versions' ttl, value, product
# ids on the page. Refuses (0) when one of those products changed since: the page might hold
# its old state.
_LUA_STORE_LIST = (
    _LUA_VERSION
    + f"""
local deps = {{}}
for i = 6, #ARGV do
  local v = version('{PRODUCT_VERSION}' .. ARGV[i], ARGV[4])
  if tonumber(v) > tonumber(ARGV[2]) then return 0 end
  deps[#deps + 1] = ARGV[i] .. '=' .. v
end
redis.call('SET', ARGV[1], table.concat(deps, ' ') .. '\\n' .. ARGV[5], 'EX', ARGV[3])
return 1
"""
)

# KEYS: versions to move forward, all to one fresh value of the counter. ARGV[1]: the ttl of
# a product's version (set again by every bump); the global versions do not expire.
_LUA_BUMP = (
    _LUA_VERSION
    + f"""
gen()
local g = redis.call('INCR', '{GEN}')
local pv = '{PRODUCT_VERSION}'
for _, k in ipairs(KEYS) do
  if string.sub(k, 1, #pv) == pv then
    redis.call('SET', k, g, 'EX', ARGV[1])
  else
    redis.call('SET', k, g)
  end
end
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
    """What a product read needs from Redis: the entry, the two versions it must match, and
    the counter (the stand-in version when the product's is missing: no key is created for
    an id before PostgreSQL showed that it exists)."""
    return [f"{PRODUCT}{product_id}", product_version(product_id), CATALOG_VERSION, GEN]


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
        self.version_ttl = max(VERSION_TTL, 2 * ttl)  # a product's version key
        self.skip_until = 0.0  # time.monotonic() until which Redis is not tried
        self.missed_bump = False  # an invalidation may have been lost: catch up first
        if client is not None:
            self._get = client.register_script(_LUA_GET)
            self._peek = client.register_script(_LUA_PEEK)
            self._store_new = client.register_script(_LUA_STORE_NEW)
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
                await self._store_list(args=[key, gen, self.ttl, self.version_ttl, value, *ids])
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
        value, pv, cv, _ = prefetched
        if pv is None or cv is None:
            return None
        return _current_entry(value, b"%s %s\n" % (pv, cv))

    async def read_product(
        self, product_id: int, load: Load, prefetched: list[bytes | None] | None = None
    ) -> tuple[bytes, str | None]:
        """`read_through` for one product, the hottest read: a plain MGET of the entry, its
        two versions and the counter (no script), or their values already fetched with the
        rate-limit counters; the entry starts with the versions it was filled at. A product
        without a version key (never read, expired, unknown id) is filled at the counter's
        value, and nothing is written when it does not exist."""
        if not await self._usable():
            return await self._past_the_cache(load)
        key, version_key, _, _ = keys = product_keys(product_id)
        client = self.client
        assert client is not None  # (_usable)
        try:
            value, pv, cv, gen = prefetched if prefetched is not None else await client.mget(keys)
            if cv is None or gen is None:  # first use of this Redis, or evicted
                pv, cv, gen = await self._peek([version_key, CATALOG_VERSION])
                pv = pv or None
        except _FAILURES as exc:
            self._failed(exc, "reading")
            return await self._past_the_cache(load)
        header = b"%s %s\n" % (pv or gen, cv)
        current = _current_entry(value, header) if pv is not None else None
        if current is not None:
            return current, "hit"
        CACHE_MISS.inc()
        value = (await load())[0]  # NotFound: no key written
        try:
            if pv is not None:
                await client.set(key, header + value, ex=self.ttl)
            else:
                await self._store_new(
                    [version_key, key], [gen, header + value, self.ttl, self.version_ttl]
                )
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
            await self._bump(list(version_keys), [self.version_ttl])
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
                await self._bump([CATALOG_VERSION], [self.version_ttl])  # in every key
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

"""Catalog read-through cache in Redis, and the ETags of catalog answers.

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

Entries live CACHE_TTL seconds; version keys never expire. What bumps what, after the commit:

- product create/update/delete through the API: its `cat:pv:{id}` and the list version `cat:lv`
  (name, price, category or is_active may move it in or out of any list, or reorder one);
- `products_changed(ctx, *ids)` (orders placed, cancelled, deleted): only those products'
  versions, plus `cat:sv`, which only `in_stock=true` lists carry in their key. Stock is not
  a sort key and only moves membership of `in_stock` lists, so every other list page stays
  cached unless it shows one of those products. This is the trade-off chosen over a global
  bump per order (which would make every cached read miss under mixed traffic): list pages
  pay a few more GETs inside the script (one per product on the page), and `in_stock=true`
  lists are rebuilt after every order;
- category update/delete: `cat:cv`, in every key (a product shows its category's name);
  category create: only `cat:clv`, the category lists' version.

Versions are drawn from one monotonic counter, `cat:gen` (started at Redis' clock in µs), so
a version key lost to eviction comes back with a value never used before, and a list fill can
tell whether a product on its page changed while the page was read from PostgreSQL: if so
the page is answered but not stored. A reader reads the versions before it reads PostgreSQL,
and writers bump after their commit, so no read after a write's answer can see the old entry.

Redis down or slow: reads are served from PostgreSQL, a warning is logged, and the cache is
skipped for `_BACKOFF` seconds so a dead Redis costs one timeout per worker per backoff. A bump
that fails is retried as a bump of the global version before this worker uses the cache again;
other workers may serve the old entry until it expires (at most CACHE_TTL). Turning the cache
off (CACHE_ENABLED=false) stops all Redis traffic, bumps included: turning it back on within
CACHE_TTL may serve entries cached before. With a read replica (DATABASE_READ_URL) a fill may
read a lagging replica: use synchronous replication with remote_apply for read-your-writes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import falcon
import redis
from redis.commands.core import AsyncScript

from shopapi.context import AppContext
from shopapi.metrics import CACHE_HIT, CACHE_MISS

log = logging.getLogger("shopapi.cache")

PREFIX = "cat:"
GEN = PREFIX + "gen"  # the counter every version is drawn from
CATALOG_VERSION = PREFIX + "cv"  # categories: in every key
LIST_VERSION = PREFIX + "lv"  # product lists
STOCK_VERSION = PREFIX + "sv"  # in_stock=true product lists
CATEGORY_LIST_VERSION = PREFIX + "clv"  # category lists (a new category)
_BACKOFF = 1.0  # seconds the cache is skipped after a Redis failure
ETAG_LENGTH = 24  # '"' + 22 base64url characters of a 128-bit digest + '"'
VISIBLE, STAFF_ONLY = b"1", b"0"

# version(k): the key's version, set from the counter when missing (first use or eviction)
_LUA_VERSION = """
local function gen()
  local g = redis.call('GET', 'cat:gen')
  if not g then
    local t = redis.call('TIME')
    g = t[1] .. string.format('%06d', t[2])
    redis.call('SET', 'cat:gen', g)
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
_LUA_GET = _LUA_VERSION + """
local key = ARGV[1]
for _, k in ipairs(KEYS) do key = key .. ':' .. version(k) end
local value = redis.call('GET', key)
if value and ARGV[2] == '1' then
  local nl = string.find(value, '\\n', 1, true)
  for id, v in string.gmatch(string.sub(value, 1, nl - 1), '(%d+)=(%d+)') do
    if redis.call('GET', 'cat:pv:' .. id) ~= v then value = false; break end
  end
  if value then value = string.sub(value, nl + 1) end
end
return value or {key, gen()}
"""

# KEYS: versions to read, each set from the counter when missing. Returns their values.
_LUA_VERSIONS = _LUA_VERSION + """
local out = {}
for i, k in ipairs(KEYS) do out[i] = version(k) end
return out
"""

# ARGV: key, gen seen before the database read, ttl, value, product ids on the page.
# Refuses (0) when one of those products changed since: the page might hold its old state.
_LUA_STORE_LIST = _LUA_VERSION + """
local deps = {}
for i = 5, #ARGV do
  local v = version('cat:pv:' .. ARGV[i])
  if tonumber(v) > tonumber(ARGV[2]) then return 0 end
  deps[#deps + 1] = ARGV[i] .. '=' .. v
end
redis.call('SET', ARGV[1], table.concat(deps, ' ') .. '\\n' .. ARGV[4], 'EX', ARGV[3])
return 1
"""

# KEYS: versions to move forward, all to one fresh value of the counter.
_LUA_BUMP = _LUA_VERSION + """
gen()
local g = redis.call('INCR', 'cat:gen')
for _, k in ipairs(KEYS) do redis.call('SET', k, g) end
return g
"""


class _Redis:
    """Per Redis client: the registered scripts and the failure back-off state."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.get = client.register_script(_LUA_GET)
        self.versions = client.register_script(_LUA_VERSIONS)
        self.store_list = client.register_script(_LUA_STORE_LIST)
        self.bump = client.register_script(_LUA_BUMP)
        self.abump: AsyncScript | None = None  # the bump on the event loop's client
        self.skip_until = 0.0
        self.missed_bump = False

    def failed(self, exc: Exception, doing: str) -> None:
        if time.monotonic() >= self.skip_until:
            log.warning("catalog cache: Redis failed while %s (%s: %s); serving from PostgreSQL",
                        doing, type(exc).__name__, exc)
        self.skip_until = time.monotonic() + _BACKOFF
        # writes elsewhere may have lost their invalidation during the outage: on recovery,
        # make every entry from before it miss (for every worker, via the catalog version)
        self.missed_bump = True

    def usable(self) -> bool:
        if time.monotonic() < self.skip_until:
            return False
        if self.missed_bump:
            # a write's bump was lost: make every entry of the past miss before trusting any
            try:
                self.bump([CATALOG_VERSION])  # in every key
            except redis.RedisError as exc:
                self.failed(exc, "catching up a lost invalidation")
                return False
            self.missed_bump = False
        return True


_clients: weakref.WeakKeyDictionary[redis.Redis, _Redis] = weakref.WeakKeyDictionary()


def enabled(ctx: AppContext) -> bool:
    return ctx.settings.cache_enabled and ctx.settings.cache_ttl > 0


def _redis(ctx: AppContext) -> _Redis | None:
    if not enabled(ctx):
        return None
    state = _clients.get(ctx.redis)
    if state is None:
        state = _clients[ctx.redis] = _Redis(ctx.redis)
    return state


# ------------------------------------------------------------------ answers and ETags


@dataclass(slots=True)
class Answer:
    """A catalog answer ready to send: body bytes, their ETag, and how the cache served it."""

    body: bytes
    etag: str
    cache: str | None = None  # "hit", "miss", or None when the cache is off


def etag_of(body: bytes) -> str:
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + '"'


def pack(body: bytes, *, visible: bool = True) -> bytes:
    """The cached form of an answer: visibility flag + ETag + body."""
    return (VISIBLE if visible else STAFF_ONLY) + etag_of(body).encode() + body


def unpack(value: bytes, cache: str | None) -> Answer:
    return Answer(value[1 + ETAG_LENGTH:], value[1:1 + ETAG_LENGTH].decode(), cache)


def is_visible(value: bytes) -> bool:
    return value[:1] == VISIBLE


def _candidates(header: str) -> Iterable[str]:
    return (tag.strip() for tag in header.split(","))


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match (weak comparison): True when the client's copy is current."""
    if not header:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _candidates(header))


def match(header: str, etag: str | None) -> bool:
    """If-Match (strong comparison); `etag` None means there is no current representation."""
    if etag is None:
        return False
    return any(tag == "*" or tag == etag for tag in _candidates(header))


# for the OpenAPI summaries of the reads `respond` answers
ETAG_NOTE = " Answers carry an ETag; If-None-Match with it gives 304 and no body."


def respond(req: falcon.Request, resp: falcon.Response, answer: Answer) -> None:
    """Send a catalog read: ETag, X-Cache, and 304 with no body when the client is current."""
    resp.set_header("ETag", answer.etag)
    if answer.cache is not None:
        resp.set_header("X-Cache", answer.cache)
    if none_match(req.get_header("If-None-Match"), answer.etag):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = "application/json"
    resp.data = answer.body


def send(resp: falcon.Response, answer: Answer) -> None:
    """Send the result of a write, with the ETag a later If-Match can quote."""
    resp.set_header("ETag", answer.etag)
    resp.content_type = "application/json"
    resp.data = answer.body


def answer_of(body: bytes) -> Answer:
    return Answer(body, etag_of(body))


# ------------------------------------------------------------------ read-through


# Where an entry lives: (version keys, [key prefix, "1" for a product list page else "0"]),
# the KEYS and ARGV of _LUA_GET, from the *_key functions below.
Lookup = tuple[list[str], list[object]]


def read_through(
    ctx: AppContext, lookup: Lookup, load: Callable[[], tuple[bytes, list[int]]],
) -> tuple[bytes, str | None]:
    """The packed entry of `lookup` at the current versions, from Redis or else from `load`.

    `load` returns the packed value and, for a product list page, the ids of its products; it
    raises (NotFound...) to answer without caching anything.
    """
    state = _redis(ctx)
    if state is None or not state.usable():
        return _past_the_cache(state, load)
    keys, args = lookup
    try:
        found = state.get(keys, args)
    except redis.RedisError as exc:
        state.failed(exc, "reading")
        return _past_the_cache(state, load)
    if not isinstance(found, list):
        CACHE_HIT.inc()
        return found, "hit"
    CACHE_MISS.inc()
    key, gen = found
    value, ids = load()
    ttl = ctx.settings.cache_ttl
    try:
        if args[1] == "1":  # a product list page: stored only if its products did not change
            state.store_list(args=[key, gen, ttl, value, *ids])
        else:
            state.client.set(key, value, ex=ttl)
    except redis.RedisError as exc:
        state.failed(exc, "storing")
    return value, "miss"


def _past_the_cache(
    state: _Redis | None, load: Callable[[], tuple[bytes, list[int]]]
) -> tuple[bytes, str | None]:
    """The answer straight from `load`: no cache at all (off), or a miss while Redis is failing
    or backing off."""
    if state is None:
        return load()[0], None
    CACHE_MISS.inc()
    return load()[0], "miss"


def product_keys(product_id: int) -> list[str]:
    """What a product read needs from Redis: the entry and the two versions it must match."""
    return [f"{PREFIX}p:{product_id}", f"{PREFIX}pv:{product_id}", CATALOG_VERSION]


def prefetch_keys(method: str, uri_template: str | None, params: dict) -> list[str] | None:
    """Keys of a cached read known from the route alone, for the rate limiter to MGET in its
    own batch: the read then costs no Redis round trip of its own."""
    if method == "GET" and uri_template == "/api/products/{product_id}":
        raw = params.get("product_id")
        if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19:
            return product_keys(int(raw))
    return None


def read_product(
    ctx: AppContext, product_id: int, load: Callable[[], tuple[bytes, list[int]]],
    prefetched: list[bytes | None] | None = None,
) -> tuple[bytes, str | None]:
    """`read_through` for one product, the hottest read: a plain MGET of the entry and its two
    versions (no script), or their values already fetched with the rate-limit counters;
    the entry starts with the versions it was filled at."""
    state = _redis(ctx)
    if state is None or not state.usable():
        return _past_the_cache(state, load)
    key, version_key, _ = keys = product_keys(product_id)
    try:
        value, pv, cv = prefetched if prefetched is not None else state.client.mget(keys)
        if pv is None or cv is None:  # first read, or evicted
            pv, cv = state.versions([version_key, CATALOG_VERSION])
    except redis.RedisError as exc:
        state.failed(exc, "reading")
        return _past_the_cache(state, load)
    header = b"%s %s\n" % (pv, cv)
    current = _current_entry(value, header)
    if current is not None:
        return current, "hit"
    CACHE_MISS.inc()
    value = load()[0]
    try:
        state.client.set(key, header + value, ex=ctx.settings.cache_ttl)
    except redis.RedisError as exc:
        state.failed(exc, "storing")
    return value, "miss"


def prefetched_product(ctx: AppContext, prefetched: list[bytes | None] | None) -> bytes | None:
    """`read_product`'s hit, decided from the values the rate limiter prefetched alone (no
    I/O, so it runs on the event loop); None when `read_product` must run."""
    state = _redis(ctx)
    if state is None or prefetched is None or state.missed_bump:
        return None
    if time.monotonic() < state.skip_until:
        return None
    value, pv, cv = prefetched
    if pv is None or cv is None:
        return None
    return _current_entry(value, b"%s %s\n" % (pv, cv))


def _current_entry(value: bytes | None, header: bytes) -> bytes | None:
    """The cached entry's packed answer when it was filled at the current versions."""
    if value is not None and value.startswith(header):
        CACHE_HIT.inc()
        return value[len(header):]
    return None


def digest(*parts: object) -> str:
    """A short stable key suffix for a list query's normalized parameters."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


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


# ------------------------------------------------------------------ invalidation


def _bumpable(ctx: AppContext) -> _Redis | None:
    state = _redis(ctx)
    if state is not None and time.monotonic() < state.skip_until:
        # Redis failed moments ago: do not make this write wait for its timeout again
        state.missed_bump = True
        return None
    return state


def _bump(ctx: AppContext, keys: list[str]) -> None:
    state = _bumpable(ctx)
    if state is None:
        return
    try:
        state.bump(keys)
    except redis.RedisError as exc:
        state.failed(exc, "invalidating")  # (which also marks the bump as missed)


async def _bump_async(ctx: AppContext, keys: list[str]) -> None:
    """`_bump` on the event loop (its asyncio client), for writes made there."""
    state = _bumpable(ctx)
    if state is None:
        return
    if state.abump is None:
        state.abump = ctx.aredis.register_script(_LUA_BUMP)
    try:
        await state.abump(keys)
    except (redis.RedisError, OSError) as exc:
        state.failed(exc, "invalidating")


def _stock_keys(product_ids: Iterable[int]) -> list[str]:
    return [f"{PREFIX}pv:{pid}" for pid in product_ids] + [STOCK_VERSION]


def products_changed(ctx: AppContext, *product_ids: int) -> None:
    """Stock of these products changed (orders): their detail and the pages showing them miss,
    and so do `in_stock=true` lists. Call after the transaction commits."""
    _bump(ctx, _stock_keys(product_ids))


async def stock_taken(ctx: AppContext, *product_ids: int) -> None:
    """`products_changed` for an order placed on the event loop."""
    await _bump_async(ctx, _stock_keys(product_ids))


def product_written(ctx: AppContext, product_id: int) -> None:
    """A staff write (create, edit, delete): the product and every list page miss."""
    _bump(ctx, [f"{PREFIX}pv:{product_id}", LIST_VERSION])


def category_created(ctx: AppContext) -> None:
    """A new category only changes the category lists."""
    _bump(ctx, [CATEGORY_LIST_VERSION])


def categories_changed(ctx: AppContext) -> None:
    """A category edit or delete: every catalog entry misses (products show their category's
    name)."""
    _bump(ctx, [CATALOG_VERSION])

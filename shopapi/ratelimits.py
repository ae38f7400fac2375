"""Every rate limit in one table, and the limiter that counts them (shared in Redis).

How a request is counted:

- **Fixed windows aligned to the clock.** Fixed window is the cheapest strategy: one counter
  per key and window (moving window keeps a timestamp per hit, sliding window reads two
  counters). `limits`' own fixed window starts at each key's first hit, so its reset time needs a
  TTL read (hit + window stats = 3 commands per key). Putting the window number
  (`now // length`) in the key instead makes the reset a pure function of the clock,
  `(window + 1) * length - now`: no read at all. The price, shared by every fixed window, is
  that a client can spend two windows' worth across one boundary.
- **One round trip per request.** Every counter a request touches (IP, user, login) is
  incremented in one batch of commands (`shopapi.redis_client.Batches`, cheaper than a redis-py
  Pipeline): `INCR` + `EXPIRE NX` per key. The TTL (rest of the window + 1 s) only cleans up: an
  old window's key is never read again. No Lua script (measured slower than the batch), so no
  `EVALSHA`/`NOSCRIPT` dance either.
- **Redis down never stalls or opens the API.** Short connect/read timeouts, no redis-py
  retries (its default retries a timeout 3 times with backoff: seconds per request), and on any
  Redis error the limits are counted in this process (`limits`' `memory://` storage) until
  Redis is tried again `REDIS_RETRY_SECONDS` later. One warning when it goes, one when it comes
  back.
- **Degraded limits stay bounded per server** (issue 18, item 7). While degraded each worker
  counts on its own, so each one grants only its share of every limit: `max(1, limit //
  workers)`, where `workers` is how many processes this server runs (`server_workers()`:
  gunicorn's configured worker count, whatever set it: `--workers`, `WEB_CONCURRENCY` or
  gunicorn.conf.py's default; 1 outside gunicorn). A client spread over every worker of one
  server so gets at most the configured limit per window (or one request per worker when the
  limit is below the worker count), never one allowance per worker. The answers'
  `RateLimit-Limit`/`-Remaining` show that share. Not covered: several servers (replicas
  behind one balancer) each grant their own share, so N replicas give up to N times the limit;
  workers added at run time with gunicorn's TTIN signal are not seen; and the counts a client
  made in Redis earlier in the same window are not carried over, so the window in which Redis
  goes away can grant up to the limit again.

Rates are `limits` strings from the settings ("300/minute", "10 per minute"); several rates
separated by `;` ("300/minute;5000/hour") each get their own counter.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from redis.asyncio import Redis as AsyncRedis

from shopapi.config import ConfigError, Settings
from shopapi.redis_client import Batches
from shopapi.text import normalize_email

log = logging.getLogger("shopapi.ratelimits")

# The table: limit name -> the setting that holds its rate.  # what it guards
LIMITS: dict[str, str] = {
    # every limited request, per client address (IPv6: per /64): floods and scrapers
    "general.ip": "rate_limit_default",
    # every request with a valid access token, per user: one account driven from many addresses
    "general.user": "rate_limit_default",
    # POST /api/auth/login, per address + lower-cased email, every attempt: password guessing
    "auth.login.ip_email": "rate_limit_login",
    # POST /api/auth/login, per lower-cased email from every address: distributed guessing
    "auth.login.account": "rate_limit_login_account",
    # POST /api/auth/login, per address whatever the email: hashing driven by cycling emails
    "auth.login.ip": "rate_limit_login_ip",
    # POST /api/auth/register, per address: sign-up spam and account farming
    "auth.register.ip": "rate_limit_register",
    # POST /api/auth/password-reset, per address: mail bombing many inboxes
    "auth.password_reset.ip": "rate_limit_password_reset_ip",
    # POST /api/auth/password-reset, per email (known or not, counted alike): one inbox
    "auth.password_reset.email": "rate_limit_password_reset_email",
    # POST /api/auth/verify-email/resend, per user: one inbox
    "auth.verification_resend.user": "rate_limit_verification_resend",
}

# The routes with a limit of their own, on top of the general ones.
LOGIN_ROUTE = ("POST", "/api/auth/login")
REGISTER_ROUTE = ("POST", "/api/auth/register")
PASSWORD_RESET_ROUTE = ("POST", "/api/auth/password-reset")
VERIFICATION_RESEND_ROUTE = ("POST", "/api/auth/verify-email/resend")

# Never limited: probes and metric scrapers must see the truth during a flood; docs are static;
# the payment provider's webhook (a burst from Stripe's few addresses must not be answered 429
# and delay orders becoming paid; it does no database work before its signature checks out).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/payments/stripe/webhook"})
EXEMPT_PREFIX = "/api/docs"

KEY_PREFIX = "shopapi:rl"
REDIS_RETRY_SECONDS = 5.0


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path == EXEMPT_PREFIX or path.startswith(EXEMPT_PREFIX + "/")


@functools.lru_cache(maxsize=4096)
def address_subject(ip: str) -> str:
    """The counter's subject for a client address: IPv4 as is, IPv6 by its /64 (one subscriber's
    network: walking through the addresses inside it must not start a fresh count)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def email_subject(email: str) -> str:
    """Trimmed, lower-cased and hashed: the same account however it is typed, no email in Redis,
    and a key of fixed size whatever the client sends."""
    return hashlib.blake2b(normalize_email(email).encode(), digest_size=16).hexdigest()


SERVER_WORKERS_ENV = "SHOPAPI_SERVER_WORKERS"  # set by gunicorn.conf.py in the master


def server_workers() -> int:
    """How many processes of this server count apart while Redis is down: the worker count
    gunicorn.conf.py's on_starting wrote into the environment the workers inherit
    (`--workers`, WEB_CONCURRENCY or the conf default, whichever set it); 1 anywhere else."""
    try:
        return max(1, int(os.environ.get(SERVER_WORKERS_ENV, "1")))
    except ValueError:
        return 1


@dataclass(frozen=True, slots=True)
class Usage:
    """What a request's counters say, reported as the limit closest to refusing it."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds until that limit's window ends, >= 1 (also the Retry-After)


class Limiter:
    def __init__(self, settings: Settings, client: AsyncRedis, workers: int | None = None) -> None:
        self.rules: dict[str, tuple[RateLimitItem, ...]] = {
            name: _parse(attr, getattr(settings, attr)) for name, attr in LIMITS.items()
        }
        # processes of this server counting apart while Redis is down (module docstring)
        self.workers = workers if workers is not None else server_workers()
        self.batches = Batches(client)  # on the worker's one client's connection settings
        self.memory: MemoryStorage | None = None  # created on the first Redis failure
        self.redis_retry_seconds = REDIS_RETRY_SECONDS
        self.redis_down = False
        self.retry_redis_at = 0.0  # time.monotonic() after which Redis is tried again

    async def hit_and_fetch(
        self,
        checks: Iterable[tuple[str, str]],
        fetch: list[str] | None,
    ) -> tuple[Usage, list[bytes | None] | None]:
        """Count one request against every (limit name, subject) pair, plus an MGET of
        `fetch` in the same batch (a cached read's keys), so the request pays one Redis round
        trip for both. The values are None when Redis was not used (memory fallback): the
        caller then reads them itself."""
        now = time.time()
        keys: list[str] = []
        ttls: list[int] = []
        windows: list[tuple[int, float]] = []  # (amount, seconds until the window ends)
        for name, subject in checks:
            for item in self.rules[name]:
                length = item.get_expiry()
                window = int(now // length)
                left = (window + 1) * length - now
                keys.append(item.key_for(name, subject, window))
                ttls.append(math.ceil(left) + 1)
                windows.append((item.amount, left))
        if time.monotonic() >= self.retry_redis_at:
            try:
                counts, fetched = await self._count_in_redis(keys, ttls, fetch)
            except (redis.RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                if self.redis_down:
                    self.redis_down = False
                    log.warning("rate limits: Redis is back, counting there again")
                return _usage(windows, counts), fetched
        # degraded: this process grants only its share of each limit
        shares = [(self.share(amount), left) for amount, left in windows]
        return _usage(shares, self._count_in_memory(keys, ttls)), None

    def share(self, amount: int) -> int:
        """What one process may grant of a limit of `amount` while Redis is down."""
        return max(1, amount // self.workers)

    async def _count_in_redis(
        self, keys: list[str], ttls: list[int], fetch: list[str] | None
    ) -> tuple[list[int], list[bytes | None] | None]:
        commands: list[tuple] = []
        for key, ttl in zip(keys, ttls, strict=True):
            key = f"{KEY_PREFIX}:{key}"
            # NX: set once per window; a later hit repairs a key that somehow lost its TTL
            commands += [("INCR", key), ("EXPIRE", key, ttl, "NX")]
        if fetch:
            commands.append(("MGET", *fetch))
        replies = await self.batches.execute(commands)
        counted = replies[: 2 * len(keys)]
        return [int(count) for count in counted[::2]], (replies[-1] if fetch else None)

    def _count_in_memory(self, keys: list[str], ttls: list[int]) -> list[int]:
        if self.memory is None:
            self.memory = MemoryStorage()
        return [self.memory.incr(key, ttl) for key, ttl in zip(keys, ttls, strict=True)]

    def _redis_failed(self, exc: Exception) -> None:
        self.retry_redis_at = time.monotonic() + self.redis_retry_seconds
        if not self.redis_down:
            self.redis_down = True
            log.warning(
                "rate limits: Redis unavailable (%s: %s); counting per process in memory "
                "(1/%d of each limit here), retrying Redis every %.0f s",
                type(exc).__name__,
                exc,
                self.workers,
                self.redis_retry_seconds,
            )


def _parse(attr: str, rate: str) -> tuple[RateLimitItem, ...]:
    try:
        return tuple(parse_many(rate))
    except ValueError as exc:
        raise ConfigError(f"{attr.upper()}: {exc}") from None


def _usage(windows: list[tuple[int, float]], counts: list[int]) -> Usage:
    """Report the limit that refuses the request for longest, else the one closest to it."""
    best: tuple[tuple[bool, int, float], Usage] | None = None
    for (amount, left), count in zip(windows, counts, strict=True):
        allowed = count <= amount
        remaining = max(0, amount - count)
        rank = (allowed, remaining, -left)
        if best is None or rank < best[0]:
            best = (rank, Usage(allowed, amount, remaining, max(1, math.ceil(left))))
    assert best is not None, "a request is always counted against at least one limit"
    return best[1]

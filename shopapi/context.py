"""What services need from the outside world, built once per worker by `create_app`."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from shopapi.admission import Admission
from shopapi.cache import CatalogCache
from shopapi.config import Settings
from shopapi.db import Pool
from shopapi.pager import Pager
from shopapi.payment_providers import ManualPayments, PaymentProvider
from shopapi.replica import ReadRouting, catalog_written
from shopapi.security import Passwords, TokenCodec
from shopapi.user_state import UserStates


@dataclass
class AppContext:
    settings: Settings
    pool: Pool
    redis: redis.asyncio.Redis
    cache: CatalogCache
    tokens: TokenCodec
    passwords: Passwords
    user_states: UserStates
    pager: Pager  # every list's pages and cursors, signed with the settings' key
    # PAYMENT_PROVIDER: online payments (Stripe) or none (manual)
    payments: PaymentProvider = field(default_factory=ManualPayments)
    # payment starts hold a connection (and the order's row lock) through the provider's
    # call: a few at a time, so a slow provider cannot take the pool from every other request
    payment_starts: Admission = field(default_factory=lambda: Admission(0))
    # the read replica for catalog reads when DATABASE_READ_URL is set
    read_pool: Pool | None = None
    # what create_app built itself (not what a caller handed in): closed at shutdown
    owned_closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    # catalog reads: on the replica when current enough and up, else the primary
    reads: ReadRouting = field(init=False)

    def __post_init__(self) -> None:
        self.reads = ReadRouting(self.pool, self.read_pool, self.redis)

    async def catalog_written(self, *version_keys: str) -> None:
        """After the commit of a write that catalog reads show: every later catalog read is at
        least that new (the replica's position, shopapi.replica), and the cached answers at the
        old `version_keys` miss from now on."""
        await catalog_written(self.reads.writes, self.cache, version_keys)

    @property
    def reader(self) -> Pool:
        """The replica if there is one, else the primary (catalog reads go through `reads`,
        which checks the replica is current and up)."""
        return self.read_pool or self.pool

    @property
    def pools(self) -> tuple[Pool, ...]:
        return (self.pool,) if self.read_pool is None else (self.pool, self.read_pool)

    async def start(self) -> None:
        """ASGI lifespan start-up: open the pools (without waiting for the database)."""
        for pool in self.pools:
            await pool.ensure_open()

    async def close(self) -> None:
        """Stop the listener and the bcrypt threads, close what this app opened (tests and
        the CLI; a worker simply exits)."""
        await self.user_states.close()
        self.passwords.close()
        for close in self.owned_closers:
            with contextlib.suppress(Exception):
                await close()


@dataclass(frozen=True)
class CurrentUser:
    id: int
    role: str
    session_id: int | None = None  # the login of the access token (None: issued without)
    email_verified: bool = False

    @property
    def is_staff(self) -> bool:
        return self.role in ("ADMIN", "EDITOR")

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

"""What services need from the outside world, built once per worker by `create_app`.

Blocking code (on the thread pool) uses `pool`, `reader` and `redis`; code on the event loop
uses their asyncio twins `apool`, `areader` and `aredis`, which reach the same servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from psycopg_pool import ConnectionPool

from shopapi.config import Settings
from shopapi.db import AsyncPool, async_twin
from shopapi.security import TokenCodec
from shopapi.user_state import UserStates


@dataclass
class AppContext:
    settings: Settings
    pool: ConnectionPool
    redis: redis.Redis
    tokens: TokenCodec
    user_states: UserStates
    # the read replica for catalog reads when DATABASE_READ_URL is set, else the primary
    read_pool: ConnectionPool | None = None
    aredis: redis.asyncio.Redis | None = None
    extra: dict[str, Any] | None = None

    @property
    def reader(self) -> ConnectionPool:
        return self.read_pool or self.pool

    @property
    def apool(self) -> AsyncPool:
        return async_twin(self.pool)

    @property
    def areader(self) -> AsyncPool:
        return async_twin(self.reader)


@dataclass(frozen=True)
class CurrentUser:
    id: int
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in ("ADMIN", "EDITOR")

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

"""What services need from the outside world, built once per worker by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from psycopg_pool import ConnectionPool

from shopapi.config import Settings
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
    extra: dict[str, Any] | None = None

    @property
    def reader(self) -> ConnectionPool:
        return self.read_pool or self.pool


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

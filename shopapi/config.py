"""Settings from the environment (and `.env`), declared once as data.

Each setting has a name, a default, a parser and a help line; `.env.example` and the
README's table are checked against this list by `tests/test_config.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Secrets that appear in docs, examples and tutorials: never acceptable in production.
KNOWN_WEAK_SECRETS = {
    "",
    "change-me",
    "changeme",
    "secret",
    "dev-secret-key-change-me-in-production-please",
    "bench-secret-change-me",
    "super-secret",
}
# development/test only; production refuses it (it is in KNOWN_WEAK_SECRETS)
DEV_SECRET = "dev-secret-key-change-me-in-production-please"  # noqa: S105


class ConfigError(ValueError):
    """A setting is missing or invalid; the app refuses to start."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("APP_ENV", "development", str, "`development`, `test` or `production`"),
    Setting("DATABASE_URL", None, str, "PostgreSQL URL (local/embedded in development)"),
    Setting("DATABASE_READ_URL", None, str, "optional read replica for catalog reads"),
    Setting("REDIS_URL", None, str, "Redis URL (local in development)"),
    Setting("SECRET_KEY", None, str, "JWT signing key; >= 32 bytes, required in production"),
    Setting("ACCESS_TOKEN_TTL", "900", _positive_int, "access token lifetime, seconds"),
    Setting("REFRESH_TOKEN_TTL", "2592000", _positive_int, "refresh token lifetime, seconds"),
    Setting("BCRYPT_ROUNDS", "12", int, "password hashing cost (4..31)"),
    Setting("PASSWORD_HASH_THREADS", "2", int, "threads that hash and check passwords"),
    Setting("RATE_LIMIT_ENABLED", "true", _bool, "all rate limits on or off"),
    Setting("RATE_LIMIT_DEFAULT", "300/minute", str, "general limit, per IP and per user"),
    Setting("RATE_LIMIT_LOGIN", "10/minute", str, "login attempts per IP + email"),
    Setting("RATE_LIMIT_REGISTER", "30/hour", str, "registrations per IP"),
    Setting("CACHE_ENABLED", "true", _bool, "catalog cache on or off"),
    Setting("CACHE_TTL", "300", _positive_int, "seconds a cached catalog answer may live"),
    Setting("CORS_ORIGINS", "", _csv, "comma-separated allowed origins"),
    Setting("TRUSTED_PROXIES", "0", _positive_int, "proxy hops of X-Forwarded-For to trust"),
    Setting("DB_POOL_MIN", "1", _positive_int, "connections per worker process and pool, minimum"),
    Setting("DB_POOL_MAX", "10", _positive_int,
            "connections per worker process and pool, maximum; threads for blocking responders"),
    Setting("DB_POOL_TIMEOUT", "5", float, "seconds a request waits for a connection (then 503)"),
    Setting("DB_STATEMENT_TIMEOUT_MS", "5000", _positive_int, "PostgreSQL statement_timeout"),
    Setting("REDIS_TIMEOUT", "0.25", float, "seconds for a Redis connect or command"),
    Setting("CURRENCY", "USD", str, "the store currency (ISO 4217)"),
    Setting("IDEMPOTENCY_KEY_TTL", "86400", _positive_int, "seconds an Idempotency-Key is kept"),
    Setting("MAX_BODY_BYTES", "1048576", _positive_int, "largest request body (413 above)"),
    Setting("LOG_LEVEL", "INFO", str, "log level"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    app_env: str = "development"
    database_url: str | None = None
    database_read_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 2592000
    bcrypt_rounds: int = 12
    password_hash_threads: int = 2
    rate_limit_enabled: bool = True
    rate_limit_default: str = "300/minute"
    rate_limit_login: str = "10/minute"
    rate_limit_register: str = "30/hour"
    cache_enabled: bool = True
    cache_ttl: int = 300
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    trusted_proxies: int = 0
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_pool_timeout: float = 5.0
    db_statement_timeout_ms: int = 5000
    redis_timeout: float = 0.25
    currency: str = "USD"
    idempotency_key_ttl: int = 86400
    max_body_bytes: int = 1048576
    log_level: str = "INFO"

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `env` (default: `.env` file, then the process env)."""
        if env is None:
            env = {**read_dotenv(ROOT / ".env"), **os.environ}
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.name)
            if raw is None or raw == "":
                raw = setting.default
            if raw is None:
                values[setting.name.lower()] = None
                continue
            try:
                values[setting.name.lower()] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.name}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.app_env not in {"development", "test", "production"}:
            raise ConfigError("APP_ENV must be development, test or production")
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ConfigError("BCRYPT_ROUNDS must be between 4 and 31")
        if self.db_pool_max < max(1, self.db_pool_min):
            raise ConfigError("DB_POOL_MAX must be >= DB_POOL_MIN and >= 1")
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise ConfigError("CURRENCY must be a three-letter ISO 4217 code")
        if self.is_production:
            key = self.secret_key or ""
            if key in KNOWN_WEAK_SECRETS or len(key.encode()) < 32:
                raise ConfigError(
                    "SECRET_KEY is missing, shorter than 32 bytes or a known default: "
                    "refusing to start in production"
                )
            if not self.database_url or not self.redis_url:
                raise ConfigError("DATABASE_URL and REDIS_URL are required in production")

    @property
    def signing_key(self) -> str:
        # development and test may run without a configured key; production never does
        return self.secret_key or DEV_SECRET

    @property
    def dsn(self) -> str:
        return self.database_url or "postgresql://127.0.0.1:5432/shopapi"

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"


def read_dotenv(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def setting_names() -> list[str]:
    return [s.name for s in SETTINGS]


def setting(name: str) -> Setting:
    return _BY_NAME[name]

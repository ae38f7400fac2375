"""Settings from the environment (and `.env`), declared once as data.

Each setting is one field of `Settings`: its environment name (the field name in capitals),
its default as the environment would spell it, a parser and a help line. `SETTINGS` is
derived from those fields; `.env.example` and the README's table are checked against it by
`tests/test_config.py`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, overload

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
# the environments that may run without SECRET_KEY, on a random key made at start, when
# APP_ENV names them explicitly
RANDOM_KEY_ENVS = ("development", "test")

T = TypeVar("T")

_MAKE_A_KEY = (
    "Set SECRET_KEY to at least 32 random bytes, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
)


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


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (`10.0.0.0/8, fd00::/8`; a bare address is its /32 or /128)."""
    return tuple(ipaddress.ip_network(part) for part in _csv(raw))


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _prepare_threshold(raw: str) -> int | None:
    """A count, or `off`/`none`: psycopg never prepares (its prepare_threshold=None)."""
    if raw.strip().lower() in {"off", "none"}:
        return None
    return _positive_int(raw)


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    parse: Callable[[str], Any]
    help: str


@overload
def _setting(default: None, parse: Callable[[str], T], help: str) -> T | None: ...
@overload
def _setting(default: str, parse: Callable[[str], T], help: str) -> T: ...
def _setting(default: str | None, parse: Callable[[str], T], help: str) -> T | None:
    """A `Settings` field: its default is `default` (text, as in the environment) parsed.

    Typed as the parsed value so that mypy checks the parser against the field's annotation;
    at runtime it is the dataclass field carrying the metadata `SETTINGS` is built from.
    """
    value = None if default is None else parse(default)
    # typeshed types field(default=x) as x's type, which is what the annotation checks against
    return field(default=value, metadata={"default": default, "parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    app_env: str | None = _setting(
        None,
        str,
        "`development`, `test` or `production`; unset runs as development, but refuses to "
        "start without SECRET_KEY (a random key needs APP_ENV=development or test, explicitly)",
    )
    database_url: str | None = _setting(None, str, "PostgreSQL URL (local/embedded in development)")
    database_read_url: str | None = _setting(None, str, "optional read replica for catalog reads")
    database_direct_url: str | None = _setting(
        None,
        str,
        "PostgreSQL URL without a transaction pooler, for session-bound work: the worker "
        "(its job engine LISTENs) and migrations; unset: DATABASE_URL",
    )
    database_prepare_threshold: int | None = _setting(
        "5",
        _prepare_threshold,
        "executions before psycopg prepares a statement server-side; `off` behind a "
        "transaction-mode pooler (PgBouncer < 1.21 keeps no prepared statements)",
    )
    redis_url: str | None = _setting(None, str, "Redis URL (local in development)")
    secret_key: str | None = _setting(
        None, str, "JWT signing key; >= 32 bytes, required in production"
    )
    access_token_ttl: int = _setting("900", _positive_int, "access token lifetime, seconds")
    refresh_token_ttl: int = _setting("2592000", _positive_int, "refresh token lifetime, seconds")
    jwt_issuer: str = _setting("shopapi", str, "`iss` of every token; required when verifying")
    jwt_audience: str = _setting(
        "shopapi-api", str, "`aud` of every token; required when verifying"
    )
    jwt_leeway: int = _setting(
        "10", _positive_int, "seconds of clock skew allowed on a token's `exp` and `iat` (<= 300)"
    )
    bcrypt_rounds: int = _setting("12", int, "password hashing cost (4..31)")
    password_hash_threads: int = _setting(
        "1",
        _positive_int,
        "threads that hash and check passwords (bcrypt, which releases the GIL), per worker: "
        "with one worker per core, one each lets logins use every core and no more",
    )
    password_hash_queue: int = _setting(
        "4",
        _positive_int,
        "password hashes and checks that may wait for those threads, per worker; past that a "
        "login, registration or password change is 503 with Retry-After at once",
    )
    rate_limit_enabled: bool = _setting("true", _bool, "all rate limits on or off")
    rate_limit_default: str = _setting("300/minute", str, "general limit, per IP and per user")
    rate_limit_login: str = _setting("10/minute", str, "login attempts per IP + email")
    rate_limit_register: str = _setting("30/hour", str, "registrations per IP")
    rate_limit_login_account: str = _setting(
        "50/hour", str, "login attempts per account (email), from all addresses together"
    )
    rate_limit_login_ip: str = _setting(
        "60/minute", str, "login attempts per IP, whatever the email"
    )
    rate_limit_password_reset_ip: str = _setting("30/hour", str, "password reset requests per IP")
    rate_limit_password_reset_email: str = _setting(
        "5/hour", str, "password reset requests per email (known or not)"
    )
    rate_limit_verification_resend: str = _setting(
        "5/hour", str, "verification email resends per user"
    )
    cache_enabled: bool = _setting("true", _bool, "catalog cache on or off")
    cache_ttl: int = _setting("300", _positive_int, "seconds a cached catalog answer may live")
    search_candidates: int = _setting(
        "300",
        _positive_int,
        "a ranked product search (q without sort) ranks the newest this many matches",
    )
    list_queries: int = _setting(
        "4",
        _positive_int,
        "uncached product and category list queries a worker runs at once (0: no bound); "
        "more wait up to LIST_QUEUE_TIMEOUT, then 503",
    )
    list_queue_timeout: float = _setting(
        "1", float, "seconds an uncached list query waits for a slot (then 503)"
    )
    cors_origins: tuple[str, ...] = _setting("", _csv, "comma-separated allowed origins")
    trusted_proxies: int = _setting("0", _positive_int, "proxy hops of X-Forwarded-For to trust")
    trusted_proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "",
        _networks,
        "comma-separated CIDRs where our reverse proxies live: X-Forwarded-For is read only "
        "from a socket peer inside them (empty: from none); required with TRUSTED_PROXIES",
    )
    metrics_allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7",
        _networks,
        "comma-separated CIDRs whose socket peers may read /metrics (404 to others, and to "
        "any request carrying X-Forwarded-For or Forwarded: it came through a proxy)",
    )
    db_pool_min: int = _setting(
        "1", _positive_int, "connections per worker process and pool, minimum"
    )
    db_pool_max: int = _setting(
        "10", _positive_int, "connections per worker process and pool, maximum"
    )
    db_pool_timeout: float = _setting(
        "5", float, "seconds a request waits for a connection (then 503)"
    )
    db_statement_timeout_ms: int = _setting("5000", _positive_int, "PostgreSQL statement_timeout")
    redis_timeout: float = _setting("0.25", float, "seconds for a Redis connect or command")
    currency: str = _setting("USD", str, "the store currency (ISO 4217)")
    idempotency_key_ttl: int = _setting(
        "86400", _positive_int, "seconds an Idempotency-Key is kept"
    )
    max_body_bytes: int = _setting("1048576", _positive_int, "largest request body (413 above)")
    smtp_url: str | None = _setting(
        None,
        str,
        "outgoing mail, `smtp://user:pass@host:587` (STARTTLS when offered) or `smtps://` "
        "(TLS); unset in development: emails are written to the log",
    )
    email_from: str = _setting("shopapi <no-reply@localhost>", str, "From: of every email")
    email_enabled: bool = _setting(
        "true", _bool, "send emails; production refuses to start without SMTP_URL unless false"
    )
    webhook_max_attempts: int = _setting(
        "8", _positive_int, "attempts per webhook delivery before it is given up"
    )
    webhook_allow_private: bool = _setting(
        "false", _bool, "allow webhooks to loopback, private and link-local addresses"
    )
    job_max_attempts: int = _setting(
        "8", _positive_int, "attempts of any other job (emails, housekeeping) before it fails"
    )
    job_retry_base: float = _setting(
        "15",
        float,
        "seconds before a failed job's first retry; each next waits 4 times longer "
        "(8 attempts span about a day)",
    )
    worker_concurrency: int = _setting("4", _positive_int, "jobs one worker runs at once")
    worker_stalled_after: float = _setting(
        "30",
        float,
        "seconds without a heartbeat after which a worker counts as dead and its running "
        "jobs are run again",
    )
    worker_metrics_port: int = _setting(
        "9101", _positive_int, "port of the worker's own /metrics (0: none)"
    )
    relay_interval: float = _setting(
        "0.2", float, "seconds between two looks for committed events not yet relayed"
    )
    event_retention: int = _setting(
        "2592000", _positive_int, "seconds events and their delivery log are kept"
    )
    password_reset_ttl: int = _setting("3600", _positive_int, "seconds a password reset link works")
    email_verification_ttl: int = _setting(
        "604800", _positive_int, "seconds an email verification link works"
    )
    password_reset_url: str = _setting(
        "shopapi://reset-password?token={token}",
        str,
        "the link of the reset email, `{token}` replaced by the token (an app deep link or a "
        "web page)",
    )
    email_verification_url: str = _setting(
        "shopapi://verify-email?token={token}",
        str,
        "the link of the verification email, `{token}` replaced by the token",
    )
    require_verified_email: bool = _setting(
        "false", _bool, "placing an order needs a verified email (else 403 email_not_verified)"
    )
    max_pending_orders: int = _setting(
        "10",
        _positive_int,
        "pending (unpaid) orders one customer may hold; the next is 409 "
        "too_many_pending_orders (0: no limit)",
    )
    cart_ttl: int = _setting(
        "2592000", _positive_int, "seconds a guest cart lives after its last change"
    )
    payment_provider: str = _setting(
        "manual",
        str,
        "`manual` (staff mark orders paid) or `stripe` (card payments in the app, Stripe's "
        "PaymentIntents and signed webhooks)",
    )
    order_payment_timeout: int | None = _setting(
        None,
        _positive_int,
        "seconds after creation when the worker cancels an unpaid pending order (stock back); "
        "default 1800 with `stripe`, 0 (never) with `manual`",
    )
    stripe_secret_key: str | None = _setting(
        None, str, "Stripe secret key (`sk_live_...`/`sk_test_...`); required with `stripe`"
    )
    stripe_publishable_key: str | None = _setting(
        None, str, "Stripe publishable key the app's SDK uses (`pk_...`); required with `stripe`"
    )
    stripe_webhook_secret: str | None = _setting(
        None,
        str,
        "signing secret of the webhook endpoint registered at Stripe (`whsec_...`); required "
        "with `stripe`",
    )
    stripe_api_base: str = _setting(
        "https://api.stripe.com", str, "Stripe's API address (tests: a local Stripe emulator)"
    )
    admin_email: str | None = _setting(
        None,
        str,
        "`bin/seed` in production: the first admin's email (created once, never promoted "
        "from an existing account); unset: `admin@localhost` when no admin exists",
    )
    admin_password: str | None = _setting(
        None,
        str,
        "`bin/seed` in production: that admin's password (>= 12 characters), used only when "
        "the account is created; unset: a generated one, printed once",
    )
    log_level: str = _setting("INFO", str, "log level")

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
        if not values.get("secret_key"):
            values["secret_key"] = None
            if values.get("app_env") in RANDOM_KEY_ENVS:
                # said explicitly (unset APP_ENV is None): a random key, this process's own;
                # a server of several processes shares one (share_signing_key)
                values["secret_key"] = secrets.token_urlsafe(48)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.app_env not in {None, "development", "test", "production"}:
            raise ConfigError("APP_ENV must be development, test or production")
        if self.secret_key in KNOWN_WEAK_SECRETS:
            raise ConfigError(
                "SECRET_KEY is a value published in docs or examples: anyone could sign tokens "
                f"with it. {_MAKE_A_KEY}"
            )
        if (
            self.secret_key
            and self.app_env not in RANDOM_KEY_ENVS
            and len(self.secret_key.encode()) < 32
        ):
            raise ConfigError(f"SECRET_KEY is shorter than 32 bytes. {_MAKE_A_KEY}")
        if self.jwt_leeway > 300:
            raise ConfigError("JWT_LEEWAY must be at most 300 seconds (a clock skew, not a TTL)")
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ConfigError("BCRYPT_ROUNDS must be between 4 and 31")
        if self.password_hash_threads < 1:
            raise ConfigError("PASSWORD_HASH_THREADS must be >= 1")
        if self.db_pool_max < max(1, self.db_pool_min):
            raise ConfigError("DB_POOL_MAX must be >= DB_POOL_MIN and >= 1")
        if self.webhook_max_attempts < 1 or self.job_max_attempts < 1:
            raise ConfigError("WEBHOOK_MAX_ATTEMPTS and JOB_MAX_ATTEMPTS must be >= 1")
        if self.smtp_url and not self.smtp_url.startswith(("smtp://", "smtps://")):
            raise ConfigError("SMTP_URL must start with smtp:// or smtps://")
        if self.worker_concurrency < 1:
            raise ConfigError("WORKER_CONCURRENCY must be >= 1")
        if self.trusted_proxies and not self.trusted_proxy_networks:
            # else every request would count against the proxy's own address, silently
            raise ConfigError(
                "TRUSTED_PROXIES needs TRUSTED_PROXY_NETWORKS (where the proxies' requests come "
                "from): X-Forwarded-For is never read from other peers"
            )
        for name in ("password_reset_url", "email_verification_url"):
            if "{token}" not in getattr(self, name):
                raise ConfigError(f"{name.upper()} must contain {{token}}")
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise ConfigError("CURRENCY must be a three-letter ISO 4217 code")
        if self.payment_provider not in {"manual", "stripe"}:
            raise ConfigError("PAYMENT_PROVIDER must be manual or stripe")
        if self.payment_provider == "stripe":
            missing = [
                name.upper()
                for name in ("stripe_secret_key", "stripe_publishable_key", "stripe_webhook_secret")
                if not getattr(self, name)
            ]
            if missing:
                raise ConfigError(f"PAYMENT_PROVIDER=stripe needs {', '.join(missing)}")
        if self.is_production:
            self._validate_production()

    def _validate_production(self) -> None:
        """Production refuses weak secrets and never falls back to local services."""
        if not self.secret_key:
            raise ConfigError(f"SECRET_KEY is not set, and production needs one. {_MAKE_A_KEY}")
        if not self.database_url or not self.redis_url:
            raise ConfigError("DATABASE_URL and REDIS_URL are required in production")
        if self.email_enabled and not self.smtp_url:
            raise ConfigError(
                "SMTP_URL is required in production (or EMAIL_ENABLED=false to send no email)"
            )

    @property
    def payment_timeout(self) -> int:
        """ORDER_PAYMENT_TIMEOUT, or its provider's default: 1800 s with Stripe, never (0)
        with manual payments (staff mark orders paid whenever the money arrives)."""
        if self.order_payment_timeout is not None:
            return self.order_payment_timeout
        return 1800 if self.payment_provider == "stripe" else 0

    @property
    def signing_key(self) -> str:
        """SECRET_KEY, or the random key of an explicit development/test run. Without either
        (APP_ENV and SECRET_KEY both unset) nothing may sign: a server or worker asks for it at
        start and refuses to start (tools that sign nothing, like migrate, still run)."""
        if not self.secret_key:
            raise ConfigError(
                "SECRET_KEY and APP_ENV are both unset: nothing may sign tokens. "
                f"{_MAKE_A_KEY} On a development machine, APP_ENV=development (or test) signs "
                "with a random key made at start instead."
            )
        return self.secret_key

    @property
    def dsn(self) -> str:
        return self.database_url or "postgresql://127.0.0.1:5432/shopapi"

    @property
    def direct_dsn(self) -> str:
        """Where session-bound work connects: DATABASE_DIRECT_URL, else DATABASE_URL."""
        return self.database_direct_url or self.dsn

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"


# derived from the fields above, in their order: the one list the docs are checked against
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name.upper(), f.metadata["default"], f.metadata["parse"], f.metadata["help"])
    for f in fields(Settings)
)

_BY_NAME = {s.name: s for s in SETTINGS}


def read_dotenv(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def setting_names() -> list[str]:
    return [s.name for s in SETTINGS]


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def share_signing_key() -> Settings:
    """For the process that starts a server's others (gunicorn's master, before it forks the
    workers): read and check the settings as the workers will, refuse to start when nothing may
    sign, and when an explicit development/test run has no SECRET_KEY, put the random key made
    here into the environment every worker inherits, so that they all sign and verify with one
    key (a token issued by one worker works on the others, and on workers started later)."""
    settings = Settings.from_env()
    key = settings.signing_key  # ConfigError: refuse to start
    if not os.environ.get("SECRET_KEY"):
        os.environ["SECRET_KEY"] = key
    return settings

"""The app factory: the worker's collaborators, routes, middleware, error handlers.

`create_app(settings, pool=..., redis=...)` takes its dependencies so tests can hand in
real but isolated ones; production (shopapi.asgi) passes nothing, and the app builds one
pool (plus one for a read replica), one Redis client, the catalog cache and the rate limiter,
and hands them to whoever needs them. The pools open at the ASGI lifespan's start-up
(gunicorn's asgi worker sends it), or on first use where no lifespan is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi
import msgspec
import redis.asyncio

from shopapi.admission import Admission
from shopapi.cache import CatalogCache
from shopapi.config import Settings
from shopapi.context import AppContext
from shopapi.db import Pool, make_pool
from shopapi.endpoint import answer_head_like_get
from shopapi.errors import install_error_handlers
from shopapi.middleware.auth import Authentication
from shopapi.middleware.rate_limit import RateLimit
from shopapi.middleware.request_context import JsonLineLogger, RequestContext
from shopapi.middleware.request_metrics import RequestMetrics
from shopapi.openapi import build_spec
from shopapi.pager import Pager
from shopapi.payment_providers import make_provider
from shopapi.ratelimits import Limiter
from shopapi.redis_client import make_redis
from shopapi.resources import (
    account,
    addresses,
    auth,
    carts,
    categories,
    docs,
    health,
    orders,
    payments,
    products,
    scrape,
    shipping,
    users,
    webhooks,
)
from shopapi.security import Passwords, TokenCodec
from shopapi.user_state import UserStates


class ShopApp(falcon.asgi.App):
    """falcon.asgi.App plus the context its resources share (tests and the CLI reach it here)."""

    ctx: AppContext


# seconds a payment start waits for one of the worker's payment slots before its 503
PAYMENT_START_WAIT = 2.0


def _json_handler() -> falcon.media.JSONHandler:
    return falcon.media.JSONHandler(
        dumps=msgspec.json.Encoder().encode, loads=msgspec.json.Decoder().decode
    )


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    """Every API route: (template, resource, suffix). The OpenAPI spec walks this list."""
    user_resource = users.Users(ctx)
    return [
        ("/healthz", health.Liveness(), None),
        ("/readyz", health.Readiness_(ctx), None),
        ("/metrics", scrape.MetricsScrape(ctx), None),
        ("/api/auth/register", auth.Register(ctx), None),
        ("/api/auth/login", auth.Login(ctx), None),
        ("/api/auth/refresh", auth.Refresh(ctx), None),
        ("/api/auth/logout", auth.Logout(ctx), None),
        ("/api/auth/logout-all", auth.LogoutAll(ctx), None),
        ("/api/auth/me", auth.Me(ctx), None),
        *account.routes(ctx),
        ("/api/users", user_resource, None),
        ("/api/users/{user_id}", user_resource, "item"),
        *categories.routes(ctx),
        *products.routes(ctx),
        *orders.routes(ctx),
        *payments.routes(ctx),
        *addresses.routes(ctx),
        *shipping.routes(ctx),
        *carts.routes(ctx),
        *webhooks.routes(ctx),
    ]


class Lifespan:
    """Opens the pools at start-up and closes what the app built at shutdown (ASGI lifespan).

    Closing matters: a worker told to stop while its pool is still connecting would otherwise
    keep retrying the connection until graceful_timeout, and gunicorn would wait for it.
    Servers that run one lifespan per worker (gunicorn, uvicorn) hand it a `state` dict;
    Falcon's test client runs a lifespan around every simulated request and hands none: then
    nothing is closed, since a closed psycopg pool cannot be opened again.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self.ctx.start()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if "state" in scope:
            await self.ctx.close()


def build_context(
    settings: Settings, pool: Pool | None = None, redis: redis.asyncio.Redis | None = None
) -> AppContext:
    """The worker's collaborators; what is not handed in is built here (and closed at
    shutdown)."""
    closers: list[Callable[[], Awaitable[Any]]] = []
    if pool is None:
        pool = make_pool(settings)
        closers.append(pool.close)
    read_pool = None
    if settings.database_read_url:
        read_pool = make_pool(settings, settings.database_read_url)
        closers.append(read_pool.close)
    if redis is None:
        redis = make_redis(settings)
        closers.append(redis.aclose)
    cache_on = settings.cache_enabled and settings.cache_ttl > 0
    payments = make_provider(settings)
    closers.append(payments.close)
    return AppContext(
        settings=settings,
        pool=pool,
        read_pool=read_pool,
        redis=redis,
        cache=CatalogCache(redis if cache_on else None, settings.cache_ttl),
        tokens=TokenCodec(
            settings.signing_key,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway,
        ),
        passwords=Passwords(
            settings.bcrypt_rounds, settings.password_hash_threads, settings.password_hash_queue
        ),
        user_states=UserStates(redis),
        pager=Pager(settings.signing_key, settings.list_queries, settings.list_queue_timeout),
        payments=payments,
        payment_starts=Admission(
            max(1, settings.db_pool_max // 2),
            PAYMENT_START_WAIT,
            "Too many payments are being started at once, retry shortly",
        ),
        owned_closers=closers,
    )


def create_app(
    settings: Settings | None = None,
    *,
    pool: Pool | None = None,
    redis: redis.asyncio.Redis | None = None,
) -> ShopApp:
    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    ctx = build_context(settings, pool, redis)
    limiter = Limiter(settings, ctx.redis) if settings.rate_limit_enabled else None

    middleware: list[Any] = [
        Lifespan(ctx),
        RequestContext(JsonLineLogger(settings.log_level), settings.max_body_bytes),
        RequestMetrics(ctx),
        # "*" must reach Falcon as the string; an empty list allows no origin at all
        falcon.CORSMiddleware(
            allow_origins="*" if "*" in settings.cors_origins else list(settings.cors_origins),
            expose_headers=[
                "X-Request-ID",
                "Location",
                "ETag",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Idempotent-Replayed",
            ],
        ),
        Authentication(ctx),
        # a cached product read's keys ride in the counters' Redis round trip
        RateLimit(settings, limiter, prefetch=products.cached_read_keys(ctx.cache)),
    ]
    app = ShopApp(middleware=middleware, cors_enable=False)
    app.ctx = ctx
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    handler = _json_handler()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    install_error_handlers(app)

    table = routes(ctx)
    for template, resource, suffix in table:
        answer_head_like_get(resource, suffix)
        app.add_route(template, resource, suffix=suffix) if suffix else app.add_route(
            template, resource
        )
    if not settings.is_production:
        for template, resource in (
            ("/api/docs/openapi.json", docs.OpenApiDocument(build_spec(table))),
            ("/api/docs/swagger-ui", docs.SwaggerPage()),
        ):
            answer_head_like_get(resource, None)
            app.add_route(template, resource)
        app.add_static_route("/api/docs/swagger-ui/static", str(docs.SWAGGER_STATIC))
    return app

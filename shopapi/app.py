"""The app factory: routes, middleware, error handlers.

`create_app(settings, pool=..., redis=...)` takes its dependencies so tests can hand in
real but isolated ones; production (shopapi.asgi) passes nothing.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import falcon
import falcon.asgi
import msgspec
import redis as redis_lib
from psycopg_pool import ConnectionPool

from shopapi import user_state
from shopapi.config import Settings
from shopapi.context import AppContext
from shopapi.db import make_pool
from shopapi.errors import install_error_handlers
from shopapi.middleware.auth import Authentication
from shopapi.middleware.metrics import Metrics
from shopapi.middleware.rate_limit import RateLimit
from shopapi.middleware.request_context import JsonLineLogger, RequestContext
from shopapi.openapi import build_spec
from shopapi.redis_clients import async_client_like, make_redis
from shopapi.resources import auth, categories, docs, health, orders, products, users
from shopapi.resources import metrics as metrics_resource
from shopapi.security import TokenCodec


class ShopApp(falcon.asgi.App):
    """falcon.asgi.App plus the context its resources share (tests and the CLI reach it here)."""

    ctx: AppContext


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
        ("/metrics", metrics_resource.Metrics(ctx), None),
        ("/api/auth/register", auth.Register(ctx), None),
        ("/api/auth/login", auth.Login(ctx), None),
        ("/api/auth/refresh", auth.Refresh(ctx), None),
        ("/api/auth/logout", auth.Logout(ctx), None),
        ("/api/auth/logout-all", auth.LogoutAll(ctx), None),
        ("/api/auth/me", auth.Me(ctx), None),
        ("/api/users", user_resource, None),
        ("/api/users/{user_id}", user_resource, "item"),
        *categories.routes(ctx),
        *products.routes(ctx),
        *orders.routes(ctx),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    pool: ConnectionPool | None = None,
    redis: redis_lib.Redis | None = None,
) -> ShopApp:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(levelname)s %(name)s %(message)s")
    redis = redis or make_redis(settings)
    ctx = AppContext(
        settings=settings,
        pool=pool or make_pool(settings),
        # catalog reads may go to a replica (DATABASE_READ_URL); everything else to the primary
        read_pool=(make_pool(settings, settings.database_read_url)
                   if settings.database_read_url else None),
        redis=redis,
        aredis=async_client_like(redis),
        user_states=user_state.for_client(redis),
        tokens=TokenCodec(settings.signing_key, settings.access_token_ttl,
                          settings.refresh_token_ttl),
    )

    middleware: list[object] = [
        # blocking responders get one thread per pooled connection: they never queue for one
        RequestContext(JsonLineLogger(settings.log_level), settings.max_body_bytes,
                       ThreadPoolExecutor(settings.db_pool_max, thread_name_prefix="blocking")),
        Metrics(ctx),
        # "*" must reach Falcon as the string; an empty list allows no origin at all
        falcon.CORSMiddleware(allow_origins="*" if "*" in settings.cors_origins
                              else list(settings.cors_origins),
                              expose_headers=["X-Request-ID", "ETag", "Retry-After",
                                              "RateLimit-Limit", "RateLimit-Remaining",
                                              "RateLimit-Reset", "Idempotent-Replayed"]),
        Authentication(ctx),
        RateLimit(ctx),
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
        app.add_route(template, resource, suffix=suffix) if suffix else app.add_route(
            template, resource
        )
    if not settings.is_production:
        app.add_route("/api/docs/openapi.json", docs.OpenApiDocument(build_spec(table)))
        app.add_route("/api/docs/swagger-ui", docs.SwaggerPage())
        app.add_static_route("/api/docs/swagger-ui/static", str(docs.SWAGGER_STATIC))
    return app

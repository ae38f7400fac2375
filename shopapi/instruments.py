"""Prometheus metrics: every series the API exposes, declared once.

Counters are module-level so any service can count without knowing HTTP. Under gunicorn,
`gunicorn.conf.py` sets `PROMETHEUS_MULTIPROC_DIR` before the workers import this module, so
each worker writes its values to mmap files there and `render()` merges every worker's files
(prometheus-client's multiprocess mode). Without that variable (tests, `bin/dev`) the default
in-process registry is used.

Names: prometheus-client appends `_total` to counters, so `shopapi_orders_placed` is exposed
as `shopapi_orders_placed_total`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from shopapi.client_ip import Networks, inside, normalize

CACHE_REQUESTS = Counter("shopapi_cache_requests", "Catalog cache lookups", ["result"])
CACHE_HIT = CACHE_REQUESTS.labels(result="hit")
CACHE_MISS = CACHE_REQUESTS.labels(result="miss")
ORDERS_PLACED = Counter("shopapi_orders_placed", "Orders placed")
RATE_LIMITED = Counter("shopapi_rate_limited", "Requests refused by a rate limit")
PASSWORD_JOBS_SHED = Counter(
    "shopapi_password_hashing_shed",
    "Logins, registrations and password changes refused 503: the hashing queue was full",
)

# `route` is the URI template (or "unmatched"), never the raw path: one series per route,
# not one per product id.
HTTP_LABELS = ("method", "route", "status")
HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered", HTTP_LABELS)
# Requests here take well under a millisecond to a few hundred: buckets start at 1 ms.
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the first middleware to the response, seconds",
    HTTP_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# Each worker writes its own pool's numbers; `livesum` adds up the workers still alive
# (gunicorn.conf.py's child_exit drops a dead worker's file).
DB_POOL_CONNECTIONS = Gauge(
    "shopapi_db_pool_connections",
    "Connections of this instance's PostgreSQL pools (all workers)",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_IN_USE = DB_POOL_CONNECTIONS.labels(state="in_use")
POOL_IDLE = DB_POOL_CONNECTIONS.labels(state="idle")


def record_pool(*pools) -> None:
    """Publish this worker's connections, all its pools together (`get_stats()` of each)."""
    size = available = 0
    for pool in pools:
        stats = pool.get_stats()
        size += stats.get("pool_size", 0)
        available += stats.get("pool_available", 0)
    POOL_IN_USE.set(size - available)
    POOL_IDLE.set(available)


def registry() -> CollectorRegistry:
    """The registry to scrape: every worker's files in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


# headers a reverse proxy adds: their presence means the request crossed one
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded")


def may_scrape(peer: str | None, proxied: bool, allowed: Networks) -> bool:
    """Who may read /metrics, the API's and the job worker's alike (API.md, Operations): a
    socket peer (never a header) inside METRICS_ALLOWED_NETWORKS that talks to us directly; a
    request carrying one of PROXY_HEADERS came through a proxy, a client of the public side."""
    return not proxied and inside(normalize(peer or ""), allowed)


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type (Prometheus text, or OpenMetrics if asked)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry()), content_type


# Background work (`shopapi worker`, served on the worker's own /metrics port).
JOBS = Counter("shopapi_jobs", "Jobs run by the worker, by outcome", ["task", "status"])
WEBHOOK_DELIVERIES = Counter(
    "shopapi_webhook_deliveries", "Webhook delivery attempts, by result", ["result"]
)
EMAILS_SENT = Counter("shopapi_emails_sent", "Emails handed to SMTP, by template", ["template"])

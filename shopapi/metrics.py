"""Prometheus metrics (to be completed by the operations work).

Counters are module-level so any service can count without knowing HTTP; in gunicorn they
are aggregated across workers with prometheus-client's multiprocess mode.
"""

from __future__ import annotations

from prometheus_client import Counter

CACHE_REQUESTS = Counter(
    "shopapi_cache_requests", "Catalog cache lookups", ["result"]
)
CACHE_HIT = CACHE_REQUESTS.labels(result="hit")
CACHE_MISS = CACHE_REQUESTS.labels(result="miss")
ORDERS_PLACED = Counter("shopapi_orders_placed", "Orders placed")
RATE_LIMITED = Counter("shopapi_rate_limited", "Requests refused by a rate limit")

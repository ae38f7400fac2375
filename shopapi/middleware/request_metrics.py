"""Counts and times every request for Prometheus, labelled by the route template.

Runs on every request, so it stays cheap: the bound counter and histogram children are
cached per (method, route, status) — `labels()` on each request costs about 2 µs more —
and the pool gauge is refreshed at most once a second per worker.
"""

from __future__ import annotations

import time

import falcon

from shopapi import instruments
from shopapi.context import AppContext

# anything else a client invents would be a new series each time: it counts as "other"
KNOWN_METHODS = frozenset(falcon.HTTP_METHODS)
POOL_REFRESH_SECONDS = 1.0


class RequestMetrics:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._children: dict[tuple[str, str, int], tuple] = {}
        self._pool_refreshed = float("-inf")

    def _bound(self, method: str, route: str, status: int) -> tuple:
        if method not in KNOWN_METHODS:
            method = "other"
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            labels = (method, route, str(status))
            child = (
                instruments.HTTP_REQUESTS.labels(*labels),
                instruments.HTTP_DURATION.labels(*labels),
            )
            self._children[key] = child
        return child

    async def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        now = time.perf_counter()
        # RequestContext (the first middleware) stamps the start
        started = getattr(req.context, "started", now)
        requests, duration = self._bound(
            req.method, req.uri_template or "unmatched", resp.status_code
        )
        requests.inc()
        duration.observe(now - started)
        if now - self._pool_refreshed >= POOL_REFRESH_SECONDS:
            self._pool_refreshed = now
            instruments.record_pool(*self.ctx.pools)

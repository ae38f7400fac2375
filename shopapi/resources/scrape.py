"""/metrics: Prometheus exposition for this instance (every gunicorn worker merged).

No authentication and no rate limit: Prometheus scrapes each instance directly on the private
network (`api:8000` in docker-compose). What keeps the series private is where the request
comes from (API.md, Operations, 2026-12 revision): the socket peer must be inside
`METRICS_ALLOWED_NETWORKS` (loopback and private ranges by default), and a request that
carries `X-Forwarded-For` or `Forwarded` came through a proxy, so it is a client of the
public side whatever the peer's address. Anyone else gets the 404 of an unknown route, so
the route's existence is not confirmed either. The public nginx refuses every spelling of
`/metrics` as well (deploy/nginx.conf): two independent locks.
"""

from __future__ import annotations

import falcon

from shopapi import instruments
from shopapi.context import AppContext
from shopapi.endpoint import endpoint
from shopapi.errors import NotFound


class MetricsScrape:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.allowed = ctx.settings.metrics_allowed_networks

    def may_scrape(self, req: falcon.Request) -> bool:
        """instruments.may_scrape for this request (`remote_addr` is the ASGI client)."""
        proxied = any(req.get_header(name) is not None for name in instruments.PROXY_HEADERS)
        return instruments.may_scrape(req.remote_addr, proxied, self.allowed)

    @endpoint(
        "Prometheus metrics of this instance, all workers (text exposition format); only to "
        "peers inside METRICS_ALLOWED_NETWORKS that send no X-Forwarded-For (404 otherwise)",
        tags=("operations",),
        errors=(404,),
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.may_scrape(req):
            raise NotFound()
        # the scraping worker's pool numbers are fresh; the others' are at most a second old
        instruments.record_pool(*self.ctx.pools)
        resp.data, resp.content_type = instruments.render(req.get_header("Accept"))

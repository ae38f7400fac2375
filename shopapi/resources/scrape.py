"""/metrics: Prometheus exposition for this instance (every gunicorn worker merged).

No authentication and no rate limit, on purpose: Prometheus scrapes each instance directly
on the private network (`api:8000` in docker-compose), and the public nginx in front refuses
`/metrics` (deploy/nginx.conf), so the series never reach the internet.
"""

from __future__ import annotations

import falcon

from shopapi import instruments
from shopapi.context import AppContext
from shopapi.endpoint import endpoint


class MetricsScrape:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Prometheus metrics of this instance, all workers (text exposition format)",
        tags=("operations",),
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # the scraping worker's pool numbers are fresh; the others' are at most a second old
        instruments.record_pool(*self.ctx.pools)
        resp.data, resp.content_type = instruments.render(req.get_header("Accept"))

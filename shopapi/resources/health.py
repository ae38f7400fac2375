"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import endpoint
from shopapi.schemas.common import Readiness, Status
from shopapi.services import health


class Liveness:
    @endpoint(
        "Liveness: the process answers (no database access)", returns=Status, tags=("operations",)
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = Status("ok")


class Readiness_:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Readiness: PostgreSQL answers (Redis down only degrades)",
        returns=Readiness,
        also=(503,),  # unready: the same report
        tags=("operations",),
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = await health.readiness(self.ctx)
        resp.media = report
        resp.status = 200 if report.status == "ready" else 503

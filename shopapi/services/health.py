"""Readiness: can we reach PostgreSQL and Redis right now?"""

from __future__ import annotations

import logging

from shopapi.context import AppContext
from shopapi.db import connection, queries
from shopapi.schemas.common import Readiness

log = logging.getLogger("shopapi.health")

# a probe must answer within the orchestrator's timeout (1 s by default in Kubernetes), not
# after DB_POOL_TIMEOUT: a database that gives no connection this fast counts as down
PROBE_WAIT = 1.0


async def readiness(ctx: AppContext) -> Readiness:
    database = "ok"
    try:
        async with connection(ctx.pool, min(PROBE_WAIT, ctx.settings.db_pool_timeout)) as conn:
            await queries.ping(conn)
    except Exception as exc:  # any failure means "not ready", never a 500
        log.warning("readiness: database down (%s)", type(exc).__name__)
        database = "down"
    redis_state = "ok"
    try:
        await ctx.redis.ping()  # type: ignore[misc]  # (redis-py types both clients as one)
    except Exception as exc:
        log.warning("readiness: redis down (%s)", type(exc).__name__)
        redis_state = "down"
    return Readiness(
        status="ready" if database == "ok" else "unready", database=database, redis=redis_state
    )

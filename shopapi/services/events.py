"""Events (the outbox): how committed events become jobs, and their retention."""

from __future__ import annotations

from shopapi.db import Pool, connection, queries

RELAY_BATCH = 500  # events per relay statement


async def relay_events(pool: Pool, limit: int = RELAY_BATCH) -> tuple[int, int]:
    """Relay up to `limit` committed events into their jobs; returns (events, jobs)."""
    async with connection(pool) as conn:
        row = await queries.relay_events(conn, limit=limit)
    return row["events"], row["jobs"]


async def purge_events(pool: Pool, older_than_seconds: int) -> int:
    """Delete relayed events (and their delivery log) past the retention window."""
    async with connection(pool) as conn:
        return await queries.delete_old_events(conn, older_than_seconds=older_than_seconds)

"""Bounded admission to scarce work (a pool connection held long, a slow provider call):
a few at a time per worker, a short queue, then 503 with Retry-After instead of letting one
kind of request take every connection from the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shopapi.errors import ServiceUnavailable


class Admission:
    """At most `slots` blocks at once (0: unbounded); a caller waits `queue_timeout` seconds
    for a slot, then gets ServiceUnavailable(`busy`) with `Retry-After: 1`."""

    def __init__(self, slots: int, queue_timeout: float = 1.0, busy: str = "Busy") -> None:
        self._slots = asyncio.Semaphore(slots) if slots else None
        self.queue_timeout = queue_timeout
        self.busy = busy

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
        except TimeoutError:
            raise ServiceUnavailable(self.busy, headers={"Retry-After": "1"}) from None
        try:
            yield
        finally:
            self._slots.release()

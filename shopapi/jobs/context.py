"""What a job's code works with, built once per worker process (`shopapi worker`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from shopapi.cache import CatalogCache
from shopapi.config import Settings
from shopapi.db import Pool
from shopapi.payment_providers import ManualPayments, PaymentProvider
from shopapi.replica import WritePositions, catalog_written
from shopapi.services.email import Mailer


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    pool: Pool
    mailer: Mailer
    http: httpx.AsyncClient  # webhook deliveries: no redirects followed, 5 s per attempt
    payments: PaymentProvider = field(default_factory=ManualPayments)  # refunds
    # stock the worker gives back (expired orders) invalidates the API's cached counts
    cache: CatalogCache = field(default_factory=lambda: CatalogCache(None, 0))
    # with a read replica, those writes record their WAL position first (shopapi.replica)
    writes: WritePositions | None = None

    async def catalog_written(self, *version_keys: str) -> None:
        """As AppContext.catalog_written, for a write of the worker's (shopapi.replica)."""
        await catalog_written(self.writes, self.cache, version_keys)

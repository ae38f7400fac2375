"""Rate limits on Redis (to be implemented by the hardening work)."""

from __future__ import annotations


class RateLimit:
    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def process_request(self, req, resp) -> None:
        return None

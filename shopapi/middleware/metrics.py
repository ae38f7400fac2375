"""Request metrics middleware (to be implemented by the operations work)."""

from __future__ import annotations


class Metrics:
    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def process_request(self, req, resp) -> None:
        return None

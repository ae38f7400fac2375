"""Resolves the caller once per request: `req.context.user` or a deferred 401.

A bad token does not fail public routes; the 401 is raised by `@endpoint(roles=...)`
only where a caller is required. The caller's role and is_active come from this worker's
memory (kept true by Redis pub/sub); only a user it has not seen yet is read from
PostgreSQL.
"""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.errors import NotAuthenticated
from shopapi.services.auth import authenticate, remembered_caller


class Authentication:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header("Authorization")
        if not header:
            return
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            req.context.auth_error = NotAuthenticated("Malformed Authorization header")
            return
        try:
            user = remembered_caller(self.ctx, token)
            if user is None:
                user = await authenticate(self.ctx, token)
            req.context.user = user
        except NotAuthenticated as exc:
            req.context.auth_error = exc

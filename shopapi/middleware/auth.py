"""Resolves the caller once per request: `req.context.user` or a deferred 401.

A bad token does not fail public routes; the 401 is raised by `@endpoint(roles=...)`
only where a caller is required.
"""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.errors import NotAuthenticated
from shopapi.services.auth import authenticate


class Authentication:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header("Authorization")
        if not header:
            return
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            req.context.auth_error = NotAuthenticated("Malformed Authorization header")
            return
        try:
            req.context.user = authenticate(self.ctx, token.strip())
        except NotAuthenticated as exc:
            req.context.auth_error = exc

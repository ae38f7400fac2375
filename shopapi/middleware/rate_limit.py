"""Rate limits per client address, per user, per login and per registration.

Runs in `process_resource`: after `Authentication` (so `req.context.user` is known) and after
routing (so the route template says which extra limits apply). The limits themselves, and how
they are counted, live in `shopapi.ratelimits`. Every limited answer, 429 or not, carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a 429 adds `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi
import msgspec

from shopapi.client_ip import client_ip
from shopapi.config import Settings
from shopapi.endpoint import read_raw_body
from shopapi.errors import RateLimited
from shopapi.instruments import RATE_LIMITED
from shopapi.ratelimits import (
    LOGIN_ROUTE,
    REGISTER_ROUTE,
    Limiter,
    Usage,
    address_subject,
    email_subject,
    is_exempt,
)


class _LoginEmail(msgspec.Struct):
    email: str = ""


_decode_login = msgspec.json.Decoder(_LoginEmail).decode


# the Redis keys a request will read anyway (a cached read's), given the request and its path
# parameters; None when it reads none
Prefetch = Callable[[falcon.Request, dict[str, Any]], list[str] | None]


class RateLimit:
    def __init__(
        self, settings: Settings, limiter: Limiter | None, prefetch: Prefetch | None = None
    ) -> None:
        self.limiter = limiter
        # the keys ride in the counters' batch: that read then costs no round trip of its own
        self.prefetch = prefetch
        self.trusted_proxies = settings.trusted_proxies
        self.max_body_bytes = settings.max_body_bytes

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if self.limiter is None or is_exempt(req.path) or _is_preflight(req):
            return
        ip = address_subject(client_ip(req, self.trusted_proxies))
        checks = [("general.ip", ip)]
        user = getattr(req.context, "user", None)
        if user is not None:
            checks.append(("general.user", str(user.id)))
        route = (req.method, req.uri_template)
        if route == LOGIN_ROUTE:
            email = await self._login_email(req)
            checks.append(("auth.login.ip_email", f"{ip}/{email_subject(email)}"))
        elif route == REGISTER_ROUTE:
            checks.append(("auth.register.ip", ip))

        fetch = self.prefetch(req, params) if self.prefetch is not None else None
        usage, fetched = await self.limiter.hit_and_fetch(checks, fetch)
        if fetched is not None:
            req.context.cache_prefetch = fetched
        req.context.rate_limit = usage
        if not usage.allowed:
            RATE_LIMITED.inc()
            raise RateLimited(
                f"Too many requests; retry in {usage.reset} s",
                headers={"Retry-After": str(usage.reset)},
            )

    async def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        usage: Usage | None = getattr(req.context, "rate_limit", None)
        if usage is None:
            return
        resp.set_header("RateLimit-Limit", str(usage.limit))
        resp.set_header("RateLimit-Remaining", str(usage.remaining))
        resp.set_header("RateLimit-Reset", str(usage.reset))

    async def _login_email(self, req: falcon.asgi.Request) -> str:
        """The email of a login body, read here because the limit is keyed on it (the raw
        bytes stay in `req.context.raw_body` for the endpoint); a body the endpoint will
        refuse (too large, not JSON, no email) is counted under an empty email."""
        raw = await read_raw_body(req, self.max_body_bytes)
        if len(raw) > self.max_body_bytes:
            return ""
        try:
            return _decode_login(raw).email
        # also absurdly deep nesting, and strings that are not UTF-8 (msgspec raises those)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return ""


def _is_preflight(req: falcon.Request) -> bool:
    # answered by Falcon and CORSMiddleware without our code; browsers send one per new
    # (origin, URL), so counting them would halve a browser client's allowance
    return req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method") is not None

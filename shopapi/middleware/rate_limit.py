"""Rate limits per client address, per user, per login, per registration, per reset email.

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
    PASSWORD_RESET_ROUTE,
    REGISTER_ROUTE,
    VERIFICATION_RESEND_ROUTE,
    Limiter,
    Usage,
    address_subject,
    email_subject,
    is_exempt,
)


class _BodyEmail(msgspec.Struct):
    email: str = ""


_decode_body_email = msgspec.json.Decoder(_BodyEmail).decode


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
        self.trusted_networks = settings.trusted_proxy_networks
        self.max_body_bytes = settings.max_body_bytes

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if self.limiter is None or is_exempt(req.path) or _is_preflight(req):
            return
        ip = address_subject(client_ip(req, self.trusted_proxies, self.trusted_networks))
        checks = [("general.ip", ip)]
        user = getattr(req.context, "user", None)
        if user is not None:
            checks.append(("general.user", str(user.id)))
        route = (req.method, req.uri_template)
        if route == LOGIN_ROUTE:
            account = email_subject(await self._body_email(req))
            checks += [
                ("auth.login.ip_email", f"{ip}/{account}"),
                ("auth.login.account", account),
                ("auth.login.ip", ip),
            ]
        elif route == REGISTER_ROUTE:
            checks.append(("auth.register.ip", ip))
        elif route == PASSWORD_RESET_ROUTE:
            checks += [
                ("auth.password_reset.ip", ip),
                ("auth.password_reset.email", email_subject(await self._body_email(req))),
            ]
        elif route == VERIFICATION_RESEND_ROUTE and user is not None:
            checks.append(("auth.verification_resend.user", str(user.id)))

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

    async def _body_email(self, req: falcon.asgi.Request) -> str:
        """The email of a login or reset body, read here because limits are keyed on it (the raw
        bytes stay in `req.context.raw_body` for the endpoint); a body the endpoint will
        refuse (too large, not JSON, no email) is counted under an empty email."""
        raw = await read_raw_body(req, self.max_body_bytes)
        if len(raw) > self.max_body_bytes:
            return ""
        try:
            return _decode_body_email(raw).email
        # also absurdly deep nesting, and strings that are not UTF-8 (msgspec raises those)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return ""


def _is_preflight(req: falcon.Request) -> bool:
    # answered by Falcon and CORSMiddleware without our code; browsers send one per new
    # (origin, URL), so counting them would halve a browser client's allowance
    return req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method") is not None

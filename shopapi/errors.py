"""The error family and the one problem+json (RFC 9457) serializer.

Every error a client can see is an `ApiError` subclass with its status and stable `code`
on the class; Falcon's own HTTP errors (404, 405, 413...) and unexpected exceptions are
mapped onto the same shape by the handlers registered in `install_error_handlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi
import msgspec
import psycopg
import psycopg.errors
import psycopg_pool

log = logging.getLogger("shopapi.errors")

PROBLEM_JSON = "application/problem+json"
_encode = msgspec.json.Encoder().encode


class FieldError(msgspec.Struct):
    field: str
    message: str


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class InvalidJson(ApiError):
    status, code, title = 400, "invalid_json", "Invalid JSON"


class ValidationFailed(ApiError):
    status, code, title = 422, "validation_error", "Validation failed"

    @classmethod
    def single(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", errors=[FieldError(field, message)])


class NotAuthenticated(ApiError):
    status, code, title = 401, "not_authenticated", "Not authenticated"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class InvalidCredentials(NotAuthenticated):
    code, title = "invalid_credentials", "Invalid credentials"


class InvalidToken(ApiError):
    status, code, title = 400, "invalid_token", "Invalid or expired token"


class InvalidSignature(ApiError):
    status, code, title = 400, "invalid_signature", "Invalid webhook signature"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Forbidden"


class EmailNotVerified(Forbidden):
    code, title = "email_not_verified", "Email not verified"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already registered"


class NameTaken(Conflict):
    code, title = "name_taken", "Name already taken"


class CategoryInUse(Conflict):
    code, title = "category_in_use", "Category has products"


class InsufficientStock(Conflict):
    code, title = "insufficient_stock", "Insufficient stock"


class InvalidTransition(Conflict):
    code, title = "invalid_transition", "Invalid status transition"


class IdempotencyKeyReused(Conflict):
    code, title = "idempotency_key_reused", "Idempotency key reused with another body"


class RequestInProgress(Conflict):
    code, title = "request_in_progress", "A request with this key is in progress"


class CannotDeleteSelf(Conflict):
    code, title = "cannot_delete_self", "Cannot delete yourself"


class AddressLimit(Conflict):
    code, title = "address_limit", "Address book full"


class CartFull(Conflict):
    code, title = "cart_full", "Cart full"


class TooManyPendingOrders(Conflict):
    code, title = "too_many_pending_orders", "Too many pending orders"


class PaymentNotOnline(Conflict):
    code, title = "payment_not_online", "This shop takes no online payments"


class PaymentProviderUnavailable(ApiError):
    status, code, title = 502, "payment_provider_unavailable", "Payment provider unavailable"


class PreconditionFailed(ApiError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RateLimited(ApiError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


# Falcon's own HTTP errors (routing, 405, body limits) mapped onto our codes.
_FALCON_STATUS_TO_ERROR: dict[int, type[ApiError]] = {
    400: InvalidJson,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    503: ServiceUnavailable,
}


def render(resp: falcon.Response, error: ApiError) -> None:
    resp.status = error.status
    resp.content_type = PROBLEM_JSON
    resp.data = _encode(error.to_problem())
    for name, value in error.headers.items():
        resp.set_header(name, value)


def _handle_api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params) -> None:
    render(resp, ex)


def _handle_falcon_error(req, resp, ex: falcon.HTTPError, params) -> None:
    if req.method not in falcon.COMBINED_METHODS:
        # Falcon answers an unknown method (FOO, TRACK...) with a 400; it is a method problem
        render(resp, MethodNotAllowed(f"Unknown HTTP method {req.method[:16]!r}"))
        return
    if isinstance(ex, falcon.HTTPMethodNotAllowed):
        # keep the Allow header Falcon computed
        allow = dict(ex.headers or {}).get("Allow")
        render(resp, MethodNotAllowed(headers={"Allow": allow} if allow else None))
        return
    cls = _FALCON_STATUS_TO_ERROR.get(ex.status_code)
    if cls is None:
        cls = type("HttpError", (ApiError,), {"status": ex.status_code, "code": "http_error"})
        title = ex.title
    else:
        title = cls.title
    error = cls(ex.description if ex.description else None)
    error.title = title
    render(resp, error)


def _handle_database_down(req, resp, ex: Exception, params) -> None:
    # 503 + Retry-After for every way the database can fail a request that was fine: down,
    # no connection within DB_POOL_TIMEOUT, or a statement cancelled by statement_timeout
    # (typically a row lock held too long elsewhere). The statement's transaction was rolled
    # back, so the same request (with its Idempotency-Key) is safe to retry.
    if isinstance(ex, psycopg.errors.QueryCanceled):
        log.warning("database too slow: statement cancelled (%s)", ex.sqlstate)
        detail = "The database did not answer in time, retry shortly"
    else:
        log.warning("database unavailable: %s", type(ex).__name__)
        detail = "The database is unavailable, retry shortly"
    render(resp, ServiceUnavailable(detail, headers={"Retry-After": "1"}))


def _handle_unexpected(req, resp, ex: Exception, params) -> None:
    if isinstance(ex, falcon.HTTPError):  # raised by Falcon itself
        _handle_falcon_error(req, resp, ex, params)
        return
    # the trace goes to the log with the request id, never to the client
    log.exception("unhandled error", extra={"request_id": getattr(req.context, "request_id", "")})
    render(resp, ApiError())


def _on_the_loop(handler: Callable[..., None]) -> Callable[..., Awaitable[None]]:
    """falcon.asgi wants coroutine handlers; ours only render bytes, so they run inline."""

    async def handle(req, resp, ex, params) -> None:
        handler(req, resp, ex, params)

    return handle


def install_error_handlers(app: falcon.asgi.App) -> None:
    # Falcon picks the handler of the nearest base class: order does not matter
    for error, handler in (
        (Exception, _handle_unexpected),
        (falcon.HTTPError, _handle_falcon_error),
        (psycopg_pool.PoolTimeout, _handle_database_down),
        (psycopg.OperationalError, _handle_database_down),
        (ApiError, _handle_api_error),
    ):
        app.add_error_handler(error, _on_the_loop(handler))

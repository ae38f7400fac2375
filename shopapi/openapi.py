"""OpenAPI 3.1, built from the routes and each responder's `@endpoint` declaration.

Bodies, answers and query strings are the same msgspec Structs that validate requests,
so the spec cannot drift from the code.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from shopapi.endpoint import Endpoint
from shopapi.errors import FieldError
from shopapi.schemas.orders import IDEMPOTENCY_KEY_MAX
from shopapi.schemas.webhooks import EVENT_TYPES, EventEnvelope

METHODS = ("get", "post", "put", "patch", "delete")
_PARAM_RE = re.compile(r"{(\w+)(?::\w+)?}")

ERROR_TITLES = {
    400: "Body is not JSON or not an object (invalid_json); a webhook's signature does not "
    "match (invalid_signature)",
    401: "Missing, malformed, expired or revoked token (not_authenticated, invalid_credentials)",
    403: "Role or ownership does not allow it (forbidden)",
    404: "Unknown id or route (not_found)",
    405: "Method not allowed (method_not_allowed)",
    409: "Conflict (see code)",
    412: "If-Match no longer matches (precondition_failed)",
    413: "Body over the size limit (payload_too_large)",
    422: "Validation failed (validation_error, with errors)",
    429: "Rate limited (rate_limited, with Retry-After)",
    502: "The payment provider did not answer (payment_provider_unavailable)",
    503: "A dependency is down (service_unavailable)",
}

# what the code checks of each request header an @endpoint may declare
HEADER_SCHEMAS = {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
    "If-Match": {"type": "string", "minLength": 1},  # an ETag or *; blank is 422
    # a guest cart's secret, as POST /api/cart answered it
    "X-Cart-Token": {"type": "string", "minLength": 1, "maxLength": 128},
    # Stripe's scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body">>
    "Stripe-Signature": {"type": "string"},
}


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    errors: list[FieldError] | None = None
    # members of `insufficient_stock` only: the short line and what is left
    product_id: int | None = None
    requested: int | None = None
    available: int | None = None


def endpoints(routes) -> list[tuple[str, str, Endpoint]]:
    found = []
    for template, resource, suffix in routes:
        for method in METHODS:
            name = f"on_{method}" + (f"_{suffix}" if suffix else "")
            responder = getattr(resource, name, None)
            spec = getattr(responder, "__endpoint__", None)
            if spec is not None:
                found.append((template, method, spec))
    return found


def _query_parameters(struct: type, components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = components[struct.__name__]
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _parameters(template: str, spec: Any, components: dict[str, Any]) -> list[dict[str, Any]]:
    """An operation's path ids, query fields and documented request headers."""
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "format": "int64"},
        }
        for name in _PARAM_RE.findall(template)
    ]
    if spec.query is not None:
        params += _query_parameters(spec.query, components)
    for header in spec.headers:
        params.append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "schema": HEADER_SCHEMAS.get(header, {"type": "string"}),
            }
        )
    return params


def build_spec(routes, *, title: str = "shopapi", version: str = "0.1.0") -> dict[str, Any]:
    found = endpoints(routes)
    types: list[Any] = [Problem, EventEnvelope]
    for _, _, spec in found:
        types += [t for t in (spec.body, spec.returns, spec.query) if t is not None]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(map(id, types), schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for template, method, spec in found:
        path = _PARAM_RE.sub(r"{\1}", template)
        params = _parameters(template, spec, components)
        op: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": f"{method}_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_"),
            "tags": list(spec.tags),
            "parameters": params,
            "responses": {},
        }
        if spec.roles is not None:
            op["security"] = [{"bearer": []}]
        if spec.body is not None:
            op["requestBody"] = {
                "required": not spec.body_optional,
                "content": {"application/json": {"schema": refs[id(spec.body)]}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if spec.returns is not None and spec.status != 204:
            ok["content"] = {"application/json": {"schema": refs[id(spec.returns)]}}
        for status in (spec.status, *spec.also):
            op["responses"][str(status)] = ok
        for status in sorted(set(spec.errors)):
            op["responses"][str(status)] = {
                "description": ERROR_TITLES.get(status, "Error"),
                "content": {"application/problem+json": {"schema": refs[id(Problem)]}},
            }
        paths.setdefault(path, {})[method] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The shop's REST API. Money is integer cents; errors are "
            "RFC 9457 problem+json with a stable `code`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "webhooks": _webhooks(refs[id(EventEnvelope)]),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


WEBHOOK_NOTE = (
    "POSTed to each active webhook subscribed to the event type, as JSON, with the headers "
    "`Shopapi-Event-Id` (the envelope id: deduplicate on it, delivery is at least once), "
    "`Shopapi-Event-Type` and `Shopapi-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
    '"<t>.<raw body>" keyed with the webhook\'s secret>`. A 2xx answer within 5 s is '
    "delivered; anything else is retried with exponential backoff up to "
    "WEBHOOK_MAX_ATTEMPTS. Redirects are not followed."
)


def _webhooks(envelope: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 `webhooks`: what shopapi sends to merchants, one entry per event type."""
    return {
        event: {
            "post": {
                "summary": f"{event} happened",
                "description": WEBHOOK_NOTE,
                "operationId": "webhook_" + event.replace(".", "_"),
                "tags": ["webhooks"],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": envelope}},
                },
                "responses": {"200": {"description": "Any 2xx: delivered"}},
            }
        }
        for event in EVENT_TYPES
    }

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
from shopapi.ratelimits import is_exempt
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
    500: "Unexpected error (internal_error; no trace or SQL is ever shown)",
    502: "The payment provider did not answer (payment_provider_unavailable)",
    503: "A dependency is down or too slow, or the server sheds load (service_unavailable, "
    "with Retry-After when a retry soon can succeed)",
}
# what every operation can answer whatever it declares: a bug, a database that is down (even
# a public route reads the caller of a bearer token)
ALWAYS = (500, 503)
SUCCESS_TITLES = {
    200: "OK",
    201: "Created: Location is the new resource's URL",
    202: "Accepted",
    204: "No content",
    304: "Not modified: the If-None-Match ETag is current (no body)",
}

_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
# response headers, referenced from every answer that carries them
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's own when sane (1-128 of A-Z a-z 0-9 "
        "._:-), else a generated one; quote it when reporting a problem",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "ETag": {
        "description": "The answer's entity tag: If-None-Match with it gives 304 on a read, "
        "If-Match with it guards a later update",
        "required": True,
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "The created resource's URL (a path)",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer of an earlier request with the "
        "same Idempotency-Key (nothing new was done)",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the tightest window that applies",
        "schema": _DIGITS,
    },
    "RateLimit-Remaining": {"description": "Requests left in that window", "schema": _DIGITS},
    "RateLimit-Reset": {"description": "Seconds until that window resets", "schema": _DIGITS},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": _DIGITS},
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

# what the code checks of each request header an @endpoint may declare
HEADER_SCHEMAS = {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
    "If-Match": {"type": "string", "minLength": 1},  # an ETag or *; blank is 422
    "If-None-Match": {"type": "string"},  # ETags of the client's copies, or *
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
        {"name": name, "in": "query", "required": name in required, "schema": _not_null(prop)}
        for name, prop in schema["properties"].items()
    ]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query field's schema without its `null` member: `page: int | None = None` is an
    optional integer parameter; a query string cannot send null (generated clients would
    offer it)."""
    members = [m for m in prop.get("anyOf", ()) if m != {"type": "null"}]
    if len(members) != 1:
        return prop
    rest = {k: v for k, v in prop.items() if k != "anyOf" and (k, v) != ("default", None)}
    return {**members[0], **rest}


def _parameters(
    template: str, method: str, spec: Any, components: dict[str, Any]
) -> list[dict[str, Any]]:
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
    headers = spec.headers + (("If-None-Match",) if spec.etag and method == "get" else ())
    for header in headers:
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
        types += [t for t in (spec.body, spec.returns) if t is not None]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(map(id, types), schemas, strict=True))
    # query Structs become parameters, not components (a client would get a model of
    # nullable fields no request can carry)
    _, query_components = msgspec.json.schema_components(
        {spec.query for _, _, spec in found if spec.query is not None},
        ref_template="#/components/schemas/{name}",
    )

    paths: dict[str, dict[str, Any]] = {}
    for template, method, spec in found:
        path = _PARAM_RE.sub(r"{\1}", template)
        params = _parameters(template, method, spec, query_components)
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
        op["responses"] = _responses(template, method, spec, refs)
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
            "headers": RESPONSE_HEADERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _responses(template: str, method: str, spec: Endpoint, refs: dict[int, Any]) -> dict[str, Any]:
    """Every status the operation answers, each with its body and the headers it carries."""
    limited = () if is_exempt(template) else RATE_LIMIT_HEADERS
    responses: dict[str, Any] = {}
    successes = (spec.status, *spec.also)
    for status in successes:
        names = ["X-Request-ID", *limited]
        if spec.etag:
            names.append("ETag")
        if status == 201:
            names.append("Location")
        if "Idempotency-Key" in spec.headers:
            names.append("Idempotent-Replayed")
        ok: dict[str, Any] = {
            # /readyz answers its report with 503 too
            "description": SUCCESS_TITLES.get(status, "The same body, see the summary"),
            "headers": _headers(*names),
        }
        if spec.returns is not None and status != 204:
            ok["content"] = {"application/json": {"schema": refs[id(spec.returns)]}}
        responses[str(status)] = ok
    if spec.etag and method == "get":
        responses["304"] = {
            "description": SUCCESS_TITLES[304],
            "headers": _headers("X-Request-ID", *limited, "ETag"),
        }
    for status in sorted((set(spec.errors) | set(ALWAYS)) - set(successes)):
        names = ["X-Request-ID", *limited]
        if status in (429, 503):
            names.append("Retry-After")
        headers = _headers(*names)
        if status == 429:  # always told when to come back
            headers["Retry-After"] = {**RESPONSE_HEADERS["Retry-After"], "required": True}
        responses[str(status)] = {
            "description": ERROR_TITLES.get(status, "Error"),
            "headers": headers,
            "content": {"application/problem+json": {"schema": refs[id(Problem)]}},
        }
    return responses


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

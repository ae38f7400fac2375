"""The one decorator every responder wears: `@endpoint(...)`.

It declares, once per responder, what the OpenAPI spec documents and what the request must
satisfy: the roles allowed, the body Struct (decoded straight from the raw bytes by msgspec),
the query Struct (converted from the query string), the answer type and the error statuses.
Ids in the path are checked as signed 64-bit integers (422 otherwise).

The app is ASGI (falcon.asgi on gunicorn's asgi worker: keep-alive, one event loop per
worker), async end to end: every responder is `async def` and must not block (bcrypt runs on
`ctx.passwords`' own threads).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.asgi
import msgspec

from shopapi.errors import (
    FieldError,
    Forbidden,
    InvalidJson,
    NotAuthenticated,
    PayloadTooLarge,
    ValidationFailed,
)
from shopapi.messages import enum_values, one_of, plain

INT64_MAX = 2**63 - 1
_PATH_RE = re.compile(r" - at `\$(.*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(.*)`$")


@dataclass(frozen=True)
class Endpoint:
    """What one responder accepts and answers; read by `shopapi.openapi`."""

    summary: str
    roles: tuple[str, ...] | None = None  # None: public; (): any authenticated user
    body: type | None = None
    body_optional: bool = False  # no body at all decodes as `body()` (every field defaulted)
    # the body is read (req.context.raw_body, within the size limit) but not decoded: the
    # responder checks it first (a signed webhook); `body` then only documents it
    body_raw: bool = False
    query: type | None = None
    returns: Any = None
    status: int = 200
    also: tuple[int, ...] = ()  # other success statuses answering `returns` (e.g. 201 and 200)
    errors: tuple[int, ...] = ()
    headers: tuple[str, ...] = ()  # documented request headers, e.g. Idempotency-Key
    # answers carry an ETag (resources.conditional); on a GET, If-None-Match with it gives 304
    etag: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


AUTHENTICATED: tuple[str, ...] = ()
STAFF = ("ADMIN", "EDITOR")
ADMIN = ("ADMIN",)


def field_path(message: str) -> tuple[str, str]:
    """Split msgspec's "Expected `int`, got `str` - at `$.items[0].quantity`"."""
    match = _PATH_RE.search(message)
    path = ""
    if match:
        path, message = match.group(1).lstrip("."), message[: match.start()]
    # msgspec names a missing field in the message, and the path stops at its parent object
    missing = _MISSING_RE.match(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path, message


def validation_error(exc: msgspec.ValidationError, root: type) -> ValidationFailed:
    """The 422 for msgspec's error decoding `root`: the field path, and a plain sentence."""
    path, message = field_path(str(exc))
    message = plain(message, enum_values(root, path))
    return ValidationFailed(f"{path or 'body'}: {message}", errors=[FieldError(path, message)])


@functools.cache
def _decoder(struct: type) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(struct)


async def read_raw_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The raw body, at most `limit` + 1 bytes (more means too large), read once per request
    and kept in `req.context.raw_body`: the login rate limit reads the email from it, orders
    hash it for the Idempotency-Key. The server de-chunks a chunked body."""
    raw = getattr(req.context, "raw_body", None)
    if raw is None:
        # (a Content-Length over the limit was refused already, by RequestContext)
        raw = req.context.raw_body = await req.stream.read(limit + 1)
    return raw


def decode_body(req: falcon.Request, struct: type, limit: int) -> Any:
    """Decode the raw body into `struct`: 400 for bad JSON, 422 with the field path."""
    raw = req.context.raw_body
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request bodies are limited to {limit} bytes")
    if not raw.strip():
        raise InvalidJson("The request body must be a JSON object")
    try:
        return _decoder(struct).decode(raw)
    except msgspec.ValidationError as exc:
        path, message = field_path(str(exc))
        if not path and message.startswith("Expected `object`"):
            raise InvalidJson("The request body must be a JSON object") from None
        raise validation_error(exc, struct) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"Malformed JSON: {exc}") from None
    except RecursionError:  # msgspec walks nesting (even of ignored fields) on the C stack
        raise InvalidJson("Malformed JSON: nested too deeply") from None
    except UnicodeDecodeError:  # raised by msgspec itself for a string that is not UTF-8
        raise InvalidJson("Malformed JSON: not valid UTF-8") from None


@dataclass(frozen=True)
class _QueryRules:
    integers: frozenset[str]  # fields that are integers: ASCII digits only
    # fields that must not read "null" as None (msgspec's lax conversion does for `X | None`
    # when X is not a string): the sentence that refuses it
    no_null: dict[str, str]


@functools.cache
def _query_rules(struct: type) -> _QueryRules:
    integers, no_null = set(), {}
    for struct_field in msgspec.inspect.type_info(struct).fields:  # type: ignore[attr-defined]
        info, nullable = struct_field.type, False
        while isinstance(info, msgspec.inspect.Metadata | msgspec.inspect.UnionType):
            if isinstance(info, msgspec.inspect.Metadata):
                info = info.type
            else:
                nullable = True
                info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        name = struct_field.encode_name
        if isinstance(info, msgspec.inspect.IntType):
            integers.add(name)
        elif nullable and isinstance(info, msgspec.inspect.LiteralType):
            no_null[name] = one_of(tuple(info.values))
        elif nullable and isinstance(info, msgspec.inspect.BoolType):
            no_null[name] = plain("Expected `bool`, got `str`")
    return _QueryRules(frozenset(integers), no_null)


def _is_integer(text: str) -> bool:
    # ASCII digits, and a minus sign whose value the field's range then judges: msgspec's lax
    # conversion would read "1e3" as 1000 and "5.0" as 5, one page under many spellings
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


def read_query(req: falcon.Request, struct: type) -> Any:
    """Convert the query string into `struct` (strings coerced to the declared types)."""
    params: dict[str, Any] = {}
    rules = _query_rules(struct)
    for name, value in req.params.items():
        # a repeated parameter keeps its last value, like most frameworks
        params[name] = value = value[-1] if isinstance(value, list) else value
        if value == "null" and name in rules.no_null:
            raise ValidationFailed.single(name, rules.no_null[name])
        if name in rules.integers:
            if not _is_integer(value):
                raise ValidationFailed.single(name, "must be an integer (ASCII digits only)")
            # "07" is 7; a longer number than any bound is left for the range check to refuse
            # (int() refuses thousands of digits with a ValueError of its own)
            params[name] = int(value) if len(value) <= 20 else value
    try:
        return msgspec.convert(params, struct, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, struct) from None


def parse_id(name: str, raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationFailed.single(name, "must be an integer") from None
    # ASCII digits only: int() also reads "١" and "１" as 1, one object under many URLs
    text = str(raw)
    if not -INT64_MAX - 1 <= value <= INT64_MAX or not (
        text.lstrip("-").isdigit() and text.isascii()
    ):
        raise ValidationFailed.single(name, "must be a signed 64-bit integer")
    return value


def require_roles(req: falcon.Request, roles: tuple[str, ...] | None) -> None:
    if roles is None:
        return
    user = req.context.user
    if user is None:
        raise req.context.auth_error or NotAuthenticated("Missing bearer token")
    if roles and user.role not in roles:
        raise Forbidden("Your role does not allow this")


def answer_head_like_get(resource: object, suffix: str | None) -> None:
    """HEAD on a GET route: the GET responder serves it, and Falcon sends its status and
    headers (Content-Length and ETag included) without the body. Not listed in the OpenAPI
    document: HTTP defines HEAD for every GET (RFC 9110 9.3.2)."""
    name = f"_{suffix}" if suffix else ""
    get = getattr(resource, f"on_get{name}", None)
    if get is not None and getattr(resource, f"on_head{name}", None) is None:
        setattr(resource, f"on_head{name}", get)


def endpoint(summary: str, **options: Any) -> Callable:
    spec = Endpoint(summary=summary, **options)

    def decorate(responder: Callable) -> Callable:
        if not inspect.iscoroutinefunction(responder):
            raise TypeError(f"{responder.__qualname__}: responders are async def")

        @functools.wraps(responder)
        async def wrapper(
            resource: Any, req: falcon.asgi.Request, resp: falcon.Response, **params: Any
        ) -> Any:
            require_roles(req, spec.roles)
            for name, raw in params.items():
                if name.endswith("id"):
                    params[name] = parse_id(name, raw)
            if spec.query is not None:
                req.context.query = read_query(req, spec.query)
            if spec.body is not None:
                limit = req.context.max_body_bytes
                raw = await read_raw_body(req, limit)
                if spec.body_raw:
                    if len(raw) > limit:
                        raise PayloadTooLarge(f"Request bodies are limited to {limit} bytes")
                else:
                    req.context.body = (
                        spec.body()
                        if spec.body_optional and not raw.strip()
                        else decode_body(req, spec.body, limit)
                    )
            resp.status = spec.status
            return await responder(resource, req, resp, **params)

        wrapper.__endpoint__ = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate

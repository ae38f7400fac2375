"""Orders: placement (stock deducted atomically, idempotent), reads and the status machine.

Every write here is one SQL statement (see sql/queries/orders.sql), sent on an autocommit
connection: a single statement is its own transaction, all-or-nothing, in one round trip.
Products are locked in id order inside those statements, so concurrent orders cannot
deadlock; should PostgreSQL still report a deadlock or a serialization failure, the
statement is simply run again (it changed nothing) and the client never sees it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg.errors
from psycopg_pool import ConnectionPool

from shopapi import metrics
from shopapi.cache import products_changed, stock_taken
from shopapi.context import AppContext, CurrentUser
from shopapi.db import AsyncPool, aconnection, aqueries, connection, queries
from shopapi.errors import (
    IdempotencyKeyReused,
    InsufficientStock,
    InvalidTransition,
    NotFound,
    RequestInProgress,
    ValidationFailed,
)
from shopapi.pagination import cursor_codec, fingerprint, page_of
from shopapi.schemas.common import PageOf
from shopapi.schemas.orders import (
    IDEMPOTENCY_KEY_MAX,
    OrderCreate,
    OrderListQuery,
    OrderPublic,
    OrderStatus,
)

log = logging.getLogger("shopapi.orders")

# The status machine: the only moves allowed. Anything else, staying put included, is a 409.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("paid", "cancelled"),
    "paid": ("shipped", "cancelled"),
    "shipped": ("delivered",),
    "delivered": (),
    "cancelled": (),
}
# ... read backwards: the states an order may be in to reach each status. This is the guard
# of the conditional UPDATE, so of two racing moves only one can match.
SOURCES: dict[str, tuple[str, ...]] = {
    target: tuple(state for state, targets in TRANSITIONS.items() if target in targets)
    for target in TRANSITIONS
}
LIST_SORT = "-created_at"
ATTEMPTS = 5  # runs of a statement that hit a deadlock or serialization failure

_decode_order = msgspec.json.Decoder(OrderPublic).decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _run(pool: ConnectionPool, query: Callable[..., Any], **params: Any) -> Any:
    """Run one single-statement write, again if PostgreSQL aborted it as a deadlock victim."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with connection(pool) as conn:
                return query(conn, **params)
        except _TRANSIENT as exc:
            _retrying(query, exc, attempt)
    raise AssertionError("unreachable")


async def _run_async(pool: AsyncPool, query: Callable[..., Any], **params: Any) -> Any:
    """`_run` on the event loop."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with aconnection(pool) as conn:
                return await query(conn, **params)
        except _TRANSIENT as exc:
            _retrying(query, exc, attempt)
    raise AssertionError("unreachable")


def _retrying(query: Callable[..., Any], exc: Exception, attempt: int) -> None:
    if attempt == ATTEMPTS:
        raise exc
    log.warning("%s: %s, attempt %d of %d", query.__name__, type(exc).__name__,
                attempt, ATTEMPTS)


# ------------------------------------------------------------------ placement


def checked_idempotency_key(header: str | None) -> str | None:
    """The Idempotency-Key header: absent is fine, empty or over 255 characters is a 422."""
    if header is None:
        return None
    if not 1 <= len(header) <= IDEMPOTENCY_KEY_MAX:
        raise ValidationFailed.single(
            "Idempotency-Key", f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters"
        )
    return header


def request_digest(raw_body: bytes) -> bytes:
    """sha256 of the body as parsed and re-encoded with sorted keys: key order and white
    space do not matter; everything sent (unknown fields, the order of lines) does."""
    try:
        canonical = _encode_sorted(msgspec.json.decode(raw_body))
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        # an ignored field msgspec skipped but cannot hold (1e400, a lone surrogate, bytes
        # that are not UTF-8):
        # such a body only matches itself byte for byte
        canonical = raw_body
    return hashlib.sha256(canonical).digest()


def _refuse_duplicate_products(body: OrderCreate) -> None:
    first_line: dict[int, int] = {}
    for index, line in enumerate(body.items):
        if line.product_id in first_line:
            raise ValidationFailed.single(
                f"items[{index}].product_id",
                f"product {line.product_id} is already on line {first_line[line.product_id]}",
            )
        first_line[line.product_id] = index


def _replay(stored_hash: bytes, order_json: str, digest: bytes | None) -> tuple[OrderPublic, bool]:
    if bytes(stored_hash) != digest:
        raise IdempotencyKeyReused("This Idempotency-Key was already used with another body")
    return _decode_order(order_json), True


def _refusal(body: OrderCreate, row: dict[str, Any]) -> Exception:
    """Why the statement wrote nothing: an unknown or inactive product, else short stock."""
    if row["unavailable_line"] is not None:
        index = row["unavailable_line"] - 1
        product_id = body.items[index].product_id
        return ValidationFailed.single(
            f"items[{index}].product_id", f"product {product_id} does not exist or is not for sale"
        )
    short = row["short_line"]
    if short is not None:
        return InsufficientStock(
            f"Product {short['product_id']} has {short['available']} left, "
            f"{short['requested']} requested",
            product_id=short["product_id"],
            requested=short["requested"],
            available=short["available"],
        )
    raise AssertionError(f"order refused without a reason: {row}")


async def place_order(
    ctx: AppContext,
    user: CurrentUser,
    body: OrderCreate,
    *,
    idempotency_key: str | None = None,
    raw_body: bytes = b"",
) -> tuple[OrderPublic, bool]:
    """Place an order all-or-nothing; returns (order, replayed).

    With an Idempotency-Key the key row is written by the same statement as the stock
    change. A second request racing with the same key blocks on that key's primary key
    until the first commits, fails with unique_violation (undoing its own deduction) and
    replays the first answer. Runs on the event loop: the hottest write.
    """
    _refuse_duplicate_products(body)
    key = checked_idempotency_key(idempotency_key)
    digest = request_digest(raw_body) if key is not None else None
    product_ids = [line.product_id for line in body.items]
    try:
        row = await _run_async(
            ctx.apool, aqueries.place_order,
            user_id=user.id, currency=ctx.settings.currency, product_ids=product_ids,
            quantities=[line.quantity for line in body.items],
            idempotency_key=key, request_hash=digest,
        )
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "idempotency_keys_pkey":
            raise
        row = None  # a request with the same key committed first

    if row is not None and row["order_json"] is not None:
        await stock_taken(ctx, *product_ids)
        metrics.ORDERS_PLACED.inc()
        return _decode_order(row["order_json"]), False
    if row is not None and row["earlier_hash"] is not None:
        return _replay(row["earlier_hash"], row["earlier_order_json"], digest)
    if key is not None:
        # Refused, or lost the race on the key: a request with this key may have committed
        # after this statement's snapshot was taken; its answer comes before our refusal.
        async with aconnection(ctx.apool) as conn:
            earlier = await aqueries.get_idempotent_answer(conn, user_id=user.id,
                                                           idempotency_key=key)
        if earlier is not None:
            return _replay(earlier["request_hash"], earlier["order_json"], digest)
        if row is None:  # the winner's key is already gone (purged): let the client retry
            raise RequestInProgress("A request with this Idempotency-Key just finished; retry")
    raise _refusal(body, row)


def purge_idempotency_keys(pool: ConnectionPool, older_than_seconds: int) -> int:
    """Delete Idempotency-Key rows older than the retention window; returns how many."""
    with connection(pool) as conn:
        return queries.delete_expired_idempotency_keys(
            conn, older_than_seconds=older_than_seconds
        )


# ------------------------------------------------------------------ reads


def get_order(ctx: AppContext, user: CurrentUser, order_id: int) -> OrderPublic:
    """Owner, ADMIN or EDITOR; for anyone else the order does not exist (404)."""
    with connection(ctx.pool) as conn:
        row = queries.get_order(conn, id=order_id)
    if row is None or (not user.is_staff and row["user_id"] != user.id):
        raise NotFound(f"Order {order_id} not found")
    return msgspec.convert(row, OrderPublic)


def _cursor_key(values: list[Any]) -> tuple[str, int]:
    match values:
        case [str() as created_at, int() as order_id]:
            return created_at, order_id
    raise ValidationFailed.single("cursor", "is not a cursor this server issued")


def list_orders(ctx: AppContext, user: CurrentUser, query: OrderListQuery) -> PageOf[OrderPublic]:
    """Newest first; customers see their own orders only, staff see all (user_id filter)."""
    if query.cursor is not None and query.page is not None:
        raise ValidationFailed.single("cursor", "cannot be combined with page")
    per_page = query.per_page
    user_id = query.user_id
    if not user.is_staff:
        if user_id is not None and user_id != user.id:
            # a customer's scope is their own orders: someone else's match nothing
            return page_of([], OrderPublic, page=None if query.cursor else query.page or 1,
                           per_page=per_page, total=0)
        user_id = user.id

    codec = cursor_codec(ctx.settings.signing_key)
    scope = fingerprint(sort=LIST_SORT, status=query.status, user_id=user_id)
    after_created_at: str | None = None
    after_id: int | None = None
    page: int | None = None
    offset = 0
    if query.cursor is not None:
        after_created_at, after_id = _cursor_key(codec.decode(query.cursor, scope))
    else:
        page = query.page or 1
        offset = (page - 1) * per_page

    filters = {"user_id": user_id, "status": query.status}
    with connection(ctx.pool) as conn:
        # one row more than asked tells whether there is a next page
        rows = list(queries.list_orders(
            conn, **filters, after_created_at=after_created_at, after_id=after_id,
            limit=per_page + 1, offset=offset,
        ))
        more = len(rows) > per_page
        rows = rows[:per_page]
        if page is not None and not more and (rows or offset == 0):
            total = offset + len(rows)  # the last page tells the total without counting
        else:
            total = queries.count_orders(conn, **filters)
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = codec.encode([last["created_at"], last["id"]], scope)
    return page_of(rows, OrderPublic, page=page, per_page=per_page, total=total,
                   next_cursor=next_cursor)


# ------------------------------------------------------------------ status changes


def _move(
    ctx: AppContext, user: CurrentUser, order_id: int, status: str, *,
    sources: tuple[str, ...], owner_id: int | None,
) -> OrderPublic:
    row = _run(
        ctx.pool, queries.change_order_status,
        id=order_id, status=status, from_statuses=list(sources), owner_id=owner_id,
        by_user_id=user.id,
    )
    if row is None:
        with connection(ctx.pool) as conn:
            state = queries.get_order_state(conn, id=order_id)
        if state is None or (owner_id is not None and state["user_id"] != owner_id):
            raise NotFound(f"Order {order_id} not found")
        raise InvalidTransition(
            f"Order {order_id} is {state['status']}; it cannot become {status}"
        )
    if row["restocked_ids"]:
        products_changed(ctx, *row["restocked_ids"])
    return msgspec.convert(row, OrderPublic)


def change_status(
    ctx: AppContext, user: CurrentUser, order_id: int, status: OrderStatus
) -> OrderPublic:
    """Staff move an order along the status machine; cancelling gives the stock back once."""
    return _move(ctx, user, order_id, status, sources=SOURCES[status], owner_id=None)


def cancel_own_order(ctx: AppContext, user: CurrentUser, order_id: int) -> OrderPublic:
    """The owner cancels their own pending order; for anyone else it does not exist."""
    return _move(ctx, user, order_id, "cancelled", sources=("pending",), owner_id=user.id)


def delete_order(ctx: AppContext, user: CurrentUser, order_id: int) -> None:
    """ADMIN removes an order; one still holding stock (pending, paid) gives it back."""
    row = _run(ctx.pool, queries.delete_order, id=order_id, by_user_id=user.id)
    if row is None:
        raise NotFound(f"Order {order_id} not found")
    if row["restocked_ids"]:
        products_changed(ctx, *row["restocked_ids"])

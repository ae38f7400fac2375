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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import psycopg.errors
from psycopg.types.json import Jsonb

from shopapi import cache, instruments
from shopapi.context import AppContext, CurrentUser
from shopapi.db import Pool, connection, queries, transaction
from shopapi.errors import (
    EmailNotVerified,
    IdempotencyKeyReused,
    InsufficientStock,
    InvalidTransition,
    NotFound,
    RequestInProgress,
    TooManyPendingOrders,
    ValidationFailed,
)
from shopapi.jobs.context import WorkerContext
from shopapi.pager import fingerprint
from shopapi.schemas.carts import CheckoutBody
from shopapi.schemas.common import PageOf
from shopapi.schemas.orders import (
    IDEMPOTENCY_KEY_MAX,
    OrderCreate,
    OrderListQuery,
    OrderPublic,
    OrderStatus,
)
from shopapi.services import carts

log = logging.getLogger("shopapi.orders")
T = TypeVar("T")
# an order's lines as the placement statement numbers them: (product_id, quantity)
Lines = list[tuple[int, int]]

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


async def _run(pool: Pool, query: Callable[..., Any], **params: Any) -> Any:
    """Run one single-statement write (its own transaction), retried as `_retried` says."""
    return await _retried(pool, query.__name__, lambda conn: query(conn, **params))


async def _retried(
    pool: Pool, name: str, work: Callable[[Any], Awaitable[T]], *, transactional: bool = False
) -> T:
    """`await work(conn)` on an autocommit connection (one statement), or in one transaction,
    and again if PostgreSQL aborted it as a deadlock victim or a serialization failure: it
    changed nothing, and the client never sees it."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with transaction(pool) if transactional else connection(pool) as conn:
                return await work(conn)
        except _TRANSIENT as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning("%s: %s, attempt %d of %d", name, type(exc).__name__, attempt, ATTEMPTS)
    raise AssertionError("unreachable")


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


def request_digest(raw_body: bytes, route: bytes = b"") -> bytes:
    """sha256 of the body as parsed and re-encoded with sorted keys: key order and white
    space do not matter; everything sent (unknown fields, the order of lines) does. `route`
    keeps one key from answering both a cart checkout and a POST /api/orders."""
    try:
        canonical = _encode_sorted(msgspec.json.decode(raw_body))
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        # an ignored field msgspec skipped but cannot hold (1e400, a lone surrogate, bytes
        # that are not UTF-8), or no body at all:
        # such a body only matches itself byte for byte
        canonical = raw_body
    return hashlib.sha256(route + canonical).digest()


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


def _check_buyer(ctx: AppContext, user: CurrentUser) -> None:
    if ctx.settings.require_verified_email and not user.email_verified:
        raise EmailNotVerified("Verify your email address before placing an order")


def _check_shipment(body: OrderCreate | CheckoutBody) -> None:
    """The shipment fields that contradict each other, refused before any work."""
    if body.shipping_address is not None and body.address_id is not None:
        raise ValidationFailed.single("address_id", "send shipping_address or address_id, not both")
    if (
        body.shipping_method_id is not None
        and body.shipping_address is None
        and body.address_id is None
    ):
        raise ValidationFailed.single(
            "shipping_method_id", "a shipping method needs shipping_address or address_id"
        )


def _too_many_pending(max_pending: int) -> TooManyPendingOrders:
    return TooManyPendingOrders(
        f"You hold {max_pending} pending orders, the most allowed; pay or cancel one first",
        limit=max_pending,
    )


def _refusal(
    body: OrderCreate | CheckoutBody, row: dict[str, Any], lines: Lines, max_pending: int
) -> Exception:
    """Why the statement wrote nothing, in the order a client would fix it: the address, the
    shipping method, too many pending orders, an empty cart, an unknown or inactive
    product, else short stock."""
    refused = row["shipment_refused"]
    if refused == "address":
        return ValidationFailed.single(
            "address_id", f"address {body.address_id} is not one of your addresses"
        )
    if refused is not None:
        reason = (
            "does not exist or is not active"
            if refused == "method"
            else ("does not ship to this address's country")
        )
        return ValidationFailed.single(
            "shipping_method_id", f"shipping method {body.shipping_method_id} {reason}"
        )
    if row["not_admitted"]:
        return _too_many_pending(max_pending)
    if not lines:
        return ValidationFailed.single("items", "the cart is empty")
    if row["unavailable_line"] is not None:
        index = row["unavailable_line"] - 1
        return ValidationFailed.single(
            f"items[{index}].product_id",
            f"product {lines[index][0]} does not exist or is not for sale",
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


def _lines(lines: Lines) -> dict[str, list[int]]:
    return {
        "product_ids": [product_id for product_id, _ in lines],
        "quantities": [quantity for _, quantity in lines],
    }


async def place_order(
    ctx: AppContext,
    user: CurrentUser,
    body: OrderCreate,
    *,
    idempotency_key: str | None = None,
    raw_body: bytes = b"",
) -> tuple[OrderPublic, bool]:
    """Place an order all-or-nothing; returns (order, replayed).

    One statement on an autocommit connection. With an Idempotency-Key the key row is
    written by that statement, with the stock change. A second request racing with the same
    key blocks on that key's primary key until the first commits, fails with unique_violation
    (undoing its own deduction) and replays the first answer. Runs on the event loop: the
    hottest write.
    """
    _check_buyer(ctx, user)
    _refuse_duplicate_products(body)
    lines = [(line.product_id, line.quantity) for line in body.items]

    async def place(conn: Any, params: dict[str, Any]) -> tuple[Lines, dict[str, Any]]:
        return lines, await queries.place_order(conn, **params, **_lines(lines))

    return await _place_and_answer(ctx, user, body, place, idempotency_key, raw_body, b"")


async def checkout_cart(
    ctx: AppContext,
    user: CurrentUser,
    body: CheckoutBody,
    *,
    idempotency_key: str | None = None,
    raw_body: bytes = b"",
) -> tuple[OrderPublic, bool]:
    """Place an order from the caller's cart through the same statement as place_order, and
    empty the cart in the same transaction; on any refusal the cart is left as it was. The
    cart row is locked first (every cart change locks it too) and its lines read after
    that, so the lines ordered are the lines emptied."""
    _check_buyer(ctx, user)

    async def place(conn: Any, params: dict[str, Any]) -> tuple[Lines, dict[str, Any]]:
        cart_id = await carts.user_cart_id(conn, user.id)
        lines: Lines = [
            (row["product_id"], row["quantity"])
            async for row in queries.read_cart_lines(conn, cart_id=cart_id)
        ]
        row = await queries.place_order(conn, **params, **_lines(lines))
        if row["order_json"] is not None:
            await queries.clear_cart(conn, cart_id=cart_id, ttl=ctx.settings.cart_ttl)
        return lines, row

    # the body is optional: none at all is the same request as `{}` (one Idempotency-Key)
    raw_body = raw_body if raw_body.strip() else b"{}"
    return await _place_and_answer(
        ctx,
        user,
        body,
        place,
        idempotency_key,
        raw_body,
        b"POST /api/cart/checkout\n",
        transactional=True,
    )


async def _place_and_answer(
    ctx: AppContext,
    user: CurrentUser,
    body: OrderCreate | CheckoutBody,
    place: Callable[[Any, dict[str, Any]], Awaitable[tuple[Lines, dict[str, Any]]]],
    idempotency_key: str | None,
    raw_body: bytes,
    route: bytes,
    *,
    transactional: bool = False,
) -> tuple[OrderPublic, bool]:
    """Run `place` (the placement statement, and a checkout's cart work around it) with the
    statement's common parameters, and turn its row into the order, a replay or a refusal."""
    _check_shipment(body)
    key = checked_idempotency_key(idempotency_key)
    digest = request_digest(raw_body, route) if key is not None else None
    address = body.shipping_address
    params = {
        "user_id": user.id,
        "currency": ctx.settings.currency,
        "max_pending": ctx.settings.max_pending_orders,
        "payment_provider": ctx.settings.payment_provider,
        "payment_timeout": ctx.settings.payment_timeout,
        "idempotency_key": key,
        "request_hash": digest,
        "address": None if address is None else Jsonb(msgspec.to_builtins(address)),
        "address_id": body.address_id,
        "shipping_method_id": body.shipping_method_id,
    }
    lines, row = await _place_retrying_slots(ctx, place, params, transactional)
    if row is not None and row["order_json"] is not None:
        order = _decode_order(row["order_json"])
        await ctx.catalog_written(*cache.stock_keys([item.product_id for item in order.items]))
        instruments.ORDERS_PLACED.inc()
        return order, False
    if row is not None and row["earlier_hash"] is not None:
        return _replay(row["earlier_hash"], row["earlier_order_json"], digest)
    if key is not None:
        # Refused, or lost the race on the key: a request with this key may have committed
        # after this statement's snapshot was taken; its answer comes before our refusal.
        earlier = await _earlier_answer(ctx, user, key, digest)
        if earlier is not None:
            return earlier
        if row is None:  # the winner's key is already gone (purged): let the client retry
            raise RequestInProgress("A request with this Idempotency-Key just finished; retry")
    assert row is not None, "only a request with a key can lose a race on it"
    raise _refusal(body, row, lines, ctx.settings.max_pending_orders)


async def _place_retrying_slots(
    ctx: AppContext,
    place: Callable[[Any, dict[str, Any]], Awaitable[tuple[Lines, dict[str, Any]]]],
    params: dict[str, Any],
    transactional: bool,
) -> tuple[Lines, dict[str, Any] | None]:
    """`place`'s lines and row; no row when a request with the same Idempotency-Key
    committed first (this one then changed nothing). A placement that took the same
    MAX_PENDING_ORDERS slot as a racing one of the same buyer changed nothing either, and
    runs again: it then sees that slot taken (each round one of the racers keeps its slot,
    so the rounds are bounded by the limit)."""
    for _ in range(ctx.settings.max_pending_orders + 1):
        try:
            return await _retried(
                ctx.pool,
                "place_order",
                lambda conn: place(conn, params),
                transactional=transactional,
            )
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "idempotency_keys_pkey":
                return [], None
            if exc.diag.constraint_name != "orders_pending_slot_key":
                raise
    raise RequestInProgress("Too many of your orders are being placed at once; retry")


async def _earlier_answer(
    ctx: AppContext, user: CurrentUser, key: str, digest: bytes | None
) -> tuple[OrderPublic, bool] | None:
    """The replayed answer of a request that used `key` before, if one committed."""
    async with connection(ctx.pool) as conn:
        earlier = await queries.get_idempotent_answer(conn, user_id=user.id, idempotency_key=key)
    return (
        None if earlier is None else _replay(earlier["request_hash"], earlier["order_json"], digest)
    )


async def purge_idempotency_keys(pool: Pool, older_than_seconds: int) -> int:
    """Delete Idempotency-Key rows older than the retention window; returns how many."""
    async with connection(pool) as conn:
        return await queries.delete_expired_idempotency_keys(
            conn, older_than_seconds=older_than_seconds
        )


# ------------------------------------------------------------------ reads


async def get_order(ctx: AppContext, user: CurrentUser, order_id: int) -> OrderPublic:
    """Owner, ADMIN or EDITOR; for anyone else the order does not exist (404)."""
    async with connection(ctx.pool) as conn:
        row = await queries.get_order(conn, id=order_id)
    if row is None or (not user.is_staff and row["user_id"] != user.id):
        raise NotFound(f"Order {order_id} not found")
    return msgspec.convert(row, OrderPublic)


def _listed_user(user: CurrentUser, query: OrderListQuery) -> int | None:
    """Whose orders a list shows: staff choose (user_id, or everyone), customers their own.
    -1 (no user) when a customer asks for someone else's: their scope matches nothing."""
    if user.is_staff:
        return query.user_id
    if query.user_id is not None and query.user_id != user.id:
        return -1
    return user.id


async def list_orders(
    ctx: AppContext, user: CurrentUser, query: OrderListQuery
) -> PageOf[OrderPublic]:
    """Newest first; customers see their own orders only, staff see all (user_id filter)."""
    user_id = _listed_user(user, query)
    filters = {"user_id": user_id, "status": query.status}
    pager = ctx.pager
    window = pager.window(
        query.page,
        query.per_page,
        query.cursor,
        scope=fingerprint(sort=LIST_SORT, **filters),
        key_types=(str, int),
        decode=user_id != -1,
    )
    if user_id == -1:
        return pager.empty(window, OrderPublic)
    async with connection(ctx.pool) as conn:
        rows = [
            row
            async for row in queries.list_orders(
                conn,
                **filters,
                after_created_at=window.after[0],
                after_id=window.after[1],
                limit=window.limit,
                offset=window.offset,
            )
        ]
        return await pager.page(
            rows,
            window,
            OrderPublic,
            count=lambda: queries.count_orders(conn, **filters),
            cursor_key=lambda row: [row["created_at"], row["id"]],
        )


# ------------------------------------------------------------------ status changes


async def _move(
    ctx: AppContext,
    user: CurrentUser,
    order_id: int,
    status: str,
    *,
    sources: tuple[str, ...],
    owner_id: int | None,
) -> OrderPublic:
    row = await _run(
        ctx.pool,
        queries.change_order_status,
        id=order_id,
        status=status,
        from_statuses=list(sources),
        owner_id=owner_id,
        by_user_id=user.id,
        payment_status=None,
    )
    if row is None:
        async with connection(ctx.pool) as conn:
            state = await queries.get_order_state(conn, id=order_id)
        if state is None or (owner_id is not None and state["user_id"] != owner_id):
            raise NotFound(f"Order {order_id} not found")
        raise InvalidTransition(f"Order {order_id} is {state['status']}; it cannot become {status}")
    if row["restocked_ids"]:
        await ctx.catalog_written(*cache.stock_keys(row["restocked_ids"]))
    return msgspec.convert(row, OrderPublic)


async def change_status(
    ctx: AppContext, user: CurrentUser, order_id: int, status: OrderStatus
) -> OrderPublic:
    """Staff move an order along the status machine; cancelling gives the stock back once."""
    return await _move(ctx, user, order_id, status, sources=SOURCES[status], owner_id=None)


async def cancel_own_order(ctx: AppContext, user: CurrentUser, order_id: int) -> OrderPublic:
    """The owner cancels their own pending order; for anyone else it does not exist."""
    return await _move(ctx, user, order_id, "cancelled", sources=("pending",), owner_id=user.id)


async def cancel_unpaid(wctx: WorkerContext, order_id: int) -> bool:
    """The worker cancels an order whose payment deadline passed (by nobody: history by null),
    if it is still pending; stock goes back through the ledger and the catalog cache's
    counts of those products are invalidated. False: paid or cancelled meanwhile."""
    row = await _run(
        wctx.pool,
        queries.change_order_status,
        id=order_id,
        status="cancelled",
        from_statuses=["pending"],
        owner_id=None,
        by_user_id=None,
        payment_status=None,
    )
    if row is None:
        return False
    if row["restocked_ids"]:
        await wctx.catalog_written(*cache.stock_keys(row["restocked_ids"]))
    return True


async def delete_order(ctx: AppContext, user: CurrentUser, order_id: int) -> None:
    """ADMIN removes an order; one still holding stock (pending, paid) gives it back."""
    row = await _run(ctx.pool, queries.delete_order, id=order_id, by_user_id=user.id)
    if row is None:
        raise NotFound(f"Order {order_id} not found")
    if row["restocked_ids"]:
        await ctx.catalog_written(*cache.stock_keys(row["restocked_ids"]))

"""Tools shared by the security tests: a fingerprint of every table (to prove an attack wrote
nothing), live gunicorn servers on the test database, raw HTTP for what urllib cannot send,
and the route table the attacks are generated from."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from shopapi.app import routes
from shopapi.endpoint import Endpoint
from shopapi.openapi import endpoints
from tests.conftest import TABLES, app_env, db_rows
from tests.live import LiveServer

CART_TOKEN = "X-Cart-Token"  # a guest cart's secret, the contract's header


def snapshot(database_url: str) -> dict[str, tuple[int, str | None]]:
    """Row count and a digest of every row of every table the app writes."""
    parts = ", ".join(
        f"(SELECT count(*) FROM {table}), "
        f"(SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t)"
        for table in TABLES
    )
    row = db_rows(database_url, f"SELECT {parts}")[0]
    return {table: (row[2 * i], row[2 * i + 1]) for i, table in enumerate(TABLES)}


def api_endpoints(app) -> list[tuple[str, str, Endpoint]]:
    """Every (template, METHOD, declaration) the app serves, from its own route table."""
    return [
        (template, method.upper(), spec) for template, method, spec in endpoints(routes(app.ctx))
    ]


def live_env(database_url: str, **overrides: str) -> dict[str, str]:
    return app_env(database_url, **overrides)


@pytest.fixture()
def live_server(database_url) -> Iterator:
    """`live_server(workers=2, APP_ENV="production", ...)`: a gunicorn on the test database,
    stopped after the test. One per test: the workers remember users by id, and ids restart
    between tests."""
    started: list[LiveServer] = []

    def start(workers: int = 2, **env: str) -> LiveServer:
        server = LiveServer(live_env(database_url, **env), workers=workers).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.log.unlink(missing_ok=True)


def raw_http(
    server: LiveServer,
    method: str,
    path: str,
    *,
    body: bytes | Iterable[bytes] = b"",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as given (chunked bodies, odd headers); (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ a request for every route


@dataclass
class Shop:
    """One of everything, so every route can be called on objects that exist."""

    admin: Any
    editor: Any
    customer: Any
    other: Any  # another customer, owner of `order_id`
    category_id: int
    product_id: int
    order_id: int
    refresh_token: str
    webhook_id: int
    delivery_id: int
    session_id: int  # the login of `refresh_token` (other's)
    # the admin's: the tours call as the admin, and an address is only ever its owner's
    address_id: int
    method_id: int  # an active shipping method, to every country
    cart_token: str  # a guest cart's X-Cart-Token; the guest cart holds one line


@pytest.fixture()
def shop(client, make_user, make_category, make_product) -> Shop:
    admin, editor = make_user("ADMIN"), make_user("EDITOR")
    customer, other = make_user("CUSTOMER"), make_user("CUSTOMER")
    category = make_category("Spare")
    product = make_product(stock=100, category_id=category["id"])
    order = client.simulate_post(
        "/api/orders",
        headers=other.headers,
        json={"items": [{"product_id": product["id"], "quantity": 1}]},
    )
    assert order.status_code == 201, order.text
    pair = client.simulate_post(
        "/api/auth/login", json={"email": other.email, "password": other.password}
    )
    webhook = client.simulate_post(
        "/api/webhooks",
        headers=admin.headers,
        json={"url": "http://127.0.0.1:9/hooks", "events": ["order.created"]},
    )
    assert webhook.status_code == 201, webhook.text
    address = client.simulate_post(
        "/api/me/addresses", headers=admin.headers, json=EXAMPLE_BODIES["AddressCreate"](None)
    )
    assert address.status_code == 201, address.text
    method = client.simulate_post(
        "/api/shipping-methods",
        headers=admin.headers,
        json={"name": "Courier", "price_cents": 500, "free_over_cents": 10_000},
    )
    assert method.status_code == 201, method.text
    guest = client.simulate_post("/api/cart")
    assert guest.status_code == 201, guest.text
    line = {"quantity": 1}
    token = guest.json["token"]
    for headers in ({CART_TOKEN: token}, admin.headers):
        # the guest's cart, and the admin's, whose checkout (the tours' call) would place it
        added = client.simulate_put(f"/api/cart/items/{product['id']}", json=line, headers=headers)
        assert added.status_code == 201, added.text
    with psycopg.connect(client.app.ctx.settings.dsn) as conn:
        delivery_id = conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, "
            "status_code, duration_ms) SELECT %s, id, type, 1, 500, 3 FROM events LIMIT 1 "
            "RETURNING id",
            (webhook.json["id"],),
        ).fetchone()[0]
        session_id = conn.execute(
            "SELECT id FROM sessions WHERE user_id = %s", (other.id,)
        ).fetchone()[0]
    return Shop(
        admin,
        editor,
        customer,
        other,
        category["id"],
        product["id"],
        order.json["id"],
        pair.json["refresh_token"],
        webhook.json["id"],
        delivery_id,
        session_id,
        address.json["id"],
        method.json["id"],
        token,
    )


# A body each route accepts, one that would change something were it applied.
EXAMPLE_BODIES: dict[str, Callable[[Shop], dict]] = {
    "UserCreate": lambda s: {"email": "fresh@example.com", "password": "password123"},
    "LoginRequest": lambda s: {"email": s.other.email, "password": s.other.password},
    "RefreshRequest": lambda s: {"refresh_token": s.refresh_token},
    "UserUpdate": lambda s: {
        "full_name": "Taken over",
        "email": "taken@example.com",
        "password": "taken-over-1",
        "role": "ADMIN",
        "is_active": False,
    },
    "CategoryCreate": lambda s: {"name": "Injected"},
    "CategoryUpdate": lambda s: {"name": "Renamed", "description": "defaced"},
    "ProductCreate": lambda s: {
        "name": "Injected",
        "price_cents": 1,
        "category_id": s.category_id,
        "stock": 5,
    },
    "ProductUpdate": lambda s: {"price_cents": 1, "stock": 0, "is_active": False},
    "OrderCreate": lambda s: {"items": [{"product_id": s.product_id, "quantity": 1}]},
    "OrderStatusUpdate": lambda s: {"status": "cancelled"},
    "WebhookCreate": lambda s: {"url": "http://127.0.0.1:9/x", "events": ["order.created"]},
    "WebhookUpdate": lambda s: {"url": "http://127.0.0.1:9/y", "is_active": False},
    "PasswordResetRequest": lambda s: {"email": s.other.email},
    "PasswordResetConfirm": lambda s: {"token": "a" * 43, "password": "taken-over-1"},
    "VerifyEmailRequest": lambda s: {"token": "a" * 43},
    # a wrong password: the callers of the tours are the shop's own staff
    "DeleteAccountRequest": lambda s: {"password": "not-the-password"},
    "AddressCreate": lambda s: {
        "full_name": "Ada Lovelace",
        "line1": "12 St James's Square",
        "city": "London",
        "postal_code": "SW1Y 4JH",
        "country": "GB",
        "is_default": True,
    },
    "AddressUpdate": lambda s: {"line1": "Moved", "country": "FR", "is_default": False},
    "ShippingMethodCreate": lambda s: {"name": "Injected", "price_cents": 0, "countries": []},
    "ShippingMethodUpdate": lambda s: {"price_cents": 0, "is_active": False},
    "CartLineSet": lambda s: {"quantity": 1000},
    "CheckoutBody": lambda s: {"address_id": s.address_id, "shipping_method_id": s.method_id},
    # Stripe's webhook: an event that would pay the order, were it signed (the tours send no
    # Stripe-Signature, and the default PAYMENT_PROVIDER=manual takes no webhook at all)
    "StripeEvent": lambda s: {
        "id": "evt_forged",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": "pi_forged",
                "object": "payment_intent",
                "amount": 1,
                "currency": "usd",
                "metadata": {"order_id": str(s.order_id)},
            }
        },
    },
}


def example_request(shop: Shop, template: str, spec: Endpoint) -> tuple[str, dict | None]:
    """(path, JSON body) for calling `template` on the shop's objects."""
    path = template.format(
        user_id=shop.other.id,
        category_id=shop.category_id,
        product_id=shop.product_id,
        order_id=shop.order_id,
        webhook_id=shop.webhook_id,
        delivery_id=shop.delivery_id,
        session_id=shop.session_id,
        address_id=shop.address_id,
        method_id=shop.method_id,
    )
    if spec.body is None:
        return path, None
    name = spec.body.__name__
    assert name in EXAMPLE_BODIES, f"add an example {name} body to tests/security/conftest.py"
    return path, EXAMPLE_BODIES[name](shop)


def example_headers(shop: Shop, template: str) -> dict[str, str]:
    """Headers that make the call reach an object even without a bearer token: a cart route
    gets the shop's guest cart token (so a refusal cannot be for a missing cart)."""
    return {CART_TOKEN: shop.cart_token} if template.startswith("/api/cart") else {}

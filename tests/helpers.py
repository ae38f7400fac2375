"""Helpers shared by test modules (auth, orders): a plain module, no tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import db_rows


def db_state(database_url: str) -> tuple[list[tuple], list[tuple]]:
    """Every user row and every refresh-token row: compared before and after a refused call."""
    return (
        db_rows(database_url, "SELECT * FROM users ORDER BY id"),
        db_rows(database_url, "SELECT * FROM refresh_tokens ORDER BY id"),
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client, email: str, password: str) -> dict:
    response = client.simulate_post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json


def me(client, access_token: str):
    return client.simulate_get("/api/auth/me", headers=bearer(access_token))


def refresh(client, token: str):
    return client.simulate_post("/api/auth/refresh", json={"refresh_token": token})


def register(client, **body):
    body.setdefault("email", "new@example.com")
    body.setdefault("password", "password123")
    return client.simulate_post("/api/auth/register", json=body)


USER_FIELDS = {
    "id",
    "email",
    "full_name",
    "role",
    "is_active",
    "email_verified",
    "created_at",
    "updated_at",
}


def place(client, user, items, *, headers=None, body=None):
    """POST /api/orders as `user` with `items` [(product_id, quantity), ...] (or a raw body)."""
    payload = (
        body
        if body is not None
        else {"items": [{"product_id": pid, "quantity": qty} for pid, qty in items]}
    )
    return client.simulate_post(
        "/api/orders", json=payload, headers={**user.headers, **(headers or {})}
    )


def written(database_url) -> dict:
    """Everything an order request can write, to prove a refused one wrote nothing."""
    ((orders, items, history, movements, keys),) = db_rows(
        database_url,
        """
        SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
               (SELECT count(*) FROM order_status_history), (SELECT count(*) FROM stock_movements),
               (SELECT count(*) FROM idempotency_keys)""",
    )
    stock = dict(db_rows(database_url, "SELECT id, stock FROM products"))
    return {
        "orders": orders,
        "items": items,
        "history": history,
        "movements": movements,
        "keys": keys,
        "stock": stock,
    }


def units_held(database_url) -> dict[int, int]:
    """Units of each product in orders that still hold stock (not cancelled)."""
    return dict(
        db_rows(
            database_url,
            """
        SELECT i.product_id, sum(i.quantity)::int
          FROM order_items i JOIN orders o ON o.id = i.order_id
         WHERE o.status <> 'cancelled'
         GROUP BY i.product_id""",
        )
    )


class WrkTarget(ThreadingHTTPServer):
    """A loopback HTTP server for a harness test to point wrk at: a thread per connection, a
    free port, a lock for the subclass's counters, and no traceback when wrk drops its
    connections at the end of the run."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        pass


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 answers without Nagle's delay, and no access log on stderr."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args) -> None:
        pass

"""Helpers for the auth tests (test_auth, test_tokens, test_passwords): a plain module, no tests."""

from __future__ import annotations

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

"""OWASP API1:2023 Broken Object Level Authorization: a customer reaches no other customer's order
by id sweep, list filter, cursor or Idempotency-Key, and cannot even learn that it exists.

Complements tests/test_orders.py and tests/test_order_status.py (one foreign order read or
cancelled, `user_id=B` on the list) with exhaustive sweeps, answers compared byte for byte with
those for ids that never existed, borrowed cursors and keys, and proof that nothing was written.
"""

from __future__ import annotations

import re

from tests.conftest import assert_problem
from tests.helpers import place
from tests.security.conftest import snapshot


def _without_ids(problem: dict) -> dict:
    """A 404 problem with the numbers taken out of its detail."""
    return {**problem, "detail": re.sub(r"\d+", "N", problem.get("detail", ""))}


def test_a_customer_sweeping_every_order_id_reaches_only_their_own_and_learns_nothing(
    client, make_user, make_product, database_url
):
    product = make_product(stock=100)
    alice, bob, carol = make_user(), make_user(), make_user()
    own = {place(client, alice, [(product["id"], 1)]).json["id"] for _ in range(2)}
    others = {
        place(client, user, [(product["id"], 1)]).json["id"] for user in (bob, carol, bob, carol)
    }
    never = max(own | others) + 1
    before = snapshot(database_url)

    def answers(order_id: int) -> dict[str, object]:
        url = f"/api/orders/{order_id}"
        return {
            "read": client.simulate_get(url, headers=alice.headers),
            "cancel": client.simulate_post(f"{url}/cancel", headers=alice.headers),
        }

    missing = {
        name: assert_problem(response, 404, "not_found")
        for name, response in answers(never).items()
    }
    for order_id in sorted(others):
        for name, response in answers(order_id).items():
            problem = assert_problem(response, 404, "not_found")
            # the same answer as for an id that never existed: no existence oracle
            assert _without_ids(problem) == _without_ids(missing[name])
            assert str(order_id) not in response.headers.get("location", "")
    # staff routes are refused by role before the order is even looked up
    for order_id in sorted(others):
        status = client.simulate_put(
            f"/api/orders/{order_id}/status", json={"status": "cancelled"}, headers=alice.headers
        )
        delete = client.simulate_delete(f"/api/orders/{order_id}", headers=alice.headers)
        assert_problem(status, 403, "forbidden")
        assert_problem(delete, 403, "forbidden")
    assert snapshot(database_url) == before
    for order_id in own:  # control: the sweep does reach the caller's own orders
        assert (
            client.simulate_get(f"/api/orders/{order_id}", headers=alice.headers).status_code == 200
        )


def test_another_customers_cursor_or_filters_never_list_their_orders(
    client, make_user, make_product
):
    product = make_product(stock=100)
    alice, bob = make_user(), make_user()
    bobs = {place(client, bob, [(product["id"], 1)]).json["id"] for _ in range(3)}
    place(client, alice, [(product["id"], 1)])
    bobs_cursor = client.simulate_get(
        "/api/orders", params={"per_page": 1}, headers=bob.headers
    ).json["next_cursor"]
    assert bobs_cursor

    attempts = [
        {"user_id": bob.id},
        {"user_id": bob.id, "status": "pending", "per_page": 100},
        {"user_id": bob.id, "per_page": 1, "cursor": bobs_cursor},
        {"per_page": 1, "cursor": bobs_cursor},
    ]
    for params in attempts:
        response = client.simulate_get("/api/orders", params=params, headers=alice.headers)
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            listed = {order["id"] for order in response.json["items"]}
            assert not listed & bobs, params
            assert all(order["user_id"] == alice.id for order in response.json["items"])
            assert response.json["total"] <= 1
        else:
            assert_problem(response, 422, "validation_error")


def test_an_idempotency_key_another_customer_used_is_no_oracle_and_replays_nothing(
    client, make_user, make_product, database_url
):
    product = make_product(stock=10)
    other_product = make_product(stock=10)
    alice, bob = make_user(), make_user()
    key = {"Idempotency-Key": "checkout-1"}
    alices = place(client, alice, [(product["id"], 2)], headers=key)
    assert alices.status_code == 201

    # another body under Alice's key: were keys global, this would be 409 and tell Bob the key
    # is in use; it is simply Bob's own first use of the key
    bobs = place(client, bob, [(other_product["id"], 1)], headers=key)
    assert bobs.status_code == 201, bobs.text
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json["user_id"] == bob.id and bobs.json["id"] != alices.json["id"]
    # and Bob's replay of his own key answers his order, never Alice's
    again = place(client, bob, [(other_product["id"], 1)], headers=key)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json == bobs.json


def test_a_customer_sweeping_session_ids_ends_no_one_elses_login(client, make_user, database_url):
    """BOLA on /api/auth/sessions: another user's session id is a 404 like an unknown one,
    and no sweep revokes anything of theirs."""
    victim, attacker = make_user(), make_user()
    pair = client.simulate_post(
        "/api/auth/login", json={"email": victim.email, "password": victim.password}
    ).json
    before = snapshot(database_url)
    for session_id in range(1, 30):
        response = client.simulate_delete(
            f"/api/auth/sessions/{session_id}", headers=attacker.headers
        )
        assert_problem(response, 404, "not_found")
    assert snapshot(database_url) == before
    assert client.simulate_get("/api/auth/sessions", headers=attacker.headers).json == []
    rotated = client.simulate_post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert rotated.status_code == 200

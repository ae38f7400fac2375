"""OWASP API1:2023 Broken Object Level Authorization: a customer reaches no other customer's order,
address, session or cart by id sweep, list filter, cursor, Idempotency-Key, guessed cart token or
an id in a body, and cannot even learn that it exists.

Complements tests/test_orders.py, tests/test_order_status.py, tests/test_addresses.py,
tests/test_cart.py and tests/test_order_shipping.py (one foreign object at a time) with
exhaustive sweeps, answers compared with those for ids that never existed, borrowed cursors
and keys, forged and derived cart tokens, checkouts with smuggled cart and address ids, and
proof that nothing was written.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

import pytest

from tests.conftest import assert_problem, db_rows
from tests.helpers import place
from tests.security.conftest import CART_TOKEN, snapshot

ADDRESS = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


def _without_ids(problem: dict) -> dict:
    """A problem with the numbers taken out of its detail and its field messages."""
    errors = [
        {**e, "message": re.sub(r"\d+", "N", e["message"])} for e in problem.get("errors", [])
    ]
    return {
        **problem,
        "detail": re.sub(r"\d+", "N", problem.get("detail", "")),
        **({"errors": errors} if "errors" in problem else {}),
    }


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


def _stripe_intent_ids(emulator) -> set[str]:
    """Every PaymentIntent the session's Stripe emulator holds, all pages."""
    listed = emulator.client.v1.payment_intents.list(params={"limit": 100})
    return {intent.id for intent in listed.auto_paging_iter()}


@pytest.mark.parametrize("provider", ["manual", "stripe"])
def test_paying_another_customers_order_is_404_like_an_order_that_never_existed(
    request, app_client, make_user, make_product, database_url, provider
):
    """POST /api/orders/{id}/payment is the owner's only: another customer, and staff too, get
    the answer of an id that never existed, and no payment is started (here or at Stripe)."""
    emulator = request.getfixturevalue("stripe_emulator") if provider == "stripe" else None
    client = app_client(**(emulator.settings() if emulator else {}))
    product = make_product(stock=10, price_cents=2500)
    alice, bob, admin = make_user(), make_user(), make_user("ADMIN")
    bobs = [place(client, bob, [(product["id"], 1)]).json["id"] for _ in range(2)]
    own = place(client, alice, [(product["id"], 1)]).json["id"]
    never = max([*bobs, own]) + 1
    intents = _stripe_intent_ids(emulator) if emulator else set()
    before = snapshot(database_url)

    def pay(order_id: int, caller) -> dict:
        response = client.simulate_post(f"/api/orders/{order_id}/payment", headers=caller.headers)
        problem = assert_problem(response, 404, "not_found")
        assert "client_secret" not in response.text
        return _without_ids(problem)

    missing = pay(never, alice)
    for order_id in bobs:
        for caller in (alice, admin):
            assert pay(order_id, caller) == missing, (order_id, caller.role)
    assert snapshot(database_url) == before
    if emulator:
        assert _stripe_intent_ids(emulator) == intents  # no PaymentIntent for Bob's orders

    # control: the owner does reach their order (and Bob's are still payable by Bob)
    mine = client.simulate_post(f"/api/orders/{own}/payment", headers=alice.headers)
    if provider == "manual":
        assert_problem(mine, 409, "payment_not_online")
    else:
        assert mine.status_code == 200, mine.text
        assert (mine.json["provider"], mine.json["amount_cents"]) == ("stripe", 2500)
        assert db_rows(database_url, "SELECT order_id FROM payments") == [(own,)]
    assert db_rows(database_url, "SELECT status FROM orders WHERE id = ANY(%s)", (bobs,)) == [
        ("pending",),
        ("pending",),
    ]


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


# ------------------------------------------------------------------ addresses


def _add_address(client, user, **fields) -> int:
    response = client.simulate_post(
        "/api/me/addresses", json={**ADDRESS, **fields}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response.json["id"]


def test_a_customer_sweeping_address_ids_reaches_only_their_own_and_changes_nothing(
    client, make_user, database_url
):
    alice, bob, carol = make_user(), make_user(), make_user()
    own = {_add_address(client, alice, full_name=f"Alice {n}") for n in range(2)}
    others = {_add_address(client, user) for user in (bob, carol, bob, carol)}
    never = max(own | others) + 1
    before = snapshot(database_url)

    def answers(address_id: int) -> dict[str, object]:
        url = f"/api/me/addresses/{address_id}"
        # is_default true first clears the caller's own default: a refusal must undo that too
        takeover = {"full_name": "Mallory", "line1": "Elsewhere", "is_default": True}
        return {
            "read": client.simulate_get(url, headers=alice.headers),
            "put": client.simulate_put(url, json=takeover, headers=alice.headers),
            "patch": client.simulate_patch(url, json=takeover, headers=alice.headers),
            "delete": client.simulate_delete(url, headers=alice.headers),
        }

    missing = {
        name: assert_problem(response, 404, "not_found")
        for name, response in answers(never).items()
    }
    for address_id in sorted(others):
        for name, response in answers(address_id).items():
            problem = assert_problem(response, 404, "not_found")
            assert _without_ids(problem) == _without_ids(missing[name]), name
            assert "Ada" not in response.text and "London" not in response.text
    assert snapshot(database_url) == before

    # the list is the caller's alone, whatever filter is tried
    for params in ({}, {"user_id": bob.id}, {"user_id": bob.id, "per_page": 100}, {"page": 2}):
        listed = client.simulate_get("/api/me/addresses", params=params, headers=alice.headers)
        assert listed.status_code == 200, listed.text
        assert {a["id"] for a in listed.json["items"]} <= own
        assert listed.json["total"] == 2
    for address_id in own:  # control: the sweep does reach the caller's own addresses
        mine = client.simulate_get(f"/api/me/addresses/{address_id}", headers=alice.headers)
        assert mine.status_code == 200 and mine.json["full_name"].startswith("Alice")


def test_an_order_or_checkout_with_another_customers_address_id_is_422_and_writes_nothing(
    client, make_user, make_product, database_url
):
    product = make_product(stock=10)
    alice, bob = make_user(), make_user()
    bobs = [_add_address(client, bob, line1=f"{n} Secret Lane") for n in range(3)]
    never = max(bobs) + 1
    put = client.simulate_put(
        f"/api/cart/items/{product['id']}", json={"quantity": 2}, headers=alice.headers
    )
    assert put.status_code == 201, put.text
    items = [{"product_id": product["id"], "quantity": 1}]
    before = snapshot(database_url)

    def answers(address_id: int) -> dict[str, object]:
        return {
            "order": place(client, alice, [], body={"items": items, "address_id": address_id}),
            "checkout": client.simulate_post(
                "/api/cart/checkout", json={"address_id": address_id}, headers=alice.headers
            ),
        }

    missing = {
        name: assert_problem(r, 422, "validation_error") for name, r in answers(never).items()
    }
    for address_id in bobs:
        for name, response in answers(address_id).items():
            problem = assert_problem(response, 422, "validation_error")
            assert problem["errors"][0]["field"] == "address_id"
            # the same answer as for an address that never existed, and none of Bob's data
            assert _without_ids(problem) == _without_ids(missing[name]), name
            assert "Secret Lane" not in response.text
    assert snapshot(database_url) == before  # no order, no stock moved, the cart as it was


# ------------------------------------------------------------------ carts


def _cart_token(client) -> str:
    started = client.simulate_post("/api/cart")
    assert started.status_code == 201, started.text
    return started.json["token"]


def _fill(client, headers: dict, product_id: int, quantity: int) -> None:
    response = client.simulate_put(
        f"/api/cart/items/{product_id}", json={"quantity": quantity}, headers=headers
    )
    assert response.status_code in (200, 201), response.text


def _cart_calls(client, headers: dict, product_id: int) -> dict[str, object]:
    """Every guest cart function, called with `headers`."""
    item = f"/api/cart/items/{product_id}"
    return {
        "read": client.simulate_get("/api/cart", headers=headers),
        "set": client.simulate_put(item, json={"quantity": 9}, headers=headers),
        "remove": client.simulate_delete(item, headers=headers),
        "empty": client.simulate_delete("/api/cart", headers=headers),
    }


def test_guessed_forged_or_derived_cart_tokens_reach_no_cart_and_reveal_nothing(
    client, make_user, make_product, database_url
):
    product = make_product(stock=10)
    victim, attacker = make_user(), make_user()
    token = _cart_token(client)
    _fill(client, {CART_TOKEN: token}, product["id"], 3)
    _fill(client, victim.headers, product["id"], 2)
    expired = _cart_token(client)
    _fill(client, {CART_TOKEN: expired}, product["id"], 1)
    db_rows(
        database_url,
        "UPDATE carts SET expires_at = now() - interval '1 second' WHERE token_hash = %s "
        "RETURNING id",
        (hashlib.sha256(expired.encode()).digest(),),
    )
    ids = db_rows(database_url, "SELECT id FROM carts ORDER BY id")
    digest = hashlib.sha256(token.encode()).digest()
    forged = [
        *(secrets.token_urlsafe(32) for _ in range(3)),
        expired,  # a live token once: now the same answer as one that never was
        digest.hex(),  # what the database keeps, in every spelling
        "\\x" + digest.hex(),
        base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
        base64.b64encode(digest).decode(),
        *(str(cart_id) for (cart_id,) in ids),  # cart ids, a user's among them
        str(victim.id),
        victim.token,  # a bearer token is no cart token
        token[:-1],
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "A",
        token[:22],
        token.swapcase(),
        "null",
        "0",
        "*",
        "%",
        "' OR '1'='1",
        "a" * 2000,
    ]
    before = snapshot(database_url)
    reference = {
        name: assert_problem(response, 404, "not_found")
        for name, response in _cart_calls(
            client, {CART_TOKEN: secrets.token_urlsafe(32)}, product["id"]
        ).items()
    }
    for guess in forged:
        answers = _cart_calls(client, {CART_TOKEN: guess}, product["id"])
        answers["claim"] = client.simulate_post(
            "/api/cart/claim", headers={**attacker.headers, CART_TOKEN: guess}
        )
        for name, response in answers.items():
            problem = assert_problem(response, 404, "not_found")
            assert problem == reference.get(name, reference["read"]), (guess, name)
            assert token not in response.text  # nor any guess long enough to be telling
            assert len(guess) < 8 or guess not in response.text
    assert snapshot(database_url) == before
    # control: the real token still reaches its cart, and only its own
    real = client.simulate_get("/api/cart", headers={CART_TOKEN: token})
    assert [(i["product_id"], i["quantity"]) for i in real.json["items"]] == [(product["id"], 3)]


def test_a_claimed_guest_token_never_reaches_the_account_cart_its_lines_went_into(
    client, make_user, make_product, database_url
):
    pen, ink = make_product(stock=10), make_product(stock=10)
    buyer, other = make_user(), make_user()
    token = _cart_token(client)
    _fill(client, {CART_TOKEN: token}, pen["id"], 2)
    _fill(client, buyer.headers, ink["id"], 1)
    claimed = client.simulate_post("/api/cart/claim", headers={**buyer.headers, CART_TOKEN: token})
    assert claimed.status_code == 200, claimed.text
    assert {i["product_id"] for i in claimed.json["items"]} == {pen["id"], ink["id"]}
    others_cart = client.simulate_get("/api/cart", headers=other.headers).json  # made empty
    before = snapshot(database_url)

    for name, response in _cart_calls(client, {CART_TOKEN: token}, pen["id"]).items():
        assert_problem(response, 404, "not_found")
        assert str(claimed.json["id"]) not in response.text, name
    stolen = client.simulate_post("/api/cart/claim", headers={**other.headers, CART_TOKEN: token})
    assert_problem(stolen, 404, "not_found")
    # with a guest's token beside a bearer token, every call is the bearer's own cart
    mixed = client.simulate_get("/api/cart", headers={**other.headers, CART_TOKEN: token})
    assert mixed.status_code == 200 and mixed.json == others_cart
    assert snapshot(database_url) == before
    assert client.simulate_get("/api/cart", headers=buyer.headers).json == claimed.json


def test_a_checkout_orders_the_callers_cart_only_whatever_ids_or_tokens_come_with_it(
    client, make_user, make_product, database_url
):
    alices_pen, bobs_ink, guests_pad = (make_product(stock=10) for _ in range(3))
    alice, bob = make_user(), make_user()
    _fill(client, alice.headers, alices_pen["id"], 1)
    _fill(client, bob.headers, bobs_ink["id"], 4)
    token = _cart_token(client)
    _fill(client, {CART_TOKEN: token}, guests_pad["id"], 5)
    ((bobs_cart,),) = db_rows(database_url, "SELECT id FROM carts WHERE user_id = %s", (bob.id,))
    key = {"Idempotency-Key": "checkout-1"}
    bobs_order = client.simulate_post("/api/cart/checkout", json={}, headers={**bob.headers, **key})
    assert bobs_order.status_code == 201, bobs_order.text
    _fill(client, bob.headers, bobs_ink["id"], 4)  # Bob fills his cart again

    def others() -> list[tuple]:
        return db_rows(
            database_url,
            "SELECT c.id, c.user_id, i.product_id, i.quantity, p.stock FROM carts c "
            "JOIN cart_items i ON i.cart_id = c.id JOIN products p ON p.id = i.product_id "
            "WHERE c.user_id IS DISTINCT FROM %s ORDER BY 1, 3",
            (alice.id,),
        )

    before = others()
    smuggled = {"cart_id": bobs_cart, "user_id": bob.id, "cart_token": token}
    # Bob's key too: keys are per user, so this is Alice's own first use, never Bob's replay
    response = client.simulate_post(
        "/api/cart/checkout", json=smuggled, headers={**alice.headers, **key, CART_TOKEN: token}
    )
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    order = response.json
    assert order["user_id"] == alice.id and order["id"] != bobs_order.json["id"]
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(alices_pen["id"], 1)]
    assert others() == before  # Bob's and the guest's carts and stock untouched

    # Alice's cart is empty now: naming Bob's cart does not fill it
    again = client.simulate_post("/api/cart/checkout", json=smuggled, headers=alice.headers)
    assert_problem(again, 422, "validation_error")
    assert others() == before

"""OWASP API2:2023 Broken Authentication: no header trick authenticates, tokens travel only in the
Authorization header (a guest cart's token only in X-Cart-Token), revocation wins every race
with a refresh, and reaches every worker process.

Complements tests/test_tokens.py (forged, expired and misused JWTs, one at a time) and
tests/test_auth.py / tests/test_user_state.py (rotation, reuse detection, revocation in one
process) with smuggled and oversized headers, tokens in URLs and cookies, refreshes racing with
logout-all, password changes and reuse detection, and a real two-worker gunicorn.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import psycopg
import pytest
from falcon import testing

from shopapi.security import token_digest
from tests.conftest import assert_problem, backends, db_rows, in_background, wait_for
from tests.helpers import bearer, login, refresh
from tests.security.conftest import snapshot
from tests.stripe_emulator import signature, signed_event


@pytest.fixture()
def two_users(make_user):
    return make_user("CUSTOMER"), make_user("ADMIN")


SMUGGLED = {
    "trailing junk": lambda c, a: [("Authorization", f"Bearer {c} junk")],
    "two tokens in one header": lambda c, a: [("Authorization", f"Bearer {c}, Bearer {a}")],
    "two headers": lambda c, a: [
        ("Authorization", f"Bearer {c}"),
        ("Authorization", f"Bearer {a}"),
    ],
    "scheme twice": lambda c, a: [("Authorization", f"Bearer Bearer {a}")],
    "no scheme": lambda c, a: [("Authorization", a)],
    "basic scheme": lambda c, a: [("Authorization", f"Basic {a}")],
    "control character": lambda c, a: [("Authorization", f"Bearer {a}\x01")],
    "token doubled": lambda c, a: [("Authorization", f"Bearer {a}{a}")],
    "8 KiB token": lambda c, a: [("Authorization", "Bearer " + a + "A" * 8192)],
}


@pytest.mark.parametrize("trick", list(SMUGGLED))
def test_a_smuggled_authorization_header_authenticates_nobody(client, two_users, trick):
    customer, admin = two_users
    headers = SMUGGLED[trick](customer.token, admin.token)
    started = time.monotonic()
    for path in ("/api/auth/me", "/api/users", "/api/orders"):
        response = client.simulate_get(path, headers=headers)
        assert_problem(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("where", ["query access_token", "query token", "cookie", "x-header"])
def test_a_token_anywhere_but_the_authorization_header_is_ignored(client, two_users, where):
    _, admin = two_users
    request = {
        "query access_token": {"params": {"access_token": admin.token}},
        "query token": {"params": {"token": admin.token}},
        "cookie": {"headers": {"Cookie": f"access_token={admin.token}; token={admin.token}"}},
        "x-header": {"headers": {"X-Access-Token": admin.token, "X-Auth-Token": admin.token}},
    }[where]
    assert_problem(client.simulate_get("/api/users", **request), 401, "not_authenticated")


@pytest.mark.parametrize(
    "where", ["query cart_token", "query token", "cookie", "bearer", "other header"]
)
def test_a_guest_cart_token_works_only_in_its_own_header(client, make_product, where):
    """The cart token is a credential for one guest cart: like an access token it is not read
    from URLs (logged, cached, leaked in Referer) or cookies (sent cross-site), and it is no
    bearer token."""
    product = make_product(stock=5)
    token = client.simulate_post("/api/cart").json["token"]
    request = {
        "query cart_token": {"params": {"cart_token": token, "X-Cart-Token": token}},
        "query token": {"params": {"token": token}},
        "cookie": {"headers": {"Cookie": f"cart_token={token}; X-Cart-Token={token}"}},
        "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
        "other header": {"headers": {"X-Cart": token, "Cart-Token": token, "X-Token": token}},
    }[where]
    for method, path in (("GET", "/api/cart"), ("PUT", f"/api/cart/items/{product['id']}")):
        response = client.simulate_request(method, path, json={"quantity": 1}, **request)
        assert_problem(response, 401, "not_authenticated")
    own = client.simulate_get("/api/cart", headers={"X-Cart-Token": token})
    assert own.status_code == 200 and own.json["items"] == []  # nothing was added


def test_an_oversized_refresh_token_is_refused_before_any_lookup(client, make_user, query_counter):
    user = make_user()
    pair = login(client, user.email, user.password)
    with query_counter() as counted:
        response = refresh(client, pair["refresh_token"] + "A" * 4097)
    assert_problem(response, 422, "validation_error")
    assert counted.n == 0
    assert refresh(client, pair["refresh_token"]).status_code == 200


# ------------------------------------------------------------------ revocation races


@contextmanager
def _refresh_token_row_held(database_url: str, token: str):
    """Hold the token's row lock, so a refresh of it stalls mid-transaction until released."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "SELECT 1 FROM refresh_tokens WHERE token_hash = %s FOR UPDATE", (token_digest(token),)
        )
        yield
        conn.rollback()


def _until(database_url: str, waiting: int) -> None:
    """Until `waiting` of the app's sessions wait on a lock."""
    wait_for(
        lambda: len(backends(database_url, waiting_on_lock=True)) >= waiting,
        timeout=10,
        interval=0.01,
        what="the racing requests to meet on a lock",
    )


def _revoker(kind: str, user, pair: dict, old_refresh: str):
    """What the owner (or the server, on reuse) does to end a stolen login."""
    return {
        "logout-all": lambda c: c.simulate_post(
            "/api/auth/logout-all", headers=bearer(pair["access_token"])
        ),
        "password change": lambda c: c.simulate_patch(
            f"/api/users/{user.id}",
            headers=bearer(pair["access_token"]),
            json={"password": "a-brand-new-password", "current_password": user.password},
        ),
        "reuse of a rotated token": lambda c: refresh(c, old_refresh),
    }[kind]


@pytest.mark.parametrize("kind", ["logout-all", "password change", "reuse of a rotated token"])
def test_a_refresh_racing_with_a_revocation_leaves_no_live_token(
    app, client, make_user, database_url, kind
):
    """A thief refreshes a stolen token at the moment the owner revokes the login: whichever
    commits first, the thief must not walk away with a refresh token that still works."""
    user = make_user()
    first = login(client, user.email, user.password)
    stolen = refresh(client, first["refresh_token"]).json  # `first` is now a rotated token
    revoke = _revoker(kind, user, stolen, first["refresh_token"])

    with _refresh_token_row_held(database_url, stolen["refresh_token"]):
        thief = in_background(lambda: refresh(testing.TestClient(app), stolen["refresh_token"]))
        _until(database_url, 1)
        owner = in_background(lambda: revoke(testing.TestClient(app)))
        _until(database_url, 2)
    thiefs = thief.join(10)
    owners = owner.join(10)

    assert owners.status_code in (200, 204, 401), owners.text
    if thiefs.status_code == 200:
        rotated = thiefs.json["refresh_token"]
        assert_problem(refresh(client, rotated), 401, "not_authenticated")
    else:
        assert_problem(thiefs, 401, "not_authenticated")
    live = db_rows(
        database_url,
        "SELECT count(*) FROM refresh_tokens WHERE user_id = %s AND revoked_at IS NULL",
        (user.id,),
    )
    assert live == [(0,)]


# ------------------------------------------------------------------ every worker process


def test_deactivation_and_role_change_are_refused_at_once_by_every_gunicorn_worker(
    live_server, make_user
):
    server = live_server(workers=2)
    admin = make_user("ADMIN")
    fired, demoted = make_user("CUSTOMER"), make_user("EDITOR")

    def status_of(user) -> list[int]:
        # enough requests that both workers answer (and remember the user)
        return [server.request("GET", "/api/auth/me", headers=user.headers)[0] for _ in range(12)]

    assert set(status_of(fired)) == {200} and set(status_of(demoted)) == {200}
    assert (
        server.request(
            "PATCH", f"/api/users/{fired.id}", {"is_active": False}, headers=admin.headers
        )[0]
        == 200
    )
    assert (
        server.request(
            "PATCH", f"/api/users/{demoted.id}", {"role": "CUSTOMER"}, headers=admin.headers
        )[0]
        == 200
    )

    assert set(status_of(fired)) == {401}
    assert set(status_of(demoted)) == {401}
    staff_route = [
        server.request("GET", "/api/products/1/stock-movements", headers=demoted.headers)[0]
        for _ in range(6)
    ]
    assert set(staff_route) == {401}


def test_reset_and_verification_tokens_work_once_and_only_for_their_purpose(
    client, make_user, database_url
):
    """Token reuse: a spent link is 400 `invalid_token`, and a verification token is no reset
    token (nor the other way round)."""
    from shopapi.security import account_token
    from tests.conftest import TEST_SECRET

    user = make_user()

    def token(purpose: str) -> str:
        ((nonce,),) = db_rows(
            database_url,
            "SELECT nonce FROM account_tokens WHERE purpose = %s AND used_at IS NULL",
            (purpose,),
        )
        return account_token(TEST_SECRET, bytes(nonce))

    client.simulate_post("/api/auth/password-reset", json={"email": user.email})
    client.simulate_post("/api/auth/verify-email/resend", headers=user.headers)
    reset, verification = token("password_reset"), token("email_verification")
    confirm = "/api/auth/password-reset/confirm"
    wrong_kind = client.simulate_post(confirm, json={"token": verification, "password": "x" * 10})
    assert_problem(wrong_kind, 400, "invalid_token")
    wrong_kind = client.simulate_post("/api/auth/verify-email", json={"token": reset})
    assert_problem(wrong_kind, 400, "invalid_token")
    assert (
        client.simulate_post(confirm, json={"token": reset, "password": "y" * 10}).status_code
        == 204
    )
    reused = client.simulate_post(confirm, json={"token": reset, "password": "z" * 10})
    assert_problem(reused, 400, "invalid_token")
    login(client, user.email, "y" * 10)
    assert (
        client.simulate_post("/api/auth/verify-email", json={"token": verification}).status_code
        == 200
    )
    reused = client.simulate_post("/api/auth/verify-email", json={"token": verification})
    assert_problem(reused, 400, "invalid_token")


# ------------------------------------------------------------------ Stripe's webhook

WEBHOOK = "/api/payments/stripe/webhook"


def _forged(body: bytes, sig: str) -> tuple[bytes, dict[str, str]]:
    return body, {"Stripe-Signature": signature(body, secret="whsec_someone_elses_secret")}


def _stale(body: bytes, sig: str) -> tuple[bytes, dict[str, str]]:
    return body, {"Stripe-Signature": signature(body, at=int(time.time()) - 301)}


def _stale_with_a_fresh_t(body: bytes, sig: str) -> tuple[bytes, dict[str, str]]:
    old = signature(body, at=int(time.time()) - 301)
    return body, {"Stripe-Signature": f"t={int(time.time())},{old.split(',')[1]}"}


def _tampered(body: bytes, sig: str) -> tuple[bytes, dict[str, str]]:
    # Stripe signed a failure; the body now claims the payment succeeded
    return body.replace(b"payment_intent.payment_failed", b"payment_intent.succeeded"), {
        "Stripe-Signature": sig
    }


WEBHOOK_TRICKS = {
    "forged (another secret)": _forged,
    "stale (t 301 s old)": _stale,
    "stale, its t replaced by now": _stale_with_a_fresh_t,
    "missing header": lambda body, sig: (body, {}),
    "empty header": lambda body, sig: (body, {"Stripe-Signature": ""}),
    "no v1 scheme": lambda body, sig: (body, {"Stripe-Signature": sig.replace("v1=", "v0=")}),
    "valid signature, tampered body": _tampered,
    "bearer token instead": lambda body, sig: (body, {"Authorization": "Bearer " + sig}),
}


@pytest.fixture()
def stripe_order(app_client, stripe_emulator, make_user, make_product, database_url):
    """(client, order id, PaymentIntent id, amount): a stripe shop, an order being paid."""
    client = app_client(**stripe_emulator.settings())
    buyer = make_user()
    product = make_product(stock=5, price_cents=3100)
    order = client.simulate_post(
        "/api/orders",
        json={"items": [{"product_id": product["id"], "quantity": 1}]},
        headers=buyer.headers,
    )
    assert order.status_code == 201, order.text
    started = client.simulate_post(f"/api/orders/{order.json['id']}/payment", headers=buyer.headers)
    assert started.status_code == 200, started.text
    ((intent_id,),) = db_rows(database_url, "SELECT intent_id FROM payments")
    return client, order.json["id"], intent_id, 3100


@pytest.mark.parametrize("trick", list(WEBHOOK_TRICKS))
def test_a_webhook_without_a_valid_stripe_signature_is_400_and_changes_nothing(
    stripe_order, database_url, trick
):
    client, order_id, intent_id, amount = stripe_order
    kind = "payment_failed" if "tampered" in trick else "succeeded"
    body, sig = signed_event(f"payment_intent.{kind}", intent_id, amount, event_id="evt_trick")
    raw, headers = WEBHOOK_TRICKS[trick](body, sig)
    order_before = db_rows(
        database_url, "SELECT status, payment_status FROM orders WHERE id = %s", (order_id,)
    )
    before = snapshot(database_url)

    response = client.simulate_post(
        WEBHOOK, body=raw, headers={"Content-Type": "application/json", **headers}
    )

    assert_problem(response, 400, "invalid_signature")
    assert snapshot(database_url) == before
    assert db_rows(database_url, "SELECT count(*) FROM payment_events") == [(0,)]
    assert (
        db_rows(
            database_url, "SELECT status, payment_status FROM orders WHERE id = %s", (order_id,)
        )
        == order_before
    )
    assert order_before[0][0] == "pending"
    # control: the same event, genuinely signed (290 s ago: inside the tolerance), is applied
    genuine, sig = signed_event(
        "payment_intent.succeeded",
        intent_id,
        amount,
        event_id="evt_trick",
        at=int(time.time()) - 290,
    )
    applied = client.simulate_post(
        WEBHOOK, body=genuine, headers={"Content-Type": "application/json", "Stripe-Signature": sig}
    )
    assert applied.status_code == 200, applied.text
    assert db_rows(
        database_url, "SELECT status, payment_status FROM orders WHERE id = %s", (order_id,)
    ) == [("paid", "succeeded")]
    assert db_rows(database_url, "SELECT event_id FROM payment_events") == [("evt_trick",)]


def test_a_genuinely_signed_webhook_is_400_when_the_shop_takes_no_stripe_payments(
    client, make_user, make_product, database_url
):
    """PAYMENT_PROVIDER=manual: no secret can open the webhook, not even the right one."""
    buyer = make_user()
    order = client.simulate_post(
        "/api/orders",
        json={"items": [{"product_id": make_product()["id"], "quantity": 1}]},
        headers=buyer.headers,
    )
    assert order.status_code == 201, order.text
    body, sig = signed_event("payment_intent.succeeded", "pi_manual", order.json["total_cents"])
    before = snapshot(database_url)
    response = client.simulate_post(
        WEBHOOK, body=body, headers={"Content-Type": "application/json", "Stripe-Signature": sig}
    )
    assert_problem(response, 400, "invalid_signature")
    assert snapshot(database_url) == before

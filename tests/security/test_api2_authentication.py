"""OWASP API2:2023 Broken Authentication: no header trick authenticates, tokens travel only in the
Authorization header (a guest cart's token only in X-Cart-Token), revocation wins every race
with a refresh, and reaches every worker process.

Issue 18, item 2 (fail-open signing key): no built-in key signs anything (a token signed with the
old published constant is 401), a server without SECRET_KEY refuses to start unless APP_ENV is
explicitly development/test, and then every gunicorn worker shares the one random key.
Issue 18, item 9 (JWT part): every token carries `iss` and `aud`, both required and exactly ours
(else 401), with a JWT_LEEWAY clock-skew allowance on `exp` and `iat`.
Issue 18, item 11 (JWT `sub`): a validly signed token whose `sub` is anything but ASCII digits
(`"²"` was a 500, `"٣"` user 3) is 401 (more cases in tests/test_tokens.py).

Complements tests/test_tokens.py (forged, expired and misused JWTs, one at a time) and
tests/test_auth.py / tests/test_user_state.py (rotation, reuse detection, revocation in one
process) with smuggled and oversized headers, tokens in URLs and cookies, refreshes racing with
logout-all, password changes and reuse detection, and a real two-worker gunicorn.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import jwt
import psycopg
import pytest
from falcon import testing

from shopapi.config import ROOT, read_dotenv
from shopapi.security import AUDIENCE, ISSUER, token_digest
from tests.conftest import (
    REDIS_URL,
    TEST_SECRET,
    assert_problem,
    backends,
    db_rows,
    in_background,
    wait_for,
)
from tests.helpers import bearer, login, me, refresh
from tests.live import free_port, gunicorn_command
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


# ------------------------------------------------------------------ the signing key (item 2)

OLD_DEV_SECRET = "dev-secret-key-change-me-in-production-please"  # noqa: S105 - published


def _claims(user_id: int, role: str = "CUSTOMER", **overrides) -> dict:
    """Valid access-token claims for a user in the database; an override of None drops that
    claim. Forgeries below carry everything right but the part under test."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": role,
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict, key: str = TEST_SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _old_key_forgeries(admin_id: int) -> list[dict[str, str]]:
    """An ADMIN's token under the old constant, as today's tokens look and as they looked when
    that key signed them (no `iss`, no `aud`)."""
    return [
        bearer(_signed(_claims(admin_id, "ADMIN", **claims), key=OLD_DEV_SECRET))
        for claims in ({}, {"iss": None, "aud": None})
    ]


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_a_token_signed_with_the_old_built_in_key_is_401(app_client, make_user, app_env):
    """A server run without SECRET_KEY used to sign with a constant published in the source:
    anyone could mint an ADMIN token. Now it signs with a random key of its own."""
    client = app_client(APP_ENV=app_env, SECRET_KEY="")
    key = client.app.ctx.settings.signing_key
    assert key not in (OLD_DEV_SECRET, TEST_SECRET) and len(key) >= 32
    admin = make_user("ADMIN")
    for forged in _old_key_forgeries(admin.id):
        for path in ("/api/users", "/api/auth/me"):
            response = client.simulate_get(path, headers=forged)
            assert_problem(response, 401, "not_authenticated")
    # control: the very same claims under the server's own key are an admin's
    genuine = _signed(_claims(admin.id, "ADMIN"), key=key)
    assert client.simulate_get("/api/users", headers=bearer(genuine)).status_code == 200
    # and a login on it works end to end
    assert me(client, login(client, admin.email, admin.password)["access_token"]).status_code == 200


def _checkout_configures_a_key_or_environment() -> bool:
    return any(read_dotenv(ROOT / ".env").get(name) for name in ("APP_ENV", "SECRET_KEY"))


STARTS = {
    "gunicorn": lambda port: gunicorn_command(port, 2),
    "shopapi serve": lambda port: [
        sys.executable,
        "-m",
        "shopapi.cli",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
    ],
    "shopapi worker": lambda port: [sys.executable, "-m", "shopapi.cli", "worker"],
}


@pytest.mark.live
@pytest.mark.skipif(
    _checkout_configures_a_key_or_environment(),
    reason="this checkout's .env sets APP_ENV or SECRET_KEY, which every start reads",
)
@pytest.mark.parametrize(
    "app_env,message",
    [
        (None, "SECRET_KEY and APP_ENV are both unset"),
        ("production", "SECRET_KEY is not set, and production needs one"),
    ],
)
@pytest.mark.parametrize("start", list(STARTS))
def test_without_a_secret_key_the_server_refuses_to_start_and_says_why(
    database_url, start, app_env, message
):
    """`gunicorn -c gunicorn.conf.py shopapi.asgi:app` with a copied .env.example (no key, no
    APP_ENV) used to serve, signing with the published constant."""
    env = {k: v for k, v in os.environ.items() if k not in ("APP_ENV", "SECRET_KEY")}
    # everything else a server needs is there: only the key is missing
    env.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, EMAIL_ENABLED="false")
    if app_env:
        env["APP_ENV"] = app_env
    port = free_port()
    result = subprocess.run(
        STARTS[start](port), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0, result.stderr[-2000:]
    assert f"shopapi: refusing to start: {message}" in result.stderr, result.stderr[-2000:]
    assert "token_urlsafe" in result.stderr  # and how to make a key
    assert "Booting worker" not in result.stderr  # refused in the master, before any fork
    assert "Traceback" not in result.stderr


@pytest.mark.live
def test_a_random_development_key_is_one_key_for_every_gunicorn_worker(live_server, make_user):
    """APP_ENV=development, no SECRET_KEY: the master makes the key before it forks, so a token
    issued by one worker is valid on every other, replacements started later included (each
    worker is replaced after 5 requests: the token is checked by processes that did not exist
    when it was issued)."""
    server = live_server(workers=2, APP_ENV="development", SECRET_KEY="", GUNICORN_MAX_REQUESTS="5")
    user = make_user("ADMIN")
    # signed with the tests' key, or with the old constant: not this server's
    assert server.request("GET", "/api/auth/me", headers=user.headers)[0] == 401
    for forged in _old_key_forgeries(user.id):
        assert server.request("GET", "/api/users", headers=forged)[0] == 401
    status, pair, _ = server.request(
        "POST", "/api/auth/login", {"email": user.email, "password": user.password}
    )
    assert status == 200, pair
    auth = bearer(pair["access_token"])

    def booted() -> set[str]:
        return set(re.findall(r"Booting worker with pid: (\d+)", server.log.read_text()))

    statuses: list[int] = []
    deadline = time.monotonic() + 40
    while len(booted()) < 5:  # the first two, and three started after the login
        assert time.monotonic() < deadline, f"workers were never replaced: {booted()}"
        statuses.append(server.request("GET", "/api/users", headers=auth)[0])
    assert len(statuses) >= 10 and set(statuses) == {200}, statuses
    # the refresh token too, on whichever worker answers now
    status, fresh, _ = server.request(
        "POST", "/api/auth/refresh", {"refresh_token": pair["refresh_token"]}
    )
    assert status == 200, fresh
    assert server.request("GET", "/api/auth/me", headers=bearer(fresh["access_token"]))[0] == 200


# ------------------------------------------------------------------ iss, aud, leeway (item 9)

NOT_OURS = {
    "no iss": {"iss": None},
    "no aud": {"aud": None},
    "neither": {"iss": None, "aud": None},
    "another issuer": {"iss": "another-service"},
    "issuer in other case": {"iss": ISSUER.upper()},
    "empty issuer": {"iss": ""},
    "another audience": {"aud": "shopapi-admin"},
    "audience list holding ours": {"aud": [AUDIENCE, "another-api"]},
}


@pytest.mark.parametrize("kind", list(NOT_OURS))
def test_an_access_token_without_our_issuer_and_audience_is_401(client, make_user, kind):
    """Signed with the server's own key: a token minted for another service sharing the key, or
    one from before the claims existed, is no access token here."""
    admin = make_user("ADMIN")
    token = _signed(_claims(admin.id, "ADMIN", **NOT_OURS[kind]))
    for path in ("/api/auth/me", "/api/users"):
        assert_problem(client.simulate_get(path, headers=bearer(token)), 401, "not_authenticated")
    control = _signed(_claims(admin.id, "ADMIN"))
    assert client.simulate_get("/api/users", headers=bearer(control)).status_code == 200


@pytest.mark.parametrize("kind", ["no iss", "no aud", "neither", "another issuer"])
def test_a_refresh_token_without_our_issuer_and_audience_is_refused_before_any_lookup(
    client, make_user, database_url, query_counter, kind
):
    user = make_user()
    pair = login(client, user.email, user.password)
    claims = jwt.decode(pair["refresh_token"], TEST_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    changed = {**claims, **NOT_OURS[kind]}
    forged = _signed({k: v for k, v in changed.items() if v is not None})
    before = snapshot(database_url)
    with query_counter() as counted:
        assert_problem(refresh(client, forged), 401, "not_authenticated")
    assert counted.n == 0
    assert snapshot(database_url) == before
    assert refresh(client, pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize("sub", ["²", "٣", "own id in Arabic-Indic digits"])
def test_an_access_token_whose_sub_is_not_ascii_digits_is_401(client, make_user, sub):
    """Validly signed, so only a leaked key or a bug of ours could mint it: `"²".isdigit()` is
    true and `int("٣")` is 3, but a user id is ASCII digits and nothing else."""
    admin = make_user("ADMIN")
    if sub.startswith("own id"):
        sub = str(admin.id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    token = _signed(_claims(admin.id, "ADMIN", sub=sub))
    for path in ("/api/auth/me", "/api/users"):
        assert_problem(client.simulate_get(path, headers=bearer(token)), 401, "not_authenticated")
    control = _signed(_claims(admin.id, "ADMIN"))
    assert client.simulate_get("/api/users", headers=bearer(control)).status_code == 200


SKEWS = {
    # name: (claims relative to now, accepted with the default 10 s leeway)
    "expired 5 s ago": ({"iat": -605, "exp": -5}, True),
    "expired 30 s ago": ({"iat": -630, "exp": -30}, False),
    "issued 5 s in the future": ({"iat": 5, "exp": 605}, True),
    "issued 60 s in the future": ({"iat": 60, "exp": 660}, False),
}


@pytest.mark.parametrize("skew", list(SKEWS))
def test_clock_skew_within_jwt_leeway_is_accepted_and_beyond_it_refused(
    app_client, make_user, skew
):
    """Another host's clock a few seconds off must not log people out, nor may a token live on
    for long past its `exp`: JWT_LEEWAY (default 10 s) bounds both, and it is a setting."""
    offsets, accepted = SKEWS[skew]
    user = make_user()
    now = int(time.time())

    def status(client) -> int:
        token = _signed(_claims(user.id, **{k: now + v for k, v in offsets.items()}))
        return client.simulate_get("/api/auth/me", headers=bearer(token)).status_code

    assert status(app_client()) == (200 if accepted else 401)
    assert status(app_client(JWT_LEEWAY=0)) == 401  # no leeway: every skew is refused
    assert status(app_client(JWT_LEEWAY=120)) == 200  # a wider one takes them all


def test_issuer_and_audience_follow_the_settings(app_client, make_user):
    """Two deployments on one key (say a shared secret store) but their own JWT_ISSUER and
    JWT_AUDIENCE: neither accepts the other's tokens."""
    ours, theirs = app_client(), app_client(JWT_ISSUER="shop-eu", JWT_AUDIENCE="shop-eu-api")
    user = make_user()
    eu = login(theirs, user.email, user.password)
    claims = jwt.decode(
        eu["access_token"],
        TEST_SECRET,
        algorithms=["HS256"],
        issuer="shop-eu",
        audience="shop-eu-api",
    )
    assert claims["sub"] == str(user.id)
    assert me(theirs, eu["access_token"]).status_code == 200
    assert_problem(me(ours, eu["access_token"]), 401, "not_authenticated")
    assert_problem(refresh(ours, eu["refresh_token"]), 401, "not_authenticated")
    home = login(ours, user.email, user.password)
    assert_problem(me(theirs, home["access_token"]), 401, "not_authenticated")
    assert me(ours, home["access_token"]).status_code == 200


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

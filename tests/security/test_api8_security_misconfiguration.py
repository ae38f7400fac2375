"""OWASP API8:2023 Security Misconfiguration: every answer carries the hardening headers, tokens
(guest cart tokens too), carts and personal data are never cacheable, hostile bytes on any route
give a clean 4xx that leaks no trace, SQL, path or version, odd HTTP methods echo nothing, and
CORS never lends credentials.

Complements tests/test_errors.py (one 500 and the problem shape), tests/test_cors.py (origin
matching) and tests/test_config.py (weak secrets) with a matrix of malformed bodies over every
route of the route table, a header check over every kind of answer, and a live gunicorn.

Issue 18 item 5 (known credentials in production): the compose stack's `seed` service, run as
compose runs it (`APP_ENV=production`, no `--demo`), leaves no demo account to log in with
(more cases in tests/test_seed_and_cli.py).
Issue 18 item 9 (compose passwords): compose has no default database or Redis password, Redis
requires one, and the stack refuses to start without each, nor without SMTP_URL (its mail
catcher is opt-in and loopback-only): tests/test_deploy_files.py, the `test_compose_*` tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
import yaml
from falcon import testing

from shopapi.app import create_app
from shopapi.config import ROOT
from shopapi.seed import USERS
from tests.conftest import app_env, assert_problem, db_rows, make_settings
from tests.security.conftest import (
    CART_TOKEN,
    api_endpoints,
    example_request,
    raw_http,
    snapshot,
)
from tests.stripe_emulator import signature, signed_event

APPLIED = {200, 201, 204, 401, 409, 422}  # what a body that parses may get
# routes whose parsed body may also get: 202 (accepted for later), 400 `invalid_token` (a token
# that parses but is no live one), 403 (a wrong password for delete-account)
APPLIED_ALSO = {
    "/api/auth/password-reset": {202},
    "/api/auth/password-reset/confirm": {400},
    "/api/auth/verify-email": {400},
    "/api/auth/delete-account": {403},
}
HARDENING = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/work/|psycopg|postgres|"
    r"SELECT |INSERT |UPDATE |DELETE FROM|syntax error|relation \"|"
    r"gunicorn/|falcon/|Python/|msgspec\.|Error\(",
    re.IGNORECASE,
)


@pytest.fixture()
def limited_client(async_redis, database_url, pool, redis_client):
    settings = make_settings(
        database_url,
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_DEFAULT="1000/hour",
        RATE_LIMIT_LOGIN="10/hour",
    )
    return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))


def test_every_kind_of_answer_carries_the_hardening_headers(
    async_redis, client, shop, database_url, pool, redis_client
):
    product = client.simulate_get(f"/api/products/{shop.product_id}")
    left = 3600 - time.time() % 3600
    if left < 3:  # the two limited requests below must fall in one clock-aligned window
        time.sleep(left + 0.1)
    one_per_hour = testing.TestClient(
        create_app(
            make_settings(database_url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_DEFAULT="1/hour"),
            pool=pool,
            redis=async_redis,
        )
    )
    one_per_hour.simulate_get("/api/categories", remote_addr="198.51.100.99")
    answers = {
        200: client.simulate_get("/api/auth/me", headers=shop.customer.headers),
        201: client.simulate_post(
            "/api/categories", json={"name": "Headers"}, headers=shop.editor.headers
        ),
        # (logout-all ends the caller's access tokens: the other customer's, used last)
        204: client.simulate_post("/api/auth/logout-all", headers=shop.other.headers),
        304: client.simulate_get(
            f"/api/products/{shop.product_id}", headers={"If-None-Match": product.headers["etag"]}
        ),
        400: client.simulate_post("/api/orders", body=b"{", headers=shop.customer.headers),
        401: client.simulate_get("/api/users"),
        403: client.simulate_get("/api/users", headers=shop.customer.headers),
        404: client.simulate_get("/nowhere"),
        405: client.simulate_delete("/api/products"),
        413: client.simulate_post("/api/auth/register", body=b"x" * (1024 * 1024 + 1)),
        422: client.simulate_get("/api/products", params={"per_page": "0"}),
        429: one_per_hour.simulate_get("/api/products", remote_addr="198.51.100.99"),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        for name, value in HARDENING.items():
            assert response.headers.get(name) == value, (status, name)
    for path in ("/healthz", "/readyz", "/metrics", "/api/docs/openapi.json"):
        response = client.simulate_get(path)
        assert all(response.headers.get(k) == v for k, v in HARDENING.items()), path


def test_tokens_accounts_orders_carts_and_errors_are_never_stored_but_the_catalog_revalidates(
    client, shop
):
    pair = client.simulate_post(
        "/api/auth/login", json={"email": shop.other.email, "password": shop.other.password}
    )
    private = [
        pair,
        client.simulate_post("/api/auth/refresh", json={"refresh_token": shop.refresh_token}),
        client.simulate_get("/api/auth/me", headers=shop.customer.headers),
        client.simulate_get(f"/api/users/{shop.other.id}", headers=shop.admin.headers),
        client.simulate_get("/api/orders", headers=shop.other.headers),
        client.simulate_get(f"/api/orders/{shop.order_id}", headers=shop.other.headers),
        client.simulate_get("/api/products/999999"),
        # a guest cart's token, carts and the address book
        client.simulate_post("/api/cart"),
        client.simulate_get("/api/cart", headers={CART_TOKEN: shop.cart_token}),
        client.simulate_get("/api/cart", headers=shop.admin.headers),
        client.simulate_get("/api/me/addresses", headers=shop.admin.headers),
        client.simulate_get(f"/api/me/addresses/{shop.address_id}", headers=shop.admin.headers),
    ]
    for response in private:
        assert response.status_code < 300 or response.status_code == 404, response.text
        assert response.headers.get("cache-control") == "no-store", response.text
    for path in (
        "/api/products",
        f"/api/products/{shop.product_id}",
        "/api/categories",
        "/api/shipping-methods",
        f"/api/shipping-methods/{shop.method_id}",
    ):
        response = client.simulate_get(path)
        assert response.headers.get("etag")
        assert "no-store" not in response.headers.get("cache-control", "")


def _hostile_bodies(valid: dict) -> dict[str, tuple[bytes, set[int]]]:
    """name -> (raw body, the statuses allowed for it)."""
    raw = json.dumps(valid).encode()
    text_fields = [k for k, v in valid.items() if isinstance(v, str)]
    field = (text_fields or list(valid))[0]
    # a string where an int or a list is due may be refused for its type first (422)
    broken = {400} if text_fields else {400, 422}
    broken_field = json.dumps({**valid, field: "PLACEHOLDER"}).encode()
    return {
        "field not UTF-8": (broken_field.replace(b'"PLACEHOLDER"', b'"\xff\xfe"'), broken),
        # accepted or not, as the same body without it would be (earlier writes included)
        "ignored field not UTF-8": (raw[:-1] + b', "pad": "\xc3\x28"}', {400, *APPLIED}),
        "lone surrogate": (broken_field.replace(b'"PLACEHOLDER"', b'"\\ud800"'), broken),
        "byte order mark": (b"\xef\xbb\xbf" + raw, {400}),
        "NaN": (broken_field.replace(b'"PLACEHOLDER"', b"NaN"), {400}),
        "1e400": (broken_field.replace(b'"PLACEHOLDER"', b"1e400"), {400, 422}),
        "trailing garbage": (raw + b"}{", {400}),
        "xml": (b"<user><email>x</email></user>", {400}),
        "form": (b"email=a%40b.c&password=x", {400}),
        "null": (b"null", {400}),
        "empty": (b"", {400}),
        "SQL in every string": (
            json.dumps(
                {
                    k: "' OR 1=1; DROP TABLE users; --" if isinstance(v, str) else v
                    for k, v in valid.items()
                }
            ).encode(),
            APPLIED,
        ),
    }


def test_hostile_bytes_on_every_body_route_are_a_clean_4xx_that_leaks_nothing(
    client, app, shop, database_url
):
    answered = 0
    for template, method, spec in api_endpoints(app):
        if spec.body is None:
            continue
        path, valid = example_request(shop, template, spec)
        for name, (raw, allowed) in _hostile_bodies(valid).items():
            if name == "empty" and spec.body_optional:
                allowed = APPLIED  # an optional body (checkout's) left out: no body at all
            if spec.body_raw:  # a signed webhook: no signature, nothing is parsed or applied
                allowed = {400}
            before = snapshot(database_url) if 400 in allowed and len(allowed) == 1 else None
            response = client.simulate_request(
                method,
                path,
                body=raw,
                headers={
                    **shop.admin.headers,
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"hostile-{name}",
                },
            )
            if APPLIED <= allowed:  # the body parses: that route's own outcomes too
                allowed = allowed | APPLIED_ALSO.get(template, set())
            assert response.status_code in allowed, (method, template, name, response.text)
            assert not LEAKS.search(response.text), (method, template, name, response.text)
            if response.status_code == 400 and spec.body_raw:
                assert_problem(response, 400, "invalid_signature")
            elif response.status_code == 400:
                parsed = allowed != {400} and response.json["code"] == "invalid_token"
                assert_problem(response, 400, "invalid_token" if parsed else "invalid_json")
            if before is not None:
                assert snapshot(database_url) == before, (method, template, name)
            answered += 1
    assert answered >= 10 * 12


def test_hostile_bytes_signed_for_the_stripe_webhook_are_a_clean_answer_that_leaks_nothing(
    app_client, stripe_emulator, database_url
):
    """PAYMENT_PROVIDER=stripe, each hostile body signed as Stripe would sign it: a body that
    is no Stripe event is a 400 `invalid_signature` that changes nothing; one that reads as an
    event of no interest is recorded (200) and changes nothing else."""
    client = app_client(**stripe_emulator.settings())
    body, _ = signed_event("payment_intent.succeeded", "pi_hostile", 100, event_id="evt_h")
    valid = json.loads(body)
    answered = 0
    for name, (raw, _allowed_elsewhere) in _hostile_bodies(valid).items():
        before = snapshot(database_url)
        response = client.simulate_post(
            "/api/payments/stripe/webhook",
            body=raw,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature(raw)},
        )
        # a signed body is either an event (200) or not one (400): never a 422 or a 5xx
        assert response.status_code in {200, 400}, (name, response.text)
        assert not LEAKS.search(response.text), (name, response.text)
        after = snapshot(database_url)
        if response.status_code == 400:
            assert_problem(response, 400, "invalid_signature")
            assert after == before, name
        else:  # only the event id is remembered: no PaymentIntent of ours, no order touched
            assert response.json == {"received": True}
            changed = {table for table in after if after[table] != before[table]}
            assert changed == {"payment_events"}, (name, changed)
        answered += 1
    assert answered == len(_hostile_bodies(valid))
    assert db_rows(database_url, "SELECT count(*) FROM payments") == [(0,)]


def test_a_login_body_that_is_not_utf8_is_a_400_with_rate_limits_on(limited_client):
    response = limited_client.simulate_post(
        "/api/auth/login",
        body=b'{"email": "\xff@example.com", "password": "password123"}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "invalid_json")
    assert "ratelimit-remaining" in response.headers


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")  # the test client's own
@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT", "PROPFIND", "DEBUG", "FOO"])
def test_odd_http_methods_are_refused_and_echo_nothing(client, shop, method):
    for path in ("/api/users", f"/api/orders/{shop.order_id}", "/api/auth/login"):
        response = client.simulate_request(
            method, path, headers={**shop.admin.headers, "X-Echo": "reflected-marker"}
        )
        # known to Falcon or not (its own 400 for FOO is mapped), a method problem is a 405
        assert_problem(response, 405, "method_not_allowed")
        assert shop.admin.token not in response.text and "reflected-marker" not in response.text


@pytest.mark.parametrize("origins", ["*", "https://shop.example"])
def test_cors_never_lends_credentials_nor_trusts_the_null_origin(
    async_redis, database_url, pool, redis_client, origins
):
    client = testing.TestClient(
        create_app(make_settings(database_url, CORS_ORIGINS=origins), pool=pool, redis=async_redis)
    )
    for origin in ("https://shop.example", "https://evil.example", "null"):
        simple = client.simulate_get("/api/products", headers={"Origin": origin})
        preflight = client.simulate_options(
            "/api/orders",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        for response in (simple, preflight):
            assert "access-control-allow-credentials" not in response.headers, origin
            if origins != "*" and origin != origins:  # "null" included
                assert "access-control-allow-origin" not in response.headers, origin


def test_a_production_server_names_no_version_and_hides_its_internals(live_server):
    server = live_server(workers=1, APP_ENV="production")
    for path in ("/healthz", "/api/products", "/nowhere", "/api/users"):
        status, headers, body = raw_http(server, "GET", path)
        assert status in (200, 401, 404)
        assert not re.search(r"\d", headers.get("server", "")), headers.get("server")
        assert "x-powered-by" not in headers
        assert headers["x-content-type-options"] == "nosniff"
        assert not LEAKS.search(body.decode())
    status, _, body = raw_http(
        server,
        "POST",
        "/api/orders",
        body=b'{"items": [',
        headers={"Content-Type": "application/json"},
    )
    assert status == 401 and not LEAKS.search(body.decode())


def test_the_compose_seed_service_leaves_no_known_credentials(database_url, client):
    """Item 5: compose's `seed` service ran `bin/seed` with APP_ENV=production and created
    admin@example.com/adminpass123. Run its command with its APP_ENV: no demo login works."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["seed"]
    command, environment = service["command"], service["environment"]
    assert environment["APP_ENV"] == "production" and "--demo" not in command
    result = subprocess.run(
        [str(ROOT / command[0]), *command[1:]],
        cwd=ROOT,
        env={**os.environ, **app_env(database_url, APP_ENV=environment["APP_ENV"])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for email, password, _, _ in USERS:
        login = client.simulate_post("/api/auth/login", json={"email": email, "password": password})
        assert_problem(login, 401, "invalid_credentials")
    demo = [email for email, *_ in USERS]
    assert db_rows(database_url, "SELECT count(*) FROM users WHERE email = ANY(%s)", (demo,)) == [
        (0,)
    ]
    # the one account it made is an admin whose password was shown once, never a known one
    assert db_rows(database_url, "SELECT email, role FROM users") == [("admin@localhost", "ADMIN")]
    assert "password of admin@localhost: " in result.stdout

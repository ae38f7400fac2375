"""OWASP API4:2023 Unrestricted Resource Consumption: every route bounds what one request may make
the server read, parse, look up or page through, and refuses the excess fast and cleanly.

Complements tests/test_errors.py and tests/test_auth.py (413 on one route, one 2**63 id) and the
per-area "bad parameter" tests with matrices generated from the app's own route table, so a new
route cannot escape: every body over 1 MiB, JSON nested 100,000 deep, every malformed or
oversized id, every page bound; plus the largest legal order and cart checkout (and the refused
51st cart line), the rate limit on starting guest carts, and gunicorn's header, URL and
chunked-body limits on a live server.

Issue 18 item 6 (proxy trust by network): a client cannot escape its rate-limit bucket by
sending `X-Forwarded-For` unless its socket peer is inside `TRUSTED_PROXY_NETWORKS`, checked on a
live gunicorn whose peer (127.0.0.1) is outside them, and honoured when the peer is inside
(unit cases: tests/test_client_ip.py, tests/test_rate_limits.py).

Issue 18 item 3 (catalog cost): offset paging stops at page × per_page ≤ 10,000 on every list
(here, from the route table; per list with the detail's pointer to `cursor`, the bounded ranked
search, totals and the per-worker list slots: tests/test_catalog_bounds.py).

Issue 18 item 4 (Redis memory bounded): 10,000 GETs of random unknown product ids leave the
Redis key count unchanged, and every key the catalog cache writes has a TTL except five global
ones (tests/test_catalog_cache.py, "bounded memory"). Issue 18 item 7 (limits while Redis is
down): on a live gunicorn of 2 workers with its Redis stopped, one client gets at most the
configured limit across both workers, not one allowance per worker
(tests/faults/test_redis_outage.py; unit cases in tests/test_rate_limits.py).

Issue 18 item 8 (login floods): bcrypt never runs on the event loop, runs on a bounded number of
lower-priority threads, and a full hashing queue answers a login, registration or password
change 503 with Retry-After at once; the dummy hash exists from start-up
(tests/test_login_flood.py, real bcrypt at cost 13); one address cycling emails is limited by
RATE_LIMIT_LOGIN_IP (tests/test_rate_limits.py); the effect on cached reads during a flood is
`bin/bench --scenarios login_flood`.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import assert_problem, db_rows
from tests.security.conftest import api_endpoints, example_request, raw_http, snapshot
from tests.stripe_emulator import signature, signed_event

MIB = 1024 * 1024


def _send(client, method: str, path: str, raw: bytes, user, headers=None):
    return client.simulate_request(
        method,
        path,
        body=raw,
        headers={"Content-Type": "application/json", **user.headers, **(headers or {})},
    )


def test_every_body_over_one_mebibyte_is_413_and_writes_nothing(client, app, shop, database_url):
    before = snapshot(database_url)
    checked = []
    for template, method, spec in api_endpoints(app):
        if spec.body is None:
            continue
        path, body = example_request(shop, template, spec)
        raw = json.dumps(body).encode()
        padded = raw[:-1] + b', "pad": "' + b"x" * (MIB - len(raw) - 10) + b'"}'
        assert len(padded) == MIB + 1
        problem = assert_problem(
            _send(client, method, path, padded, shop.admin), 413, "payload_too_large"
        )
        assert "limit" in problem["detail"]
        checked.append((method, template))
    assert len(checked) >= 10, checked
    assert snapshot(database_url) == before


@pytest.mark.parametrize("shape", ["top level", "inside an ignored field"])
def test_json_nested_100000_deep_is_a_fast_400_on_every_body_route(
    client, app, shop, database_url, shape
):
    nested = b"[" * 100_000 + b"]" * 100_000
    raw = nested if shape == "top level" else b'{"pad": ' + nested + b"}"
    before = snapshot(database_url)
    for template, method, spec in api_endpoints(app):
        if spec.body is None:
            continue
        path, _ = example_request(shop, template, spec)
        started = time.monotonic()
        response = _send(client, method, path, raw, shop.admin, {"Idempotency-Key": "deep"})
        # a signed webhook (body_raw) checks the signature before it parses anything
        assert_problem(response, 400, "invalid_signature" if spec.body_raw else "invalid_json")
        assert time.monotonic() - started < 1, (method, template)
    assert snapshot(database_url) == before


@pytest.mark.parametrize("shape", ["top level", "inside an ignored field"])
def test_the_stripe_webhook_refuses_deep_or_oversized_bodies_fast_even_when_signed(
    app_client, stripe_emulator, database_url, shape
):
    """With PAYMENT_PROVIDER=stripe the body is HMAC-checked, then parsed: deep nesting is a
    fast 400 whether the signature is missing, wrong or right, and a signature never lifts the
    size limit."""
    client = app_client(**stripe_emulator.settings())
    url = "/api/payments/stripe/webhook"
    nested = b"[" * 100_000 + b"]" * 100_000
    raw = nested if shape == "top level" else b'{"id": "evt_deep", "pad": ' + nested + b"}"
    before = snapshot(database_url)
    for sig in (None, signature(raw, secret="whsec_not_ours"), signature(raw)):
        headers = {"Content-Type": "application/json"} | ({"Stripe-Signature": sig} if sig else {})
        started = time.monotonic()
        response = client.simulate_post(url, body=raw, headers=headers)
        assert_problem(response, 400, "invalid_signature")
        assert time.monotonic() - started < 1, sig
    body, _ = signed_event("payment_intent.succeeded", "pi_big", 100)
    padded = body[:-1] + b', "pad": "' + b"x" * (MIB - len(body) - 10) + b'"}'
    assert len(padded) == MIB + 1
    problem = assert_problem(
        client.simulate_post(
            url,
            body=padded,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature(padded)},
        ),
        413,
        "payload_too_large",
    )
    assert "limit" in problem["detail"]
    assert snapshot(database_url) == before


@pytest.mark.parametrize("depth", [50, 400, 900, 990, 2_000])
def test_nesting_near_the_parsers_limit_is_never_a_500(client, shop, depth):
    """Just under the recursion limit the body parses, and the Idempotency-Key digest parses it
    again deeper in the stack; past it, the answer must still be a clean 400."""
    items = [{"product_id": shop.product_id, "quantity": 1}]
    raw = (
        b'{"items": '
        + json.dumps(items).encode()
        + b', "pad": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )
    for _ in range(2):  # the second time is a replay
        response = _send(
            client,
            "POST",
            "/api/orders",
            raw,
            shop.customer,
            {"Idempotency-Key": f"nested-{depth}"},
        )
        assert response.status_code in (201, 400), response.text
    if response.status_code == 400:
        assert_problem(response, 400, "invalid_json")


def test_login_with_deep_json_is_a_400_with_rate_limits_on(
    async_redis, database_url, pool, redis_client
):
    """The login limiter reads the body first (its key is the email): it must not crash on it."""
    from falcon import testing

    from shopapi.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(database_url, RATE_LIMIT_ENABLED="true")
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    raw = (
        b'{"email": "a@example.com", "password": "password123", "pad": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    response = client.simulate_post(
        "/api/auth/login", body=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")
    assert "ratelimit-limit" in response.headers  # the attempt was counted all the same


BAD_IDS = [
    str(2**63),
    str(-(2**63) - 1),
    "9" * 30,
    "9" * 5000,
    "1e3",
    "0x10",
    "1.0",
    "+1",
    " 1",
    "1 ",
    "-",
    "\uff11",
    "\u0661",
    "\u0967",
    "1_0",
]


def test_a_malformed_or_oversized_id_in_any_path_is_422_before_any_lookup(
    client, app, shop, database_url, query_counter
):
    before = snapshot(database_url)
    checked = 0
    for template, method, spec in api_endpoints(app):
        if "{" not in template:
            continue
        _, body = example_request(shop, template, spec)
        for bad in BAD_IDS:
            path = template.replace(template[template.index("{") : template.index("}") + 1], bad)
            with query_counter() as counted:
                response = client.simulate_request(
                    method, path, json=body, headers=shop.admin.headers
                )
            problem = assert_problem(response, 422, "validation_error")
            assert problem["errors"][0]["field"].endswith("id"), (method, path)
            assert counted.n <= 1, (method, path)  # at most the caller's own state
            checked += 1
    assert checked >= 15 * len(BAD_IDS)
    assert snapshot(database_url) == before


def test_every_list_enforces_its_page_bounds_and_a_far_page_is_cheap(client, app, shop):
    lists = [
        (t, s)
        for t, m, s in api_endpoints(app)
        if m == "GET" and s.query is not None and "per_page" in s.query.__struct_fields__
    ]
    assert len(lists) >= 5, lists
    for template, spec in lists:
        path, _ = example_request(shop, template, spec)
        fields = spec.query.__struct_fields__
        refused = [
            {"per_page": "101"},
            {"per_page": "0"},
            {"per_page": "-1"},
            {"page": "0"},
            {"page": str(10**9)},  # past page × per_page ≤ 10,000 (issue 18 item 3)
            {"page": "101", "per_page": "100"},
            {"page": str(10**9 + 1)},
            {"page": str(10**12)},
            {"per_page": "1.5"},
        ]
        if "q" in fields:
            refused.append({"q": "a" * 10_000})
        for params in refused:
            response = client.simulate_get(path, params=params, headers=shop.admin.headers)
            assert_problem(response, 422, "validation_error")
        started = time.monotonic()  # the farthest offset page allowed
        far = client.simulate_get(
            path, params={"page": "100", "per_page": "100"}, headers=shop.admin.headers
        )
        assert far.status_code == 200, (template, far.text)
        assert far.json["items"] == [] and far.json["page"] == 100
        assert time.monotonic() - started < 1, template


def test_the_largest_order_the_contract_allows_is_exact_and_bounded(
    client, make_user, make_product, database_url
):
    customer = make_user()
    products = [make_product(price_cents=10**12, stock=1000) for _ in range(50)]
    started = time.monotonic()
    response = client.simulate_post(
        "/api/orders",
        headers=customer.headers,
        json={"items": [{"product_id": p["id"], "quantity": 1000} for p in products]},
    )
    assert response.status_code == 201, response.text
    assert time.monotonic() - started < 3
    assert response.json["total_cents"] == 50 * 1000 * 10**12  # 5e16 cents, no float, no overflow
    assert db_rows(database_url, "SELECT sum(stock) FROM products")[0][0] == 0
    over = client.simulate_post(
        "/api/orders",
        headers=customer.headers,
        json={
            "items": [{"product_id": products[0]["id"], "quantity": 1000}]
            + [{"product_id": 10**6 + n, "quantity": 1} for n in range(50)]
        },
    )
    assert_problem(over, 422, "validation_error")


# ------------------------------------------------------------------ a live gunicorn


def test_gunicorn_refuses_oversized_headers_urls_and_header_counts_and_keeps_serving(live_server):
    server = live_server(workers=1)
    assert raw_http(server, "GET", "/api/products", headers={"X-Big": "a" * 10_240})[0] == 431
    assert (
        raw_http(
            server, "GET", "/api/auth/me", headers={"Authorization": "Bearer " + "a" * 10_240}
        )[0]
        == 431
    )
    assert (
        raw_http(server, "GET", "/api/products", headers={f"X-H{n}": "1" for n in range(101)})[0]
        == 431
    )
    assert raw_http(server, "GET", "/api/products?q=" + "a" * 5_000)[0] == 414
    # just inside every limit, the app answers (here: refuses the over-long q itself)
    status, _, body = raw_http(
        server, "GET", "/api/products?q=" + "a" * 3_000, headers={f"X-H{n}": "1" for n in range(90)}
    )
    assert status == 422 and json.loads(body)["code"] == "validation_error"
    assert raw_http(server, "GET", "/healthz")[0] == 200


def _not_in_an_hours_last_seconds() -> None:
    left = 3600 - time.time() % 3600
    if left < 5:  # windows follow the clock: never start at an hour's last seconds
        time.sleep(left + 0.1)


def test_forwarded_for_from_a_peer_outside_the_trusted_networks_picks_no_bucket(live_server):
    """Item 6 on a real gunicorn: the socket peer is 127.0.0.1 and TRUSTED_PROXY_NETWORKS does
    not include it, so a fresh X-Forwarded-For per request still spends the peer's bucket; the
    same requests from a trusted peer each get the bucket of the address they name."""
    limits = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "5/hour", "TRUSTED_PROXIES": "1"}
    _not_in_an_hours_last_seconds()
    untrusted = live_server(workers=1, TRUSTED_PROXY_NETWORKS="10.0.0.0/8", **limits)
    answers = [
        untrusted.request("GET", "/api/auth/me", headers={"X-Forwarded-For": f"203.0.113.{n}"})
        for n in range(7)
    ]
    assert [status for status, _, _ in answers] == [401] * 5 + [429] * 2
    assert [headers["RateLimit-Remaining"] for _, _, headers in answers[:5]] == list("43210")
    assert answers[-1][1]["code"] == "rate_limited"

    trusted = live_server(workers=1, TRUSTED_PROXY_NETWORKS="127.0.0.0/8", **limits)
    statuses = [
        trusted.request("GET", "/api/auth/me", headers={"X-Forwarded-For": f"198.51.100.{n}"})[0]
        for n in range(7)
    ]
    assert statuses == [401] * 7  # seven clients, one request each
    one_client = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}  # the leftmost entry is ignored
    statuses = [trusted.request("GET", "/api/auth/me", headers=one_client)[0] for _ in range(5)]
    assert statuses == [401] * 4 + [429]


def test_a_chunked_body_cannot_slip_past_the_body_limit(live_server, database_url):
    server = live_server(workers=1)
    before = snapshot(database_url)
    head = (
        b"POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = (
        b'{"email": "chunked@example.com", "password": "password123", "pad": "'
        + b"x" * (2 * MIB)
        + b'"}'
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for start in range(0, len(body), 65_536):
                piece = body[start : start + 65_536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: what is read next says how
        answer = sock.recv(65_536)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 411, 413), answer[:300]
    assert snapshot(database_url) == before
    assert raw_http(server, "GET", "/healthz")[0] == 200


def test_the_largest_cart_the_contract_allows_checks_out_exactly_and_no_larger_one_is_kept(
    client, make_user, make_product, database_url
):
    customer = make_user()
    products = [make_product(price_cents=10**12, stock=1000) for _ in range(51)]
    for product in products[:50]:
        response = client.simulate_put(
            f"/api/cart/items/{product['id']}", json={"quantity": 1000}, headers=customer.headers
        )
        assert response.status_code == 201, response.text
    assert response.json["subtotal_cents"] == 50 * 1000 * 10**12
    before = snapshot(database_url)
    full = client.simulate_put(
        f"/api/cart/items/{products[50]['id']}", json={"quantity": 1}, headers=customer.headers
    )
    assert_problem(full, 409, "cart_full")
    assert snapshot(database_url) == before

    started = time.monotonic()
    order = client.simulate_post("/api/cart/checkout", headers=customer.headers)
    assert order.status_code == 201, order.text
    assert time.monotonic() - started < 3
    assert len(order.json["items"]) == 50
    assert order.json["total_cents"] == 50 * 1000 * 10**12  # no float, no overflow
    assert db_rows(database_url, "SELECT sum(stock) FROM products")[0][0] == 1000
    assert db_rows(database_url, "SELECT count(*) FROM cart_items") == [(0,)]


def test_starting_guest_carts_is_rate_limited_like_every_route(app_client, database_url):
    """Anyone may start a guest cart without an account: the per-address limit is what keeps
    one client from filling the carts table (expired ones are purged by housekeeping)."""
    left = 3600 - time.time() % 3600
    if left < 5:  # windows follow the clock: never start at an hour's last seconds
        time.sleep(left + 0.1)
    client = app_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_DEFAULT="5/hour")
    statuses = [
        client.simulate_post("/api/cart", remote_addr="203.0.113.7").status_code for _ in range(8)
    ]
    assert statuses == [201] * 5 + [429] * 3
    assert db_rows(database_url, "SELECT count(*) FROM carts") == [(5,)]
    # another address is not held back by this one
    assert client.simulate_post("/api/cart", remote_addr="198.51.100.7").status_code == 201

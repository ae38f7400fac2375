"""OWASP API3:2023 Broken Object Property Level Authorization: no answer carries a field its
OpenAPI schema does not document (nor any secret: a guest cart's token only in the answer that
makes it), and no body property a caller may not set is ever applied (mass assignment), on any
operation.

Complements tests/test_auth.py (`role`/`is_active` on register), tests/test_users.py (403 for
role or is_active on oneself), tests/test_orders.py and tests/test_order_shipping.py (status,
user and prices on an order) with a tour of every operation of the route table checked against
the document's schemas, and with ids, owners, timestamps, hashes, slugs, currencies, line prices,
shipping, payment and cart tokens smuggled into every write.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shopapi.security import account_token, check_password, hash_password
from tests.conftest import assert_problem, db_rows
from tests.helpers import bearer, login
from tests.security.conftest import CART_TOKEN, api_endpoints, snapshot
from tests.stripe_emulator import signed_event

ADDRESS = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}

# names that must never appear as a key, anywhere in any answer
SECRET_KEYS = {
    "password",
    "password_hash",
    "current_password",
    "token_hash",
    "request_hash",
    "family_id",
    "revoked_at",
    "search",
    "search_vector",
    "tsv",
    "hash",
    "secret",
    "token",
    "cart_id",
}
BCRYPT = re.compile(r"\$2[aby]\$\d\d\$")


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def undocumented_fields(spec: dict, value: Any, schema: dict, path: str = "$") -> list[str]:
    """Paths of keys in `value` that `schema` (with its $refs) does not declare."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        options = [_resolve(spec, o) for o in schema["anyOf"]]
        fitting = [o for o in options if o.get("type") == _json_type(value)] or options
        return min((undocumented_fields(spec, value, o, path) for o in fitting), key=len)
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key not in properties:
                found.append(f"{path}.{key}")
            else:
                found += undocumented_fields(spec, item, properties[key], f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += undocumented_fields(spec, item, schema.get("items", {}), f"{path}[{index}]")
    return found


def _json_type(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }[type(value)]


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.fixture()
def world(client, make_user, make_category, make_product):
    """A small shop: staff, a customer with a pending order, a spare of everything to delete."""
    admin, editor = make_user("ADMIN"), make_user("EDITOR")
    customer = make_user("CUSTOMER", password="customer-pass-1")
    category = make_category("Tools")
    spare_category = make_category("Spare")
    product = make_product(stock=50, category_id=category["id"])
    spare_product = make_product(stock=0, category_id=category["id"])
    order = client.simulate_post(
        "/api/orders",
        json={"items": [{"product_id": product["id"], "quantity": 2}]},
        headers=customer.headers,
    ).json
    webhook = client.simulate_post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["order.created"]},
        headers=admin.headers,
    ).json
    address, spare_address = (
        client.simulate_post(
            "/api/me/addresses", json={**ADDRESS, "line2": line2}, headers=customer.headers
        ).json
        for line2 in ("Flat 1", "Flat 2")
    )
    method, spare_method = (
        client.simulate_post("/api/shipping-methods", json=body, headers=admin.headers).json
        for body in (
            {"name": "Courier", "price_cents": 500, "free_over_cents": 10_000, "countries": ["GB"]},
            {"name": "Pigeon", "price_cents": 1},
        )
    )
    # a guest's cart: a line, and one of a product withdrawn since (shown unavailable)
    retired = make_product(stock=5, category_id=category["id"])
    guest_token = client.simulate_post("/api/cart").json["token"]
    for item in (product, retired):
        client.simulate_put(
            f"/api/cart/items/{item['id']}", json={"quantity": 1}, headers={CART_TOKEN: guest_token}
        )
    client.simulate_patch(
        f"/api/products/{retired['id']}", json={"is_active": False}, headers=editor.headers
    )
    # the customer's cart, checked out to the address by the method
    client.simulate_put(
        f"/api/cart/items/{product['id']}", json={"quantity": 1}, headers=customer.headers
    )
    checkout = client.simulate_post(
        "/api/cart/checkout",
        json={"address_id": address["id"], "shipping_method_id": method["id"]},
        headers=customer.headers,
    )
    assert checkout.status_code == 201, checkout.text
    return {
        "address": address,
        "spare_address": spare_address,
        "method": method,
        "spare_method": spare_method,
        "retired": retired,
        "guest_token": guest_token,
        "checkout": checkout.json,
        "webhook": webhook,
        "admin": admin,
        "editor": editor,
        "customer": customer,
        "category": category,
        "spare_category": spare_category,
        "product": product,
        "spare_product": spare_product,
        "order": order,
        "victim": make_user("CUSTOMER"),
        "leaver": make_user("CUSTOMER"),
    }


def _tour(client, w: dict) -> list[tuple[str, str, Any]]:
    """Every operation once, as a caller allowed to make it, plus the errors it documents."""
    admin, editor, customer = (w[k].headers for k in ("admin", "editor", "customer"))
    pair = login(client, w["customer"].email, w["customer"].password)
    spare_pair = login(client, w["customer"].email, w["customer"].password)
    p, c, o = w["product"]["id"], w["category"]["id"], w["order"]["id"]
    uid = w["customer"].id
    third = login(client, w["customer"].email, w["customer"].password)
    dsn = client.app.ctx.settings.dsn
    ((session_id,),) = db_rows(dsn, "SELECT max(id) FROM sessions WHERE user_id = %s", (uid,))
    client.simulate_post("/api/auth/verify-email/resend", headers=customer)
    ((nonce,),) = db_rows(dsn, "SELECT nonce FROM account_tokens WHERE user_id = %s", (uid,))
    verification = account_token(client.app.ctx.settings.signing_key, bytes(nonce))
    guest, retired = w["guest_token"], w["retired"]["id"]
    steps = [
        ("GET", "/healthz", None, None, {}),
        ("GET", "/readyz", None, None, {}),
        ("GET", "/metrics", None, None, {}),
        (
            "POST",
            "/api/auth/register",
            None,
            {"email": "new@example.com", "password": "password123"},
            {},
        ),
        (
            "POST",
            "/api/auth/login",
            None,
            {"email": w["customer"].email, "password": "customer-pass-1"},
            {},
        ),
        (
            "POST",
            "/api/auth/login",
            None,
            {"email": w["customer"].email, "password": "wrong-password"},
            {},
        ),
        ("POST", "/api/auth/refresh", None, {"refresh_token": pair["refresh_token"]}, {}),
        ("POST", "/api/auth/logout", None, {"refresh_token": spare_pair["refresh_token"]}, {}),
        ("GET", "/api/auth/me", customer, None, {}),
        ("GET", "/api/users", admin, None, {"per_page": 100}),
        ("GET", "/api/users/{user_id}", admin, None, {}),
        ("PUT", "/api/users/{user_id}", admin, {"full_name": "Put"}, {}),
        ("PATCH", "/api/users/{user_id}", admin, {"full_name": "Patched"}, {}),
        ("PATCH", "/api/users/{user_id}", customer, {"password": "short"}, {}),
        ("DELETE", "/api/users/{user_id}", admin, None, {"user_id": w["victim"].id}),
        ("GET", "/api/categories", None, None, {}),
        ("POST", "/api/categories", editor, {"name": "Garden"}, {}),
        ("POST", "/api/categories", editor, {"name": "tools"}, {}),  # 409 name_taken
        ("GET", "/api/categories/{category_id}", None, None, {}),
        ("PUT", "/api/categories/{category_id}", editor, {"description": "Put"}, {}),
        ("PATCH", "/api/categories/{category_id}", editor, {"description": "Patched"}, {}),
        (
            "DELETE",
            "/api/categories/{category_id}",
            editor,
            None,
            {"category_id": w["spare_category"]["id"]},
        ),
        ("GET", "/api/products", None, None, {"q": "Product"}),
        ("GET", "/api/products", editor, None, {"include_inactive": "true", "per_page": 1}),
        (
            "POST",
            "/api/products",
            editor,
            {"name": "Saw", "price_cents": 1500, "category_id": c, "stock": 3},
            {},
        ),
        ("GET", "/api/products/{product_id}", None, None, {}),
        ("GET", "/api/products/{product_id}", None, None, {"product_id": 424242}),
        ("PUT", "/api/products/{product_id}", editor, {"description": "Put"}, {}),
        ("PATCH", "/api/products/{product_id}", editor, {"description": "Patched"}, {}),
        (
            "DELETE",
            "/api/products/{product_id}",
            editor,
            None,
            {"product_id": w["spare_product"]["id"]},
        ),
        ("GET", "/api/products/{product_id}/stock-movements", editor, None, {}),
        ("GET", "/api/orders", customer, None, {"per_page": 1}),
        ("GET", "/api/orders", editor, None, {"user_id": uid}),
        (
            "POST",
            "/api/orders",
            customer,
            {"items": [{"product_id": p, "quantity": 1}]},
            {"Idempotency-Key": "tour"},
        ),
        ("POST", "/api/orders", customer, {"items": [{"product_id": p, "quantity": 1000}]}, {}),
        ("GET", "/api/orders/{order_id}", customer, None, {}),
        # PAYMENT_PROVIDER=manual: 409 payment_not_online; a webhook it cannot verify: 400
        ("POST", "/api/orders/{order_id}/payment", customer, None, {}),
        (
            "POST",
            "/api/payments/stripe/webhook",
            None,
            {"id": "evt_tour", "type": "payment_intent.succeeded", "data": {"object": {}}},
            {"Stripe-Signature": "t=1,v1=00"},
        ),
        ("PUT", "/api/orders/{order_id}/status", editor, {"status": "paid"}, {}),
        ("POST", "/api/orders/{order_id}/cancel", customer, None, {}),  # paid now: 409
        ("DELETE", "/api/orders/{order_id}", admin, None, {}),
        # the shipped order: address copy, method, payment
        ("GET", "/api/orders/{order_id}", customer, None, {"order_id": w["checkout"]["id"]}),
        ("GET", "/api/me/addresses", customer, None, {}),
        ("GET", "/api/me/addresses", None, None, {}),  # 401
        ("POST", "/api/me/addresses", customer, {**ADDRESS, "phone": "+44 20 7946 0000"}, {}),
        ("POST", "/api/me/addresses", customer, {**ADDRESS, "country": "gb"}, {}),  # 422
        ("GET", "/api/me/addresses/{address_id}", customer, None, {}),
        ("GET", "/api/me/addresses/{address_id}", customer, None, {"address_id": 424242}),
        ("PUT", "/api/me/addresses/{address_id}", customer, {"region": "Westminster"}, {}),
        ("PATCH", "/api/me/addresses/{address_id}", customer, {"is_default": True}, {}),
        (
            "DELETE",
            "/api/me/addresses/{address_id}",
            customer,
            None,
            {"address_id": w["spare_address"]["id"]},
        ),
        ("GET", "/api/shipping-methods", None, None, {}),
        ("GET", "/api/shipping-methods", editor, None, {"include_inactive": "true"}),
        (
            "POST",
            "/api/shipping-methods",
            editor,
            {"name": "Express", "price_cents": 1500, "countries": ["GB", "FR"]},
            {},
        ),
        ("POST", "/api/shipping-methods", editor, {"name": "courier", "price_cents": 1}, {}),
        ("POST", "/api/shipping-methods", customer, {"name": "Mine", "price_cents": 0}, {}),
        ("GET", "/api/shipping-methods/{method_id}", None, None, {}),
        ("GET", "/api/shipping-methods/{method_id}", None, None, {"method_id": 424242}),
        ("PUT", "/api/shipping-methods/{method_id}", editor, {"price_cents": 600}, {}),
        ("PATCH", "/api/shipping-methods/{method_id}", editor, {"free_over_cents": None}, {}),
        (
            "DELETE",
            "/api/shipping-methods/{method_id}",
            editor,
            None,
            {"method_id": w["spare_method"]["id"]},
        ),
        ("POST", "/api/cart", None, None, {}),
        ("GET", "/api/cart", None, None, {CART_TOKEN: guest}),  # an unavailable line
        ("GET", "/api/cart", None, None, {}),  # 401
        ("GET", "/api/cart", None, None, {CART_TOKEN: "no-such-cart"}),  # 404
        ("PUT", "/api/cart/items/{product_id}", customer, {"quantity": 1}, {}),  # 201
        ("PUT", "/api/cart/items/{product_id}", customer, {"quantity": 3}, {}),  # 200
        ("PUT", "/api/cart/items/{product_id}", customer, {"quantity": 1}, {"product_id": 424242}),
        ("PUT", "/api/cart/items/{product_id}", None, {"quantity": 2}, {CART_TOKEN: guest}),
        ("DELETE", "/api/cart/items/{product_id}", None, None, {CART_TOKEN: guest}),
        ("POST", "/api/cart/claim", customer, None, {CART_TOKEN: guest}),
        ("POST", "/api/cart/claim", customer, None, {CART_TOKEN: guest}),  # claimed: 404
        ("POST", "/api/cart/claim", customer, None, {}),  # no cart token: 422
        ("POST", "/api/cart/checkout", customer, {}, {}),  # the withdrawn line: 422
        ("DELETE", "/api/cart/items/{product_id}", customer, None, {"product_id": retired}),
        (
            "POST",
            "/api/cart/checkout",
            customer,
            {"address_id": w["address"]["id"], "shipping_method_id": w["method"]["id"]},
            {"Idempotency-Key": "tour-cart"},
        ),
        ("POST", "/api/cart/checkout", customer, None, {}),  # empty: 422
        ("PUT", "/api/cart/items/{product_id}", customer, {"quantity": 1000}, {}),
        ("POST", "/api/cart/checkout", customer, None, {}),  # not enough stock: 409
        ("DELETE", "/api/cart", customer, None, {}),
        ("POST", "/api/auth/password-reset", None, {"email": w["customer"].email}, {}),
        (
            "POST",
            "/api/auth/password-reset/confirm",
            None,
            {"token": "x" * 43, "password": "password123"},
            {},
        ),
        ("POST", "/api/auth/verify-email", None, {"token": verification}, {}),
        ("POST", "/api/auth/verify-email", None, {"token": verification}, {}),  # used: 400
        ("POST", "/api/auth/verify-email/resend", customer, None, {}),
        ("GET", "/api/auth/sessions", bearer(third["access_token"]), None, {}),
        ("DELETE", "/api/auth/sessions/{session_id}", customer, None, {}),
        ("DELETE", "/api/auth/sessions/{session_id}", customer, None, {"session_id": 424242}),
        ("POST", "/api/auth/delete-account", w["leaver"].headers, {"password": "nope"}, {}),
        (
            "POST",
            "/api/auth/delete-account",
            w["leaver"].headers,
            {"password": w["leaver"].password},
            {},
        ),
        ("POST", "/api/auth/logout-all", customer, None, {}),
        ("GET", "/api/webhooks", admin, None, {}),
        (
            "POST",
            "/api/webhooks",
            admin,
            {"url": "http://127.0.0.1:9/b", "events": ["order.status_changed"]},
            {},
        ),
        ("POST", "/api/webhooks", admin, {"url": "ftp://x", "events": ["order.created"]}, {}),
        ("GET", "/api/webhooks/{webhook_id}", admin, None, {}),
        ("PUT", "/api/webhooks/{webhook_id}", admin, {"is_active": False}, {}),
        ("PATCH", "/api/webhooks/{webhook_id}", admin, {"events": ["order.created"]}, {}),
        ("GET", "/api/webhooks/{webhook_id}/deliveries", admin, None, {}),
        (
            "POST",
            "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            admin,
            None,
            {},
        ),  # no such delivery: 404
        ("DELETE", "/api/webhooks/{webhook_id}", admin, None, {}),
    ]
    ids = {
        "user_id": uid,
        "category_id": c,
        "product_id": p,
        "order_id": o,
        "webhook_id": w["webhook"]["id"],
        "delivery_id": 424242,
        "session_id": session_id,
        "address_id": w["address"]["id"],
        "method_id": w["method"]["id"],
    }
    answers = []
    for method, template, headers, body, extra in steps:
        path_ids = {**ids, **{k: v for k, v in extra.items() if k.endswith("_id")}}
        params = {k: v for k, v in extra.items() if not k.endswith("_id") and k[0].islower()}
        more = {k: v for k, v in extra.items() if k[0].isupper()}
        response = client.simulate_request(
            method,
            template.format(**path_ids),
            json=body,
            params=params or None,
            headers={**(headers or {}), **more},
        )
        assert response.status_code < 500, (method, template, response.text)
        answers.append((method, template, response))
    return answers


def test_no_answer_of_any_operation_has_an_undocumented_field_or_a_secret(client, app, world):
    spec = client.simulate_get("/api/docs/openapi.json").json
    answers = _tour(client, world)

    toured = {(method, template) for method, template, _ in answers}
    served = {(method, template) for template, method, _ in api_endpoints(app)}
    assert served <= toured, f"add to the tour: {sorted(served - toured)}"
    statuses = {r.status_code for _, _, r in answers}
    assert {200, 201, 204, 401, 404, 409, 422} <= statuses  # errors are toured as well
    toured_as = {(m, t): r for m, t, r in answers}
    assert_problem(toured_as["POST", "/api/orders/{order_id}/payment"], 409, "payment_not_online")
    assert_problem(toured_as["POST", "/api/payments/stripe/webhook"], 400, "invalid_signature")

    for method, template, response in answers:
        text = response.text
        assert not BCRYPT.search(text), (method, template)
        if not response.content or "json" not in response.headers.get("content-type", ""):
            continue
        operation = spec["paths"][template][method.lower()]
        documented = operation["responses"].get(str(response.status_code))
        assert documented, f"{method} {template} answered an undocumented {response.status_code}"
        schema = next(iter(documented["content"].values()))["schema"]
        body = response.json
        assert not undocumented_fields(spec, body, schema), (method, template, body)
        # the exceptions: a webhook's signing secret, shown once, to the admin creating it;
        # a guest cart's token, shown once, to the guest starting it
        shown = {
            ("POST", "/api/webhooks", 201): {"secret"},
            ("POST", "/api/cart", 201): {"token"},
        }.get((method, template, response.status_code), set())
        assert not _keys(body) & (SECRET_KEYS - shown), (method, template, body)
        assert world["guest_token"] not in text, (method, template)


def test_the_stripe_payment_answers_carry_what_they_document_and_no_shop_secret(
    app_client, stripe_emulator, make_user, make_product, database_url
):
    """With PAYMENT_PROVIDER=stripe: starting a payment shows its client secret (to the owner,
    never stored by a cache) and the publishable key, nothing undocumented; the order shows
    only `{provider, status}`; no answer carries the Stripe secret key or webhook secret."""
    settings = stripe_emulator.settings()
    client = app_client(**settings)
    spec = client.simulate_get("/api/docs/openapi.json").json
    buyer = make_user()
    product = make_product(stock=5, price_cents=1200)
    order = client.simulate_post(
        "/api/orders",
        json={"items": [{"product_id": product["id"], "quantity": 2}]},
        headers=buyer.headers,
    ).json
    url = f"/api/orders/{order['id']}/payment"
    started = client.simulate_post(url, headers=buyer.headers)
    again = client.simulate_post(url, headers=buyer.headers)
    ((intent_id, client_secret),) = db_rows(
        database_url, "SELECT intent_id, client_secret FROM payments"
    )
    body, sig = signed_event("payment_intent.succeeded", intent_id, 2400, event_id="evt_api3")
    hook = client.simulate_post(
        "/api/payments/stripe/webhook",
        body=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": sig},
    )
    paid = client.simulate_get(f"/api/orders/{order['id']}", headers=buyer.headers)

    assert [r.status_code for r in (started, again, hook, paid)] == [200, 200, 200, 200]
    assert (
        started.json
        == again.json
        == {
            "provider": "stripe",
            "client_secret": client_secret,
            "publishable_key": settings["STRIPE_PUBLISHABLE_KEY"],
            "amount_cents": 2400,
            "currency": "USD",
            "status": started.json["status"],
        }
    )
    assert started.headers.get("cache-control") == "no-store"
    assert hook.json == {"received": True}
    assert paid.json["payment"] == {"provider": "stripe", "status": "succeeded"}
    assert client_secret not in paid.text and intent_id not in paid.text
    for (method, template), response in {
        ("post", "/api/orders/{order_id}/payment"): started,
        ("post", "/api/payments/stripe/webhook"): hook,
        ("get", "/api/orders/{order_id}"): paid,
    }.items():
        schema = spec["paths"][template][method]["responses"]["200"]["content"]
        schema = schema["application/json"]["schema"]
        assert not undocumented_fields(spec, response.json, schema), (template, response.json)
        assert not _keys(response.json) & SECRET_KEYS, (template, response.json)
        for secret in (settings["STRIPE_SECRET_KEY"], settings["STRIPE_WEBHOOK_SECRET"]):
            assert secret not in response.text, template
            assert all(secret not in value for value in response.headers.values()), template


def test_register_ignores_a_password_hash_id_and_timestamps_sent_with_it(client, database_url):
    planted = hash_password("attackers-password", 4)
    response = client.simulate_post(
        "/api/auth/register",
        json={
            "email": "mass@example.com",
            "password": "the-real-password",
            "password_hash": planted,
            "id": 4242,
            "created_at": "2000-01-01T00:00:00.000000Z",
            "role": "ADMIN",
            "is_active": True,
            "email_verified": True,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json["id"] != 4242 and response.json["role"] == "CUSTOMER"
    assert not response.json["created_at"].startswith("2000")
    ((stored, role),) = db_rows(
        database_url, "SELECT password_hash, role FROM users WHERE id = %s", (response.json["id"],)
    )
    assert stored != planted and role == "CUSTOMER"
    assert check_password("the-real-password", stored)
    assert not check_password("attackers-password", stored)


@pytest.mark.parametrize("who", ["self", "admin"])
def test_a_user_update_ignores_a_password_hash_id_and_timestamps(
    client, make_user, database_url, who
):
    user = make_user("CUSTOMER")
    caller = user if who == "self" else make_user("ADMIN")
    before = db_rows(
        database_url, "SELECT id, password_hash, created_at FROM users WHERE id = %s", (user.id,)
    )
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        headers=caller.headers,
        json={
            "full_name": "Renamed",
            "id": user.id + 100,
            "password_hash": hash_password("x" * 9, 4),
            "created_at": "2000-01-01T00:00:00.000000Z",
            "updated_at": "2000-01-01T00:00:00.000000Z",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json["full_name"] == "Renamed" and response.json["id"] == user.id
    assert not response.json["updated_at"].startswith("2000")
    after = db_rows(
        database_url, "SELECT id, password_hash, created_at FROM users WHERE id = %s", (user.id,)
    )
    assert after == before
    assert login(client, user.email, user.password)["access_token"]


def test_catalog_writes_ignore_ids_slugs_currencies_and_timestamps(
    client, make_user, make_category, make_product, database_url
):
    editor = make_user("EDITOR")
    home, other = make_category("Home"), make_category("Other")
    decoy = make_product(category_id=other["id"], name="Decoy")
    smuggled = {
        "id": decoy["id"],
        "slug": "admin",
        "currency": "XAU",
        "created_at": "2000-01-01T00:00:00.000000Z",
        "updated_at": "2000-01-01T00:00:00.000000Z",
        "category": {"id": other["id"], "name": "Other"},
    }

    created = client.simulate_post(
        "/api/products",
        headers=editor.headers,
        json={"name": "Kettle", "price_cents": 2500, "category_id": home["id"], **smuggled},
    )
    assert created.status_code == 201, created.text
    kettle = created.json
    assert kettle["id"] != decoy["id"] and kettle["currency"] == "USD"
    assert kettle["category"] == {"id": home["id"], "name": "Home"}
    assert not kettle["created_at"].startswith("2000")

    edited = client.simulate_patch(
        f"/api/products/{kettle['id']}",
        headers=editor.headers,
        json={"name": "Kettle 2", **smuggled},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json["id"] == kettle["id"] and edited.json["currency"] == "USD"
    assert edited.json["category"]["id"] == home["id"]
    assert db_rows(
        database_url, "SELECT name, category_id FROM products WHERE id = %s", (decoy["id"],)
    ) == [("Decoy", other["id"])]

    category = client.simulate_post(
        "/api/categories", headers=editor.headers, json={"name": "Garden Tools", **smuggled}
    )
    assert category.status_code == 201, category.text
    assert category.json["slug"] == "garden-tools" and category.json["id"] != other["id"]
    renamed = client.simulate_put(
        f"/api/categories/{home['id']}",
        headers=editor.headers,
        json={"name": "Home & Living", **smuggled},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json["slug"] == home["slug"] and renamed.json["id"] == home["id"]
    assert db_rows(
        database_url, "SELECT name, slug FROM categories WHERE id = %s", (other["id"],)
    ) == [("Other", other["slug"])]


def test_order_writes_ignore_line_names_prices_totals_ids_and_history(
    client, make_user, make_product, database_url
):
    customer, editor = make_user("CUSTOMER"), make_user("EDITOR")
    product = make_product(name="Lamp", price_cents=4000, stock=5)
    response = client.simulate_post(
        "/api/orders",
        headers=customer.headers,
        json={
            "id": 1,
            "currency": "XAU",
            "created_at": "2000-01-01T00:00:00.000000Z",
            "status_history": [
                {
                    "status": "delivered",
                    "at": "2000-01-01T00:00:00.000000Z",
                    "by_user_id": editor.id,
                }
            ],
            "items": [
                {
                    "product_id": product["id"],
                    "quantity": 2,
                    "name": "Free lamp",
                    "unit_price_cents": 1,
                    "line_total_cents": 2,
                }
            ],
        },
    )
    assert response.status_code == 201, response.text
    order = response.json
    assert order["items"] == [
        {
            "product_id": product["id"],
            "name": "Lamp",
            "quantity": 2,
            "unit_price_cents": 4000,
            "line_total_cents": 8000,
        }
    ]
    assert order["total_cents"] == 8000 and order["currency"] == "USD"
    assert [h["status"] for h in order["status_history"]] == ["pending"]
    assert not order["created_at"].startswith("2000")

    moved = client.simulate_put(
        f"/api/orders/{order['id']}/status",
        headers=editor.headers,
        json={
            "status": "paid",
            "user_id": editor.id,
            "total_cents": 1,
            "items": [],
            "currency": "XAU",
        },
    )
    assert moved.status_code == 200, moved.text
    assert moved.json["user_id"] == customer.id and moved.json["total_cents"] == 8000
    assert moved.json["items"] == order["items"] and moved.json["currency"] == "USD"
    assert db_rows(
        database_url, "SELECT user_id, total_cents FROM orders WHERE id = %s", (order["id"],)
    ) == [(customer.id, 8000)]


def test_search_filters_are_no_side_channel_to_hashes_or_hidden_products(
    client, make_user, make_product
):
    admin = make_user("ADMIN")
    # every stored hash starts so: were `q` to search hashes, every account would match
    users = client.simulate_get("/api/users", params={"q": "$2b$04$"}, headers=admin.headers)
    assert users.status_code == 200 and users.json["total"] == 0
    control = client.simulate_get("/api/users", params={"q": "admin"}, headers=admin.headers)
    assert control.json["total"] == 1
    make_product(name="Prototype zeppelin", is_active=False)
    public = client.simulate_get("/api/products", params={"q": "zeppelin"})
    staff = client.simulate_get(
        "/api/products",
        params={"q": "zeppelin", "include_inactive": "true"},
        headers=bearer(admin.token),
    )
    assert public.status_code == 200 and public.json["total"] == 0
    assert staff.json["total"] == 1


@pytest.mark.parametrize("password", ["short", "x" * 129, "nul\x00byte-password"])
def test_a_refused_password_is_never_echoed_in_the_error(client, make_user, password):
    user = make_user()
    answers = [
        client.simulate_post(
            "/api/auth/register", json={"email": "echo@example.com", "password": password}
        ),
        client.simulate_patch(
            f"/api/users/{user.id}",
            headers=user.headers,
            json={"password": password, "current_password": user.password},
        ),
        client.simulate_patch(
            f"/api/users/{user.id}",
            headers=user.headers,
            json={"password": "good-new-password", "current_password": password},
        ),
    ]
    for response in answers:
        assert_problem(response, 422, "validation_error")
        assert password not in response.text and user.password not in response.text


def test_email_verified_cannot_be_mass_assigned(client, admin, database_url):
    """Nobody sets email_verified by sending it: not on register, not on a self or an admin
    update. Only following a verification link sets it."""
    response = client.simulate_post(
        "/api/auth/register",
        json={"email": "claims@example.com", "password": "password123", "email_verified": True},
    )
    assert response.status_code == 201 and response.json["email_verified"] is False
    user_id = response.json["id"]
    pair = login(client, "claims@example.com", "password123")
    for headers in (bearer(pair["access_token"]), admin.headers):
        response = client.simulate_patch(
            f"/api/users/{user_id}",
            json={"email_verified": True, "full_name": "Still unverified"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert response.json["email_verified"] is False
    assert db_rows(database_url, "SELECT email_verified FROM users WHERE id = %s", (user_id,)) == [
        (False,)
    ]


# ------------------------------------------------------------------ checkout (Part 2)


def test_a_guest_carts_token_is_shown_once_when_it_is_made_and_never_again(
    client, make_user, make_product, database_url
):
    product = make_product(stock=10)
    buyer = make_user()
    started = client.simulate_post("/api/cart")
    assert started.status_code == 201, started.text
    token = started.json["token"]
    assert len(token) >= 22  # at least 128 bits of base64url
    assert started.headers["cache-control"] == "no-store"
    guest = {CART_TOKEN: token}
    item = f"/api/cart/items/{product['id']}"
    answers = [
        client.simulate_get("/api/cart", headers=guest),
        client.simulate_put(item, json={"quantity": 1}, headers=guest),
        client.simulate_put(item, json={"quantity": 2}, headers=guest),
        client.simulate_get("/api/cart", headers=guest),
        client.simulate_delete(item, headers=guest),
        client.simulate_put(item, json={"quantity": 3}, headers=guest),
        client.simulate_delete("/api/cart/items/424242", headers=guest),
    ]
    stored = db_rows(database_url, "SELECT * FROM carts")
    answers += [
        client.simulate_post("/api/cart/claim", headers={**buyer.headers, **guest}),
        client.simulate_get("/api/cart", headers=buyer.headers),
        client.simulate_get("/api/cart", headers=guest),  # claimed: 404
    ]
    assert [r.status_code for r in answers] == [200, 201, 200, 200, 204, 201, 204, 200, 200, 404]
    for response in answers:
        if response.content:
            assert not _keys(response.json) & {"token", "token_hash"}, response.json
        assert token not in response.text
        assert all(token not in value for value in response.headers.values())
    assert token not in repr(stored)  # the database keeps its digest only


def test_address_writes_ignore_owners_ids_and_timestamps(client, make_user, database_url):
    alice, victim = make_user(), make_user()
    victims = client.simulate_post("/api/me/addresses", json=ADDRESS, headers=victim.headers).json
    victims_row = db_rows(database_url, "SELECT * FROM addresses WHERE id = %s", (victims["id"],))
    smuggled = {
        "id": victims["id"],
        "user_id": victim.id,
        "created_at": "2000-01-01T00:00:00.000000Z",
        "updated_at": "2000-01-01T00:00:00.000000Z",
    }

    created = client.simulate_post(
        "/api/me/addresses", json={**ADDRESS, "city": "Bath", **smuggled}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    mine = created.json
    assert mine["id"] != victims["id"] and not mine["created_at"].startswith("2000")
    assert "user_id" not in mine
    edited = client.simulate_patch(
        f"/api/me/addresses/{mine['id']}",
        json={"city": "York", **smuggled, "id": mine["id"] + 100},
        headers=alice.headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json["id"] == mine["id"] and edited.json["city"] == "York"
    assert edited.json["created_at"] == mine["created_at"]
    assert not edited.json["updated_at"].startswith("2000")

    assert db_rows(
        database_url, "SELECT user_id, city FROM addresses WHERE id = %s", (mine["id"],)
    ) == [(alice.id, "York")]
    assert (
        db_rows(database_url, "SELECT * FROM addresses WHERE id = %s", (victims["id"],))
        == victims_row
    )
    listed = client.simulate_get("/api/me/addresses", headers=victim.headers).json
    assert [a["id"] for a in listed["items"]] == [victims["id"]]


def test_shipping_method_writes_ignore_ids_and_timestamps(client, make_user, database_url):
    editor = make_user("EDITOR")
    courier = client.simulate_post(
        "/api/shipping-methods",
        json={"name": "Courier", "price_cents": 500},
        headers=editor.headers,
    ).json
    courier_row = db_rows(
        database_url, "SELECT * FROM shipping_methods WHERE id = %s", (courier["id"],)
    )
    smuggled = {
        "id": courier["id"],
        "created_at": "2000-01-01T00:00:00.000000Z",
        "updated_at": "2000-01-01T00:00:00.000000Z",
        "currency": "XAU",
    }
    created = client.simulate_post(
        "/api/shipping-methods",
        json={"name": "Freight", "price_cents": 9000, **smuggled},
        headers=editor.headers,
    )
    assert created.status_code == 201, created.text
    freight = created.json
    assert freight["id"] != courier["id"] and not freight["created_at"].startswith("2000")
    edited = client.simulate_put(
        f"/api/shipping-methods/{freight['id']}",
        json={"price_cents": 9500, **smuggled},
        headers=editor.headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json["id"] == freight["id"] and edited.json["price_cents"] == 9500
    assert edited.json["created_at"] == freight["created_at"]
    assert "currency" not in edited.json
    assert (
        db_rows(database_url, "SELECT * FROM shipping_methods WHERE id = %s", (courier["id"],))
        == courier_row
    )


def test_cart_writes_ignore_names_prices_availability_owners_and_chosen_tokens(
    client, make_user, make_product, database_url
):
    lamp = make_product(name="Lamp", price_cents=4000, stock=5)
    decoy = make_product(name="Decoy", price_cents=10, stock=5)
    hidden = make_product(name="Prototype", price_cents=10, stock=5, is_active=False)
    buyer, victim = make_user(), make_user()

    # a guest cannot pick their token, owner, expiry or lines
    chosen = "attacker-chosen-token-" + "x" * 30
    started = client.simulate_post(
        "/api/cart",
        json={
            "token": chosen,
            "id": 1,
            "user_id": victim.id,
            "expires_at": "2100-01-01T00:00:00.000000Z",
            "items": [{"product_id": lamp["id"], "quantity": 5, "unit_price_cents": 1}],
        },
    )
    assert started.status_code == 201, started.text
    assert started.json["token"] != chosen and started.json["items"] == []
    assert not started.json["expires_at"].startswith("2100")
    assert_problem(client.simulate_get("/api/cart", headers={CART_TOKEN: chosen}), 404, "not_found")
    assert db_rows(
        database_url, "SELECT user_id FROM carts WHERE id = %s", (started.json["id"],)
    ) == [(None,)]

    # a line is the path's product at its own name and price, whatever the body says
    response = client.simulate_put(
        f"/api/cart/items/{lamp['id']}",
        headers=buyer.headers,
        json={
            "quantity": 2,
            "product_id": decoy["id"],
            "name": "Free lamp",
            "unit_price_cents": 1,
            "line_total_cents": 2,
            "subtotal_cents": 2,
            "available": True,
            "in_stock": True,
            "user_id": victim.id,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json["items"] == [
        {
            "product_id": lamp["id"],
            "name": "Lamp",
            "quantity": 2,
            "unit_price_cents": 4000,
            "line_total_cents": 8000,
            "available": True,
            "in_stock": True,
        }
    ]
    assert response.json["subtotal_cents"] == 8000
    assert db_rows(
        database_url, "SELECT product_id, name, unit_price_cents FROM cart_items ORDER BY 1"
    ) == [(lamp["id"], "Lamp", 4000)]
    # nor does "is_active" in a body put a withdrawn product in a cart
    before = snapshot(database_url)
    withdrawn = client.simulate_put(
        f"/api/cart/items/{hidden['id']}",
        headers=buyer.headers,
        json={"quantity": 1, "is_active": True, "available": True},
    )
    assert_problem(withdrawn, 422, "validation_error")
    assert snapshot(database_url) == before
    assert db_rows(
        database_url, "SELECT is_active FROM products WHERE id = %s", (hidden["id"],)
    ) == [(False,)]
    assert client.simulate_get("/api/cart", headers=victim.headers).json["items"] == []


@pytest.mark.parametrize("route", ["/api/orders", "/api/cart/checkout"])
def test_order_bodies_ignore_prices_shipping_payment_expiry_and_address_ids(
    client, make_user, make_product, database_url, route
):
    buyer, victim = make_user(), make_user()
    lamp = make_product(name="Lamp", price_cents=4000, stock=5)
    decoy = make_product(name="Decoy", price_cents=10, stock=5)
    method = client.simulate_post(
        "/api/shipping-methods",
        json={
            "name": "Courier",
            "price_cents": 600,
            "free_over_cents": 100_000,
            "countries": ["GB"],
        },
        headers=make_user("ADMIN").headers,
    ).json
    victims_address = client.simulate_post(
        "/api/me/addresses", json=ADDRESS, headers=victim.headers
    ).json
    lines = [{"product_id": lamp["id"], "quantity": 2, "unit_price_cents": 1, "name": "Free"}]
    body = {
        "shipping_address": {
            **ADDRESS,
            "id": victims_address["id"],
            "user_id": victim.id,
            "is_default": True,
            "created_at": "2000-01-01T00:00:00.000000Z",
        },
        "shipping_method_id": method["id"],
        "shipping_method": {"id": method["id"], "name": "Free shipping"},
        "subtotal_cents": 1,
        "shipping_cents": 0,
        "total_cents": 1,
        "currency": "XAU",
        "payment": {"provider": "stripe", "status": "succeeded"},
        "expires_at": "2100-01-01T00:00:00.000000Z",
        "status": "paid",
        "user_id": victim.id,
    }
    if route == "/api/orders":
        body["items"] = lines
    else:  # the cart's lines are ordered, never lines sent with the checkout
        put = client.simulate_put(
            f"/api/cart/items/{lamp['id']}", json={"quantity": 2}, headers=buyer.headers
        )
        assert put.status_code == 201, put.text
        body["items"] = [{"product_id": decoy["id"], "quantity": 5}]
        body["cart_id"] = 1

    response = client.simulate_post(route, json=body, headers=buyer.headers)

    assert response.status_code == 201, response.text
    order = response.json
    assert order["user_id"] == buyer.id and order["status"] == "pending"
    assert [(i["product_id"], i["quantity"], i["unit_price_cents"]) for i in order["items"]] == [
        (lamp["id"], 2, 4000)
    ]
    assert (order["subtotal_cents"], order["shipping_cents"], order["total_cents"]) == (
        8000,
        600,
        8600,
    )
    assert order["currency"] == "USD"
    assert order["payment"] == {"provider": "manual", "status": "unpaid"}
    assert order["expires_at"] is None  # manual payments: never cancelled automatically
    assert order["shipping_method"] == {"id": method["id"], "name": "Courier"}
    assert order["shipping_address"] == {**ADDRESS, "line2": "", "region": "", "phone": ""}
    assert db_rows(
        database_url,
        "SELECT user_id, status, subtotal_cents, shipping_cents, total_cents, payment_provider, "
        "payment_status, expires_at FROM orders",
    ) == [(buyer.id, "pending", 8000, 600, 8600, "manual", "unpaid", None)]
    assert db_rows(database_url, "SELECT stock FROM products ORDER BY id") == [(3,), (5,)]

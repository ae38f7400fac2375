"""OWASP API5:2023 Broken Function Level Authorization: every protected function, taken from the
app's own route table, refuses the anonymous (401) and every role the contract leaves out (403)
before it does anything, and no spelling of a path or method override gets round it.

Complements tests/test_auth.py (the user routes) and the per-area role tests: the list here is
built from `shopapi.openapi.endpoints(routes(...))` and the `@endpoint` roles, so a new route
cannot escape, and the roles themselves are pinned to the contract's table. The cart routes a
guest may call are public for the router (the service decides whose cart it is): they are
checked apart, 401 without a bearer or cart token, and a guest token never opens an account's
function or cart.
"""

from __future__ import annotations

from tests.conftest import assert_problem, db_rows
from tests.security.conftest import (
    CART_TOKEN,
    api_endpoints,
    example_headers,
    example_request,
    snapshot,
)

PUBLIC, ANY_USER = None, ()
STAFF, ADMIN = ("ADMIN", "EDITOR"), ("ADMIN",)
# the contract's "who" column; a route missing here, or with other roles, fails the first test
CONTRACT_ROLES = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/api/auth/register"): PUBLIC,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/refresh"): PUBLIC,
    ("POST", "/api/auth/logout"): PUBLIC,
    ("POST", "/api/auth/logout-all"): ANY_USER,
    ("GET", "/api/auth/me"): ANY_USER,
    ("POST", "/api/auth/password-reset"): PUBLIC,
    ("POST", "/api/auth/password-reset/confirm"): PUBLIC,
    ("POST", "/api/auth/verify-email"): PUBLIC,
    ("POST", "/api/auth/verify-email/resend"): ANY_USER,
    ("GET", "/api/auth/sessions"): ANY_USER,
    ("DELETE", "/api/auth/sessions/{session_id}"): ANY_USER,
    ("POST", "/api/auth/delete-account"): ANY_USER,
    ("GET", "/api/users"): ADMIN,
    ("GET", "/api/users/{user_id}"): ANY_USER,  # self or admin
    ("PUT", "/api/users/{user_id}"): ANY_USER,
    ("PATCH", "/api/users/{user_id}"): ANY_USER,
    ("DELETE", "/api/users/{user_id}"): ADMIN,
    ("GET", "/api/categories"): PUBLIC,
    ("POST", "/api/categories"): STAFF,
    ("GET", "/api/categories/{category_id}"): PUBLIC,
    ("PUT", "/api/categories/{category_id}"): STAFF,
    ("PATCH", "/api/categories/{category_id}"): STAFF,
    ("DELETE", "/api/categories/{category_id}"): STAFF,
    ("GET", "/api/products"): PUBLIC,
    ("POST", "/api/products"): STAFF,
    ("GET", "/api/products/{product_id}"): PUBLIC,
    ("PUT", "/api/products/{product_id}"): STAFF,
    ("PATCH", "/api/products/{product_id}"): STAFF,
    ("DELETE", "/api/products/{product_id}"): STAFF,
    ("GET", "/api/products/{product_id}/stock-movements"): STAFF,
    ("GET", "/api/orders"): ANY_USER,
    ("POST", "/api/orders"): ANY_USER,
    ("GET", "/api/orders/{order_id}"): ANY_USER,  # owner or staff
    ("PUT", "/api/orders/{order_id}/status"): STAFF,
    ("POST", "/api/orders/{order_id}/cancel"): ANY_USER,  # owner only
    ("DELETE", "/api/orders/{order_id}"): ADMIN,
    ("POST", "/api/orders/{order_id}/payment"): ANY_USER,  # owner only (others 404)
    # no bearer token: Stripe signs the body (Stripe-Signature), checked by the responder
    ("POST", "/api/payments/stripe/webhook"): PUBLIC,
    ("GET", "/api/webhooks"): ADMIN,
    ("POST", "/api/webhooks"): ADMIN,
    ("GET", "/api/webhooks/{webhook_id}"): ADMIN,
    ("PUT", "/api/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/api/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/api/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/api/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): ADMIN,
    ("GET", "/api/me/addresses"): ANY_USER,  # own only
    ("POST", "/api/me/addresses"): ANY_USER,
    ("GET", "/api/me/addresses/{address_id}"): ANY_USER,
    ("PUT", "/api/me/addresses/{address_id}"): ANY_USER,
    ("PATCH", "/api/me/addresses/{address_id}"): ANY_USER,
    ("DELETE", "/api/me/addresses/{address_id}"): ANY_USER,
    ("GET", "/api/shipping-methods"): PUBLIC,
    ("POST", "/api/shipping-methods"): STAFF,
    ("GET", "/api/shipping-methods/{method_id}"): PUBLIC,
    ("PUT", "/api/shipping-methods/{method_id}"): STAFF,
    ("PATCH", "/api/shipping-methods/{method_id}"): STAFF,
    ("DELETE", "/api/shipping-methods/{method_id}"): STAFF,
    # public for the router: a guest acts with X-Cart-Token, and the service answers 401
    # without it and without a bearer token (the cart tests below)
    ("POST", "/api/cart"): PUBLIC,  # starts a guest cart
    ("GET", "/api/cart"): PUBLIC,
    ("DELETE", "/api/cart"): PUBLIC,
    ("PUT", "/api/cart/items/{product_id}"): PUBLIC,
    ("DELETE", "/api/cart/items/{product_id}"): PUBLIC,
    ("POST", "/api/cart/claim"): ANY_USER,  # bearer and X-Cart-Token
    ("POST", "/api/cart/checkout"): ANY_USER,
}


def test_every_route_requires_exactly_the_roles_of_the_contract(app):
    declared = {(method, template): spec.roles for template, method, spec in api_endpoints(app)}
    assert declared == CONTRACT_ROLES


def test_every_protected_route_refuses_the_anonymous_and_the_wrong_roles_and_writes_nothing(
    client, app, shop, database_url
):
    callers = {"CUSTOMER": shop.customer, "EDITOR": shop.editor, "ADMIN": shop.admin}
    before = snapshot(database_url)
    refused = 0
    for template, method, spec in api_endpoints(app):
        if spec.roles is None:
            continue
        path, body = example_request(shop, template, spec)
        # (a cart route also gets the guest's live cart token: it stands for no user)
        extra = example_headers(shop, template)
        for headers in (
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer x.y.z"},
            {CART_TOKEN: shop.cart_token},  # a guest cart's token is no account
        ):
            response = client.simulate_request(
                method, path, json=body, headers={**headers, **extra}
            )
            assert_problem(response, 401, "not_authenticated")
            refused += 1
        for role in set(callers) - set(spec.roles or callers):
            response = client.simulate_request(
                method, path, json=body, headers={**callers[role].headers, **extra}
            )
            assert_problem(response, 403, "forbidden")
            refused += 1
        assert snapshot(database_url) == before, (method, template)
    assert refused >= 100


def test_no_spelling_of_a_path_and_no_override_header_reaches_an_admin_function(
    client, shop, database_url
):
    customer = shop.customer.headers
    before = snapshot(database_url)
    users = "/api/users"
    spellings = [
        users,
        users + "/",
        users + "//",
        "/api//users",
        "//api/users",
        "/api/./users",
        "/api/x/../users",
        "/API/USERS",
        "/api/Users",
        "/api/%75sers",
        "/api/users%2f",
        "/api/users;x=1",
        "/api/users?role=ADMIN",
        "/api/users.json",
        "/api/users%00",
    ]
    for path in spellings:
        response = client.simulate_get(path, headers=customer)
        assert response.status_code in (403, 404, 422), (path, response.status_code)
    # a staff write: no spelling lets a customer create a shipping method
    methods = "/api/shipping-methods"
    for path in (
        methods,
        methods + "/",
        methods + "//",
        "/api//shipping-methods",
        "/API/SHIPPING-METHODS",
        "/api/shipping%2Dmethods",
        "/api/shipping_methods",
        "/api/shipping-methods;x=1",
        "/api/shipping-methods?role=ADMIN",
    ):
        response = client.simulate_post(
            path, json={"name": "Spelled", "price_cents": 0}, headers=customer
        )
        assert response.status_code in (403, 404, 405), (path, response.status_code)
    order = f"/api/orders/{shop.order_id}"
    overrides = [
        {"X-HTTP-Method-Override": "DELETE"},
        {"X-HTTP-Method": "DELETE"},
        {"X-Method-Override": "DELETE"},
        {"X-Original-URL": order},
        {"X-Rewrite-URL": order},
        {"X-Forwarded-Prefix": "/admin"},
    ]
    for extra in overrides:
        response = client.simulate_get(
            f"/api/products/{shop.product_id}", headers={**customer, **extra}
        )
        assert response.status_code == 200 and response.json["id"] == shop.product_id
        deleting = client.simulate_post(order, headers={**customer, **extra})
        assert deleting.status_code == 405, extra
    assert snapshot(database_url) == before


# the cart routes a guest may call: public for the router, so the tests above skip them
GUEST_CART_ROUTES = {
    ("GET", "/api/cart"),
    ("DELETE", "/api/cart"),
    ("PUT", "/api/cart/items/{product_id}"),
    ("DELETE", "/api/cart/items/{product_id}"),
}


def _user_carts(database_url: str) -> list[tuple]:
    """Every user's cart with its lines (and when it last changed)."""
    return db_rows(
        database_url,
        "SELECT c.id, c.user_id, c.updated_at, i.product_id, i.quantity FROM carts c "
        "LEFT JOIN cart_items i ON i.cart_id = c.id WHERE c.user_id IS NOT NULL ORDER BY 1, 4",
    )


def test_every_cart_route_without_a_bearer_or_a_cart_token_is_401_and_writes_nothing(
    client, app, shop, database_url
):
    cart_routes = [
        (template, method, spec)
        for template, method, spec in api_endpoints(app)
        if template.startswith("/api/cart") and (method, template) != ("POST", "/api/cart")
    ]
    account_only = {("POST", "/api/cart/claim"), ("POST", "/api/cart/checkout")}
    assert {(m, t) for t, m, _ in cart_routes} == GUEST_CART_ROUTES | account_only
    token = shop.cart_token
    no_credential = [
        {},
        {CART_TOKEN: ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer x.y.z"},
        # a bearer token that fails is the caller's 401, even beside a live cart token
        {"Authorization": "Bearer x.y.z", CART_TOKEN: token},
        {"Authorization": "Bearer " + shop.customer.token[:-2], CART_TOKEN: token},
        {"Authorization": "Basic " + shop.customer.token, CART_TOKEN: token},
    ]
    before = snapshot(database_url)
    refused = 0
    for template, method, spec in cart_routes:
        path, body = example_request(shop, template, spec)
        headers_tried = no_credential + (
            [{CART_TOKEN: token}] if (method, template) in account_only else []
        )
        for headers in headers_tried:
            response = client.simulate_request(method, path, json=body, headers=headers)
            assert_problem(response, 401, "not_authenticated")
            assert token not in response.text
            refused += 1
    assert refused == 6 * len(no_credential) + 2
    assert snapshot(database_url) == before
    # the one open door: anyone may start a guest cart, which is nobody's and empty
    started = client.simulate_post("/api/cart")
    assert started.status_code == 201 and started.json["items"] == []
    assert db_rows(
        database_url,
        "SELECT user_id, (SELECT count(*) FROM cart_items WHERE cart_id = carts.id) "
        "FROM carts WHERE id = %s",
        (started.json["id"],),
    ) == [(None, 0)]


def test_a_guest_token_works_on_its_own_cart_and_never_on_a_users(client, shop, database_url):
    guest = {CART_TOKEN: shop.cart_token}
    client.simulate_get("/api/cart", headers=shop.customer.headers)  # the customer's, empty
    users = _user_carts(database_url)
    user_cart_ids = {row[0] for row in users}
    assert len(user_cart_ids) == 2  # the admin's (one line) and the customer's

    own = client.simulate_get("/api/cart", headers=guest)
    assert own.status_code == 200 and own.json["id"] not in user_cart_ids
    assert own.json["expires_at"] is not None  # a guest cart, never a user's
    item = f"/api/cart/items/{shop.product_id}"
    for cart_id in user_cart_ids:  # naming a user's cart in the body changes nothing
        smuggled = {"quantity": 7, "cart_id": cart_id, "user_id": shop.admin.id}
        changed = client.simulate_put(item, json=smuggled, headers=guest)
        assert changed.status_code == 200 and changed.json["id"] == own.json["id"]
    assert client.simulate_delete(item, headers=guest).status_code == 204
    assert client.simulate_delete("/api/cart", headers=guest).status_code == 204
    again = client.simulate_get("/api/cart", headers=guest)
    assert again.json["id"] == own.json["id"] and again.json["items"] == []

    assert _user_carts(database_url) == users

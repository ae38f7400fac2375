"""OWASP API5:2023 Broken Function Level Authorization: every protected function, taken from the
app's own route table, refuses the anonymous (401) and every role the contract leaves out (403)
before it does anything, and no spelling of a path or method override gets round it.

Complements tests/test_auth.py (the user routes) and the per-area role tests: the list here is
built from `shopapi.openapi.endpoints(routes(...))` and the `@endpoint` roles, so a new route
cannot escape, and the roles themselves are pinned to the contract's table.
"""

from __future__ import annotations

from tests.conftest import assert_problem
from tests.security.conftest import api_endpoints, example_request, snapshot

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
    ("GET", "/api/webhooks"): ADMIN,
    ("POST", "/api/webhooks"): ADMIN,
    ("GET", "/api/webhooks/{webhook_id}"): ADMIN,
    ("PUT", "/api/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/api/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/api/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/api/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): ADMIN,
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
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x.y.z"}):
            response = client.simulate_request(method, path, json=body, headers=headers)
            assert_problem(response, 401, "not_authenticated")
            refused += 1
        for role in set(callers) - set(spec.roles or callers):
            response = client.simulate_request(
                method, path, json=body, headers=callers[role].headers
            )
            assert_problem(response, 403, "forbidden")
            refused += 1
        assert snapshot(database_url) == before, (method, template)
    assert refused >= 60


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

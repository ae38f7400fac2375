"""OWASP API9:2023 Improper Inventory Management: the OpenAPI document lists exactly what the app
serves (every route and method, nothing more), every responder is declared, no debug, admin,
dotfile or old-version route exists, and in production the docs and their assets are gone.

Complements tests/test_health_and_docs.py (every declared endpoint is in the document) and
tests/test_config.py / tests/test_live_server.py (openapi.json and the Swagger page 404 in
production) by comparing with Falcon's own router in both directions, checking each operation's
declared security and errors, probing for forgotten routes and path traversal, and fetching the
Swagger assets from a production gunicorn.

Issue 18 item 11 (what a generated client tripped on): HEAD answers every GET route like GET
without a body, every 201 carries the Location of what it created, and the routes the document
says answer an ETag are exactly those that do (the document's declarations themselves, plain
validation messages, control characters and digits-only query integers: tests/test_api_surface.py).
"""

from __future__ import annotations

import importlib.metadata
import re

from shopapi import ratelimits
from shopapi.app import routes
from tests.conftest import assert_problem
from tests.security.conftest import api_endpoints, example_headers, example_request, raw_http

DOCS = "/api/docs/"  # the documentation itself: served outside production, not documented


def served_operations(app) -> set[tuple[str, str]]:
    """(METHOD, template) of every responder Falcon's router would call, docs excluded."""
    found = set()
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        stack += node.children
        if node.resource is None or node.uri_template.startswith(DOCS):
            continue
        for method, responder in node.method_map.items():
            if getattr(responder, "__name__", "").startswith("on_"):
                found.add((method, node.uri_template))
    return found


def test_the_document_lists_exactly_what_the_router_serves(client, app):
    spec = client.simulate_get("/api/docs/openapi.json").json
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    # HEAD is served on every GET route (item 11) and, as HTTP defines it, not documented
    documented |= {("HEAD", path) for method, path in documented if method == "GET"}
    served = served_operations(app)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    # and the wire agrees: OPTIONS offers only documented methods (and HEAD beside GET)
    for path in spec["paths"]:
        allow = client.simulate_options(re.sub(r"\{\w+\}", "1", path)).headers["allow"]
        offered = {m.strip() for m in allow.split(",")} - {"OPTIONS"}
        expected = {m.upper() for m in spec["paths"][path]}
        assert offered == expected | ({"HEAD"} if "GET" in expected else set()), path


def test_every_responder_of_every_routed_resource_is_declared(app):
    """An on_* method without @endpoint would be routed with no role check and no validation."""
    undeclared = []
    for template, resource, suffix in routes(app.ctx):
        for name in dir(resource):
            wanted = name.startswith("on_") and (
                name.endswith(f"_{suffix}") if suffix else name.count("_") == 1
            )
            if wanted and not hasattr(getattr(resource, name), "__endpoint__"):
                undeclared.append(f"{type(resource).__name__}.{name} ({template})")
    assert undeclared == []


def test_every_operation_documents_its_security_and_the_errors_it_can_answer(client, app):
    spec = client.simulate_get("/api/docs/openapi.json").json
    for template, method, declared in api_endpoints(app):
        op = spec["paths"][template][method.lower()]
        codes = set(op["responses"])
        where = f"{method} {template}"
        assert ("security" in op) == (declared.roles is not None), where
        if declared.roles is not None:
            assert "401" in codes, where
        if declared.roles:
            assert "403" in codes, where
        if "{" in template or declared.query is not None:
            assert "422" in codes, where
        if declared.body is not None and declared.body_raw:
            # a signed webhook reads its body raw and checks the signature first: a body it
            # cannot verify or read is 400 (invalid_signature), never a field-level 422
            assert {"400", "413"} <= codes, where
        elif declared.body is not None:
            assert {"400", "413", "422"} <= codes, where
        if ratelimits.is_exempt(template):
            # never limited by design (Stripe's webhook: a burst of deliveries must not wait)
            assert "429" not in codes, where
        elif template.startswith("/api/"):
            assert "429" in codes, where  # every other /api route is rate limited


def test_the_document_names_no_internal_host_secret_or_version_drift(client, settings):
    response = client.simulate_get("/api/docs/openapi.json")
    spec, text = response.json, response.text
    assert spec["servers"] == [{"url": "/"}]
    assert spec["info"]["version"] == importlib.metadata.version("shopapi")
    for needle in (
        "127.0.0.1",
        "localhost",
        "postgres",
        "redis://",
        settings.signing_key,
        "password_hash",
        "token_hash",
    ):
        assert needle not in text, needle


FORGOTTEN = [
    "/admin",
    "/debug",
    "/console",
    "/status",
    "/server-status",
    "/phpinfo.php",
    "/actuator/health",
    "/api",
    "/api/admin",
    "/api/debug",
    "/api/internal",
    "/api/test",
    "/api/v1/users",
    "/api/v2/products",
    "/api/users/1/password",
    "/api/users/1/tokens",
    "/api/orders/1/items",
    "/api/products/1/stock",
    "/api/auth/token",
    "/api/auth/users",
    "/.env",
    "/.git/config",
    "/openapi.json",
    "/swagger.json",
    "/docs",
    "/redoc",
    "/api/docs",
    "/api/docs/openapi.yaml",
    "/api/docs/swagger-ui/static/.env",
    "/api/docs/swagger-ui/static/../../../../etc/passwd",
    "/api/docs/swagger-ui/static/%2e%2e/%2e%2e/%2e%2e/shopapi/config.py",
    "/api/docs/swagger-ui/static/..%2f..%2f..%2fpyproject.toml",
    "/metrics/../.env",
]


def test_no_debug_admin_dotfile_or_old_version_route_exists(client, make_user):
    admin = make_user("ADMIN")
    for path in FORGOTTEN:
        for headers in ({}, admin.headers):
            response = client.simulate_get(path, headers=headers)
            assert_problem(response, 404, "not_found")
            assert "root:" not in response.text and "SECRET" not in response.text, path


def test_a_production_server_serves_no_docs_and_no_swagger_asset(live_server):
    server = live_server(workers=1, APP_ENV="production")
    for path in (
        "/api/docs/openapi.json",
        "/api/docs/swagger-ui",
        "/api/docs/swagger-ui/",
        "/api/docs/swagger-ui/static/swagger-ui.css",
        "/api/docs/swagger-ui/static/swagger-ui-bundle.js",
    ):
        for method in ("GET", "OPTIONS"):
            status, headers, _ = raw_http(server, method, path)
            assert status == 404, (method, path)
    assert raw_http(server, "GET", "/api/products")[0] == 200


def _calls(client, shop, method: str):
    """(template, declaration, path, body, headers) of every `method` route, as the admin on
    the shop's objects."""
    for template, declared_method, declared in api_endpoints(client.app):
        if declared_method == method:
            path, body = example_request(shop, template, declared)
            headers = {**shop.admin.headers, **example_headers(shop, template)}
            yield template, declared, path, body, headers


def test_head_answers_every_get_route_like_get_without_a_body(client, shop):
    compared = 0
    for template, _, path, _, headers in _calls(client, shop, "GET"):
        headers["X-Request-ID"] = "head-like-get"
        client.simulate_get(path, headers=headers)  # warm: both answers below are cache hits
        got = client.simulate_get(path, headers=headers)
        head = client.simulate_head(path, headers=headers)
        assert head.status_code == got.status_code, template
        assert head.content == b"", template
        varying = {"date"} | ({"content-length"} if template == "/metrics" else set())
        assert {k: v for k, v in head.headers.items() if k not in varying} == {
            k: v for k, v in got.headers.items() if k not in varying
        }, template
        compared += got.status_code == 200
    assert compared >= 20
    # conditional too: a current ETag gives 304, and the docs answer HEAD as well
    etag = client.simulate_get("/api/products").headers["etag"]
    assert client.simulate_head("/api/products", headers={"If-None-Match": etag}).status_code == 304
    assert client.simulate_head("/api/docs/openapi.json").status_code == 200


def test_the_routes_declared_with_an_etag_are_exactly_those_that_answer_one(client, shop):
    for template, declared, path, _, headers in _calls(client, shop, "GET"):
        response = client.simulate_get(path, headers=headers)
        assert response.status_code == 200, (template, response.text)
        assert ("etag" in response.headers) == declared.etag, template


def test_every_201_carries_the_location_of_what_it_created(client, shop):
    created = []
    for method in ("POST", "PUT"):
        for template, declared, path, body, headers in _calls(client, shop, method):
            if 201 not in (declared.status, *declared.also):
                continue
            if template == "/api/cart/items/{product_id}":
                client.simulate_delete(path, headers=headers)  # the PUT then adds the line
            response = client.simulate_request(method, path, json=body, headers=headers)
            assert response.status_code == 201, (template, response.text)
            location = response.headers.get("location")
            assert location and location.startswith("/api/"), template
            created.append(template)
            _, method_map, _, _ = client.app._router.find(location)
            if not getattr(method_map["GET"], "__name__", "").startswith("on_"):
                continue  # a cart line has no GET of its own: the cart shows it
            if "token" in response.json:  # a guest cart is read with its token
                headers = {"X-Cart-Token": response.json["token"]}
            followed = client.simulate_get(location, headers=headers)
            assert followed.status_code == 200, (template, location)
            if "id" in response.json:
                assert followed.json["id"] == response.json["id"], template
    assert sorted(created) == sorted(
        [
            "/api/auth/register",
            "/api/categories",
            "/api/products",
            "/api/orders",
            "/api/me/addresses",
            "/api/shipping-methods",
            "/api/cart",
            "/api/cart/items/{product_id}",
            "/api/cart/checkout",
            "/api/webhooks",
        ]
    )

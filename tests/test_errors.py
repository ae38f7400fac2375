"""Every error source answers the same RFC 9457 problem+json shape, with no stack trace."""

import json

import pytest

from shopapi.endpoint import endpoint
from shopapi.schemas.users import UserCreate
from tests.conftest import assert_problem


class Boom:
    @endpoint("always fails")
    async def on_get(self, req, resp):
        raise RuntimeError("secret internals: SELECT password_hash FROM users")


class Echo:
    @endpoint("echo a user body", body=UserCreate)
    async def on_post(self, req, resp):
        resp.media = {"email": req.context.body.email}


@pytest.fixture()
def error_client(app):
    from falcon import testing

    app.add_route("/test/boom", Boom())
    app.add_route("/test/echo", Echo())
    return testing.TestClient(app)


def test_unhandled_exception_is_500_internal_error_without_trace(error_client):
    response = error_client.simulate_get("/test/boom")
    body = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "SELECT" not in json.dumps(body)


def test_unknown_route_is_404(error_client):
    assert_problem(error_client.simulate_get("/api/no/such/thing"), 404, "not_found")


def test_wrong_method_is_405_with_allow(error_client):
    response = error_client.simulate_delete("/healthz")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_xml_accept_still_gets_json_problem(error_client):
    response = error_client.simulate_get("/api/nope", headers={"Accept": "application/xml"})
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"a string"', b"", b"   ", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_400_invalid_json(error_client, body):
    response = error_client.simulate_post(
        "/test/echo", body=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")


def test_wrong_type_is_422_with_field_path(error_client):
    response = error_client.simulate_post("/test/echo", json={"email": "a@b.c", "password": 12})
    body = assert_problem(response, 422, "validation_error")
    # a plain sentence, not msgspec's "Expected `str`, got `int`" (issue 18 item 11)
    assert body["errors"] == [{"field": "password", "message": "must be a string"}]


def test_missing_field_is_422_naming_it(error_client):
    response = error_client.simulate_post("/test/echo", json={"email": "a@b.c"})
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [{"field": "password", "message": "is required"}]
    assert body["detail"] == "password: is required"


def test_body_over_one_mebibyte_is_413(error_client):
    big = b'{"email": "' + b"a" * (1024 * 1024) + b'"}'
    response = error_client.simulate_post(
        "/test/echo", body=big, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/auth/logout-all"),  # authenticated, no body declared
        ("GET", "/api/products"),
        ("DELETE", "/api/users/{own}"),
    ],
)
def test_a_body_over_one_mebibyte_is_413_on_routes_that_read_no_body(
    client, customer, method, path
):
    big = b"x" * (1024 * 1024 + 1)
    response = client.simulate_request(
        method,
        path.format(own=customer.id),
        body=big,
        headers={**customer.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")
    assert response.headers["x-request-id"]
    # the request did nothing: the login and the account are still there
    assert client.simulate_get("/api/auth/me", headers=customer.headers).status_code == 200


def test_unknown_fields_are_ignored(error_client):
    response = error_client.simulate_post(
        "/test/echo", json={"email": "a@b.c", "password": "longenough", "role": "ADMIN", "x": [1]}
    )
    assert response.status_code == 200
    assert response.json == {"email": "a@b.c"}


def test_id_beyond_signed_64_bit_is_422(error_client, admin):
    response = error_client.simulate_get(f"/api/users/{2**63}", headers=admin.headers)
    assert_problem(response, 422, "validation_error")


def test_database_down_is_503_problem(async_redis, settings, app_loop):
    from falcon import testing

    from shopapi.app import create_app
    from tests.conftest import make_settings, open_pool

    dead = make_settings(settings.database_url, DB_POOL_TIMEOUT="0.5", DB_POOL_MIN="0")
    pool = open_pool(app_loop, dead, "postgresql://postgres@127.0.0.1:1/none")
    try:
        client = testing.TestClient(create_app(dead, pool=pool, redis=async_redis))
        response = client.simulate_post(
            "/api/auth/login", json={"email": "a@b.c", "password": "whatever1"}
        )
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"
    finally:
        app_loop.run(pool.close)


def test_unknown_http_method_is_405_not_invalid_json(error_client):
    response = error_client.simulate_request("FOO", "/healthz")
    assert_problem(response, 405, "method_not_allowed")

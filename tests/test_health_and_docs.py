"""Operations: liveness, readiness, request ids, the OpenAPI document and offline Swagger UI."""

import pytest
from falcon import testing

from shopapi.app import create_app
from shopapi.db import make_pool
from tests.conftest import make_settings, open_pool


def test_healthz_needs_no_database(async_redis, settings):
    pool = make_pool(settings, "postgresql://postgres@127.0.0.1:1/none")  # never opened
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    response = client.simulate_get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_is_200_when_database_and_redis_answer(client):
    response = client.simulate_get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "database": "ok", "redis": "ok"}


def test_readyz_is_503_when_postgres_is_unreachable(async_redis, settings, app_loop):
    dead = make_settings(settings.database_url, DB_POOL_TIMEOUT="0.5", DB_POOL_MIN="0")
    pool = open_pool(app_loop, dead, "postgresql://postgres@127.0.0.1:1/none")
    try:
        client = testing.TestClient(create_app(dead, pool=pool, redis=async_redis))
        response = client.simulate_get("/readyz")
        assert response.status_code == 503
        assert response.json == {"status": "unready", "database": "down", "redis": "ok"}
    finally:
        app_loop.run(pool.close)


def test_readyz_stays_200_when_only_redis_is_down(settings, pool):
    import redis.asyncio

    dead_redis = redis.asyncio.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    client = testing.TestClient(create_app(settings, pool=pool, redis=dead_redis))
    response = client.simulate_get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "database": "ok", "redis": "down"}


def test_request_id_is_echoed_or_generated(client):
    echoed = client.simulate_get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = client.simulate_get("/healthz")
    assert len(generated.headers["x-request-id"]) >= 16
    # header values arrive as bytes read as latin-1 (ASGI): U+2028 in UTF-8 turns into "â\x80¨"
    sent = "x\u2028<script>".encode().decode("latin-1") * 50
    hostile = client.simulate_get("/healthz", headers={"X-Request-ID": sent})
    assert hostile.headers["x-request-id"] != sent
    assert len(hostile.headers["x-request-id"]) == 16


def test_request_id_on_errors_too(client):
    response = client.simulate_get("/api/nope", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404 and response.headers["x-request-id"] == "req-42"


def test_one_json_log_line_per_request():
    import io

    import falcon
    import msgspec

    from shopapi.middleware.request_context import JsonLineLogger, RequestContext

    buffer = io.BytesIO()
    middleware = RequestContext(JsonLineLogger("INFO", stream=buffer), 1024)
    req = testing.create_req(path="/healthz", headers={"X-Request-ID": "log-1"})
    resp = falcon.Response()
    falcon.async_to_sync(middleware.process_request, req, resp)
    falcon.async_to_sync(middleware.process_response, req, resp, None, True)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    line = msgspec.json.decode(lines[0])
    assert {"method", "route", "status", "duration_ms", "user_id", "request_id"} <= set(line)
    assert line["request_id"] == "log-1" and line["method"] == "GET"


def test_openapi_document_is_3_1_and_covers_every_route(client, app):
    from shopapi.openapi import endpoints

    response = client.simulate_get("/api/docs/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    from shopapi.app import routes

    for template, method, _ in endpoints(routes(app.ctx)):
        assert (template, method) in documented
    register = spec["paths"]["/api/auth/register"]["post"]
    assert (
        register["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/UserPublic"
    )
    assert "password_hash" not in response.text


def test_openapi_document_is_a_valid_3_1_spec(client):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(client.simulate_get("/api/docs/openapi.json").json)


def test_swagger_ui_is_served_from_local_assets(client):
    page = client.simulate_get("/api/docs/swagger-ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text  # no CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        assert f"/api/docs/swagger-ui/static/{asset}" in page.text
        served = client.simulate_get(f"/api/docs/swagger-ui/static/{asset}")
        assert served.status_code == 200 and len(served.content) > 1000

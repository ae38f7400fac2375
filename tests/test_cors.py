"""CORS: only the origins listed in CORS_ORIGINS are allowed (none when it is empty),
preflights answer for them, and error answers (429 included) stay readable by them."""

from __future__ import annotations

import time

import pytest
from falcon import testing

from shopapi.app import create_app
from tests.conftest import make_settings

SHOP = "https://shop.example.com"
ADMIN = "https://admin.example.com"
EVIL = "https://evil.example.com"


@pytest.fixture()
def cors_client(async_redis, database_url, pool, redis_client):
    def build(**overrides) -> testing.TestClient:
        settings = make_settings(database_url, **overrides)
        return testing.TestClient(create_app(settings, pool=pool, redis=async_redis))

    return build


def preflight(client, origin: str, path: str = "/api/auth/login", method: str = "POST"):
    return client.simulate_options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )


def test_listed_origin_gets_allow_origin_and_exposed_headers(cors_client):
    client = cors_client(CORS_ORIGINS=f"{SHOP}, {ADMIN}")
    for origin in (SHOP, ADMIN):
        response = client.simulate_get("/healthz", headers={"Origin": origin})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        exposed = response.headers["access-control-expose-headers"]
        for name in ("X-Request-ID", "ETag", "Retry-After", "RateLimit-Remaining"):
            assert name in exposed


def test_unlisted_origin_gets_no_allow_origin(cors_client):
    client = cors_client(CORS_ORIGINS=SHOP)
    response = client.simulate_get("/healthz", headers={"Origin": EVIL})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_preflight_from_a_listed_origin_allows_the_method_and_headers(cors_client):
    client = cors_client(CORS_ORIGINS=SHOP)
    response = preflight(client, SHOP)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "Authorization, Content-Type"
    assert int(response.headers["access-control-max-age"]) > 0


def test_preflight_from_an_unlisted_origin_is_not_allowed(cors_client):
    client = cors_client(CORS_ORIGINS=SHOP)
    response = preflight(client, EVIL)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-methods" not in response.headers


def test_empty_cors_origins_allows_no_origin(cors_client):
    client = cors_client(CORS_ORIGINS="")
    for origin in (SHOP, EVIL, "null"):
        simple = client.simulate_get("/healthz", headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers
        answered = preflight(client, origin)
        assert "access-control-allow-origin" not in answered.headers
        assert "access-control-allow-methods" not in answered.headers


def test_origins_match_exactly(cors_client):
    client = cors_client(CORS_ORIGINS=SHOP)
    for near_miss in (SHOP + "/", "http://shop.example.com", SHOP + ".evil.com"):
        response = client.simulate_get("/healthz", headers={"Origin": near_miss})
        assert "access-control-allow-origin" not in response.headers


def test_a_429_stays_readable_by_a_listed_origin(cors_client):
    client = cors_client(CORS_ORIGINS=SHOP, RATE_LIMIT_ENABLED="true", RATE_LIMIT_DEFAULT="1/hour")
    left = 3600 - time.time() % 3600
    if left < 2:  # both requests must fall in one clock-aligned window
        time.sleep(left + 0.05)
    client.simulate_get("/api/auth/me", headers={"Origin": SHOP})
    response = client.simulate_get("/api/auth/me", headers={"Origin": SHOP})
    assert response.status_code == 429
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "Retry-After" in response.headers["access-control-expose-headers"]


def test_cors_answers_vary_by_origin(client):
    response = client.simulate_get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Origin" in response.headers.get("vary", "")


def test_star_origin_means_any_origin(async_redis, settings, pool, redis_client):
    from falcon import testing

    from shopapi.app import create_app
    from tests.conftest import make_settings

    app = create_app(
        make_settings(settings.database_url, CORS_ORIGINS="*"), pool=pool, redis=async_redis
    )
    response = testing.TestClient(app).simulate_get(
        "/healthz", headers={"Origin": "https://anything.example"}
    )
    assert response.headers["access-control-allow-origin"] in ("*", "https://anything.example")

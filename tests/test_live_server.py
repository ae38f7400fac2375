"""A real gunicorn (2 workers, production settings) serves the API end to end."""

import pytest

from tests.conftest import app_env
from tests.live import LiveServer

pytestmark = pytest.mark.live


@pytest.fixture()
def live(database_url):
    with LiveServer(app_env(database_url, APP_ENV="production"), workers=2) as server:
        yield server


def test_register_login_me_through_gunicorn(live):
    status, user, headers = live.request(
        "POST", "/api/auth/register", {"email": "live@example.com", "password": "password123"}
    )
    assert status == 201 and user["email"] == "live@example.com"
    assert headers.get("X-Request-ID")
    status, tokens, _ = live.request(
        "POST", "/api/auth/login", {"email": "live@example.com", "password": "password123"}
    )
    assert status == 200
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    # several requests so both workers (each with its own pool) answer
    for _ in range(6):
        status, me, _ = live.request("GET", "/api/auth/me", headers=auth)
        assert status == 200 and me["id"] == user["id"]


def test_production_server_hides_docs_and_answers_readiness(live):
    assert live.request("GET", "/api/docs/openapi.json")[0] == 404
    status, body, _ = live.request("GET", "/readyz")
    assert status == 200 and body["database"] == "ok"


def test_sigterm_stops_gunicorn_cleanly(live):
    assert live.stop() == 0


def test_chunked_request_body_is_read(live):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    body = json.dumps({"email": "chunky@example.com", "password": "password123"}).encode()
    conn.request(
        "POST",
        "/api/auth/register",
        body=iter([body[:10], body[10:]]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 201, response.read()
    assert json.loads(response.read())["email"] == "chunky@example.com"


def test_a_password_reset_ends_the_old_access_token_on_every_worker_at_once(live, database_url):
    """Two gunicorn workers, each with its memory of the user warmed up by the old token: the
    first requests after the reset's answer are refused by both (Redis pub/sub, no polling)."""
    from shopapi.security import account_token
    from tests.conftest import TEST_SECRET, db_rows

    body = {"email": "reset-live@example.com", "password": "password123"}
    assert live.request("POST", "/api/auth/register", body)[0] == 201
    old = {
        "Authorization": f"Bearer {live.request('POST', '/api/auth/login', body)[1]['access_token']}"
    }
    for _ in range(20):  # new connections: both workers answer, and remember the user
        assert live.request("GET", "/api/auth/me", headers=old)[0] == 200

    assert live.request("POST", "/api/auth/password-reset", {"email": body["email"]})[0] == 202
    ((nonce,),) = db_rows(
        database_url, "SELECT nonce FROM account_tokens WHERE purpose = 'password_reset'"
    )
    token = account_token(TEST_SECRET, bytes(nonce))
    reset = {"token": token, "password": "a-new-password"}
    assert live.request("POST", "/api/auth/password-reset/confirm", reset)[0] == 204
    statuses = [live.request("GET", "/api/auth/me", headers=old)[0] for _ in range(20)]
    assert statuses == [401] * 20
    new = live.request("POST", "/api/auth/login", {**body, "password": "a-new-password"})[1]
    fresh = {"Authorization": f"Bearer {new['access_token']}"}
    assert [live.request("GET", "/api/auth/me", headers=fresh)[0] for _ in range(6)] == [200] * 6

"""Authentication without a database round trip, and refusal of deactivated users at once on every
worker (shopapi/user_state.py: per-process memory kept true by Redis pub/sub)."""

import time

import pytest
import redis
from falcon import testing

from shopapi.app import create_app
from tests.conftest import REDIS_URL


def _second_worker(settings, pool):
    """Another app with its own Redis connection and memory, as a second gunicorn worker has."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return testing.TestClient(create_app(settings, pool=pool, redis=client))


def _eventually_401(client, headers, seconds=1.0):
    deadline = time.monotonic() + seconds
    while True:
        status = client.simulate_get("/api/auth/me", headers=headers).status_code
        if status == 401 or time.monotonic() > deadline:
            return status
        time.sleep(0.005)


def test_repeated_requests_do_not_read_the_users_state_again(client, customer, query_counter):
    client.simulate_get("/api/auth/me", headers=customer.headers)  # first sight: one read
    with query_counter() as counted:
        response = client.simulate_get("/api/auth/me", headers=customer.headers)
    assert response.status_code == 200
    assert counted.n == 1  # the /me read itself; no per-request user-state lookup


@pytest.mark.parametrize("change", [{"is_active": False}, {"role": "EDITOR"}])
def test_a_change_on_one_worker_refuses_the_user_on_another(
    client, settings, pool, admin, customer, change
):
    other = _second_worker(settings, pool)
    assert other.simulate_get("/api/auth/me", headers=customer.headers).status_code == 200
    assert (
        client.simulate_put(
            f"/api/users/{customer.id}", json=change, headers=admin.headers
        ).status_code
        == 200
    )
    started = time.monotonic()
    assert _eventually_401(other, customer.headers) == 401
    assert time.monotonic() - started < 0.5


def test_deleting_a_user_refuses_them_on_another_worker(client, settings, pool, admin, customer):
    other = _second_worker(settings, pool)
    assert other.simulate_get("/api/auth/me", headers=customer.headers).status_code == 200
    assert (
        client.simulate_delete(f"/api/users/{customer.id}", headers=admin.headers).status_code
        == 204
    )
    assert _eventually_401(other, customer.headers) == 401


def test_without_redis_every_request_reads_postgres_and_refusal_is_immediate(
    settings, pool, make_user
):
    dead = redis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.1, socket_connect_timeout=0.1
    )
    client = testing.TestClient(create_app(settings, pool=pool, redis=dead))
    admin, customer = make_user("ADMIN"), make_user()
    assert client.simulate_get("/api/auth/me", headers=customer.headers).status_code == 200
    assert (
        client.simulate_put(
            f"/api/users/{customer.id}", json={"is_active": False}, headers=admin.headers
        ).status_code
        == 200
    )
    # no listener, no memory: the very next request sees the database
    assert client.simulate_get("/api/auth/me", headers=customer.headers).status_code == 401

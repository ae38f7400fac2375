"""Issue 18 item 8: a login flood must not stall the API.

Password hashing runs on PASSWORD_HASH_THREADS threads of its own (never on the event loop),
at most PASSWORD_HASH_QUEUE more jobs wait for them, and past that a login, a registration or a
password change answers 503 `service_unavailable` with Retry-After at once. The dummy hash that
unknown emails are checked against exists as soon as the app does. The per-address login limit
across emails (RATE_LIMIT_LOGIN_IP) is tested in tests/test_rate_limits.py; the effect on
cached reads during a flood is measured by `bin/bench --scenarios login_flood`
(bench/login_flood.py), not timed here.

These tests use real bcrypt at a cost high enough (13: ~0.5 s a check here) to keep the one
hashing thread busy while the other requests arrive.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import bcrypt
import pytest
from falcon import testing
from prometheus_client import REGISTRY

from shopapi.errors import ServiceUnavailable
from tests.conftest import assert_problem, in_background, together, wait_for
from tests.helpers import login


def _shed() -> float:
    return REGISTRY.get_sample_value("shopapi_password_hashing_shed_total") or 0.0


SLOW = {"BCRYPT_ROUNDS": 13, "PASSWORD_HASH_THREADS": 1, "PASSWORD_HASH_QUEUE": 2}


def _wrong_login(client: testing.TestClient, n: int):
    started = time.monotonic()
    response = client.simulate_post(
        "/api/auth/login", json={"email": f"flood{n}@example.com", "password": "wrong-guess"}
    )
    return response, time.monotonic() - started


def _fill_the_queue(client: testing.TestClient) -> list:
    """Unknown-email logins (each one check of the dummy hash) until every thread and queue
    place is taken; their Background handles."""
    passwords = client.app.ctx.passwords
    capacity = passwords.threads + passwords.queue
    running = [in_background(lambda n=n: _wrong_login(client, n)) for n in range(capacity)]
    wait_for(lambda: passwords.in_flight == capacity, 10, 0.01, "the hashing queue to fill")
    return running


def test_the_dummy_hash_for_unknown_emails_is_made_when_the_app_is_created(app_client, monkeypatch):
    client = app_client()
    passwords = client.app.ctx.passwords
    assert passwords.dummy.startswith("$2b$04$")  # BCRYPT_ROUNDS of the tests
    hashed = []
    real = bcrypt.hashpw
    monkeypatch.setattr(bcrypt, "hashpw", lambda *args: hashed.append(1) or real(*args))
    response = client.simulate_post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "password123"}
    )
    assert_problem(response, 401, "invalid_credentials")
    assert hashed == []  # the first unknown-email login only checks, it makes nothing


def test_bcrypt_never_runs_on_the_event_loop(client, make_user, monkeypatch):
    threads = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    user = make_user()
    login(client, user.email, user.password)
    client.simulate_post("/api/auth/login", json={"email": "x@example.com", "password": "p" * 8})
    assert len(threads) == 2
    assert all(name.startswith("bcrypt") for name in threads), threads


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is set on Linux only")
def test_the_hashing_threads_run_at_a_lower_cpu_priority_than_the_loop(client, app_loop):
    from shopapi.security import HASHING_NICENESS

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    passwords = client.app.ctx.passwords
    assert app_loop.run(passwords._run, niceness) == niceness() + HASHING_NICENESS


def test_a_full_hashing_queue_answers_503_with_retry_after_at_once(app_client, make_user):
    client = app_client(**SLOW)
    passwords = client.app.ctx.passwords
    shed_before = _shed()
    running = _fill_the_queue(client)

    response, seconds = _wrong_login(client, 99)
    problem = assert_problem(response, 503, "service_unavailable")
    assert "retry" in problem["detail"]
    # about the time the 3 jobs ahead need on one thread (~0.5 s each), whole seconds
    assert 1 <= int(response.headers["retry-after"]) <= 10
    assert seconds < passwords.job_seconds  # not queued: answered before one check could end
    assert _shed() == shed_before + 1

    # registration and a password change hash too: refused alike, nothing written
    user = make_user()
    register = client.simulate_post(
        "/api/auth/register",
        json={"email": "new@example.com", "password": "password123", "full_name": "New"},
    )
    assert_problem(register, 503, "service_unavailable")
    change = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"password": "brand-new-pass", "current_password": user.password},
        headers=user.headers,
    )
    assert_problem(change, 503, "service_unavailable")
    assert int(change.headers["retry-after"]) >= 1

    # the ones admitted are answered normally, and at rest logins work again
    for background in running:
        assert_problem(background.join()[0], 401, "invalid_credentials")
    assert passwords.in_flight == 0
    assert login(client, user.email, user.password)["access_token"]
    again = client.simulate_post(
        "/api/auth/register",
        json={"email": "new@example.com", "password": "password123", "full_name": "New"},
    )
    assert again.status_code == 201, again.text


def test_when_checks_slow_down_fewer_may_wait(app_client, make_user):
    """The queue is bounded in time too: with checks taking longer than the start-up hash did
    (a busy CPU, set here by hand: a loaded machine cannot be made on demand), a second job
    is refused although PASSWORD_HASH_QUEUE has places, as the first would need longer than
    the whole budget of `threads + queue` start-up hashes."""
    client = app_client(**SLOW)
    passwords = client.app.ctx.passwords
    first = in_background(lambda: _wrong_login(client, 1))
    wait_for(lambda: passwords.in_flight == 1, 10, 0.01, "the first check to start")
    passwords.job_seconds = passwords.budget_seconds * 1.01
    response, _ = _wrong_login(client, 2)
    assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert_problem(first.join()[0], 401, "invalid_credentials")
    user = make_user()  # nothing in flight: a job is always admitted then
    assert login(client, user.email, user.password)["access_token"]


def test_a_burst_of_concurrent_logins_sheds_the_excess_and_never_fails(app_client, make_user):
    client = app_client(**SLOW)
    passwords = client.app.ctx.passwords
    answers = together(12, lambda n: _wrong_login(client, n))
    statuses = sorted(response.status_code for response, _ in answers)
    assert set(statuses) <= {401, 503}, statuses
    # the thread and the queue places are served; the rest is refused, not queued
    assert statuses.count(401) >= passwords.threads + passwords.queue
    assert statuses.count(503) >= 1, statuses
    shed = [seconds for response, seconds in answers if response.status_code == 503]
    served = [seconds for response, seconds in answers if response.status_code == 401]
    assert max(shed) < min(served)  # every refusal came before any check had finished
    for response, _ in answers:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    assert passwords.in_flight == 0
    user = make_user()
    assert login(client, user.email, user.password)["access_token"]


def test_a_cancelled_request_gives_back_its_place_in_the_queue(app_client, app_loop):
    """A client that goes away while its check waits must not keep its place for ever."""
    import asyncio

    client = app_client(**SLOW)
    passwords = client.app.ctx.passwords
    running = _fill_the_queue(client)
    with pytest.raises(ServiceUnavailable):  # full: refused before it takes a place
        app_loop.run(passwords.check_nobody, "password123")
    assert passwords.in_flight == passwords.threads + passwords.queue

    async def give_up() -> None:
        waiting = asyncio.ensure_future(passwords.check_nobody("password123"))
        await asyncio.sleep(0.05)
        waiting.cancel()

    for background in running[:1]:
        background.join()
    app_loop.run(give_up)  # took the freed place, then its client went away
    for background in running[1:]:
        background.join()
    wait_for(lambda: passwords.in_flight == 0, 10, 0.01, "the cancelled job's place back")


def test_a_check_after_shutdown_fails_without_keeping_a_place(app_client, app_loop):
    """A request still running when its worker closes the hashing threads gets an error, and
    the place it took is given back (the count stays true for whatever runs next)."""
    client = app_client()
    passwords = client.app.ctx.passwords
    passwords.close()
    with pytest.raises(RuntimeError):
        app_loop.run(passwords.check_nobody, "password123")
    assert passwords.in_flight == 0

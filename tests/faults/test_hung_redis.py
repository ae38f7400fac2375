"""A hung Redis (SIGSTOP: the port accepts, nothing answers) is noticed by the user-state
listener through a PING whose PONG never comes: the worker stops trusting its memory and reads
PostgreSQL, so a user changed meanwhile (whose change could not be published) is refused."""

from __future__ import annotations

import time

import pytest
from falcon import testing

from shopapi import user_state
from shopapi.app import create_app
from tests.conftest import make_settings, run_sql

pytestmark = pytest.mark.faults


def test_a_frozen_redis_makes_the_worker_read_postgres_within_ping_and_pong_wait(
    database_url, pool, app_loop, make_user, redis_server
):
    settings = make_settings(database_url, REDIS_URL=redis_server.url)
    app = create_app(settings, pool=pool)  # its own client, on the Redis we freeze
    client = testing.TestClient(app)
    customer = make_user()
    me = lambda: client.simulate_get("/api/auth/me", headers=customer.headers).status_code  # noqa: E731
    assert me() == 200
    assert app.ctx.user_states.peek(customer.id) is not None  # served from memory now

    redis_server.freeze()
    try:
        # another instance deactivates the user; its publish cannot reach this worker
        run_sql(
            app_loop,
            pool,
            lambda conn: conn.execute(
                "UPDATE users SET is_active = false WHERE id = %s", (customer.id,)
            ),
        )
        frozen_at = time.monotonic()
        limit = user_state.PING_EVERY + user_state.PONG_WAIT + 1.5
        while app.ctx.user_states.peek(customer.id) is not None:
            assert time.monotonic() - frozen_at < limit, "the listener did not notice"
            time.sleep(0.05)
        noticed = time.monotonic() - frozen_at
        assert me() == 401  # read from PostgreSQL
        print(f"5e. Redis frozen: the listener read PostgreSQL again after {noticed:.2f} s")
    finally:
        redis_server.thaw()
    # back: the listener subscribes again and memory serves again
    deadline = time.monotonic() + 10
    while not app.ctx.user_states._listening.is_set():
        assert time.monotonic() < deadline, "the listener did not come back"
        time.sleep(0.05)
    assert me() == 401
    app_loop.run(app.ctx.close)

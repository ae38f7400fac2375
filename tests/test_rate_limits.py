"""Rate limits: general per IP and per user, login per IP + email, register per IP, headers,
exempt routes, the off switch, counters shared in Redis and the in-memory fallback."""

from __future__ import annotations

import logging
import math
import socket
import subprocess
import time

import pytest
import redis
from falcon import testing
from prometheus_client import REGISTRY

from shopapi import ratelimits
from shopapi.app import create_app
from shopapi.config import ConfigError
from tests.conftest import TEST_SECRET, assert_problem, db_rows, make_settings

ME = "/api/auth/me"  # a limited route; anonymous callers get 401 until the limit says 429


@pytest.fixture()
def limited(async_redis, database_url, pool, redis_client, app_loop):
    """`limited(RATE_LIMIT_LOGIN="3/hour", ...)`: a TestClient on an app with limits on,
    closed after the test (its user-state listener would otherwise outlive the loop)."""
    built = []

    def build(**overrides) -> testing.TestClient:
        overrides.setdefault("RATE_LIMIT_DEFAULT", "5/hour")
        settings = make_settings(database_url, RATE_LIMIT_ENABLED="true", **overrides)
        # another REDIS_URL: the app builds its client for it, as a worker does
        redis = None if "REDIS_URL" in overrides else async_redis
        built.append(create_app(settings, pool=pool, redis=redis))
        return testing.TestClient(built[-1])

    yield build
    for app in built:
        app_loop.run(app.ctx.close)


@pytest.fixture(autouse=True)
def _not_at_a_window_edge():
    """Windows are aligned to the clock: never start a counting test in a window's last
    seconds, or the count would restart halfway through it."""
    for length in (60, 3600):
        left = length - time.time() % length
        if left < 3:
            time.sleep(left + 0.05)


def rate_limited_total() -> float:
    return REGISTRY.get_sample_value("shopapi_rate_limited_total") or 0.0


def get_me(client, ip: str = "198.51.100.1", **kwargs):
    return client.simulate_get(ME, remote_addr=ip, **kwargs)


def login(client, email: str, password: str = "password123", ip: str = "198.51.100.1"):
    return client.simulate_post(
        "/api/auth/login", remote_addr=ip, json={"email": email, "password": password}
    )


# ------------------------------------------------------------------ general limit


def test_general_limit_refuses_the_sixth_request_from_one_ip_with_429(limited):
    client = limited()
    before = rate_limited_total()
    for _ in range(5):
        assert get_me(client).status_code == 401
    response = get_me(client)
    assert_problem(response, 429, "rate_limited")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == str(retry_after)
    assert rate_limited_total() == before + 1


def test_every_limited_answer_carries_ratelimit_headers(limited, make_user):
    client = limited(RATE_LIMIT_DEFAULT="5/minute")
    user = make_user()
    remaining = []
    for _ in range(3):
        started = time.time()
        response = get_me(client, headers=user.headers)
        took = time.time() - started
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "5"
        remaining.append(response.headers["ratelimit-remaining"])
        # whole seconds to the end of the minute window, read while the request ran: within
        # a second of what was left when it started, less the time it took (a run once lost
        # to a clock tick between the answer and the check); the difference taken modulo the
        # window, in case the request straddled its end
        early = 60 - started % 60
        difference = (int(response.headers["ratelimit-reset"]) - early + 30) % 60 - 30
        assert -1 - took <= difference <= 1, (difference, took)
    assert remaining == ["4", "3", "2"]
    anonymous = get_me(client, ip="198.51.100.2")  # an error answer is counted and labelled too
    assert anonymous.status_code == 401
    assert anonymous.headers["ratelimit-remaining"] == "4"


def test_each_client_ip_has_its_own_count(limited):
    client = limited()
    for _ in range(6):
        get_me(client, ip="198.51.100.1")
    assert get_me(client, ip="198.51.100.1").status_code == 429
    response = get_me(client, ip="198.51.100.2")
    assert response.status_code == 401
    assert response.headers["ratelimit-remaining"] == "4"


def test_ipv6_clients_are_counted_per_64_network(limited):
    client = limited()
    for host in range(1, 6):
        assert get_me(client, ip=f"2001:db8:0:1::{host}").status_code == 401
    assert get_me(client, ip="2001:db8:0:1::99").status_code == 429
    assert get_me(client, ip="2001:db8:0:2::1").status_code == 401


def test_user_is_limited_across_ips_when_a_valid_token_is_sent(limited, make_user):
    client = limited()
    user = make_user()
    for n in range(5):
        assert get_me(client, ip=f"198.51.100.{n + 1}", headers=user.headers).status_code == 200
    fresh_ip = "203.0.113.9"
    assert_problem(get_me(client, ip=fresh_ip, headers=user.headers), 429, "rate_limited")
    # the refusal was the user's count, not the address's
    assert get_me(client, ip="203.0.113.10").status_code == 401


def test_invalid_token_is_counted_per_ip_only(limited, make_user):
    client = limited()
    bad = {"Authorization": "Bearer not-a-token"}
    for n in range(6):
        assert get_me(client, ip=f"198.51.100.{n + 1}", headers=bad).status_code == 401


def test_health_metrics_and_docs_are_never_limited(limited):
    client = limited()
    for path in ("/healthz", "/readyz", "/metrics", "/api/docs/openapi.json"):
        for _ in range(7):
            response = client.simulate_get(path)
            assert response.status_code != 429, path
            assert "ratelimit-limit" not in response.headers, path
    # and they did not spend the address's allowance
    assert get_me(client, ip="127.0.0.1").headers["ratelimit-remaining"] == "4"


def test_cors_preflights_are_not_counted(limited):
    client = limited(CORS_ORIGINS="https://shop.example.com")
    preflight = {"Origin": "https://shop.example.com", "Access-Control-Request-Method": "GET"}
    for _ in range(7):
        response = client.simulate_options(ME, headers=preflight, remote_addr="198.51.100.1")
        assert response.status_code == 200
    assert get_me(client).headers["ratelimit-remaining"] == "4"


def test_rate_limit_disabled_sends_no_headers_and_refuses_nothing(
    async_redis, database_url, pool, redis_client
):
    settings = make_settings(
        database_url,
        RATE_LIMIT_ENABLED="false",
        RATE_LIMIT_DEFAULT="1/hour",
        RATE_LIMIT_LOGIN="1/hour",
    )
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    for _ in range(3):
        response = get_me(client)
        assert response.status_code == 401
        assert "ratelimit-limit" not in response.headers
        assert login(client, "nobody@example.com").status_code == 401
    assert redis_client.keys(f"{ratelimits.KEY_PREFIX}:*") == []


def test_unparsable_rate_refuses_to_start(async_redis, database_url, pool, redis_client):
    settings = make_settings(database_url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_LOGIN="lots")
    with pytest.raises(ConfigError, match="RATE_LIMIT_LOGIN"):
        create_app(settings, pool=pool, redis=async_redis)


def test_several_rates_in_one_setting_each_count(limited):
    client = limited(RATE_LIMIT_DEFAULT="50/hour;3/minute")
    for _ in range(3):
        assert get_me(client).headers["ratelimit-limit"] == "3"
    response = get_me(client)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) <= 60


# ------------------------------------------------------------------ client IP behind proxies


def test_spoofed_forwarded_for_cannot_dodge_the_limit_without_trusted_proxies(limited):
    client = limited(TRUSTED_PROXIES="0")
    for n in range(5):
        get_me(client, headers={"X-Forwarded-For": f"10.9.9.{n}"})
    response = get_me(client, headers={"X-Forwarded-For": "10.9.9.99"})
    assert_problem(response, 429, "rate_limited")


def test_with_one_trusted_proxy_the_rightmost_forwarded_entry_is_the_client(limited):
    client = limited(TRUSTED_PROXIES="1", TRUSTED_PROXY_NETWORKS="10.0.0.0/8")
    proxy = "10.0.0.1"
    for n in range(5):
        # a client-chosen leftmost entry changes every time: it must not change the key
        xff = {"X-Forwarded-For": f"1.2.3.{n}, 203.0.113.7"}
        assert get_me(client, ip=proxy, headers=xff).status_code == 401
    spoofed = {"X-Forwarded-For": "1.2.3.200, 203.0.113.7"}
    assert_problem(get_me(client, ip=proxy, headers=spoofed), 429, "rate_limited")
    other_client = {"X-Forwarded-For": "1.2.3.200, 203.0.113.8"}
    assert get_me(client, ip=proxy, headers=other_client).status_code == 401


def test_a_peer_outside_the_trusted_networks_cannot_pick_its_bucket(limited):
    """Issue 18 item 6: with TRUSTED_PROXIES=1 the header used to be honoured from any peer,
    so a container next to nginx chose a fresh bucket per request. Now only a peer inside
    TRUSTED_PROXY_NETWORKS is a proxy: this one is counted by its own address."""
    client = limited(TRUSTED_PROXIES="1", TRUSTED_PROXY_NETWORKS="10.0.0.0/8")
    outsider = "172.18.0.9"  # e.g. another container on a docker network
    for n in range(5):
        xff = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert get_me(client, ip=outsider, headers=xff).status_code == 401
    spoofed = {"X-Forwarded-For": "203.0.113.99"}
    assert_problem(get_me(client, ip=outsider, headers=spoofed), 429, "rate_limited")
    # the bucket was the outsider's: the addresses it named were never charged
    proxy = "10.0.0.1"
    assert get_me(client, ip=proxy, headers={"X-Forwarded-For": "203.0.113.0"}).status_code == 401


# ------------------------------------------------------------------ login and register


def test_login_limit_counts_every_attempt_per_ip_and_email(limited, make_user, database_url):
    client = limited(RATE_LIMIT_DEFAULT="100/hour", RATE_LIMIT_LOGIN="3/hour")
    user = make_user(email="buyer@example.com", password="password123")
    assert login(client, user.email).status_code == 200  # a success counts too
    assert login(client, user.email, password="wrong-password").status_code == 401
    assert login(client, "  BUYER@Example.com ", password="wrong-password").status_code == 401
    refused = login(client, user.email)  # right password, but over the limit
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["ratelimit-limit"] == "3"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    # other emails from this address, and this email from another address, still go through
    assert login(client, "someone-else@example.com").status_code == 401
    assert login(client, user.email, ip="198.51.100.77").status_code == 200
    tokens = db_rows(
        database_url, "SELECT count(*) FROM refresh_tokens WHERE user_id = %s", (user.id,)
    )
    assert tokens == [(2,)]  # the refused login issued nothing


def test_login_body_is_still_validated_after_the_limiter_read_it(limited, make_user):
    client = limited(RATE_LIMIT_LOGIN="10/hour", MAX_BODY_BYTES="200")
    make_user(email="buyer@example.com", password="password123")
    ok = login(client, "buyer@example.com")
    assert ok.status_code == 200 and ok.json["token_type"] == "Bearer"
    bad_json = client.simulate_post(
        "/api/auth/login", body=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(bad_json, 400, "invalid_json")
    missing = client.simulate_post("/api/auth/login", json={"email": "buyer@example.com"})
    assert_problem(missing, 422, "validation_error")
    too_big = client.simulate_post(
        "/api/auth/login", json={"email": "buyer@example.com", "password": "x" * 300}
    )
    assert_problem(too_big, 413, "payload_too_large")


def test_register_limit_per_ip_refuses_the_third_and_writes_nothing(limited, database_url):
    client = limited(RATE_LIMIT_DEFAULT="100/hour", RATE_LIMIT_REGISTER="2/hour")

    def register(n: int, ip: str = "198.51.100.1"):
        return client.simulate_post(
            "/api/auth/register",
            remote_addr=ip,
            json={"email": f"new{n}@example.com", "password": "password123"},
        )

    assert register(1).status_code == 201
    assert register(2).status_code == 201
    refused = register(3)
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["ratelimit-limit"] == "2"
    assert register(4, ip="198.51.100.2").status_code == 201
    emails = db_rows(database_url, "SELECT email FROM users ORDER BY id")
    assert emails == [("new1@example.com",), ("new2@example.com",), ("new4@example.com",)]


# ------------------------------------------------------------------ storage


def test_counts_are_shared_by_every_worker_through_redis(limited, redis_client):
    worker_a, worker_b = limited(), limited()
    for client in (worker_a, worker_b, worker_a, worker_b, worker_a):
        assert get_me(client).status_code == 401
    assert get_me(worker_b).status_code == 429
    keys = redis_client.keys(f"{ratelimits.KEY_PREFIX}:*")
    assert len(keys) == 1
    # set to ceil(rest of the window) + 1 at the hit; Redis rounds TTL to the nearest second,
    # so read a moment later it may sit one second above the same formula taken now
    assert 0 < redis_client.ttl(keys[0]) <= math.ceil(3600 - time.time() % 3600) + 2
    assert int(redis_client.get(keys[0])) == 6


def test_redis_down_serves_requests_and_limits_in_memory(limited, caplog):
    client = limited(REDIS_URL="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="shopapi.ratelimits"):
        for n in range(5):
            response = get_me(client)
            assert response.status_code == 401
            assert response.headers["ratelimit-remaining"] == str(4 - n)
        assert_problem(get_me(client), 429, "rate_limited")
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_a_hung_redis_stalls_one_request_per_retry_interval_at_most(limited):
    hung = socket.socket()  # accepts connections (kernel backlog) and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        port = hung.getsockname()[1]
        client = limited(REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT="0.2")
        started = time.perf_counter()
        assert get_me(client).status_code == 401  # waits one timeout, then counts in memory
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(4):
            assert get_me(client).status_code == 401
        rest = time.perf_counter() - started
    finally:
        hung.close()
    assert 0.15 <= first < 1.0
    assert rest < 0.4  # Redis was not tried again within the retry interval


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            probe.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.02)
    server.kill()
    raise RuntimeError("private redis-server did not start")


def test_limits_go_back_to_redis_when_it_returns(limited, monkeypatch, caplog):
    monkeypatch.setattr(ratelimits, "REDIS_RETRY_SECONDS", 0.2)
    port = _free_port()
    server = _start_redis(port)  # a private Redis this test may stop and start
    try:
        client = limited(REDIS_URL=f"redis://127.0.0.1:{port}/0")
        private = redis.Redis(port=port)
        assert get_me(client).headers["ratelimit-remaining"] == "4"
        assert len(private.keys(f"{ratelimits.KEY_PREFIX}:*")) == 1

        server.terminate()
        server.wait(timeout=5)
        with caplog.at_level(logging.WARNING, logger="shopapi.ratelimits"):
            # counted in this process from zero while Redis is away
            assert get_me(client).headers["ratelimit-remaining"] == "4"
            assert get_me(client).headers["ratelimit-remaining"] == "3"

            server = _start_redis(port)  # empty: nothing is kept on disk
            time.sleep(0.25)
            assert get_me(client).headers["ratelimit-remaining"] == "4"
        keys = private.keys(f"{ratelimits.KEY_PREFIX}:*")
        assert len(keys) == 1 and int(private.get(keys[0])) == 1
        messages = [r.getMessage() for r in caplog.records]
        assert sum("Redis unavailable" in m for m in messages) == 1
        assert sum("Redis is back" in m for m in messages) == 1
    finally:
        server.terminate()
        server.wait(timeout=5)


# --------------------------------------------------------------------------- Batches


def test_batches_replace_a_kept_connection_that_redis_closed(app_loop, redis_client):
    """Redis restarted or dropped the idle connection: the batch goes out once, on a new one."""
    from redis.asyncio import Redis as AsyncRedis

    from shopapi.redis_client import Batches
    from tests.conftest import REDIS_URL

    batches = Batches(AsyncRedis.from_url(REDIS_URL))
    client_id, counted = app_loop.run(batches.execute, [("CLIENT", "ID"), ("INCR", "batches:n")])
    assert counted == 1
    assert redis_client.client_kill_filter(_id=client_id) == 1
    # the kept connection is dead; the same batch counts once, on a fresh connection
    [again, new_id] = app_loop.run(batches.execute, [("INCR", "batches:n"), ("CLIENT", "ID")])
    assert again == 2 and new_id != client_id
    assert int(redis_client.get("batches:n")) == 2


def test_batches_close_a_connection_left_with_unread_replies(app_loop, redis_client):
    """An error reply in the middle leaves later replies unread: that connection is closed,
    and the next batch is answered correctly (not with the previous batch's leftovers)."""
    from redis.asyncio import Redis as AsyncRedis

    from shopapi.redis_client import Batches
    from tests.conftest import REDIS_URL

    redis_client.set("batches:text", "not a number")
    batches = Batches(AsyncRedis.from_url(REDIS_URL))
    with pytest.raises(redis.ResponseError):
        app_loop.run(
            batches.execute,
            [("INCR", "batches:text"), ("INCR", "batches:m"), ("GET", "batches:text")],
        )
    assert app_loop.run(batches.execute, [("GET", "batches:m")]) == [b"1"]
    assert app_loop.run(batches.execute, [("INCR", "batches:m")]) == [2]


def test_login_is_limited_per_account_across_every_address(limited, make_user):
    client = limited(
        RATE_LIMIT_DEFAULT="1000/hour",
        RATE_LIMIT_LOGIN="1000/hour",
        RATE_LIMIT_LOGIN_ACCOUNT="3/hour",
        RATE_LIMIT_LOGIN_IP="1000/hour",
    )
    victim, bystander = make_user(), make_user()
    # distributed guessing: each attempt from another address, same account (any spelling)
    spellings = [victim.email, victim.email.upper(), f" {victim.email} "]
    for n, email in enumerate(spellings):
        response = login(client, email, "wrong-guess", ip=f"203.0.113.{n + 1}")
        assert_problem(response, 401, "invalid_credentials")
    response = login(client, victim.email, victim.password, ip="203.0.113.99")
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    # another account is not affected
    assert login(client, bystander.email, ip="203.0.113.99").status_code == 200


def test_login_is_limited_per_address_across_every_email(limited, make_user):
    client = limited(
        RATE_LIMIT_DEFAULT="1000/hour", RATE_LIMIT_LOGIN="1000/hour", RATE_LIMIT_LOGIN_IP="3/minute"
    )
    user = make_user()
    for n in range(3):
        response = login(client, f"nobody{n}@example.com", ip="198.51.100.7")
        assert_problem(response, 401, "invalid_credentials")
    assert_problem(login(client, user.email, ip="198.51.100.7"), 429, "rate_limited")
    assert login(client, user.email, ip="198.51.100.8").status_code == 200


def test_password_reset_is_limited_per_email_and_per_address_alike_for_unknown_emails(
    limited, make_user
):
    client = limited(
        RATE_LIMIT_DEFAULT="1000/hour",
        RATE_LIMIT_PASSWORD_RESET_EMAIL="2/hour",
        RATE_LIMIT_PASSWORD_RESET_IP="4/hour",
    )
    known = make_user()

    def reset(email, ip):
        return client.simulate_post(
            "/api/auth/password-reset", json={"email": email}, remote_addr=ip
        )

    for email in (known.email, "unknown@example.com"):
        answers = [reset(email, f"192.0.2.{n}").status_code for n in range(1, 4)]
        assert answers == [202, 202, 429]  # the same for a known and an unknown email
    # per address: 4 requests, whatever the emails
    answers = [reset(f"spray{n}@example.com", "192.0.2.50").status_code for n in range(5)]
    assert answers == [202, 202, 202, 202, 429]


def test_verification_resends_are_limited_per_user(limited, make_user):
    client = limited(RATE_LIMIT_DEFAULT="1000/hour", RATE_LIMIT_VERIFICATION_RESEND="2/hour")
    user, other = make_user(), make_user()
    resend = "/api/auth/verify-email/resend"
    answers = [
        client.simulate_post(resend, headers=user.headers, remote_addr=f"192.0.2.{n}").status_code
        for n in range(1, 4)
    ]
    assert answers == [202, 202, 429]
    assert client.simulate_post(resend, headers=other.headers).status_code == 202


def test_without_redis_each_worker_grants_only_its_share_of_a_limit(database_url, app_loop):
    """Issue 18 item 7 (the live two-worker check: tests/faults/test_redis_outage.py): counted
    in memory, a limit of 7 on a server of 3 workers grants 7 // 3 = 2 in each."""
    import redis.asyncio

    settings = make_settings(database_url, RATE_LIMIT_DEFAULT="7/day")
    dead = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = ratelimits.Limiter(settings, dead, workers=3)
    usages = [
        app_loop.run(limiter.hit_and_fetch, [("general.ip", "192.0.2.7")], None)[0]
        for _ in range(3)
    ]
    assert [(u.allowed, u.limit, u.remaining) for u in usages] == [
        (True, 2, 1),
        (True, 2, 0),
        (False, 2, 0),
    ]
    assert ratelimits.Limiter(settings, dead, workers=9).share(7) == 1  # never 0
    app_loop.run(dead.aclose)


def test_the_worker_count_is_what_gunicorn_conf_gives_the_workers(monkeypatch, tmp_path):
    """gunicorn.conf.py's on_starting writes the configured worker count into the environment
    the workers inherit; server_workers() reads it, and is 1 without it (or when garbled)."""
    import runpy

    from shopapi.config import ROOT

    # set first, so that monkeypatch restores what on_starting writes into os.environ
    monkeypatch.setenv(ratelimits.SERVER_WORKERS_ENV, "")
    monkeypatch.delenv(ratelimits.SERVER_WORKERS_ENV)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("APP_ENV", "test")  # on_starting checks that tokens can be signed
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    assert ratelimits.server_workers() == 1
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    class Arbiter:  # what on_starting reads of gunicorn's master
        log = logging.getLogger("gunicorn-test")

        class cfg:  # noqa: N801
            workers = 3

    conf["on_starting"](Arbiter())
    assert ratelimits.server_workers() == 3
    monkeypatch.setenv(ratelimits.SERVER_WORKERS_ENV, "three")
    assert ratelimits.server_workers() == 1

"""OWASP API8:2023 Security Misconfiguration, at the proxy: the real nginx (Debian's package,
deploy/nginx.conf rendered for a VM by deploy/render_nginx_conf.py) in front of a live
gunicorn, as the compose stack runs them.

Issue 18 item 1 (metrics are public): every spelling of /metrics, and of /readyz, is a 404
that nginx answers itself (the app never sees it), while a direct scrape of the replica from
loopback still works; the app refuses /metrics through a proxy on its own as well
(tests/test_metrics_access.py has the in-process cases).
Issue 18 item 9 (deployment hygiene): no version in nginx's answers, and its own errors (404,
413) answer in the API's problem+json shape.
Issue 18 item 11 (request ids): a client's valid X-Request-ID is passed and echoed; a missing
or malformed one is replaced by nginx's `$request_id`, and that one id is in nginx's access
log, the app's access log and the answer, so the two logs join.
Request smuggling through the same pair (item 10): tests/security/test_request_smuggling.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import app_env, wait_for
from tests.nginx import Front, exchange, nginx_front

pytestmark = pytest.mark.live

NOT_FOUND = {"type": "about:blank", "title": "Not found", "status": 404, "code": "not_found"}
NGINX_ID = re.compile(r"^[0-9a-f]{32}$")  # nginx's $request_id

METRICS_SPELLINGS = [
    "/metrics",
    "/metrics/",
    "/METRICS",
    "/Metrics",
    "/metrics?x",
    "/metrics?name[]=http_requests_total",
    "//metrics",
    "///metrics/",
    "/api/../metrics",
    "/./metrics",
    "/api/products/../../metrics",
    "/%6detrics",
    "/%6D%65%74%72%69%63%73",
    "/%2Fmetrics",
    "/metrics%2F",
    "/metrics%3Fx",
    "/metrics;x",
    "/metrics.",
    "http://localhost/metrics",  # absolute-form request target
]
READYZ_SPELLINGS = ["/readyz", "/readyz/", "/READYZ", "//readyz", "/api/../readyz", "/%72eadyz"]


@pytest.fixture(scope="module")
def front(database_url) -> Iterator[Front]:
    with nginx_front(app_env(database_url, LOG_LEVEL="INFO")) as running:
        yield running


def get(port: int, target: str, *headers: str):
    """One GET with `target` exactly as written; its single answer."""
    head = "".join(f"{header}\r\n" for header in headers)
    raw = f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{head}\r\n".encode("latin-1")
    (response,) = exchange(port, raw, expect=1)
    return response


def log_entry(front: Front, request_id: str) -> dict:
    """nginx's access log line of `request_id` (written when the request is done, which for
    a refused upload is after the connection's lingering close)."""
    entries = wait_for(
        lambda: [e for e in front.nginx.access_entries() if e["request_id"] == request_id],
        what=f"nginx's log line of {request_id}",
        timeout=5,
    )
    assert len(entries) == 1, (request_id, entries)
    return entries[0]


def direct_get(front: Front, path: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(front.app.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --------------------------------------------------------------------- item 1: private routes


def test_every_spelling_of_metrics_and_readyz_is_refused_by_nginx_itself(front):
    seen_before = front.requests_seen()
    for number, target in enumerate(METRICS_SPELLINGS + READYZ_SPELLINGS):
        request_id = f"spelling-{number}"
        response = get(front.nginx.port, target, f"X-Request-ID: {request_id}")
        assert response.status == 404, target
        assert response.headers["content-type"] == "application/problem+json", target
        assert json.loads(response.body) == NOT_FOUND, target
        assert response.headers["x-request-id"] == request_id
        # answered by nginx: no upstream was asked
        assert log_entry(front, request_id)["upstream"] == "", target
    # and the app saw none of them (its own count, all workers)
    assert front.requests_seen() == seen_before


def test_a_direct_scrape_of_the_replica_from_loopback_still_works(front):
    status, body = direct_get(front, "/metrics")
    assert status == 200 and b"http_requests_total" in body
    status, body = direct_get(front, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


def test_the_app_refuses_metrics_that_came_through_a_proxy(front):
    """The second lock: a request nginx (or any proxy) passed on carries X-Forwarded-For,
    so the replica answers it the 404 of an unknown route even from loopback."""
    for header in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
        status, body = direct_get(front, "/metrics", **header)
        assert status == 404 and json.loads(body) == NOT_FOUND


def test_routes_that_only_look_alike_still_reach_the_app(front):
    """The private locations match /metrics and /readyz only: the API behind is untouched."""
    for target in ("/healthz", "/api/categories", "/api/products?q=metrics"):
        response = get(front.nginx.port, target)
        assert response.status == 200, target


# ---------------------------------------------------------- item 9: what nginx itself answers


def test_nginx_shows_no_version_and_answers_its_own_errors_as_problem_json(front):
    port = front.nginx.port
    proxied, refused = get(port, "/healthz"), get(port, "/metrics")
    for response in (proxied, refused):
        assert response.headers["server"] == "nginx"  # server_tokens off
    too_large = exchange(
        port,
        b"POST /api/auth/register HTTP/1.1\r\nHost: localhost\r\n"
        b"X-Request-ID: too-large-1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1048577\r\n\r\n",
        expect=1,
    )[0]
    assert too_large.status == 413
    assert too_large.headers["content-type"] == "application/problem+json"
    assert json.loads(too_large.body)["code"] == "payload_too_large"
    assert b"nginx/" not in too_large.body
    assert too_large.headers["x-request-id"] == "too-large-1"
    assert log_entry(front, "too-large-1")["upstream"] == ""


def test_the_internal_error_pages_are_not_reachable_from_outside(front):
    for target in ("/_errors/400", "/_errors/404", "/_errors/501"):
        response = get(front.nginx.port, target)
        assert response.status == 404 and json.loads(response.body) == NOT_FOUND, target


# ------------------------------------------------------------------ item 11: request ids


@pytest.mark.parametrize("request_id", ["abc-123", "trace:1.2_3", "A" * 128, "0" * 32])
def test_a_valid_client_request_id_is_passed_and_echoed(front, request_id):
    response = get(front.nginx.port, "/healthz", f"X-Request-ID: {request_id}")
    assert response.status == 200
    assert response.headers["x-request-id"] == request_id
    assert log_entry(front, request_id)["upstream"]  # the app answered it
    assert request_id in front.app_log_request_ids()


@pytest.mark.parametrize(
    "header",
    [
        None,  # none sent
        "X-Request-ID: ",
        "X-Request-ID: " + "a" * 129,
        "X-Request-ID: " + "a" * 300,
        "X-Request-ID: has space",
        "X-Request-ID: semi;colon",
        'X-Request-ID: quote"and\\backslash',
        "X-Request-ID: tab\tinside",
        "X-Request-ID: ctl\x01char",
        "X-Request-ID: caf\xe9",
    ],
)
def test_a_missing_or_malformed_request_id_is_replaced_by_one_id_in_both_logs(front, header):
    marker = f"/healthz?case={abs(hash(header)) % 10**9}"
    response = get(front.nginx.port, marker, *([header] if header else []))
    assert response.status == 200
    replaced = response.headers["x-request-id"]
    assert NGINX_ID.match(replaced), replaced
    entry = log_entry(front, replaced)
    assert entry["uri"] == marker and entry["upstream"]
    # the app was passed nginx's id and logged it: one id joins the two logs
    assert replaced in front.app_log_request_ids()
    if header:
        raw = header.partition(": ")[2]
        if raw:
            assert raw not in front.nginx.access_log.read_text(encoding="latin-1")


def test_nginx_answers_carry_the_id_of_its_log_line(front):
    """A 404 nginx answers itself (no app involved) still has an id to quote to support."""
    response = get(front.nginx.port, "/metrics", "X-Request-ID: has space")
    replaced = response.headers["x-request-id"]
    assert NGINX_ID.match(replaced)
    assert log_entry(front, replaced)["uri"] == "/metrics"

"""OWASP API8:2023 Security Misconfiguration: HTTP request smuggling between the proxy and the
app (issue 18 item 10). The real nginx (Debian's package, deploy/nginx.conf rendered for a VM)
in front of the real gunicorn ASGI worker, attacked with raw bytes on a socket: conflicting
Content-Length and Transfer-Encoding, two Content-Lengths, folded and duplicated headers,
obfuscated transfer codings, a second request hidden in a body.

Each attack is either refused by nginx (4xx/501, the app never sees it) or handled as ONE
request. Proof, from the app's side: its own request counter (a direct scrape of /metrics, all
workers) moves by at most one request, on the attack's own route; the hidden
`GET /api/categories` never runs; the hidden registration writes no user; and afterwards every
request through nginx gets its own answer (nothing left queued on the kept-alive upstream
connections). nginx reads a whole request body before it opens the upstream request, and sends
it on with one Content-Length of its own: the app never frames a body the client framed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import app_env, db_rows
from tests.nginx import Front, exchange, nginx_front

pytestmark = pytest.mark.live

HOST = b"Host: localhost\r\n"
HIDDEN_GET = b"GET /api/categories HTTP/1.1\r\n" + HOST + b"\r\n"
HIDDEN_ROUTE = ("GET", "/api/categories", "200")


def hidden_register(email: str) -> bytes:
    body = json.dumps({"email": email, "password": "password123"}).encode()
    return (
        b"POST /api/auth/register HTTP/1.1\r\n"
        + HOST
        + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def attacks(email: str) -> dict[str, bytes]:
    """name -> raw bytes; each hides HIDDEN_GET or a registration of `email`."""
    hidden = HIDDEN_GET + hidden_register(email)
    n = str(len(hidden)).encode()
    post = b"POST /healthz HTTP/1.1\r\n" + HOST
    return {
        # CL.TE: a front that reads Content-Length and a back that reads the chunks (or the
        # reverse) would split the body differently
        "content-length and transfer-encoding": post
        + b"Content-Length: "
        + str(len(hidden) + 5).encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + hidden,
        "transfer-encoding then a short content-length": post
        + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        + chunk(hidden)
        + b"0\r\n\r\n",
        "two different content-lengths": post
        + b"Content-Length: 0\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "two equal content-lengths": post
        + b"Content-Length: "
        + n
        + b"\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "content-length list": post + b"Content-Length: 0, " + n + b"\r\n\r\n" + hidden,
        "content-length with a sign": post + b"Content-Length: +0\r\n\r\n" + hidden,
        "transfer-encoding twice": post
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0\r\n\r\n"
        + hidden,
        "transfer-encoding chunked, identity": post
        + b"Transfer-Encoding: chunked, identity\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "transfer-encoding identity, chunked": post
        + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"
        + hidden,
        "unknown transfer-encoding": post
        + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
        + hidden,
        "space before the colon": post
        + b"Transfer-Encoding : chunked\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "vertical tab in transfer-encoding": post
        + b"Transfer-Encoding:\x0bchunked\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "obs-folded transfer-encoding": post
        + b"X-Pad: x\r\n Transfer-Encoding: chunked\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
        "obs-folded content-length": post + b"Content-Length: 0\r\n " + n + b"\r\n\r\n" + hidden,
        "transfer-encoding in HTTP/1.0": b"POST /healthz HTTP/1.0\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + hidden,
        "bare LF line ends": b"POST /healthz HTTP/1.1\nHost: localhost\nContent-Length: "
        + n
        + b"\nTransfer-Encoding: chunked\n\n0\r\n\r\n"
        + hidden,
        "chunk size overflow": post
        + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff0"
        + b"\r\n"
        + hidden
        + b"\r\n0\r\n\r\n",
        # handled once: the hidden requests are plain body bytes of one registration attempt
        "requests inside a chunked body": b"POST /api/auth/register HTTP/1.1\r\n"
        + HOST
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(hidden)
        + b"0\r\n\r\n",
        "chunk extension and trailer": b"POST /api/auth/register HTTP/1.1\r\n"
        + HOST
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(hidden):x};ext=1\r\n".encode()
        + hidden
        + b"\r\n0\r\nX-Trailer: GET /api/categories\r\n\r\n",
        "requests inside a content-length body": b"POST /api/auth/register HTTP/1.1\r\n"
        + HOST
        + b"Content-Type: application/json\r\nContent-Length: "
        + n
        + b"\r\n\r\n"
        + hidden,
    }


ATTACKS = list(attacks("x@example.com"))


@pytest.fixture(scope="module")
def front(database_url) -> Iterator[Front]:
    with nginx_front(app_env(database_url)) as running:
        yield running


def users_named(database_url: str, email: str) -> int:
    return db_rows(database_url, "SELECT count(*) FROM users WHERE email = %s", (email,))[0][0]


def test_the_detectors_see_the_hidden_requests_when_they_are_sent_plainly(front, database_url):
    """The control: sent as requests of their own, the hidden GET is counted and the hidden
    registration writes its user, so the attacks below would show if they ran."""
    before = front.requests_seen()
    email = "plain-control@example.com"
    answers = exchange(front.nginx.port, HIDDEN_GET + hidden_register(email), expect=2)
    assert [response.status for response in answers] == [200, 201]
    seen = front.requests_seen() - before
    assert seen[HIDDEN_ROUTE] == 1 and seen[("POST", "/api/auth/register", "201")] == 1
    assert users_named(database_url, email) == 1


@pytest.mark.parametrize("name", ATTACKS)
def test_a_smuggling_attempt_is_refused_or_handled_as_one_request(front, database_url, name):
    email = f"smuggled-{ATTACKS.index(name)}@example.com"
    before = front.requests_seen()
    answers = exchange(front.nginx.port, attacks(email)[name])
    seen = front.requests_seen() - before
    assert len(answers) == 1, [(a.status, a.body[:80]) for a in answers]
    (answer,) = answers
    assert 400 <= answer.status < 500 or answer.status == 501, answer.status
    assert answer.headers["content-type"] == "application/problem+json"
    # at most the attack's own request reached the app; the hidden ones never ran
    assert sum(seen.values()) <= 1, seen
    assert seen[HIDDEN_ROUTE] == 0
    assert all(route in {"/healthz", "/api/auth/register"} for _, route, _ in seen), seen
    assert users_named(database_url, email) == 0
    # nothing was left on an upstream connection to answer the next client with
    for probe in range(4):
        request_id = f"after-{ATTACKS.index(name)}-{probe}"
        (follow_up,) = exchange(
            front.nginx.port,
            b"GET /healthz HTTP/1.1\r\n" + HOST + f"X-Request-ID: {request_id}\r\n\r\n".encode(),
            expect=1,
        )
        assert follow_up.status == 200 and follow_up.body == b'{"status":"ok"}'
        assert follow_up.headers["x-request-id"] == request_id

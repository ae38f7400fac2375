"""Client address: the socket peer, or X-Forwarded-For only as far as TRUSTED_PROXIES allows."""

from __future__ import annotations

import pytest
from falcon import testing

from shopapi.client_ip import client_ip, normalize

pytestmark = pytest.mark.no_db


def request(remote_addr: str | None = "10.0.0.1", xff: str | None = None):
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    return testing.create_req(path="/api/auth/me", remote_addr=remote_addr, headers=headers)


def test_without_trusted_proxies_the_socket_address_is_the_client():
    assert client_ip(request(xff="203.0.113.7"), trusted_proxies=0) == "10.0.0.1"


def test_one_trusted_proxy_gives_the_rightmost_forwarded_entry():
    req = request(xff="6.6.6.6, 203.0.113.7")
    assert client_ip(req, trusted_proxies=1) == "203.0.113.7"


def test_two_trusted_proxies_give_the_second_entry_from_the_right():
    req = request(xff="6.6.6.6, 203.0.113.7, 10.0.0.2")
    assert client_ip(req, trusted_proxies=2) == "203.0.113.7"


def test_spoofed_leftmost_entries_never_change_the_answer():
    answers = {
        client_ip(request(xff=f"{spoof}, 203.0.113.7"), trusted_proxies=1)
        for spoof in ("1.1.1.1", "2.2.2.2, 3.3.3.3", "garbage", "")
    }
    assert answers == {"203.0.113.7"}


def test_fewer_hops_than_trusted_proxies_falls_back_to_the_socket_address():
    assert client_ip(request(xff="203.0.113.7"), trusted_proxies=2) == "10.0.0.1"
    assert client_ip(request(xff=" , "), trusted_proxies=1) == "10.0.0.1"
    assert client_ip(request(), trusted_proxies=1) == "10.0.0.1"


def test_missing_remote_addr_is_falcons_loopback_default():
    assert client_ip(request(remote_addr=None), trusted_proxies=0) == "127.0.0.1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:51234", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("unknown", "unknown"),
        ("x" * 500, "x" * 64),
    ],
)
def test_addresses_are_normalized_so_one_client_has_one_key(raw, expected):
    assert normalize(raw) == expected

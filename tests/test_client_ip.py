"""Client address: the socket peer, or X-Forwarded-For only from a peer inside
TRUSTED_PROXY_NETWORKS and only as far as TRUSTED_PROXIES allows (issue 18 item 6)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from falcon import testing

from shopapi.client_ip import client_ip, inside, normalize
from shopapi.config import ROOT, ConfigError, Settings, _networks

pytestmark = pytest.mark.no_db

PROXIES = _networks("10.0.0.0/8, fd00::/8")


def request(remote_addr: str | None = "10.0.0.1", xff: str | None = None):
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    return testing.create_req(path="/api/auth/me", remote_addr=remote_addr, headers=headers)


def ip(req, trusted_proxies: int, networks=PROXIES) -> str:
    return client_ip(req, trusted_proxies, networks)


def test_without_trusted_proxies_the_socket_address_is_the_client():
    assert ip(request(xff="203.0.113.7"), trusted_proxies=0) == "10.0.0.1"


def test_one_trusted_proxy_gives_the_rightmost_forwarded_entry():
    req = request(xff="6.6.6.6, 203.0.113.7")
    assert ip(req, trusted_proxies=1) == "203.0.113.7"


def test_two_trusted_proxies_give_the_second_entry_from_the_right():
    req = request(xff="6.6.6.6, 203.0.113.7, 10.0.0.2")
    assert ip(req, trusted_proxies=2) == "203.0.113.7"


def test_spoofed_leftmost_entries_never_change_the_answer():
    answers = {
        ip(request(xff=f"{spoof}, 203.0.113.7"), trusted_proxies=1)
        for spoof in ("1.1.1.1", "2.2.2.2, 3.3.3.3", "garbage", "", "10.0.0.9")
    }
    assert answers == {"203.0.113.7"}


# ------------------------------------------------------------------ who may forward (item 6)


@pytest.mark.parametrize("peer", ["198.51.100.20", "11.0.0.1", "127.0.0.1", "fe80::1", "::1"])
def test_a_peer_outside_the_trusted_networks_is_the_client_whatever_it_forwards(peer):
    """Any machine (or container) that reaches the app directly cannot pick its own bucket."""
    for xff in ("203.0.113.7", "6.6.6.6, 203.0.113.7", "10.0.0.2"):
        assert ip(request(remote_addr=peer, xff=xff), trusted_proxies=1) == normalize(peer)
        assert ip(request(remote_addr=peer, xff=xff), trusted_proxies=2) == normalize(peer)


def test_no_trusted_networks_means_no_peer_is_a_proxy():
    req = request(remote_addr="10.0.0.1", xff="203.0.113.7")
    assert ip(req, trusted_proxies=1, networks=()) == "10.0.0.1"


def test_a_trusted_ipv6_or_ipv4_mapped_peer_is_honoured():
    assert ip(request(remote_addr="fd00::5", xff="203.0.113.7"), 1) == "203.0.113.7"
    assert ip(request(remote_addr="::ffff:10.1.2.3", xff="203.0.113.7"), 1) == "203.0.113.7"


def test_an_untrusted_hop_ends_the_walk_it_is_the_client():
    """A client that went around our outer proxy straight to the inner one: the inner proxy
    wrote the address it saw, the entries left of it are the client's own and never read."""
    req = request(xff="6.6.6.6, 10.0.0.3, 198.51.100.9")
    assert ip(req, trusted_proxies=2) == "198.51.100.9"
    # the same chain through both proxies: the outer one's entry is trusted, the next is read
    req = request(xff="6.6.6.6, 198.51.100.9, 10.0.0.3")
    assert ip(req, trusted_proxies=2) == "198.51.100.9"


def test_the_last_hop_walked_is_the_client_even_inside_the_networks():
    # an internal client behind our one proxy is still a client of its own
    assert ip(request(xff="6.6.6.6, 10.20.30.40"), trusted_proxies=1) == "10.20.30.40"


def test_fewer_trusted_hops_than_proxies_fall_back_to_the_socket_address():
    assert ip(request(xff="10.0.0.7"), trusted_proxies=2) == "10.0.0.1"
    assert ip(request(xff=" , "), trusted_proxies=1) == "10.0.0.1"
    assert ip(request(), trusted_proxies=1) == "10.0.0.1"
    # fewer entries, but one outside the networks: the address our proxy saw connect
    assert ip(request(xff="203.0.113.7"), trusted_proxies=2) == "203.0.113.7"


def test_missing_remote_addr_is_falcons_loopback_default():
    assert ip(request(remote_addr=None), trusted_proxies=0) == "127.0.0.1"


def test_inside_checks_both_families_and_refuses_non_addresses():
    assert inside("10.255.0.1", PROXIES) and inside("fd00::1", PROXIES)
    assert not inside("11.0.0.1", PROXIES) and not inside("fe80::1", PROXIES)
    assert not inside("garbage", PROXIES) and not inside("10.0.0.1", ())


# ------------------------------------------------------------------ the setting


def test_trusted_proxy_networks_parse_cidrs_and_bare_addresses():
    s = Settings.from_env(
        env={"TRUSTED_PROXIES": "1", "TRUSTED_PROXY_NETWORKS": "172.30.0.0/24, 10.0.0.5,fd00::/8"}
    )
    assert [str(n) for n in s.trusted_proxy_networks] == [
        "172.30.0.0/24",
        "10.0.0.5/32",
        "fd00::/8",
    ]
    assert Settings.from_env(env={}).trusted_proxy_networks == ()


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.5/8", "proxy.internal", "10.0.0.0/8;"])
def test_an_invalid_network_refuses_to_start(value):
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_NETWORKS"):
        Settings.from_env(env={"TRUSTED_PROXIES": "1", "TRUSTED_PROXY_NETWORKS": value})


def test_trusted_proxies_without_networks_refuses_to_start():
    """Else every request would count against the proxy's address: one bucket for everyone."""
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_NETWORKS"):
        Settings.from_env(env={"TRUSTED_PROXIES": "1"})


def _compose_default(value: str) -> str:
    """A compose value as it runs with no variable set: each `${NAME:-default}` its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_trusts_forwarded_for_only_from_nginx():
    """Trusting the stack's whole subnet let every container on it (worker, db, redis, mailpit)
    pick its own rate-limit bucket with X-Forwarded-For. Only nginx's fixed address is trusted
    now, and no other container can be given that address."""
    compose = yaml.safe_load(Path(ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    env = services["api"]["environment"]
    assert env["TRUSTED_PROXIES"] == "1"
    nginx = services["nginx"]["networks"]["default"]["ipv4_address"]
    # one variable places nginx and names the trusted address: overriding it moves both
    assert env["TRUSTED_PROXY_NETWORKS"] == f"{nginx}/32"
    trusted = _networks(_compose_default(env["TRUSTED_PROXY_NETWORKS"]))
    nginx_ip = ipaddress.ip_address(_compose_default(nginx))
    assert trusted == (ipaddress.ip_network(f"{nginx_ip}/32"),)
    # every other container is given an address from ip_range, which does not hold nginx's
    (ipam,) = compose["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(_compose_default(ipam["subnet"]))
    dynamic = ipaddress.ip_network(_compose_default(ipam["ip_range"]))
    assert nginx_ip in subnet and dynamic.subnet_of(subnet) and nginx_ip not in dynamic
    assert nginx_ip != next(subnet.hosts())  # the first address may be the gateway's
    assert [name for name, service in services.items() if "networks" in service] == ["nginx"]
    # so a forwarded address counts only when nginx sent it; any other peer is the client
    assert ip(request(str(nginx_ip), xff="203.0.113.7"), 1, trusted) == "203.0.113.7"
    for peer in dynamic:
        assert ip(request(str(peer), xff="203.0.113.7"), 1, trusted) == str(peer)


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

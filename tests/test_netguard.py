"""Webhook targets: http(s) only, no credentials, every resolved address public."""

from __future__ import annotations

import asyncio

import pytest

from shopapi.netguard import AddressRefused, checked_addresses, refused_because, url_target

pytestmark = pytest.mark.no_db


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://hooks.example.com/x", ("https", "hooks.example.com", 443)),
        ("http://hooks.example.com:8080/x?y=1", ("http", "hooks.example.com", 8080)),
        ("http://[2001:db8::1]/x", ("http", "2001:db8::1", 80)),
    ],
)
def test_http_urls_name_their_target(url, target):
    assert url_target(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http:///x",
        "https://user:pw@example.com/",
        "http://example.com:99999/",
        "javascript:alert(1)",
    ],
)
def test_other_urls_are_refused(url):
    with pytest.raises(AddressRefused):
        url_target(url)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata endpoint
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_non_public_addresses_are_named(address, kind):
    reason = refused_because(address)
    assert reason is not None and reason.startswith(kind), reason


def test_public_addresses_pass():
    assert refused_because("93.184.216.34") is None and refused_because("2606:4700::1") is None


def check(host, allow_private=False):
    return asyncio.run(checked_addresses(host, 80, allow_private=allow_private))


def test_names_are_resolved_and_every_address_checked():
    with pytest.raises(AddressRefused, match="loopback"):
        check("localhost")
    assert "127.0.0.1" in check("localhost", allow_private=True)
    with pytest.raises(AddressRefused, match="private"):
        check("10.0.0.7")
    assert check("93.184.216.34") == ["93.184.216.34"]


def test_a_name_that_does_not_resolve_is_refused_even_when_private_is_allowed():
    with pytest.raises(AddressRefused, match="does not resolve"):
        check("no-such-host.invalid", allow_private=True)

"""Where a webhook may point: http(s) URLs whose host resolves to public addresses only.

Checked when a webhook is created or changed and again at every delivery attempt (the name
may have been re-pointed since); `deliveries` then connects to the very address checked here.
WEBHOOK_ALLOW_PRIVATE=true (tests, `bin/dev`) lifts the address rule, never the scheme rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(Exception):
    """The URL or the address it resolves to is not an allowed target; the message says why."""


def url_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL without credentials in it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise AddressRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise AddressRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("must not carry credentials (the signature authenticates us)")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def refused_because(address: str) -> str | None:
    """Why an IP address is not a public target, or None when it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # most specific first: Python counts link-local and loopback ranges as private too
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{kind.replace('_', '-')} address {ip}"
    if not ip.is_global:  # shared (100.64/10), documentation, benchmarking ranges
        return f"non-public address {ip}"
    return None


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses `host` resolves to (without blocking the loop), all of them allowed;
    AddressRefused when it does not resolve or, unless allow_private, when any is not public
    (one bad address refuses the lot: the connection could go to any of them)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise AddressRefused(f"host {host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise AddressRefused(f"host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refused_because(address)
            if reason:
                raise AddressRefused(f"host {host} resolves to a {reason}")
    return addresses

"""TEMPORARY local stand-in (the webhooks branch delivers the real one)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(Exception):
    pass


def url_target(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise AddressRefused("not an http(s) URL")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise AddressRefused(f"{host} does not resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if not allow_private and not ip.is_global:
            raise AddressRefused(f"{host} resolves to a non-public address {a}")
    return addresses

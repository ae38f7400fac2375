"""Who is calling: the client address, trusting `X-Forwarded-For` only from our own proxies.

The socket address (`REMOTE_ADDR`) cannot be forged, so it is the answer unless two settings
agree that a reverse proxy of ours is talking to us:

- `TRUSTED_PROXY_NETWORKS` (CIDRs) says where our proxies live. A socket peer outside them is
  the client, whatever headers it sends: any other machine, or container, that reaches the app
  directly cannot pick its own rate-limit bucket. Empty (the default): no peer is a proxy.
- `TRUSTED_PROXIES=N` says how many proxies of ours sit in front of the app. Each appends the
  address it saw to `X-Forwarded-For`, so the last N entries were written by our proxies.

From a trusted peer the header is walked from the right, at most N entries. An entry outside
the networks cannot be one of our proxies: it is the address that connected to the proxy that
wrote it, so it is the client (a client that went around our outer proxy gets its own address,
never an address it wrote itself). The N-th entry is the client as our outermost proxy saw it,
wherever it is. Anything further left was sent by the client and is never read. A header with
fewer entries than N, all of them inside the networks, names no client: the peer is the answer.
"""

from __future__ import annotations

import functools
import ipaddress

import falcon

# a value our own proxy wrote should be an address; keep anything else short in rate-limit keys
_MAX_RAW = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]


def client_ip(req: falcon.Request, trusted_proxies: int, trusted_networks: Networks) -> str:
    """The client's address: the socket peer, or, when the peer is inside `trusted_networks`,
    the client `X-Forwarded-For` names by the rule of the module docstring."""
    peer = normalize(req.remote_addr)
    if trusted_proxies <= 0 or not trusted_networks or not inside(peer, trusted_networks):
        return peer
    header = req.get_header("X-Forwarded-For")
    if not header:
        return peer
    hops = [hop for hop in (part.strip() for part in header.split(",")) if hop]
    for depth, raw in enumerate(reversed(hops[-trusted_proxies:]), start=1):
        hop = normalize(raw)
        if depth == trusted_proxies or not inside(hop, trusted_networks):
            return hop
    return peer


@functools.lru_cache(maxsize=4096)
def inside(address: str, networks: Networks) -> bool:
    """Whether `address` (normalized text) is in one of `networks`; text that is no address
    is in none."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


@functools.lru_cache(maxsize=4096)
def normalize(raw: str) -> str:
    """Canonical text of an address: `::ffff:1.2.3.4` -> `1.2.3.4`, IPv6 compressed, a port
    (`1.2.3.4:5678`, `[2001:db8::1]:443`, written by some proxies) dropped."""
    text = raw.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return raw[:_MAX_RAW]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)

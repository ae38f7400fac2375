"""Who is calling: the client address, trusting `X-Forwarded-For` only as far as configured.

The socket address (`REMOTE_ADDR`) cannot be forged, so it is the answer unless
`TRUSTED_PROXIES=N` says N reverse proxies of ours sit in front of the app. Each proxy appends
the address it saw to `X-Forwarded-For`, so the last N entries were written by our proxies and
the N-th from the right is the client as our outermost proxy saw it. Anything further left was
sent by the client itself and is never read: a spoofed header cannot change the answer.
"""

from __future__ import annotations

import functools
import ipaddress

import falcon

# a value our own proxy wrote should be an address; keep anything else short in rate-limit keys
_MAX_RAW = 64


def client_ip(req: falcon.Request, trusted_proxies: int) -> str:
    """The client's address: socket peer, or the `trusted_proxies`-th `X-Forwarded-For` hop
    from the right. With fewer hops than trusted proxies the request did not come through them
    all (a direct hit or a misconfigured proxy), so the socket peer is the only honest answer."""
    if trusted_proxies > 0:
        header = req.get_header("X-Forwarded-For")
        if header:
            hops = [hop.strip() for hop in header.split(",")]
            hops = [hop for hop in hops if hop]
            if len(hops) >= trusted_proxies:
                return normalize(hops[-trusted_proxies])
    return normalize(req.remote_addr)


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

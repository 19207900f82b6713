"""Who sent a request: the connection's peer, or the address a trusted proxy in front of us saw."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = "x-forwarded-for"


def client_address(connection: ASGIConnection[Any, Any, Any, Any], trusted_proxies: Sequence[Network]) -> str:
    """`X-Forwarded-For` is read only when the peer is one of `trusted_proxies` (none by default): anyone else
    could write any address there. Read from the right, each hop appended by a trusted proxy is skipped; the
    first address that is not a trusted proxy is the client (what stands to its left was written by the client).
    """
    peer = connection.client.host if connection.client else "unknown"
    if not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for header in connection.headers.getall(FORWARDED_FOR, []) for hop in header.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return peer


def _is_trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)

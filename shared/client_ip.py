"""R10: whose address an access record holds: the socket peer, or behind proxies the office trusts,
the client they report.

A proxy header is only a claim, and anyone can send one. It is believed only when the peer that
sent it is one of the office's own proxies (`TRUSTED_PROXIES`, CIDRs; none by default, so the
socket peer is the client), and then read from the right: each proxy appends the address it saw, so
the first address, walking back, that is not a trusted proxy is the client. Which header the
proxies write is a setting too (`TRUSTED_PROXY_HEADER`: `x-forwarded-for` or RFC 7239 `forwarded`),
since a proxy passes the other one on unchecked. A hop that is not an address (`unknown`, an
obfuscated RFC 7239 identifier, garbage) ends the walk at the last trusted proxy: nothing beyond it
is known.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ProxyHeader = Literal["x-forwarded-for", "forwarded"]

#: a list element (split at ",") or a pair (split at ";"), keeping quoted strings whole (RFC 7230)
_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_PAIR = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+')


def address(text: str) -> Address | None:
    """An IP address as a peer or a proxy header writes it (`[v6]:port`, `v4:port`, quoted, bare);
    IPv4-mapped IPv6 as the IPv4 it is. None if it is no address."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has more colons
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_hops(values: Iterable[str]) -> list[str]:
    """The `for=` of every element of RFC 7239 `Forwarded` headers, left to right ("" if none)."""
    hops: list[str] = []
    for value in values:
        for element in _ELEMENT.findall(value):
            pairs = (pair.partition("=") for pair in _PAIR.findall(element))
            hops.append(next((v for k, _, v in pairs if k.strip().lower() == "for"), ""))
    return hops


class Headers(Protocol):
    """A request's headers (Starlette's), all values of one name in order."""

    def getlist(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class ClientIp:
    """Finds the client's address of a request; `trusted` are the office's own proxies."""

    trusted: Sequence[Network] = ()
    header: ProxyHeader = "x-forwarded-for"

    def is_trusted(self, ip: Address) -> bool:
        return any(ip in net for net in self.trusted)

    def hops(self, headers: Headers) -> list[str]:
        """What the proxies reported, left (farthest) to right (nearest)."""
        values = headers.getlist(self.header)
        if self.header == "forwarded":
            return forwarded_hops(values)
        return [hop for value in values for hop in value.split(",")]

    def of(self, peer: str | None, headers: Headers) -> str | None:
        """The client's address in canonical form; None if the peer is not an IP (a Unix socket)."""
        ip = address(peer) if peer else None
        if ip is None:
            return None
        if not self.is_trusted(ip):
            return ip.compressed  # R10: the socket peer; its proxy headers are only claims
        for hop in reversed(self.hops(headers)):
            reported = address(hop)
            if reported is None:
                break  # not an address: nothing beyond the last trusted proxy is known
            ip = reported
            if not self.is_trusted(ip):
                break
        return ip.compressed

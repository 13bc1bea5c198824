"""R10: whose address the access record holds, behind the proxies an office trusts. Pure, no servers."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers

from shared.client_ip import ClientIp, address, forwarded_hops
from shared.settings import ServiceSettings

PROXIES = ClientIp((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ff::/48")))


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(raw=[(k.lower().encode(), v.encode()) for k, v in pairs])


def test_r10_forwarded_for_is_trusted_only_from_configured_proxies() -> None:
    forged = headers(("X-Forwarded-For", "198.51.100.7"))
    assert ClientIp().of("203.0.113.5", forged) == "203.0.113.5"  # default: no proxy trusted
    assert ClientIp().of("127.0.0.1", forged) == "127.0.0.1"  # not even the loopback
    assert PROXIES.of("203.0.113.5", forged) == "203.0.113.5"  # a peer that is not our proxy
    assert PROXIES.of("10.1.2.3", forged) == "198.51.100.7"  # our proxy reports the client
    assert PROXIES.of("10.1.2.3", headers()) == "10.1.2.3"  # nothing reported: the proxy itself


def test_r10_forwarded_for_is_read_from_the_right_past_trusted_proxies_only() -> None:
    # the client wrote the first address itself; our two proxies appended what they saw
    chain = headers(("X-Forwarded-For", "192.0.2.66, 198.51.100.7"), ("X-Forwarded-For", "10.9.9.9"))
    assert PROXIES.of("10.1.2.3", chain) == "198.51.100.7"
    everyone_ours = headers(("X-Forwarded-For", "10.3.3.3, 10.2.2.2"))
    assert PROXIES.of("10.1.2.3", everyone_ours) == "10.3.3.3"
    unknown = headers(("X-Forwarded-For", "192.0.2.66, unknown, 10.2.2.2"))
    assert PROXIES.of("10.1.2.3", unknown) == "10.2.2.2"  # nothing beyond the last proxy is known
    ported = headers(("X-Forwarded-For", "[2001:DB8::1]:4711"))
    assert PROXIES.of("2001:db8:ff::2", ported) == "2001:db8::1"


def test_r10_rfc7239_forwarded_is_read_when_the_proxies_write_it() -> None:
    modern = ClientIp(PROXIES.trusted, "forwarded")
    sent = headers(
        ("Forwarded", 'for=192.0.2.66;proto=https, For="[2001:db8::7]:4711";by=10.0.0.1'),
        ("X-Forwarded-For", "203.0.113.99"),
    )
    assert modern.of("10.1.2.3", sent) == "2001:db8::7"
    assert PROXIES.of("10.1.2.3", sent) == "203.0.113.99"  # each reads only its configured header
    assert modern.of("10.1.2.3", headers(("Forwarded", "for=_hidden, for=10.0.0.9"))) == "10.0.0.9"
    assert forwarded_hops(['for="a,b";by=x, proto=http']) == ['"a,b"', ""]


def test_r10_addresses_are_canonical_whatever_the_spelling() -> None:
    assert address("198.51.100.7:443") == ipaddress.ip_address("198.51.100.7")
    assert address('"[2001:DB8:0::1]"') == ipaddress.ip_address("2001:db8::1")
    assert address("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    for bad in ("unknown", "_obf", "", "[2001:db8::1", "999.1.1.1"):
        assert address(bad) is None
    assert ClientIp().of(None, headers()) is None  # a Unix socket has no address


def test_r10_trusted_proxies_are_a_setting_of_cidrs() -> None:
    assert ServiceSettings().client_ip() == ClientIp((), "x-forwarded-for")
    s = ServiceSettings(trusted_proxies=["10.0.0.0/8", "192.0.2.10"], trusted_proxy_header="forwarded")
    assert s.client_ip().of("192.0.2.10", headers(("Forwarded", "for=198.51.100.1"))) == "198.51.100.1"
    with pytest.raises(ValidationError, match="trusted_proxies"):
        ServiceSettings(trusted_proxies=["not-a-network"])
    with pytest.raises(ValidationError, match="trusted_proxy_header"):
        ServiceSettings(trusted_proxy_header="x-real-ip")

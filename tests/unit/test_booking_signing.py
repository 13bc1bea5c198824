"""HMAC request signing (issue 8): the canonical string, the derived per-portal secret."""

from __future__ import annotations

import hashlib
import hmac

from services.booking.signing import canonical, sign, signing_secret


def test_canonical_string_names_timestamp_method_path_and_body_hash() -> None:
    body = b'{"a": 1}'
    assert canonical("1700000000", "post", "/v1/offices/x/bookings", body) == (
        f"1700000000.POST./v1/offices/x/bookings.{hashlib.sha256(body).hexdigest()}".encode()
    )


def test_signature_is_hmac_sha256_of_the_canonical_string() -> None:
    expected = hmac.new(b"s3cret", canonical("1", "POST", "/p", b""), hashlib.sha256).hexdigest()
    assert sign("s3cret", "1", "POST", "/p", b"") == expected


def test_any_change_changes_the_signature() -> None:
    base = sign("k", "100", "POST", "/p", b"body")
    assert base != sign("k", "101", "POST", "/p", b"body")
    assert base != sign("k", "100", "PUT", "/p", b"body")
    assert base != sign("k", "100", "POST", "/q", b"body")
    assert base != sign("k", "100", "POST", "/p", b"bodY")
    assert base != sign("k2", "100", "POST", "/p", b"body")


def test_each_portal_has_its_own_secret_derived_from_the_service_key() -> None:
    a, b = signing_secret("service-key", "portal-a"), signing_secret("service-key", "portal-b")
    assert a != b
    assert a == signing_secret("service-key", "portal-a")
    assert a != signing_secret("other-service-key", "portal-a")
    assert len(a) == 64

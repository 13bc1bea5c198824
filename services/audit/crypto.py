"""Keys and the two protections of R11: keyed-hash pseudonyms for what stays queryable, and AES-GCM
seals for the raw device values that only a legal disclosure may open."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.audit.config import Settings
from shared.mongo import Doc

AES_KEY_SIZES = (16, 24, 32)


def derive(secret: str, label: str) -> bytes:
    """A 32-byte key for one purpose, derived from the service secret (dev and small deployments)."""
    return hmac.new(secret.encode(), f"consult-audit:{label}".encode(), hashlib.sha256).digest()


def decode_aes_key(text: str) -> bytes:
    try:
        std = text.strip().replace("-", "+").replace("_", "/")  # accept both alphabets
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("seal key is not base64") from exc
    if len(raw) not in AES_KEY_SIZES:
        raise ValueError(f"seal key must decode to 16, 24 or 32 bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True)
class Keys:
    pseudonym: bytes
    chain: bytes
    seal: Mapping[str, bytes]
    seal_id: str

    @classmethod
    def from_settings(cls, s: Settings) -> Keys:
        seal = {kid: decode_aes_key(v) for kid, v in s.audit_seal_keys.items()}
        seal_id = s.audit_seal_key_id or (next(iter(seal)) if seal else "derived-1")
        if not seal:
            seal = {seal_id: derive(s.secret_key, "seal")}
        if seal_id not in seal:
            raise ValueError(f"AUDIT_SEAL_KEY_ID {seal_id!r} is not among AUDIT_SEAL_KEYS")
        return cls(
            pseudonym=s.audit_pseudonym_key.encode() or derive(s.secret_key, "pseudonym"),
            chain=s.audit_chain_key.encode() or derive(s.secret_key, "chain"),
            seal=seal,
            seal_id=seal_id,
        )


def _normalise(kind: str, value: str) -> str:
    """One spelling per real value, so the same device always gets the same pseudonym."""
    value = value.strip()
    if kind == "ip":
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value
    if kind in ("email", "device"):
        return value.lower()
    return value


class Pseudonymiser:
    """R11/R12: keyed hash; without the key nobody can test a guessed device id or address against it."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, kind: str, value: str) -> str:
        msg = f"{kind}:{_normalise(kind, value)}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]


class Sealer:
    """AES-GCM with the record id as associated data, so a sealed value cannot be moved to another record."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        self._keys = keys
        self._active = active

    def seal(self, values: Mapping[str, str], aad: str) -> Doc:
        nonce = os.urandom(12)
        plain = json.dumps(dict(values), sort_keys=True, ensure_ascii=False).encode()
        ct = AESGCM(self._keys[self._active]).encrypt(nonce, plain, aad.encode())
        return {"key_id": self._active, "nonce": nonce, "ciphertext": ct}

    def open(self, sealed: Doc, aad: str) -> dict[str, str]:
        key = self._keys.get(sealed["key_id"])
        if key is None:
            raise KeyError(f"seal key {sealed['key_id']!r} is not configured")
        plain = AESGCM(key).decrypt(bytes(sealed["nonce"]), bytes(sealed["ciphertext"]), aad.encode())
        return dict(json.loads(plain))

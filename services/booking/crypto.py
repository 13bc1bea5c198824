"""R12: personal data at rest, encrypted per field (AES-GCM), with keyed hashes to look it up.

A sealed value is `<key id>:<base64(nonce | ciphertext)>`. The key id lets keys rotate: new values are
sealed with the current key, old ones still open with the key they name. The field's context (which
document, which field) is bound in as associated data, so a ciphertext copied to another document or
field does not open. Look-ups (a person's phone, a job-seeker number) go through HMAC-SHA256 with a
separate key derived from the service secret, never through the plain value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class VaultError(Exception):
    pass


def derive(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the service secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"consult-booking", info=purpose.encode())
    return hkdf.derive(secret.encode())


class Vault:
    def __init__(self, keys: dict[str, bytes], current: str, hash_key: bytes) -> None:
        if current not in keys:
            raise VaultError(f"current key {current!r} is not among the keys")
        if any(len(k) != 32 or ":" in kid for kid, k in keys.items()):
            raise VaultError("keys must be 32 bytes (AES-256) and their ids must not contain ':'")
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}
        self.current = current
        self._hash_key = hash_key

    @classmethod
    def from_secret(cls, secret: str, keys: dict[str, str] | None = None, current: str = "") -> Vault:
        """Configured keys (base64) if given; otherwise one key derived from the secret ('s1')."""
        raw = {kid: base64.b64decode(v) for kid, v in (keys or {}).items()}
        if not raw:
            raw, current = {"s1": derive(secret, "pii-field-key")}, "s1"
        return cls(raw, current or sorted(raw)[-1], derive(secret, "lookup-hash"))

    def seal(self, value: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead[self.current].encrypt(nonce, value.encode(), context.encode())
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> str:
        kid, _, data = token.partition(":")
        aead = self._aead.get(kid)
        if aead is None:
            raise VaultError(f"no key {kid!r} to open a sealed value")
        raw = base64.b64decode(data)
        return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def stale(self, token: str) -> bool:
        """Sealed with a key other than the current one: to be re-sealed on the next write."""
        return not token.startswith(f"{self.current}:")

    def index(self, kind: str, value: str) -> str:
        """Keyed hash of a normalised value, for exact look-ups without the value itself."""
        return hmac.new(self._hash_key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def person_key(self, office_id: str, identity: Iterable[tuple[str, str]]) -> str:
        """R09: one pseudonym per person and office, from the policy's identifying fields."""
        parts = "\x1f".join(f"{k}={v}" for k, v in identity)
        return "p_" + self.index(f"person:{office_id}", parts)[:40]

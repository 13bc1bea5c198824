"""R12: what a service keeps of an event (its outbox, its parked and delayed copies) rests sealed.

A `Sealer` turns text into `<key id>:<base64(nonce | AES-GCM ciphertext)>` and back, binding a
context (which event, which queue) as associated data, so a sealed value copied elsewhere does not
open. The booking service's field vault (`services.booking.crypto.Vault`) is one, with its
configured, rotatable keys; `SecretSealer` is the one every other service derives from its
`SECRET_KEY`.
"""

from __future__ import annotations

import base64
import os
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Sealer(Protocol):
    def seal(self, value: str, context: str) -> str: ...

    def open(self, token: str, context: str) -> str: ...


class SealError(Exception):
    """A sealed value that does not open: no key of that id, or not sealed for this context."""


class SecretSealer:
    """AES-256-GCM under a key derived (HKDF-SHA256) from the service secret for one purpose."""

    KEY_ID = "t1"

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a 32-byte key is required")
        self._aead = AESGCM(key)

    @classmethod
    def from_secret(cls, secret: str, purpose: str) -> SecretSealer:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"consult-sealing", info=purpose.encode())
        return cls(hkdf.derive(secret.encode()))

    def seal(self, value: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), context.encode())
        return f"{self.KEY_ID}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> str:
        kid, _, data = token.partition(":")
        if kid != self.KEY_ID:
            raise SealError(f"no key {kid!r} to open a sealed value")
        try:
            raw = base64.b64decode(data, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except Exception as exc:  # InvalidTag, bad base64, not UTF-8
            raise SealError(f"a sealed value that does not open here: {type(exc).__name__}") from exc

"""API keys stored as the SHA-256 of the key, `_id` = the hash (booking's portal and staff keys, the
scheduler's staff keys): the person behind each, its public key id, and revoking one by that id.

Keys are 256-bit random strings, so a plain hash is enough to store them. A key's id is its prefix and
the first 12 hex digits of the hash (`csk-1a2b3c4d5e6f`): what the access record names as
`credential`, and what `revoke-key` takes; anyone holding the key can work it out, nobody can go back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared import acting
from shared.mongo import Doc

KEY_ID = re.compile(r"([a-z]+)-([0-9a-f]{12})")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def key_id(prefix: str, digest: str) -> str:
    """The public id of the key stored as `digest` (`csk-1a2b3c4d5e6f`)."""
    return f"{prefix}-{digest[:12]}"


@dataclass(frozen=True)
class Holder:
    """Who holds a new key: a person (default: derived from the display name, else from the staff
    id; shared/acting.py), a display name, roles, and whether it is the console's (`delegates`)."""

    person: str | None = None
    name: str | None = None
    roles: Collection[str] = ()
    delegates: bool = False

    def fields(self, subject: str, allowed: Collection[str], default: Collection[str]) -> dict[str, Any]:
        """What the key's document says of its holder; ValueError for a role these keys lack or a
        person id that is none."""
        held = set(self.roles or default)
        if unknown := sorted(held - set(allowed)):
            raise ValueError(f"unknown roles {unknown}: these keys hold {sorted(allowed)}")
        who = acting.person_for(self.person, self.name or subject)
        return {"person": who, "name": self.name or who, "roles": sorted(held), "delegates": self.delegates}


def holder_of(doc: Doc, prefix: str, default_roles: Collection[str]) -> dict[str, Any]:
    """The holder of a stored key: a key stored before persons existed is its own person (its key id)
    with the roles its kind always had."""
    kid = key_id(prefix, str(doc["_id"]))
    return {
        "key_id": kid,
        "person": str(doc.get("person") or kid),
        "roles": frozenset(doc.get("roles") or default_roles),
        "delegates": bool(doc.get("delegates")),
    }


async def revoke_key(
    collection: AsyncCollection[Doc], kid: str, prefix: str, *, now: datetime, by: str
) -> Doc | None:
    """Revoke the key with this id: from now on it opens nothing. The key's document as it was, or
    None for an id of another prefix, an unknown or ambiguous one, or a key revoked already."""
    match = KEY_ID.fullmatch(kid)
    if match is None or match[1] != prefix:
        return None
    found = await collection.find({"_id": {"$regex": f"^{match[2]}"}}).to_list(2)
    if len(found) != 1 or found[0].get("revoked"):
        return None
    changes = {"revoked": True, "revoked_at": now, "revoked_by": by}
    await collection.update_one({"_id": found[0]["_id"]}, {"$set": changes})
    return found[0]

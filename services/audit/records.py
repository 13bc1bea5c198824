"""From an event to an audit record: what stays queryable, what is pseudonymised, what is sealed.

R10: every event, access log, device log and usage window becomes one record.
R11: device ids, IP addresses and user agents leave the queryable record; it keeps keyed-hash
pseudonyms, and the raw values go to the sealed collection, opened only by a legal disclosure.
R12: a recipient (name, email) is personal data: the email becomes a keyed hash, the rest is dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.clock import jst
from shared.events import AccessLogged, BookingAttended, BookingCompleted, DeviceRecorded, Envelope
from shared.mongo import Doc, as_stored

Pseudonymise = Callable[[str, str], str]

#: payload field -> pseudonym kind; the raw value is sealed (R11)
DEVICE_FIELDS = {"device_id": "device", "ip_address": "ip", "user_agent": "ua"}
#: contact fields kept only as keyed hashes (R12)
CONTACT_FIELDS = {"email": "email", "phone": "phone"}
#: objects that describe a person: only their hashed contact fields survive (R12)
PERSON_OBJECTS = frozenset({"recipient", "person", "contact"})

KINDS = {
    AccessLogged.TYPE: "access",
    DeviceRecorded.TYPE: "device",
    BookingAttended.TYPE: "usage",
    BookingCompleted.TYPE: "usage",
}
ACTOR_FIELDS = ("actor", "recorded_by", "lifted_by")
SYSTEM_STREAM = "_system"  # events without an office (anonymous access logs)
AUDIT_STREAM = "_audit"  # the audit service's own acts: disclosures, keys


def ms(at: datetime) -> datetime:
    """BSON keeps milliseconds: cut the rest before hashing so the stored record hashes the same."""
    return as_stored(at)


def stream_of(office_id: str) -> str:
    return office_id if office_id and office_id != "-" else SYSTEM_STREAM


@dataclass
class Entry:
    """A record before it is chained, and the raw values to seal beside it."""

    record: Doc
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.record["_id"])

    @property
    def stream(self) -> str:
        return str(self.record["stream"])


class _Redactor:
    def __init__(self, pseudonymise: Pseudonymise) -> None:
        self.pseudonymise = pseudonymise
        self.secrets: dict[str, str] = {}
        self.keys: dict[str, str] = {}  # first pseudonym of each kind, lifted to the record

    def _key(self, kind: str, value: str) -> str:
        key = self.pseudonymise(kind, value)
        self.keys.setdefault(f"{kind}_key", key)
        return key

    def walk(self, value: Any, path: str = "") -> Any:
        if isinstance(value, list):
            return [self.walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for k, v in value.items():
            here = f"{path}.{k}" if path else k
            if k in DEVICE_FIELDS and isinstance(v, str):
                self.secrets[here] = v  # R11: raw value sealed, never queryable
                out[f"{DEVICE_FIELDS[k]}_key"] = self._key(DEVICE_FIELDS[k], v)
            elif k in CONTACT_FIELDS and isinstance(v, str):
                out[f"{k}_key"] = self._key(CONTACT_FIELDS[k], v)  # R12
            elif k in PERSON_OBJECTS and isinstance(v, dict):
                out[k] = {
                    f"{c}_key": self._key(kind, v[c])
                    for c, kind in CONTACT_FIELDS.items()
                    if isinstance(v.get(c), str)
                }  # R12: name and anything else about the person dropped
            else:
                out[k] = self.walk(v, here)
        return out


def _usage(event_type: str, payload: Doc) -> Doc:
    """R10: the actual usage time window of a consultation: from when the person joined (else from
    the start staff recorded, when the person only made contact) to the end staff recorded."""
    if event_type == BookingCompleted.TYPE:
        joined = payload.get("attended_how") == "joined" and payload.get("attended_at")
        start = datetime.fromisoformat(joined or payload["started_at"])
        end = datetime.fromisoformat(payload["ended_at"])
        return {
            "usage_start": ms(start),
            "usage_end": ms(end),
            "usage_minutes": round((end - start).total_seconds() / 60, 1),
            "usage_from": "joined" if joined else "recorded_start",
        }
    if event_type == BookingAttended.TYPE:
        return {"usage_start": ms(datetime.fromisoformat(payload["at"]))}
    return {}


def from_event(event: Envelope[Any], *, now: datetime, pseudonymise: Pseudonymise) -> Entry:
    raw = event.payload.model_dump(mode="json")
    redactor = _Redactor(pseudonymise)
    payload = redactor.walk(raw)
    usage = _usage(event.type, raw)
    kind = KINDS.get(event.type) or ("device" if redactor.secrets else "event")
    actor = next((raw[f] for f in ACTOR_FIELDS if isinstance(raw.get(f), str)), None)
    record: Doc = {
        "_id": str(event.event_id),
        "event_id": str(event.event_id),
        "type": event.type,
        "version": event.version,
        "kind": kind,
        "stream": stream_of(event.office_id),
        "office_id": event.office_id,
        "producer": event.producer,
        "occurred_at": ms(event.occurred_at),
        "recorded_at": ms(now),
        "correlation_id": str(event.correlation_id),
        "causation_id": str(event.causation_id) if event.causation_id else None,
        "booking_id": raw.get("booking_id"),
        "actor": actor,
        **redactor.keys,
        **usage,
        **_when(usage.get("usage_start") or event.occurred_at),
        "sealed": bool(redactor.secrets),
        "payload": payload,
    }
    return Entry({k: v for k, v in record.items() if v is not None}, redactor.secrets)


def internal(type_: str, *, actor: str, details: Doc, now: datetime, stream: str = AUDIT_STREAM) -> Entry:
    """A record of the audit service's own acts (disclosure requests, approvals, purges, keys)."""
    eid = str(uuid.uuid4())
    return Entry(
        {
            "_id": eid,
            "event_id": eid,
            "type": type_,
            "version": 1,
            "kind": "audit",
            "stream": stream,
            "office_id": stream,
            "producer": "audit",
            "occurred_at": ms(now),
            "recorded_at": ms(now),
            "correlation_id": eid,
            "actor": actor,
            **_when(now),
            "sealed": False,
            "payload": details,
        }
    )


def _when(at: datetime) -> Doc:
    """JST day and hour, the cells of the usage statistics."""
    local = jst(at)
    return {"day": local.date().isoformat(), "hour": local.hour}

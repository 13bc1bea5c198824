"""Legal disclosure (R11): the only way back from a pseudonym to a device or address.

A request names its legal basis, the requesting authority and its reference number, and a narrow
scope. A second person holding the `disclosure-approver` role approves it (four eyes: never the
person who requested it, whichever of their keys either uses, the console's included). Only then may
the requester or the approver (as persons) open the sealed values in scope, within the approval's
validity; the request, the decision and every opening are audit records themselves, naming the person
and the key.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from services.audit.auth import APPROVER, Caller
from services.audit.search import Filters
from shared.mongo import Doc
from shared.text import CleanText

Status = Literal["requested", "approved", "rejected"]


class Refused(Exception):
    def __init__(self, status_code: int, reason: str, rule: str | None = None) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.rule = rule


class Scope(CleanText):
    """Which records: at least one of booking, device or IP pseudonym, optionally office and time."""

    model_config = ConfigDict(extra="forbid")

    office_id: str | None = Field(None, max_length=64)
    booking_id: str | None = Field(None, max_length=64)
    device_key: str | None = Field(
        None, max_length=100, description="device pseudonym from the audit records"
    )
    ip_key: str | None = Field(
        None, max_length=100, description="IP address pseudonym from the audit records"
    )
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _narrow(self) -> Scope:
        if not (self.booking_id or self.device_key or self.ip_key):
            raise ValueError("name a booking_id, device_key or ip_key: a disclosure is never a bulk export")
        return self

    def filters(self) -> Filters:
        return Filters(
            since=self.since,
            until=self.until,
            office_id=self.office_id,
            booking_id=self.booking_id,
            device_key=self.device_key,
            ip_key=self.ip_key,
        )


class DisclosureIn(CleanText):
    PROSE: ClassVar[frozenset[str]] = frozenset({"note"})

    model_config = ConfigDict(extra="forbid")

    legal_basis: str = Field(
        min_length=2, max_length=200, description="law and article, e.g. 刑事訴訟法第197条第2項"
    )
    authority: str = Field(
        min_length=2, max_length=200, description="requesting government or investigative body"
    )
    reference_number: str = Field(min_length=1, max_length=100, description="the authority's document number")
    scope: Scope
    note: str | None = Field(None, max_length=2000)


def new_request(body: DisclosureIn, caller: Caller, now: datetime) -> Doc:
    return {
        "_id": f"dr-{uuid.uuid4().hex[:16]}",
        "status": "requested",
        "legal_basis": body.legal_basis,
        "authority": body.authority,
        "reference_number": body.reference_number,
        "scope": body.scope.model_dump(mode="json", exclude_none=True),
        "note": body.note,
        "requested_by": caller.key_id,
        "requested_by_person": caller.who,
        "requested_at": now,
        "disclosed": 0,
        "records": 0,
    }


def requester(doc: Doc) -> str:
    """The person who requested it (a request stored before persons: its key, its own person)."""
    return str(doc.get("requested_by_person") or doc["requested_by"])


def decider(doc: Doc) -> str | None:
    return doc.get("decided_by_person") or doc.get("decided_by")


def decide(doc: Doc, caller: Caller, *, approve: bool, now: datetime, reason: str | None = None) -> Doc:
    """The approver's decision as field changes; refuses the wrong role and the requesting person."""
    if APPROVER not in caller.roles:
        raise Refused(403, "only a disclosure-approver decides on a disclosure request")
    if caller.who == requester(doc):  # R11: people, not keys: another key of theirs is still them
        raise Refused(
            409,
            f"four eyes: {caller.who} requested this disclosure and cannot decide on it, with any key; "
            "another person must",
            rule="R11",
        )
    if doc["status"] != "requested":
        raise Refused(409, f"the request is already {doc['status']}")
    status: Status = "approved" if approve else "rejected"
    return {
        "status": status,
        "decided_by": caller.key_id,
        "decided_by_person": caller.who,
        "decided_at": now,
        "decision_reason": reason,
    }


def check_open(doc: Doc, caller: Caller, now: datetime, valid_days: int) -> None:
    """May this caller open the sealed values now?"""
    if doc["status"] != "approved":
        raise Refused(409, f"the request is {doc['status']}, not approved")
    if caller.who not in (requester(doc), decider(doc)):
        raise Refused(403, "only the requester or the approver of this request may open it")
    if now > doc["decided_at"] + timedelta(days=valid_days):
        raise Refused(409, "the approval has expired; file a new request")


def summary(doc: Doc) -> Doc:
    """What an audit record keeps of a request: no raw values, the legal grounds in full."""
    keys = (
        "legal_basis",
        "authority",
        "reference_number",
        "scope",
        "requested_by",
        "requested_by_person",
        "status",
    )
    return {"disclosure_id": doc["_id"], **{k: doc[k] for k in keys if k in doc}}

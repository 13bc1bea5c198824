"""Who calls the scheduler's HTTP API: a staff key (`X-Staff-Key`, or `Authorization: Bearer`, or
`X-API-Key`), held by a person; the console's key acting for the person a request names.

Made with `consultctl scheduler staff-key create`, stored hashed in the scheduler's database. The
access log and what staff did (`confirmed_by`, a proposal's `by`) name the person (R10); the access
record also carries the key's id (`credential`). The staff routes need the role `staff` and an office
the key acts for (issue 8); a counsellor's schedule is read by staff of its office or by that
counsellor (role `counsellor`) alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, HTTPException, Request

from services.scheduler.availability import Counsellor
from services.scheduler.store.counsellors import CounsellorStore
from services.scheduler.store.requests import RequestStore
from services.scheduler.store.staff_keys import COUNSELLOR, OPERATOR, STAFF, StaffKey, StaffKeyStore
from shared.acting import as_requested


@dataclass(frozen=True)
class StaffCaller:
    key: StaffKey

    @property
    def actor(self) -> str:
        """The person, for the access log and the request's history (R10)."""
        return self.key.person

    def office_for_timers(self, office_id: str | None) -> str | None:
        """The office a timer query may look at: the one asked for, else the key's own office."""
        if office_id is not None or self.key.every_office:
            return office_id
        if len(self.key.offices) == 1:
            return self.key.offices[0]
        raise HTTPException(403, "this key acts for several offices: name one (office_id)")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def authenticated(keys: StaffKeyStore, request: Request, x_staff_key: str) -> StaffKey:
    """The key presented, as the request uses it (the console: for the person named); 401/403."""
    presented = x_staff_key or _bearer(request) or request.headers.get("x-api-key", "")
    key = await keys.find(presented) if presented else None
    if key is None:
        raise HTTPException(
            401, "a scheduler staff key is required (X-Staff-Key)", {"WWW-Authenticate": "Bearer"}
        )
    return as_requested(request, key)


def staff_auth(keys: StaffKeyStore, requests: RequestStore) -> Any:
    """Dependency: the caller's staff key, with the role staff, valid for the office this request is
    about (the office in the path, of the request in the path, or of a timer query)."""

    async def staff(request: Request, x_staff_key: Annotated[str, Header()] = "") -> StaffCaller:
        key = await authenticated(keys, request, x_staff_key)
        office_id = request.path_params.get("office_id")
        if office_id is None and "booking_id" in request.path_params:
            doc = await requests.get(request.path_params["booking_id"])
            if doc is None:
                raise HTTPException(404, "no such request")
            office_id = doc["office_id"]
        office_id = office_id or request.query_params.get("office_id")
        request.state.office_id = office_id
        if STAFF not in key.roles:
            raise HTTPException(403, f"{key.person} acts without the role {STAFF}")
        if office_id is not None and not key.may_act_for(office_id):
            raise HTTPException(403, f"{key.person} may not act for {office_id}")
        return StaffCaller(key)

    return staff


def schedule_auth(keys: StaffKeyStore, counsellors: CounsellorStore) -> Any:
    """Dependency: the counsellor whose schedule the caller may read: staff of the counsellor's office,
    or the counsellor (role counsellor, naming themselves) of an office they act for; else 403."""

    async def reader(
        counsellor_id: str, request: Request, x_staff_key: Annotated[str, Header()] = ""
    ) -> Counsellor:
        key = await authenticated(keys, request, x_staff_key)
        counsellor = await counsellors.get(counsellor_id)
        if counsellor is None:
            raise HTTPException(404, "no such counsellor")
        request.state.office_id = counsellor.office_id
        if key.may_act_for(counsellor.office_id) and (
            STAFF in key.roles or (COUNSELLOR in key.roles and key.counsellor == counsellor_id)
        ):
            return counsellor
        raise HTTPException(403, f"{key.person} may not read the schedule of {counsellor_id}")

    return reader


def operator_auth(keys: StaffKeyStore) -> Any:
    """Dependency: a staff key (or the console for a person) with the role `operator`; 403 else."""

    async def operator(request: Request, x_staff_key: Annotated[str, Header()] = "") -> StaffKey:
        key = await authenticated(keys, request, x_staff_key)
        if OPERATOR not in key.roles:
            raise HTTPException(403, f"{key.person} acts without the role {OPERATOR}")
        return key

    return operator

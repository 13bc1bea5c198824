"""R12, R11: nothing personal rests in clear anywhere, once bookings have gone through the whole system.

Bookings with distinctive personal data (name, reading, address, phone, email, job-seeker number, topic,
My Page address, device id, user agent, IP) flow through confirmation, cancellation, refusal, emails
and audit; a portal's command is parked. Then every document of every database of the run's prefix and
every parked or delayed message of the run's vhost is searched for those values and for their unkeyed
hashes (sha256, sha1, md5 hex): none may be there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
from bson import json_util
from pymongo import AsyncMongoClient

from examples import forms
from shared import topology
from shared.calendar import OfficeCalendar
from shared.commands import normalize_email, normalize_phone
from tests import support
from tests.e2e.test_booking_flows import HW, KG, now, policy
from tests.support import Mailpit, eventually
from tests.support.booking import publish
from tests.support.stack import AUDITOR_KEY, BOOKING_STAFF_KEY, PORTAL_KEY, Stack

PORTAL = {"Authorization": f"Bearer {PORTAL_KEY}"}
STAFF = {"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}
AUDITOR = {"Authorization": f"Bearer {AUDITOR_KEY}"}


def _letters(n: int) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=n))


def _digits(n: int) -> str:
    return "".join(random.choices(string.digits, k=n))


def _phone(prefix: str, groups: tuple[int, int]) -> str:
    """A random phone number that the form's validator takes (the first digit of a group not 0)."""
    while True:
        a, b = random.choice("23456789") + _digits(groups[0] - 1), _digits(groups[1])
        candidate = f"{prefix}-{a}-{b}"
        try:
            normalize_phone(candidate)
        except ValueError:
            continue
        return candidate


@dataclass
class Secrets:
    """The personal values of this run, each under a label, with their stored spellings."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: str, *spellings: str) -> str:
        self.values[label] = value
        for i, s in enumerate(spellings):
            if s != value:
                self.values[f"{label} ({i + 1})"] = s
        return value

    def needles(self) -> dict[str, str]:
        """Lower-cased text to look for -> what it is: the values and their unkeyed hashes."""
        out: dict[str, str] = {}
        for label, value in self.values.items():
            for v in {value, value.lower(), value.upper()}:
                out[v.lower()] = label
                for algo in ("sha256", "sha1", "md5"):
                    out[hashlib.new(algo, v.encode()).hexdigest()] = f"{algo}({label})"
        return out


def _text(obj: Any) -> str:
    return json_util.dumps(obj, ensure_ascii=False).lower()


async def _scan_databases(prefix: str, needles: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """Every document of every database of the prefix; returns the findings and documents per collection."""
    findings: list[str] = []
    seen: dict[str, int] = {}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
    try:
        for db_name in await support.database_names(client):
            if not db_name.startswith(prefix):
                continue
            db = client[db_name]
            for coll in await db.list_collection_names():
                seen[f"{db_name}.{coll}"] = 0
                async for doc in db[coll].find({}):
                    seen[f"{db_name}.{coll}"] += 1
                    text = _text(doc)
                    findings += [
                        f"{db_name}.{coll} {doc.get('_id')!r}: {label}"
                        for needle, label in needles.items()
                        if needle in text
                    ]
    finally:
        await client.close()
    return findings, seen


async def _resting_messages(stack: Stack) -> list[tuple[str, dict[str, Any], str]]:
    """Parked and delayed messages of the run's vhost (left where they are): queue, message, body."""
    vhost = quote(stack.amqp_url.rsplit("/", 1)[1], safe="")
    out: list[tuple[str, dict[str, Any], str]] = []
    async with httpx.AsyncClient(timeout=20) as c:
        queues = (await c.get(f"{support.RABBITMQ_API}/queues/{vhost}")).raise_for_status().json()
        for q in queues:
            name = q["name"]
            if not (name.endswith(".parking") or ".delay." in name) or not q.get("messages"):
                continue
            body = {"count": int(q["messages"]) + 10, "ackmode": "ack_requeue_true", "encoding": "auto"}
            got = await c.post(f"{support.RABBITMQ_API}/queues/{vhost}/{quote(name, safe='')}/get", json=body)
            for m in got.raise_for_status().json():
                payload = str(m.get("payload", ""))
                if m.get("payload_encoding") == "base64":
                    payload = base64.b64decode(payload).decode("utf-8", errors="replace")
                out.append((name, m, payload))
    return out


@dataclass
class Run:
    """What one run sends, and the personal values in it."""

    tag: str = field(default_factory=lambda: _letters(10))
    pii: Secrets = field(default_factory=Secrets)
    kg: dict[str, Any] = field(default_factory=dict)
    hw: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    parked: dict[str, Any] = field(default_factory=dict)

    @property
    def stranger(self) -> str:
        return f"pii-{self.tag}-portal"

    def __post_init__(self) -> None:
        tag, add = self.tag, self.pii.add
        octets = ".".join(str(random.randint(1, 254)) for _ in range(3))
        kg_phone, hw_phone, parked_phone = (
            _phone("0154", (2, 4)),
            _phone("090", (4, 4)),
            _phone("011", (3, 4)),
        )
        email = f"piiscan.{tag}@example.jp"
        self.kg = {  # KG: the person's fields, and the device the portal saw with the form
            "name": add("KG name", f"Piiscan {tag.capitalize()}"),
            "name_kana": add(
                "KG reading", "ピイスキャン " + "".join(random.choices("アイウエオカキクケコサシスセソ", k=8))
            ),
            "address": add("KG address", f"北海道釧路市幸町{_digits(3)}-{_digits(2)} ピイ{tag}荘"),
            "phone": add("KG phone", kg_phone, normalize_phone(kg_phone), kg_phone.replace("-", "")),
            "email": add("KG email", email, normalize_email(email)),
            "device": {
                "user_agent": add("form user agent", f"Mozilla/5.0 (PiiScan; {tag}) Teams/1.7"),
                "ip_address": add("form IP", f"10.{octets}"),
                "device_id": add("form device id", f"DEV-PIISCAN-{tag.upper()}"),
                "app_version": "1.7",
            },
        }
        self.hw = {  # HW: the job-seeker registry (with the My Page address) and the booking
            "jobseeker_number": add("HW job-seeker number", f"{_digits(5)}-{_digits(8)}"),
            "phone": add("HW phone", hw_phone, normalize_phone(hw_phone), hw_phone.replace("-", "")),
            "name": add("HW name", f"Hwscan {_letters(8).capitalize()}"),
            "topic": add("HW topic", f"応募書類 {tag} について相談したい"),
        }
        self.hw_email = add("HW My Page email", f"hwscan.{tag}@mypage.example.jp")
        v6 = f"2001:db8:{random.randint(1, 0xFFFF):x}::{random.randint(1, 0xFFFF):x}"
        self.device = {  # a device report over AMQP
            "user_agent": add("AMQP user agent", f"PiiScanPortal/{tag} (Android 14)"),
            "ip_address": add("AMQP IP", v6),
            "device_id": add("AMQP device id", f"AMQP-DEV-{tag}"),
        }
        self.parked = {  # a command parked for its unknown portal
            "name": add("parked name", f"Parkscan {_letters(8).capitalize()}"),
            "email": add("parked email", f"parked.{tag}@example.jp"),
            "phone": add("parked phone", parked_phone, normalize_phone(parked_phone)),
        }


async def _book(stack: Stack, run: Run) -> tuple[str, str]:
    """The job seeker registered, a KG and an HW booking, a device report, a parked command."""
    hw_number, hw_phone = run.hw["jobseeker_number"], run.hw["phone"]
    registered = forms.jobseeker_message(
        HW, hw_number, hw_phone, run.hw_email, sent_at=now(), name=run.hw["name"]
    )
    await publish(stack.amqp_url, registered, registered["type"])
    kg_day = OfficeCalendar(policy(KG)).first_bookable(now() + timedelta(days=1))
    hw_day = OfficeCalendar(policy(HW)).first_bookable(now())
    async with stack.client("booking", headers=PORTAL) as booking:
        kg_body = forms.kg_form(policy(KG), kg_day, now(), window=("09:00", "17:00"), **run.kg)
        kg = await booking.post(
            f"/v1/offices/{KG}/bookings", json=kg_body, headers={"Idempotency-Key": f"pii-{run.tag}-kg"}
        )
        assert kg.status_code == 202, kg.text
        hw_body = forms.hw_form(policy(HW), hw_day, now(), window=("09:00", "17:00"), **run.hw)

        async def hw_taken() -> str | None:  # the registry is fed asynchronously
            r = await booking.post(
                f"/v1/offices/{HW}/bookings", json=hw_body, headers={"Idempotency-Key": f"pii-{run.tag}-hw"}
            )
            return str(r.json()["booking_id"]) if r.status_code == 202 else None

        hw_id = await eventually(hw_taken, timeout=30, what="HW booking once the job seeker is registered")
    kg_id = str(kg.json()["booking_id"])
    report = {"message_id": str(uuid.uuid4()), "type": "device.observed", "office_id": KG}
    report |= {"sent_at": now().isoformat(), "portal_id": "dev-portal", "booking_id": kg_id, **run.device}
    await publish(stack.amqp_url, report, "device.observed")
    form = forms.kg_form(policy(KG), kg_day, now(), **run.parked)
    command = forms.booking_command(run.stranger, KG, f"pii-{run.tag}-parked", form, sent_at=now())
    await publish(stack.amqp_url, command, "booking.request")
    return kg_id, hw_id


async def _through_the_system(stack: Stack, run: Run, kg_id: str, hw_id: str) -> None:
    """Confirmation (or re-coordination), cancellation and refusal, their emails and audit records."""
    mail = Mailpit()

    async def emails(address: str, n: int) -> list[dict[str, Any]]:
        found = await mail.to(address)
        return found if len(found) >= n else []

    async with stack.client("booking", headers=STAFF) as staff:

        async def coordinated(booking_id: str) -> str | None:
            status = (await staff.get(f"/v1/bookings/{booking_id}")).json()["status"]
            return None if status in ("requested", "coordinating") else str(status)

        kg_status = await eventually(lambda: coordinated(kg_id), timeout=45, what="KG booking coordinated")
        await eventually(lambda: coordinated(hw_id), timeout=45, what="HW booking coordinated")
        # KG writes on confirmation, or proposes other times: one email to the person either way
        await eventually(lambda: emails(run.kg["email"], 1), timeout=45, what=f"KG email ({kg_status})")
        cancel = {"channel": "email", "recorded_by": "pii-e2e"}
        r = await staff.post(f"/v1/bookings/{kg_id}/cancellations", json=cancel)
        assert r.status_code == 200, r.text
        refusal = {"ground": "脅迫、暴言、威圧的な言動", "detail": "R13 e2e"}
        r = await staff.post(f"/v1/bookings/{hw_id}/refusal", json=refusal)
        assert r.status_code == 200, r.text
    await eventually(lambda: emails(run.kg["email"], 2), timeout=45, what="the KG cancellation email")
    await eventually(lambda: emails(run.hw_email, 1), timeout=45, what="the HW refusal email")

    async with stack.client("audit", headers=AUDITOR) as audit:

        async def audited() -> bool:
            r = await audit.get("/v1/audit/records", params={"booking_id": kg_id, "limit": 200})
            seen = {(x["type"], x.get("payload", {}).get("kind")) for x in r.json()}
            devices = [x for x in r.json() if x["type"] == "device.recorded"]
            return len(devices) >= 2 and ("notification.sent", "cancellation") in seen

        await eventually(audited, timeout=45, what="both device reports and the cancellation email audited")

    async def stranger_parked() -> bool:
        return any(
            q == topology.BOOKING.parking and run.stranger in str(m["properties"].get("headers", {}))
            for q, m, _ in await _resting_messages(stack)
        )

    await eventually(stranger_parked, timeout=30, what="the unknown portal's command in booking.parking")

    async def outboxes_settled() -> bool:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
        try:
            db = client[f"{stack.db_prefix}booking"]
            return all([await db[c].count_documents({}) == 0 for c in ("booking_changes_pending", "devices")])
        finally:
            await client.close()

    await eventually(outboxes_settled, timeout=30, what="booking's outbox markers and device reports settled")


#: collections that held the values in clear before R12 covered outboxes: the scan must have read them
MUST_READ = (
    "booking.booking_changes",
    "booking.people_changes",
    "booking.requests",
    "booking.jobseekers",
    "notifier.deliveries",
    "notifier.deliveries_accepted",
    "audit.records",
    "audit.sealed",
    "scheduler.requests",
)


async def test_r12_r11_no_personal_data_rests_in_clear_in_any_database_or_parked_message(
    stack: Stack,
) -> None:
    run = Run()
    kg_id, hw_id = await _book(stack, run)
    await _through_the_system(stack, run, kg_id, hw_id)

    needles = run.pii.needles()
    findings, seen = await _scan_databases(stack.db_prefix, needles)
    unread = [c for c in MUST_READ if not seen.get(f"{stack.db_prefix}{c}")]
    assert not unread, f"the scan read nothing in {unread}; it read {sorted(seen)}"
    resting = await _resting_messages(stack)
    assert any(q == topology.BOOKING.parking for q, _, _ in resting)
    for queue, message, body in resting:
        text = (json.dumps(message, ensure_ascii=False) + body).lower()
        findings += [f"queue {queue}: {label}" for needle, label in needles.items() if needle in text]
    report = "\n".join(sorted(set(findings)))
    assert findings == [], f"personal data at rest in clear or as an unkeyed hash:\n{report}"

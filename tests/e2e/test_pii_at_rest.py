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

from services.booking import examples
from shared import topology
from shared.calendar import OfficeCalendar
from shared.commands import normalize_email, normalize_phone
from tests import support
from tests.e2e.conftest import AUDITOR_KEY, BOOKING_STAFF_KEY, PORTAL_KEY, Stack
from tests.e2e.test_booking_flows import HW, KG, now, policy, register_jobseeker
from tests.support import Mailpit, eventually
from tests.booking_support import publish

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
        for db_name in await client.list_database_names():
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


async def test_r12_r11_no_personal_data_rests_in_clear_in_any_database_or_parked_message(
    stack: Stack,
) -> None:
    tag = _letters(10)
    pii = Secrets()
    # KG: the person's fields, and the device the portal saw
    kg_name = pii.add("KG name", f"Piiscan {tag.capitalize()}")
    kg_kana = pii.add(
        "KG reading",
        "ピイスキャン " + "".join(random.choices("アイウエオカキクケコサシスセソタチツテト", k=8)),
    )
    kg_address = pii.add("KG address", f"北海道釧路市幸町{_digits(3)}-{_digits(2)} ピイ{tag}荘")
    kg_phone = _phone("0154", (2, 4))
    pii.add("KG phone", kg_phone, normalize_phone(kg_phone), kg_phone.replace("-", ""))
    kg_email = pii.add("KG email", f"piiscan.{tag}@example.jp", normalize_email(f"piiscan.{tag}@example.jp"))
    device = {
        "user_agent": pii.add("form user agent", f"Mozilla/5.0 (PiiScan; {tag}) Teams/1.7"),
        "ip_address": pii.add("form IP", f"10.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"),
        "device_id": pii.add("form device id", f"DEV-PIISCAN-{tag.upper()}"),
        "app_version": "1.7",
    }  # fmt: skip
    # HW: job-seeker registry and booking
    hw_number = pii.add("HW job-seeker number", f"{_digits(5)}-{_digits(8)}")
    hw_phone = _phone("090", (4, 4))
    pii.add("HW phone", hw_phone, normalize_phone(hw_phone), hw_phone.replace("-", ""))
    hw_email = pii.add("HW My Page email", f"hwscan.{tag}@mypage.example.jp")
    hw_name = pii.add("HW name", f"Hwscan {_letters(8).capitalize()}")
    hw_topic = pii.add("HW topic", f"応募書類 {tag} について相談したい")
    # a device report over AMQP, and a command parked for its unknown portal
    amqp_device = {
        "user_agent": pii.add("AMQP user agent", f"PiiScanPortal/{tag} (Android 14)"),
        "ip_address": pii.add("AMQP IP", f"2001:db8:{random.randint(1, 0xFFFF):x}::{random.randint(1, 0xFFFF):x}"),
        "device_id": pii.add("AMQP device id", f"AMQP-DEV-{tag}"),
    }  # fmt: skip
    parked_name = pii.add("parked name", f"Parkscan {_letters(8).capitalize()}")
    parked_email = pii.add("parked email", f"parked.{tag}@example.jp")
    parked_phone = _phone("011", (3, 4))
    pii.add("parked phone", parked_phone, normalize_phone(parked_phone))

    await register_jobseeker(stack, hw_number, hw_phone, hw_email)
    await publish(
        stack.amqp_url,
        examples.jobseeker_message(HW, hw_number, hw_phone, hw_email, sent_at=now(), name=hw_name),
        "jobseeker.updated",
    )
    kg_day = OfficeCalendar(policy(KG)).first_bookable(now() + timedelta(days=1))
    hw_day = OfficeCalendar(policy(HW)).first_bookable(now())
    mail = Mailpit()
    async with stack.client("booking", headers=PORTAL) as booking:
        kg_body = examples.kg_form(
            policy(KG), kg_day, now(), window=("09:00", "17:00"), name=kg_name, name_kana=kg_kana,
            address=kg_address, phone=kg_phone, email=kg_email, device=device,
        )  # fmt: skip
        kg = await booking.post(
            f"/v1/offices/{KG}/bookings", json=kg_body, headers={"Idempotency-Key": f"pii-{tag}-kg"}
        )
        assert kg.status_code == 202, kg.text
        kg_id = kg.json()["booking_id"]
        hw_body = examples.hw_form(
            policy(HW), hw_day, now(), jobseeker_number=hw_number, phone=hw_phone, name=hw_name,
            topic=hw_topic, window=("09:00", "17:00"),
        )  # fmt: skip

        async def hw_taken() -> str | None:  # the registry is fed asynchronously
            r = await booking.post(
                f"/v1/offices/{HW}/bookings", json=hw_body, headers={"Idempotency-Key": f"pii-{tag}-hw"}
            )
            return str(r.json()["booking_id"]) if r.status_code == 202 else None

        hw_id = await eventually(hw_taken, timeout=30, what="HW booking once the job seeker is registered")
        await publish(
            stack.amqp_url,
            {
                "message_id": str(uuid.uuid4()), "type": "device.observed", "office_id": KG,
                "sent_at": now().isoformat(), "portal_id": "dev-portal", "booking_id": kg_id, **amqp_device,
            },
            "device.observed",
        )  # fmt: skip
        stranger = examples.booking_command(
            "pii-unknown-portal",
            KG,
            f"pii-{tag}-parked",
            examples.kg_form(
                policy(KG), kg_day, now(), name=parked_name, email=parked_email, phone=parked_phone
            ),
            sent_at=now(),
        )
        await publish(stack.amqp_url, stranger, "booking.request")

        async def coordinated(booking_id: str) -> dict[str, Any] | None:
            view = (await booking.get(f"/v1/bookings/{booking_id}")).json()
            return view if view["status"] not in ("requested", "coordinating") else None

        kg_view = await eventually(lambda: coordinated(kg_id), timeout=45, what="KG booking coordinated")
        await eventually(lambda: coordinated(hw_id), timeout=45, what="HW booking coordinated")
        # KG writes on confirmation (or proposes other times): one email to the person either way
        await eventually(
            lambda: mail.to(kg_email), timeout=45, what=f"first email to the KG person ({kg_view['status']})"
        )

    async with stack.client("booking", headers=STAFF) as staff:
        r = await staff.post(
            f"/v1/bookings/{kg_id}/cancellations", json={"channel": "email", "recorded_by": "pii-e2e"}
        )
        assert r.status_code == 200, r.text
        r = await staff.post(f"/v1/bookings/{hw_id}/refusal", json={"reason": "R13 e2e: 暴言"})
        assert r.status_code == 200, r.text

    async def two_to(address: str, n: int) -> list[dict[str, Any]]:
        found = await mail.to(address)
        return found if len(found) >= n else []

    await eventually(lambda: two_to(kg_email, 2), timeout=45, what="the KG cancellation email")
    await eventually(lambda: two_to(hw_email, 1), timeout=45, what="the HW refusal email")

    async with stack.client("audit", headers=AUDITOR) as audit:

        async def audited() -> list[dict[str, Any]] | None:
            r = await audit.get("/v1/audit/records", params={"booking_id": kg_id, "limit": 200})
            records = list(r.json())
            kinds = {(x["type"], x.get("payload", {}).get("kind")) for x in records}
            devices = [x for x in records if x["type"] == "device.recorded"]
            sent = ("notification.sent", "cancellation") in kinds
            return records if len(devices) >= 2 and sent and ("booking.cancelled", None) in kinds else None

        await eventually(
            audited, timeout=45, what="both device reports and the cancellation email in the audit store"
        )

    async def stranger_parked() -> list[tuple[str, dict[str, Any], str]]:
        parked = await _resting_messages(stack)
        return [p for p in parked if p[0] == topology.BOOKING.parking and p[1]["properties"].get("headers", {}).get(topology.REASON_HEADER) == "portal-not-authorised" and stranger["message_id"] in json.dumps(p[1]) + p[2]]  # fmt: skip

    await eventually(stranger_parked, timeout=30, what="the unknown portal's command in booking.parking")

    async def outboxes_drained() -> bool:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
        try:
            db = client[f"{stack.db_prefix}booking"]
            return await db["booking_changes_pending"].count_documents({}) == 0
        finally:
            await client.close()

    await eventually(outboxes_drained, timeout=30, what="booking's outbox markers settled")

    needles = pii.needles()
    findings, seen = await _scan_databases(stack.db_prefix, needles)
    # not vacuous: the stores that held the values in clear before were read
    for coll in ("booking.booking_changes", "booking.people_changes", "booking.jobseekers", "notifier.deliveries",
                 "audit.records", "scheduler.requests"):  # fmt: skip
        assert seen.get(f"{stack.db_prefix}{coll}", 0) > 0, f"nothing read in {coll}: {sorted(seen)}"
    for queue, message, body in await _resting_messages(stack):
        text = (json.dumps(message, ensure_ascii=False) + body).lower()
        findings += [f"queue {queue}: {label}" for needle, label in needles.items() if needle in text]
    assert findings == [], "personal data at rest in clear or as an unkeyed hash:\n" + "\n".join(
        sorted(set(findings))
    )

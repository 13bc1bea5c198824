"""Portal intake against real RabbitMQ and FerretDB, with the clock fixed at Sunday 2026-11-22 10:00 JST."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from examples import forms
from services.booking.store.requests import RELEASED, request_key
from shared import topology
from shared.commands import booking_id_for
from tests.support import eventually, unique
from tests.support.booking import HW, KG, PORTAL_KEY, STAFF_KEY, Harness, announce_terms, parked, running

TUE, WED, THU = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        yield harness


def kg(h: Harness, day: date = TUE, **fields: Any) -> dict[str, Any]:
    return forms.kg_form(h.policy(KG), day, h.now, **fields)


async def register(h: Harness, number: str, phone: str, email: str | None, **kw: Any) -> None:
    msg = forms.jobseeker_message(HW, number, phone, email, sent_at=h.now, **kw)
    await h.publish(msg, msg["type"])


async def registered(h: Harness, number: str) -> bool:
    service = h.client._transport.app.state.service  # type: ignore[attr-defined]
    return await service.stores.jobseekers.get(HW, number) is not None


# ----------------------------------------------------------------------------- accepted


async def test_r12_kg_booking_is_accepted_and_personal_data_is_sealed_at_rest(
    h: Harness, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    body = kg(h)
    r = await h.book(KG, body)
    assert r.status_code == 202, r.text
    booking_id = r.json()["booking_id"]
    assert r.json()["status"] == "requested"
    [event] = await h.events.wait("booking.requested", booking_id=booking_id)
    assert event["payload"]["area"] == "釧路"
    assert event["payload"]["duration_minutes"] == 30
    assert event["payload"]["interpreter"] is False
    raw_event = json.dumps(event, ensure_ascii=False)
    for pii in (body["name"], body["email"], "154221234", "幸町"):
        assert pii not in raw_event  # R12: the scheduler gets no personal data
    doc = await mongo[f"{h.settings.db_prefix}booking"]["bookings"].find_one({"_id": booking_id})
    assert doc is not None
    stored = json.dumps(doc, default=str, ensure_ascii=False)
    for pii in (body["name"], body["email"], "+81154221234", "幸町"):
        assert pii not in stored  # R12: sealed per field
    assert set(doc["pii"]) >= {"name", "address", "phone", "email"}
    assert doc["pii"]["name"].startswith("s1:")  # key id kept for rotation
    staff_view = await h.get(booking_id, STAFF_KEY)
    assert staff_view["person"]["phone"] == "+81154221234"  # normalised E.164
    assert staff_view["terms_version"] == "2023-11-08"  # R17: version and time recorded
    assert staff_view["terms_agreed_at"].startswith("2026-11-22T01:00:00")


async def test_r15_interpreter_declared_in_advance_reaches_the_scheduler(h: Harness) -> None:
    r = await h.book(KG, kg(h, companions=["interpreter"]))
    assert r.status_code == 202, r.text
    await h.events.wait("booking.requested", booking_id=r.json()["booking_id"], interpreter=True)
    body = kg(h)
    del body["companions"]
    r = await h.book(KG, body)
    assert r.status_code == 422
    assert {"field": "companions", "rule": "R15"}.items() <= r.json()["errors"][0].items()


# ----------------------------------------------------------------------------- refused


async def test_r01_a_consultation_longer_than_30_minutes_is_refused(h: Harness) -> None:
    r = await h.book(KG, kg(h, duration_minutes=45))
    assert r.status_code == 409
    assert r.json()["rule"] == "R01"
    await h.events.wait("booking.rejected", rule="R01")


async def test_r02_fields_are_the_offices_own(h: Harness) -> None:
    body = kg(h)
    del body["address"]
    body["jobseeker_number"] = "12345-12345678"
    body["phone"] = "12345"
    r = await h.book(KG, body)
    assert r.status_code == 422
    errors = {(e["field"], e["rule"]) for e in r.json()["errors"]}
    assert ("phone", "R02") in errors
    r = await h.book(KG, {**kg(h), "address": None, "jobseeker_number": "12345-12345678"})
    errors = {(e["field"], e["message"]) for e in r.json()["errors"]}
    assert errors == {
        ("address", "required by this office"),
        ("jobseeker_number", "not collected by this office"),
    }


async def test_r02_windows_must_be_open_days_within_hours_and_long_enough(h: Harness) -> None:
    sat = date(2026, 11, 28)
    body = kg(h)
    body["windows"] = [
        {"start": forms.at(sat, "10:00"), "end": forms.at(sat, "11:00")},
        {"start": forms.at(date(2026, 11, 23), "10:00"), "end": forms.at(date(2026, 11, 23), "11:00")},
        {"start": forms.at(TUE, "16:45"), "end": forms.at(TUE, "17:30")},
        {"start": forms.at(TUE, "10:00"), "end": forms.at(TUE, "10:20")},
    ]
    r = await h.book(KG, body)
    assert r.status_code == 422
    messages = [e["message"] for e in r.json()["errors"]]
    assert "土曜日" in messages[0]
    assert "勤労感謝の日" in messages[1]
    assert "office hours" in messages[2]
    assert "shorter than the 30 minutes" in messages[3]


async def test_r17_a_stale_terms_version_is_refused_with_the_current_one(h: Harness) -> None:
    hw = h.policy(HW)
    r = await h.book(
        HW,
        forms.hw_form(
            hw,
            THU,
            h.now,
            jobseeker_number="12345-00000001",
            phone="090-1111-2222",
            terms_version="2023-06-14",
        ),
    )
    assert r.status_code == 409
    assert r.json()["rule"] == "R17"
    assert r.json()["current_terms_version"] == "2023-11-01"


async def test_r19_every_checklist_item_must_be_confirmed(h: Harness) -> None:
    body = kg(h, device_checklist=["app-ready", "no-such-item"])
    r = await h.book(KG, body)
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert {"field": "device_checklist", "rule": "R19"}.items() <= errors[0].items()
    missing = {e["field"].split(".")[1]: e["rule"] for e in errors[1:]}
    assert missing["webcam"] == "R03"
    assert missing["no-file-sharing"] == "R19"
    assert "app-ready" not in missing


async def test_r20_an_address_outside_the_served_areas_is_refused(h: Harness) -> None:
    r = await h.book(KG, kg(h, address="静岡県駿東郡清水町1-1"))
    assert r.status_code == 409
    assert r.json()["rule"] == "R20"


async def test_r04_hw_lead_time_counts_open_days_across_the_holiday(h: Harness) -> None:
    await register(h, "12345-00000001", "090-1111-2222", "hanako@mypage.example.jp")
    await eventually(lambda: registered(h, "12345-00000001"), what="registry fed")
    hw = h.policy(HW)
    # Wed 25: two open days before are Tue 24 and Fri 20 (Mon 23 is 勤労感謝の日) -> too late on Sun 22
    r = await h.book(
        HW, forms.hw_form(hw, WED, h.now, jobseeker_number="12345-00000001", phone="090-1111-2222")
    )
    assert r.status_code == 409, r.text
    assert r.json()["rule"] == "R04"
    assert r.json()["confirmation_deadline"] == "2026-11-20"
    assert r.json()["first_bookable"] == "2026-11-26"
    r = await h.book(HW, forms.hw_form(hw, THU, h.now, jobseeker_number="1234500000001", phone="09011112222"))
    assert r.status_code == 202, r.text


async def test_r03_hw_needs_a_registered_job_seeker_with_my_page_and_the_registered_phone(h: Harness) -> None:
    hw = h.policy(HW)
    await register(h, "12345-00000002", "090-2222-3333", None)
    await register(h, "12345-00000003", "090-3333-4444", "c@mypage.example.jp")
    await eventually(lambda: registered(h, "12345-00000003"), what="registry fed")
    await eventually(lambda: registered(h, "12345-00000002"), what="registry fed")

    async def answer(number: str, phone: str) -> dict[str, Any]:
        r = await h.book(HW, forms.hw_form(hw, THU, h.now, jobseeker_number=number, phone=phone))
        return {**r.json(), "http": r.status_code}

    unregistered = await answer("99999-00000009", "090-2222-3333")
    assert (unregistered["http"], unregistered["rule"]) == (409, "R03")
    no_mypage = await answer("12345-00000002", "090-2222-3333")
    assert (no_mypage["rule"], "My Page" in no_mypage["message"]) == ("R03", True)
    other_phone = await answer("12345-00000003", "090-9999-9999")
    assert (other_phone["rule"], other_phone["field"]) == ("R02", "phone")  # the registered phone
    ok = await answer("12345-00000003", "09033334444")
    assert ok["http"] == 202
    staff_view = await h.get(ok["booking_id"], STAFF_KEY)
    assert staff_view["person"]["notice_email"] == "c@mypage.example.jp"  # R06: My Page address


async def test_jobseeker_updates_out_of_order_keep_the_newest(h: Harness) -> None:
    from datetime import timedelta

    newer = forms.jobseeker_message(
        HW, "12345-00000004", "090-4444-5555", "new@x.jp", sent_at=h.now, kind="jobseeker.updated"
    )
    older = forms.jobseeker_message(
        HW, "12345-00000004", "090-1234-0000", "old@x.jp", sent_at=h.now - timedelta(days=1)
    )
    await h.publish(newer, newer["type"])
    await eventually(lambda: registered(h, "12345-00000004"), what="registry fed")
    await h.publish(older, older["type"])
    service = h.client._transport.app.state.service  # type: ignore[attr-defined]
    await eventually(lambda: _handled(h.runtime, 2), what="both records handled")
    js = await service.stores.jobseekers.get(HW, "12345-00000004")
    assert js.mypage_email == "new@x.jp"


async def _handled(runtime: Any, n: int) -> bool:
    return bool(runtime.consumer.stats["handled"] >= n)


# ----------------------------------------------------------------------------- auth


async def test_portals_and_staff_are_authenticated_and_kept_to_their_offices(h: Harness) -> None:
    assert (await h.book(KG, kg(h), token="wrong")).status_code == 401
    assert (await h.book(KG, kg(h), token=STAFF_KEY)).status_code == 403  # staff do not book
    service = h.client._transport.app.state.service  # type: ignore[attr-defined]
    hw_only = await service.stores.credentials.create("portal", "hw-portal", [HW], h.now)
    assert (await h.book(KG, kg(h), token=hw_only)).status_code == 403
    r = await h.book(KG, kg(h))
    other = await h.client.get(
        f"/v1/bookings/{r.json()['booking_id']}", headers={"Authorization": f"Bearer {hw_only}"}
    )
    assert other.status_code == 403


# ----------------------------------------------------------------------------- idempotency


async def test_same_idempotency_key_same_answer_other_body_409(h: Harness) -> None:
    body = kg(h)
    first = await h.book(KG, body, key="k-1")
    again = await h.book(KG, body, key="k-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert first.json()["booking_id"] == booking_id_for("dev-portal", "k-1")
    other = await h.book(KG, {**body, "duration_minutes": 20}, key="k-1")
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency-key-reused"
    refused = await h.book(KG, {**body, "duration_minutes": 40}, key="k-2")
    assert (await h.book(KG, {**body, "duration_minutes": 40}, key="k-2")).json() == refused.json()


async def test_twenty_parallel_requests_with_one_key_make_one_booking(
    h: Harness, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    body = kg(h)
    answers = await asyncio.gather(*(h.book(KG, body, key="parallel-1") for _ in range(20)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["booking_id"] for r in answers}) == 1
    assert await mongo[f"{h.settings.db_prefix}booking"]["bookings"].count_documents({}) == 1
    await h.events.wait("booking.requested")
    await h.quiet()
    assert len(h.events.of("booking.requested")) == 1


async def test_a_database_error_while_deciding_is_retried_and_past_the_retries_releases_the_claim(
    h: Harness, mongo: AsyncMongoClient[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI once: 20 parallel requests with one key, the first failed (500) and the other 19
    waited out the claim (409 in-progress). Now the decision retries the database, and a request
    whose retries run out answers 503 and releases its claim for the next request with the key."""
    requests = h.client._transport.app.state.service.stores.requests  # type: ignore[attr-defined]
    finish = requests.finish
    failures = {"left": 2}

    async def failing_finish(*args: Any, **kwargs: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise AutoReconnect("database is locked (injected)")
        await finish(*args, **kwargs)

    monkeypatch.setattr(requests, "finish", failing_finish)
    body = kg(h)
    r = await h.book(KG, body, key="db-flaky-1")
    assert r.status_code == 202, r.text  # two failures, then the third attempt answers
    assert failures["left"] == 0

    failures["left"] = 100  # every attempt fails
    other = kg(h, THU)
    r = await h.book(KG, other, key="db-down-1")
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "database-unavailable"
    assert r.headers["Retry-After"] == "1"
    claim = await mongo[f"{h.settings.db_prefix}booking"]["requests"].find_one(
        {"_id": request_key("dev-portal", "db-down-1")}
    )
    assert claim is not None
    assert (claim["state"], claim["claimed_at"]) == ("claimed", RELEASED)

    failures["left"] = 0  # the database answers again: the repeat takes the released claim at once
    again = await h.book(KG, other, key="db-down-1")
    assert again.status_code == 202, again.text  # not 409 in-progress after waiting for the claim
    booking_id = again.json()["booking_id"]
    assert booking_id == booking_id_for("dev-portal", "db-down-1")
    await h.events.wait("booking.requested", booking_id=booking_id)
    await h.quiet()
    assert len([e for e in h.events.of("booking.requested") if e["payload"]["booking_id"] == booking_id]) == 1


# ----------------------------------------------------------------------------- AMQP intake


async def test_amqp_booking_request_runs_the_same_handler(h: Harness) -> None:
    cmd = forms.booking_command("dev-portal", KG, "amqp-1", kg(h), sent_at=h.now)
    await h.publish(cmd, "booking.request")
    booking_id = booking_id_for("dev-portal", "amqp-1")
    await h.events.wait("booking.requested", booking_id=booking_id)
    r = await h.portal("GET", "/v1/requests/amqp-1")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == 202
    assert (await h.get(booking_id))["status"] == "requested"
    await h.publish(cmd, "booking.request")  # the same message again: handled once
    bad = forms.booking_command("dev-portal", KG, "amqp-2", kg(h, duration_minutes=60), sent_at=h.now)
    await h.publish(bad, "booking.request")
    [rejected] = await h.events.wait("booking.rejected", request_id="amqp-2")
    assert rejected["payload"]["rule"] == "R01"
    assert rejected["causation_id"] == bad["message_id"]
    assert len(h.events.of("booking.requested", booking_id=booking_id)) == 1


async def test_amqp_unreadable_or_unauthorised_commands_are_parked_with_the_reason(h: Harness) -> None:
    await h.publish(b"{not json", "booking.request")
    await h.publish({"type": "booking.request", "office_id": KG}, "booking.request")
    stranger = forms.booking_command("unknown-portal", KG, unique(), kg(h), sent_at=h.now)
    await h.publish(stranger, "booking.request")
    forged = {"type": "appointment.no_show", "payload": {}}
    await h.publish(forged, "booking.request")
    await eventually(lambda: _parked_n(h.runtime, 4), what="four parked")
    reasons = sorted(str(m.headers[topology.REASON_HEADER]) for m in await parked(h.amqp_url))
    assert reasons == ["invalid-command", "invalid-event", "not-an-intake-message", "portal-not-authorised"]


async def _parked_n(runtime: Any, n: int) -> bool:
    return bool(runtime.consumer.stats["parked"] >= n)


async def test_calendar_and_office_endpoints_tell_a_portal_what_is_bookable(h: Harness) -> None:
    r = await h.client.get(f"/v1/offices/{HW}/calendar", params={"from": "2026-11-22", "to": "2026-11-30"})
    days = {d["date"]: d for d in r.json()["days"]}
    assert days["2026-11-23"]["open"] is False
    assert days["2026-11-23"]["closed_because"] == "勤労感謝の日"
    assert days["2026-11-25"] | {} == days["2026-11-25"]
    assert (days["2026-11-25"]["bookable"], days["2026-11-26"]["bookable"]) == (False, True)
    assert days["2026-11-26"]["confirmation_deadline"] == "2026-11-24"
    assert days["2026-11-30"]["notice_date"] == "2026-11-27"  # Monday's notice goes out on Friday
    for span in ({"from": "2026-12-01", "to": "2026-11-01"}, {"from": "0001-01-01", "to": "0001-01-05"}):
        assert (await h.client.get(f"/v1/offices/{HW}/calendar", params=span)).status_code == 422
    office = (await h.client.get(f"/v1/offices/{KG}")).json()
    assert office["terms"]["version"] == "2023-11-08"
    assert office["cancellation"] == {"channels": ["phone", "email"], "same_day_channels": ["phone"]}
    assert PORTAL_KEY not in json.dumps(office)


async def test_r17_the_office_shows_an_announced_change_of_its_terms_before_it_applies(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HW 第14条: the change, its text and its effective date are announced; a portal shows them."""
    url = "https://example.go.jp/kohoku/terms-2027"
    announce_terms(
        h,
        monkeypatch,
        HW,
        "2027-01-04",
        announced_on=date(2026, 11, 20),
        summary="第6条(1)の確定期限を改定",
        url=url,
    )
    office = (await h.client.get(f"/v1/offices/{HW}")).json()
    assert office["terms"]["version"] == "2023-11-01"  # still the one a booking agrees to now
    assert office["terms"]["next"] == {
        "version": "2027-01-04",
        "effective_from": "2027-01-04",
        "announced_on": "2026-11-20",
        "summary": "第6条(1)の確定期限を改定",
        "url": "https://example.go.jp/kohoku/terms-2027",
    }
    assert (await h.client.get(f"/v1/offices/{KG}")).json()["terms"]["next"] is None

"""Intake rules as pure functions: the form's normalisation (R02) and the policy checks (R01 R03 R04 R09
R13 R15 R17 R19 R20), with today = Sunday 2026-11-22 10:00 JST."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from examples import forms
from services.booking import rules
from services.booking.domain import InvalidFields
from services.booking.refusals import PersonRecord, Refusal
from shared.calendar import OfficeCalendar
from shared.clock import JST
from shared.commands import (
    BookingForm,
    WindowsForm,
    form_errors,
    normalize_jobseeker_number,
    normalize_kana,
    normalize_name,
    normalize_phone,
)
from shared.policy import load_file

OFFICES = Path(__file__).resolve().parents[2] / "deploy" / "offices"
KG = load_file(OFFICES / "kushiro-gyosei.yaml")
HW = load_file(OFFICES / "kohoku-hellowork.yaml")
KG_CAL, HW_CAL = OfficeCalendar(KG), OfficeCalendar(HW)
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=JST)
TUE, WED, THU = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)
JOBSEEKER = rules.RegisteredJobseeker("12345-00000001", "港北 花子", "+819011112222", "m@mypage.jp", True)


def kg(**fields: Any) -> BookingForm:
    return BookingForm.model_validate(forms.kg_form(KG, TUE, NOW, **fields))


def hw(day: date = THU, **fields: Any) -> BookingForm:
    body = forms.hw_form(HW, day, NOW, jobseeker_number="12345-00000001", phone="090-1111-2222")
    return BookingForm.model_validate({**body, **fields})


def field_errors(form: BookingForm, policy: Any = KG, cal: OfficeCalendar = KG_CAL) -> dict[str, str | None]:
    minutes = rules.duration_of(policy, form)
    errors = rules.form_field_errors(policy, form) + rules.window_errors(
        policy, cal, form.windows, minutes, NOW
    )
    return {e.field: e.rule for e in errors}


# ----------------------------------------------------------------------------- R02 normalisation


def test_r02_names_phones_and_jobseeker_numbers_are_normalised() -> None:
    assert normalize_name("ｸｼﾛ　太郎 ") == "クシロ 太郎"
    assert normalize_name("Smith John") == "Smith John"
    assert normalize_kana("くしろ たろう") == "クシロ タロウ"
    assert normalize_phone("０１５４－２２－１２３４") == "+81154221234"
    assert normalize_phone("+81 90 1234 5678") == "+819012345678"
    for raw in ("12345-12345678", "1234512345678", "１２３４５ー１２３４５６７８", "12345－12345678"):
        assert normalize_jobseeker_number(raw) == "12345-12345678"
    for bad_name in ("田中1", "<script>", ""):
        with pytest.raises(ValueError):
            normalize_name(bad_name)
    for bad in ("1234-12345678", "12345-1234567", "abcde-12345678"):
        with pytest.raises(ValueError):
            normalize_jobseeker_number(bad)
    with pytest.raises(ValueError, match="Japanese"):
        normalize_phone("+1 202 555 0143")
    for field, value in (
        ("address", "北海道釧路市\x00幸町\x1b[2J10-3"),
        ("topic", "相談\u202e"),
        ("name", "釧路\x07"),
    ):
        with pytest.raises(ValidationError, match=r"not allowed|letters"):
            BookingForm.model_validate({**forms.kg_form(KG, TUE, NOW), field: value})


def test_r02_malformed_fields_come_back_per_field() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingForm.model_validate({**forms.kg_form(KG, TUE, NOW), "phone": "12", "email": "no-at", "x": 1})
    errors = {e.field: e.rule for e in form_errors(exc.value)}
    assert errors == {"phone": "R02", "email": "R02", "x": "R02"}


def test_r02_each_office_asks_its_own_fields_and_no_others() -> None:
    assert field_errors(kg()) == {}
    assert field_errors(hw(), HW, HW_CAL) == {}
    assert field_errors(kg(address=None, email=None, topic="相談")) == {
        "address": "R02",
        "email": "R02",
        "topic": "R02",
    }
    assert field_errors(hw(email="x@example.jp", jobseeker_number=None), HW, HW_CAL) == {
        "jobseeker_number": "R02",
        "email": "R02",
    }
    assert rules.duration_of(HW, hw()) == 30  # HW's form does not ask: the office maximum


def test_r02_windows_on_open_days_within_hours_in_the_future() -> None:
    def window(day: date, a: str, b: str) -> dict[str, str]:
        return {"start": forms.at(day, a), "end": forms.at(day, b)}

    form = kg(
        windows=[
            window(date(2026, 11, 22), "09:00", "09:30"),  # past (and Sunday)
            window(date(2026, 11, 23), "10:00", "11:00"),  # 勤労感謝の日
            window(TUE, "08:30", "09:30"),  # before opening
            window(TUE, "11:00", "10:00"),  # backwards
            window(TUE, "10:00", "10:25"),  # shorter than 30 minutes
        ]
    )
    minutes = rules.duration_of(KG, form)
    problems = [e.message for e in rules.window_errors(KG, KG_CAL, form.windows, minutes, NOW)]
    assert "日曜日" in problems[0]
    assert "勤労感謝の日" in problems[1]
    assert "office hours" in problems[2]
    assert "after the start" in problems[3]
    assert "shorter" in problems[4]
    assert rules.window_errors(KG, KG_CAL, kg().windows, 30, NOW) == []
    far = kg(windows=[window(date(2027, 6, 1), "10:00", "11:00")])
    [too_far] = rules.window_errors(KG, KG_CAL, far.windows, 30, NOW)
    assert "180 days ahead" in too_far.message  # office policy: booking_horizon
    for start in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00", "3001-01-05T10:00:00+09:00"):
        with pytest.raises(ValidationError, match="date out of range"):
            kg(windows=[{"start": start, "end": start}])


def test_r15_companions_must_be_declared() -> None:
    assert field_errors(kg(companions=None))["companions"] == "R15"
    assert "companions" not in field_errors(kg(companions=["interpreter", "assistant"]))


def test_r19_every_checklist_item_confirmed() -> None:
    errors = field_errors(kg(device_checklist=["app-ready", "made-up"]))
    assert errors["device_checklist"] == "R19"  # the unknown id
    assert errors["device_checklist.webcam"] == "R03"
    assert errors["device_checklist.supported-os"] == "R19"
    assert "device_checklist.firewall-on" not in errors  # HW's item, not KG's
    assert "device_checklist.firewall-on" in field_errors(hw(device_checklist=[]), HW, HW_CAL)


# ----------------------------------------------------------------------------- refusals (409)


def test_r01_more_than_30_minutes_is_refused() -> None:
    refusal = rules.policy_refusal(KG, KG_CAL, kg(duration_minutes=31), NOW)
    assert refusal is not None and (refusal.rule, refusal.field) == ("R01", "duration_minutes")
    assert rules.policy_refusal(KG, KG_CAL, kg(duration_minutes=30), NOW) is None


def test_r17_a_stale_terms_version_is_refused_with_the_current_one() -> None:
    refusal = rules.policy_refusal(HW, HW_CAL, hw(terms_version="2023-06-14"), NOW)
    assert refusal is not None and refusal.rule == "R17"
    assert refusal.details["current_terms_version"] == "2023-11-01"


def test_r20_outside_the_served_areas() -> None:
    refusal = rules.policy_refusal(KG, KG_CAL, kg(address="東京都千代田区霞が関2-1-2"), NOW)
    assert refusal is not None and refusal.rule == "R20"


def test_r04_hw_too_late_names_the_deadline_and_the_first_bookable_day() -> None:
    refusal = rules.policy_refusal(HW, HW_CAL, hw(WED), NOW)
    assert refusal is not None and refusal.rule == "R04"
    assert refusal.details == {"confirmation_deadline": "2026-11-20", "first_bookable": "2026-11-26"}
    assert rules.policy_refusal(HW, HW_CAL, hw(THU), NOW) is None
    assert rules.policy_refusal(KG, KG_CAL, kg(), NOW) is None  # KG: no lead time


def test_r03_hw_registered_with_my_page_and_r02_the_registered_phone() -> None:
    form = hw()
    assert rules.eligibility_refusal(HW, form, JOBSEEKER) is None
    assert rules.eligibility_refusal(KG, kg(), None) is None  # KG: anyone with a webcam (R19 item)
    cases = {
        "none": None,
        "left": rules.RegisteredJobseeker("12345-00000001", "x", "+819011112222", "m@x.jp", False),
        "no-mypage": rules.RegisteredJobseeker("12345-00000001", "x", "+819011112222", None, True),
        "phone": rules.RegisteredJobseeker("12345-00000001", "x", "+819099998888", "m@x.jp", True),
    }
    found = {k: rules.eligibility_refusal(HW, form, v) for k, v in cases.items()}
    rules_of = {k: v.rule for k, v in found.items() if v}
    assert rules_of == {"none": "R03", "left": "R03", "no-mypage": "R03", "phone": "R02"}  # HW 6(2): a field
    assert found["phone"] is not None and found["phone"].field == "phone"


def test_r09_r13_a_refused_person_until_the_refusal_ends() -> None:
    person = PersonRecord("p_1", "kushiro-gyosei")
    assert rules.refused_person(person, NOW) is None
    person.refusal = Refusal(
        "R09", "2 no-shows", NOW - timedelta(days=1), NOW + timedelta(days=179), "system"
    )
    refusal = rules.refused_person(person, NOW)
    assert refusal is not None and refusal.rule == "R09" and refusal.details["until"].startswith("2027-05-20")
    assert rules.refused_person(person, NOW + timedelta(days=180)) is None
    person.refusal = Refusal("R13", "暴言", NOW, None, "staff")
    refused = rules.refused_person(person, NOW + timedelta(days=3650))
    assert refused is not None and refused.rule == "R13"


def test_r09_a_person_is_the_same_however_the_portal_writes_them() -> None:
    a = kg(phone="0154-33-4444", email="A.Person@Example.JP")
    b = kg(phone="０１５４３３４４４４", email="A.Person@example.jp")
    assert rules.person_identity(KG, a) == rules.person_identity(KG, b)
    assert rules.person_identity(HW, hw()) == [("jobseeker_number", "12345-00000001")]


# ----------------------------------------------------------------------------- new windows (R05)


def test_r05_new_windows_pass_the_intakes_window_rules_r02_r01_and_r04_per_field() -> None:
    """The person's new wished windows after a decline are checked as at intake; every problem is a
    per-field error with its rule id (HTTP 422), R04 and R01 included."""

    def windows(*days: tuple[date, str, str], minutes: int | None = None) -> WindowsForm:
        spans = [{"start": forms.at(d, a), "end": forms.at(d, b)} for d, a, b in days]
        return rules.read_windows({"windows": spans, "duration_minutes": minutes})

    def errors(form: WindowsForm, policy: Any = KG, cal: OfficeCalendar = KG_CAL, minutes: int = 30) -> Any:
        return {e.field: e.rule for e in rules.new_window_errors(policy, cal, form, minutes, NOW)}

    assert errors(windows((TUE, "10:00", "11:00"))) == {}
    sunday = windows((date(2026, 11, 29), "10:00", "11:00"), (TUE, "10:00", "10:20"))
    assert errors(sunday) == {"windows.0": "R02", "windows.1": "R02"}  # closed day; shorter than asked
    assert errors(windows((TUE, "10:00", "11:00")), minutes=45) == {"duration_minutes": "R01"}
    # HW (R04): Wednesday the 25th had to be confirmed by the 20th; Thursday the 26th still can be
    late = windows((WED, "10:00", "11:00"), (THU, "10:00", "11:00"), (date(2026, 11, 28), "10:00", "11:00"))
    assert errors(late, HW, HW_CAL) == {"windows.0": "R04", "windows.2": "R02"}  # a closed day: R02 only
    with pytest.raises(InvalidFields) as refused:
        rules.read_windows({"windows": [], "name": "釧路 太郎"})
    assert {e.field: e.rule for e in refused.value.errors} == {"windows": "R02", "name": "R02"}
    span = {"start": forms.at(TUE, "10:00"), "end": forms.at(TUE, "11:00")}
    with pytest.raises(InvalidFields) as too_long:
        rules.read_windows({"windows": [span], "duration_minutes": 0})
    assert [(e.field, e.rule) for e in too_long.value.errors] == [("duration_minutes", "R01")]

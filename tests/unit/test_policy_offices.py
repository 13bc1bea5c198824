"""The KG and HW policy files say what the seeds say; a third office is a file and nothing else."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shared.policy import Channel, MeetingApp, Policies, PolicyError, load_file

OFFICES = Path(__file__).resolve().parents[2] / "deploy" / "offices"
KG = load_file(OFFICES / "kushiro-gyosei.yaml")
HW = load_file(OFFICES / "kohoku-hellowork.yaml")


def test_r01_r08_both_offices_30_minutes_and_10_minutes_grace() -> None:
    assert KG.max_minutes == HW.max_minutes == 30
    assert KG.no_show_grace == HW.no_show_grace == timedelta(minutes=10)


def test_r02_booking_fields_per_office() -> None:
    assert [f.value for f in KG.form] == ["name", "address", "phone", "email", "windows", "duration"]
    assert [f.value for f in HW.form] == ["name", "jobseeker_number", "phone", "topic"]


def test_r03_r04_hw_eligibility_and_lead_time() -> None:
    e = HW.eligibility
    assert e.requires_jobseeker_registration and e.requires_mypage and e.phone_must_match_registration
    assert not KG.eligibility.requires_jobseeker_registration
    assert (HW.lead_time_open_days, KG.lead_time_open_days) == (2, 0)


def test_r06_notices() -> None:
    assert KG.notice.on_confirmation and not KG.notice.day_before
    assert HW.notice.day_before and not HW.notice.on_confirmation
    assert HW.notice.subject == "オンライン職業相談"
    assert HW.notice.to_registered_address


def test_r07_cancellation_channels_as_data() -> None:
    # KG 第4条(3): 電話又はメール、当日は電話のみ (the seed wins over the "portal")
    assert KG.cancellation.channels == [Channel.PHONE, Channel.EMAIL]
    assert KG.cancellation.same_day_channels == [Channel.PHONE]
    assert HW.cancellation.channels == HW.cancellation.same_day_channels == [Channel.PHONE]
    assert Channel.PORTAL not in KG.cancellation.channels + HW.cancellation.channels


def test_r09_refusal_defaults_and_who_a_person_is() -> None:
    for p in (KG, HW):
        assert (p.refusal.no_shows, p.refusal.within, p.refusal.refuse_for) == (
            2,
            timedelta(365),
            timedelta(180),
        )
    assert [f.value for f in KG.person_identity] == ["phone", "email"]
    assert [f.value for f in HW.person_identity] == ["jobseeker_number"]


def test_r13_misconduct_lists() -> None:
    assert "脅迫" in KG.misconduct and "第三者への成りすまし" in HW.misconduct


def test_r16_meeting_apps() -> None:
    assert KG.meeting_apps == [MeetingApp.TEAMS, MeetingApp.SKYPE_FOR_BUSINESS]
    assert HW.meeting_apps == [MeetingApp.TELEOFFICE]


def test_r17_terms_in_force_by_jst_date() -> None:
    assert KG.terms_in_force(datetime(2026, 11, 22, tzinfo=UTC)).version == "2023-11-08"
    assert HW.terms_in_force(datetime(2023, 10, 31, 14, 59, tzinfo=UTC)).version == "2023-06-14"
    assert (
        HW.terms_in_force(datetime(2023, 10, 31, 15, 0, tzinfo=UTC)).version == "2023-11-01"
    )  # JST midnight
    assert HW.terms_change == "general-interest-or-reasonable" and KG.terms_change == "any"


def _hw_with(tmp_path: Path, **change: object) -> Path:
    data = yaml.safe_load((OFFICES / "kohoku-hellowork.yaml").read_text(encoding="utf-8"))
    data.update(change)
    path = tmp_path / "kohoku-hellowork.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_r17_hw_changes_its_terms_without_consent_only_when_announced_before(tmp_path: Path) -> None:
    """HW 第14条: 変更する旨及び変更後の本規約の内容並びにその効力発生時期を利用者に告知します."""
    terms = [t.model_dump(mode="json") for t in HW.terms]
    unannounced = {"version": "2027-04-01", "effective_from": "2027-04-01", "summary": "改定"}
    with pytest.raises(PolicyError, match=r"R17: terms 2027-04-01 .* announced never"):
        load_file(_hw_with(tmp_path, terms=[*terms, unannounced]))
    late = {**unannounced, "announced_on": "2027-04-02"}
    with pytest.raises(PolicyError, match="R17"):
        load_file(_hw_with(tmp_path, terms=[*terms, late]))
    short = {**unannounced, "announced_on": "2027-03-25"}
    with pytest.raises(PolicyError, match="announced by 2027-03-02"):  # the office asks for 30 days
        load_file(_hw_with(tmp_path, terms=[terms[0], short], terms_notice_days=30))
    announced = {**unannounced, "announced_on": "2027-03-01", "url": "https://example.go.jp/terms-2027"}
    hw = load_file(_hw_with(tmp_path, terms=[*terms, announced]))
    assert hw.terms_announced(datetime(2027, 2, 27, tzinfo=UTC)) is None  # not announced yet: not shown
    shown = hw.terms_announced(datetime(2027, 3, 1, tzinfo=UTC))
    assert shown is not None and shown.version == "2027-04-01"
    assert hw.terms_in_force(datetime(2027, 3, 1, tzinfo=UTC)).version == "2023-11-01"
    assert hw.terms_announced(datetime(2027, 4, 1, tzinfo=UTC)) is None  # in force now
    assert KG.terms_announced(datetime(2026, 11, 22, tzinfo=UTC)) is None  # KG: 第11条, any time


def test_r19_checklists_hw_adds_firewall_and_antivirus() -> None:
    kg, hw = {c.id for c in KG.device_checklist}, {c.id for c in HW.device_checklist}
    assert hw - kg == {"firewall-on", "antivirus-current"}
    assert {"supported-os", "no-file-sharing", "no-untrusted-wifi", "app-ready", "connection-checked"} <= kg
    assert {c.id: c.rule for c in KG.device_checklist}["webcam"] == "R03"


def test_r20_kg_areas_by_municipality_and_prefecture() -> None:
    assert KG.area_of("北海道釧路市幸町10-3") == "釧路"
    assert KG.area_of("北海道帯広市西5条南8丁目") == "十勝"
    assert KG.area_of("北海道上川郡清水町南4条") == "十勝"
    assert KG.area_of("静岡県駿東郡清水町堂庭") is None  # same town name, another prefecture
    assert KG.area_of("東京都千代田区霞が関2-1-2") is None
    assert HW.areas == []


def test_a_third_office_is_a_file(tmp_path: Path) -> None:
    data = yaml.safe_load((OFFICES / "kushiro-gyosei.yaml").read_text(encoding="utf-8"))
    data.update(office_id="sapporo-gyosei", name="札幌", areas=[])
    (tmp_path / "sapporo-gyosei.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    policies = Policies.load(OFFICES, tmp_path)
    assert policies.ids() == ["kohoku-hellowork", "kushiro-gyosei", "sapporo-gyosei"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"max_minutes": 45}, "less than or equal to 30"),
        ({"cancellation": {"channels": ["phone"], "same_day_channels": ["email"]}}, "same-day"),
        ({"refusal": {"identify_by": ["jobseeker_number"]}}, "identify_by"),
        ({"hours": {"opens": "17:00", "closes": "09:00"}}, "opens must be before closes"),
        ({"unknown_rule": 1}, "Extra inputs"),
    ],
)
def test_an_invalid_policy_is_refused_at_start_up(
    tmp_path: Path, change: dict[str, object], complaint: str
) -> None:
    shutil.copy(OFFICES / "kushiro-gyosei.yaml", tmp_path / "kushiro-gyosei.yaml")
    data = yaml.safe_load((tmp_path / "kushiro-gyosei.yaml").read_text(encoding="utf-8"))
    data.update(change)
    (tmp_path / "kushiro-gyosei.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError, match=complaint):
        load_file(tmp_path / "kushiro-gyosei.yaml")


def test_the_file_name_is_the_office_id(tmp_path: Path) -> None:
    shutil.copy(OFFICES / "kushiro-gyosei.yaml", tmp_path / "kushiro.yaml")
    with pytest.raises(PolicyError, match="must match the file name"):
        load_file(tmp_path / "kushiro.yaml")


def test_prod_refuses_to_start_with_example_contact_details(tmp_path: Path) -> None:
    """The shipped offices' phone numbers and emails are examples (the seeds publish none): fine in
    development, refused with ENVIRONMENT=prod until the office sets its own."""
    from shared.settings import ServiceSettings

    prod = {"environment": "prod", "secret_key": "a-real-secret-0123456789", "amqp_url": "amqp://s:pw@mq/"}
    with pytest.raises(ValueError, match="kushiro-gyosei") as refused:
        ServiceSettings(**prod).policies()  # type: ignore[arg-type]
    assert "kohoku-hellowork" in str(refused.value) and "contact_example" in str(refused.value)
    assert ServiceSettings().policies()["kushiro-gyosei"].contact_example  # development: loads

    own = yaml.safe_load((OFFICES / "kushiro-gyosei.yaml").read_text(encoding="utf-8"))
    own |= {"contact_example": False, "phone": "0154-23-0000", "email": "soudan@kushiro.example.org"}
    (tmp_path / "kushiro-gyosei.yaml").write_text(yaml.safe_dump(own, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=r"email soudan@kushiro\.example\.org"):  # RFC 2606: still an example
        ServiceSettings(**prod, offices_dir=tmp_path).policies()  # type: ignore[arg-type]
    own["email"] = "soudan@kushiro-gyosei.go.jp"
    (tmp_path / "kushiro-gyosei.yaml").write_text(yaml.safe_dump(own, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match="teams tenant 00000000-0000-0000-0000-000000000000"):  # R16
        ServiceSettings(**prod, offices_dir=tmp_path).policies()  # type: ignore[arg-type]
    own["meeting"][0]["graph"] = {"tenant_id": "6b1f6d3e-2c1a-4f0e-9a51-0d3c5e7a9b21", "client_id": "3f2e"}
    published = tmp_path / "published"  # another folder: policies are loaded once per folder
    published.mkdir()
    (published / "kushiro-gyosei.yaml").write_text(yaml.safe_dump(own, allow_unicode=True), encoding="utf-8")
    assert ServiceSettings(**prod, offices_dir=published).policies().ids() == ["kushiro-gyosei"]  # type: ignore[arg-type]

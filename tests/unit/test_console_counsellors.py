"""The counsellor form: what the console sends the scheduler, and the scheduler's refusals by field."""

from starlette.datastructures import FormData

from services.console.clients import ServiceError
from services.console.routes.counsellors import body_of, field_errors, shown
from services.console.web import Form


def form(*items: tuple[str, str]) -> Form:
    return Form(FormData(list(items)))


def test_the_form_becomes_the_scheduler_body_spans_split_and_blank_rows_left_out() -> None:
    body = body_of(
        form(
            ("name", " 山田 次郎 "),
            ("email", ""),
            ("areas", "釧路"),
            ("areas", "十勝"),
            ("apps", "teams"),
            ("weekly_mon", "09:00-12:00、13:00-17:00"),
            ("weekly_tue", "09:00-12:00, 13:00-15:00 15:30-17:00"),
            ("weekly_wed", "  "),
            ("exc_date", "2026-12-25"),
            ("exc_spans", ""),
            ("exc_note", "休暇"),
            ("exc_date", ""),
            ("exc_spans", "09:00-10:00"),
            ("exc_note", ""),
            ("active", "on"),
        )
    )
    assert body == {
        "name": "山田 次郎",
        "email": None,
        "organizer": None,
        "areas": ["釧路", "十勝"],
        "apps": ["teams"],
        "weekly": {
            "mon": ["09:00-12:00", "13:00-17:00"],
            "tue": ["09:00-12:00", "13:00-15:00", "15:30-17:00"],
        },
        "exceptions": [{"date": "2026-12-25", "spans": [], "note": "休暇"}],  # a blank date: no row
        "active": True,
    }
    assert body_of(form(("name", "x")))["active"] is False  # an unticked box is not sent


def test_a_counsellor_shows_its_spans_as_staff_type_them() -> None:
    c = shown(
        {
            "weekly": {"fri": ["09:00-12:00", "13:00-17:00"]},
            "exceptions": [{"date": "2026-12-25", "spans": []}],
        }
    )
    assert c["weekly_text"]["fri"] == "09:00-12:00、13:00-17:00" and c["weekly_text"]["mon"] == ""
    assert c["exceptions"][0]["spans_text"] == ""


def test_r20_r16_the_schedulers_field_errors_go_beside_their_field_with_the_rule() -> None:
    detail = [
        {
            "loc": ["body", "areas"],
            "msg": "R20: demo-town does not serve ['札幌']",
            "type": "policy",
            "rule": "R20",
        },
        {
            "loc": ["body", "apps"],
            "msg": "R16: demo-town does not use ['skype']",
            "type": "policy",
            "rule": "R16",
        },
        {"loc": ["body", "weekly"], "msg": "Value error, '17:00-09:00': the start must be before the end"},
        {"loc": ["body", "exceptions", 1, "spans", 0], "msg": "Value error, expected HH:MM-HH:MM"},
        {"loc": ["body", "email"], "msg": "value is not a valid email address"},
    ]
    errors = field_errors(ServiceError("scheduler", 422, {"detail": detail}), "body")
    assert set(errors) == {"areas", "apps", "weekly", "exceptions.1", "email"}
    assert (errors["areas"]["rule"], errors["apps"]["rule"]) == ("R20", "R16")
    assert "札幌" in errors["areas"]["detail"] and errors["weekly"]["rule"] is None
    assert errors["exceptions.1"]["text"].startswith("日付と時間帯")


def test_a_refusal_without_fields_goes_to_the_default_field() -> None:
    conflict = ServiceError("scheduler", 409, {"detail": "kg-sato belongs to kushiro-gyosei"})
    errors = field_errors(conflict, "counsellor_id")
    assert list(errors) == ["counsellor_id"] and "別の事務所" in errors["counsellor_id"]["text"]
    room = field_errors(ServiceError("scheduler", 422, {"detail": "R16: bad url"}), "room")
    assert room["room"]["rule"] == "R16"

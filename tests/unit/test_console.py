"""The console's pure parts: accounts (Argon2, TOTP), sessions and their timeouts, CSRF tokens, JST
formatting, the headers it acts for a person with, and how it words a service's refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pyotp
import pytest
from starlette.requests import Request

from services.console import labels
from services.console.accounts import AccountError, new_account
from services.console.clients import Acting, ServiceError
from services.console.config import Settings
from services.console.routes.coordination import in_windows, parse_slot, slot_value
from services.console.routes.signin import SignIn
from services.console.routes.today import rows, span
from services.console.sessions import Timeouts, new_session, signin_csrf, token_hash

T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)  # 2026-12-04 10:00 JST, a Friday
OFFICES = {"kushiro-gyosei", "kohoku-hellowork"}
TIMEOUTS = Timeouts(idle=timedelta(minutes=30), absolute=timedelta(hours=12))


def staff(**kw: object) -> object:
    args: dict[str, object] = {
        "person_id": "tanaka.hanako",
        "name": "田中花子",
        "roles": ["staff"],
        "password": "correct horse battery",
        "offices": ["kushiro-gyosei"],
        "counsellor_id": None,
        "known_offices": OFFICES,
        "now": T0,
    }
    return new_account(**{**args, **kw})  # type: ignore[arg-type]


def test_jst_in_the_offices_usual_form() -> None:
    assert labels.jst("2026-12-04T01:00:00+00:00") == "2026年12月4日(金) 10:00"
    assert labels.jst(T0, T0 + timedelta(minutes=30)) == "2026年12月4日(金) 10:00〜10:30"
    assert labels.jst_date("2026-12-04") == "2026年12月4日(金)"
    assert labels.jst_date("2026-12-03T15:30:00+00:00") == "2026年12月4日(金)"  # past midnight JST
    assert labels.jst_iso("2026-12-03T15:30:00Z") == "2026-12-04"
    assert labels.jst(None) == "—"


def test_passwords_are_argon2id_hashes_and_check() -> None:
    account = staff()
    assert account.password_hash.startswith("$argon2id$")
    assert "correct horse" not in account.password_hash
    assert account.check_password("correct horse battery")
    assert not account.check_password("correct horse batterY")
    assert not replace(account, password_hash="not a hash").check_password("x")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"person_id": "Tanaka Hanako"}, "person id"),
        ({"password": "short"}, "12 characters"),
        ({"roles": ["admin"]}, "roles"),
        ({"offices": ["nowhere"]}, "unknown offices"),
        ({"offices": []}, "at least one office"),
        ({"roles": ["counsellor"], "counsellor_id": None}, "counsellor id"),
    ],
)
def test_an_account_that_cannot_be_made_says_why(change: dict[str, object], problem: str) -> None:
    with pytest.raises(AccountError, match=problem):
        staff(**change)


def test_a_counsellor_acts_for_their_one_office_and_is_not_staff() -> None:
    c = staff(roles=["counsellor"], counsellor_id="kg-sato")
    assert c.counsellor_id == "kg-sato" and c.counsellor_office == "kushiro-gyosei"  # type: ignore[attr-defined]
    assert not c.may_act_for("kushiro-gyosei")  # type: ignore[attr-defined]
    assert staff().may_act_for("kushiro-gyosei") and not staff().may_act_for("kohoku-hellowork")  # type: ignore[attr-defined]


def test_totp_codes_of_the_current_step_and_one_either_side_are_taken() -> None:
    secret = pyotp.random_base32()
    account = replace(staff(), totp_secret=secret)  # type: ignore[type-var]
    totp = pyotp.TOTP(secret)
    step = int(T0.timestamp()) // 30
    assert account.check_totp(totp.at(T0), T0) == step
    assert account.check_totp(totp.at(T0 - timedelta(seconds=30)), T0) == step - 1
    assert account.check_totp(totp.at(T0 + timedelta(minutes=5)), T0) is None
    assert account.check_totp("abcdef", T0) is None
    assert replace(account, totp_secret=None).check_totp(totp.at(T0), T0) is None


def test_sessions_are_stored_under_the_hash_of_their_token() -> None:
    token, session = new_session("tanaka.hanako", "password", T0)
    assert session.session_id == token_hash(token) != token
    assert len(token) >= 43  # 256 bits
    other, again = new_session("tanaka.hanako", "password", T0)
    assert other != token and again.csrf != session.csrf


def test_a_session_ends_when_idle_after_its_absolute_timeout_and_when_signed_out_everywhere() -> None:
    _, s = new_session("p", "password", T0)
    assert s.ended(T0 + timedelta(minutes=29), TIMEOUTS, None) is None
    assert s.ended(T0 + timedelta(minutes=30), TIMEOUTS, None) == "idle"
    busy = replace(s, last_seen=T0 + timedelta(hours=12) - timedelta(minutes=1))
    assert busy.ended(T0 + timedelta(hours=12) - timedelta(seconds=1), TIMEOUTS, None) is None
    assert busy.ended(T0 + timedelta(hours=12), TIMEOUTS, None) == "absolute"
    assert s.ended(T0 + timedelta(minutes=1), TIMEOUTS, T0 + timedelta(seconds=1)) == "everywhere"
    assert s.ended(T0 + timedelta(minutes=1), TIMEOUTS, T0) is None  # the same instant: still valid
    assert all(labels.SESSION_ENDED[why] for why in ("idle", "absolute", "everywhere"))


def test_csrf_tokens_match_only_their_session_or_sign_in_nonce() -> None:
    _, s = new_session("p", "password", T0)
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf + "x")
    assert signin_csrf("k", "n1") == signin_csrf("k", "n1") != signin_csrf("k", "n2")
    assert signin_csrf("k", "n1") != signin_csrf("other secret", "n1")


def test_the_console_acts_for_the_person_with_the_roles_each_service_knows() -> None:
    a = Acting("sato", ("staff", "counsellor", "auditor"), ("kushiro-gyosei",), "kg-sato")
    assert a.headers("booking") == {
        "X-Acting-Person": "sato",
        "X-Acting-Roles": "staff",
        "X-Acting-Offices": "kushiro-gyosei",
    }
    assert a.headers("scheduler")["X-Acting-Counsellor"] == "kg-sato"
    assert a.headers("scheduler")["X-Acting-Roles"] == "staff,counsellor"
    assert a.headers("audit") == {"X-Acting-Person": "sato", "X-Acting-Roles": "auditor"}
    assert "X-Acting-Counsellor" not in Acting("t", ("staff",), ("x",), "kg-sato").headers("scheduler")


def test_r07_a_refused_cancellation_is_worded_in_japanese_with_bookings_reason() -> None:
    err = ServiceError(
        "booking",
        409,
        {"rule": "R07", "message": "cancellation by email is not accepted on the consultation day",
         "how_to_cancel": "キャンセルは電話で…"},
    )  # fmt: skip
    assert labels.refusal(err.status, err.rule, err.message).endswith("（R07）。")
    assert "email" in err.message
    assert labels.refusal(409, None, "R04: a consultation on 2026-12-07 must be confirmed by ...").startswith(
        "確定期限"
    )
    assert labels.refusal(403, None, "nope") == labels.STATUS_TEXT[403]
    assert ServiceError("x", 422, {"detail": [{"loc": ["body", "ground"], "msg": "bad"}]}).message == (
        "body.ground: bad"
    )


def test_a_no_show_is_named_as_one_r08() -> None:
    assert labels.status_label({"status": "cancelled", "cancellation": {"reason": "no_show"}}) == "無断欠席"
    assert labels.status_label({"status": "cancelled", "cancellation": {"reason": "person"}}) == "キャンセル"
    assert labels.status_label({"status": "awaiting_coordination"}) == "調整待ち（職員）"


def test_today_sorts_by_time_and_filters_by_counsellor() -> None:
    late = {"appointment_record": {"start": "2026-12-04T05:00:00+00:00", "counsellor_id": "kg-sato"}}
    early = {"windows": [{"start": "2026-12-04T02:00:00+00:00"}]}
    other = {"appointment_record": {"start": "2026-12-04T03:00:00+00:00", "counsellor_id": "kg-suzuki"}}
    assert rows([late, early, other], None) == [early, other, late]
    assert rows([late, early, other], "kg-sato") == [late]
    assert span(date(2026, 12, 4), week=True) == (date(2026, 11, 30), date(2026, 12, 6))
    assert span(date(2026, 12, 4), week=False) == (date(2026, 12, 4), date(2026, 12, 4))


def test_r05_a_slot_is_wished_when_it_lies_inside_a_wished_window() -> None:
    windows = [{"start": "2026-12-04T01:00:00+00:00", "end": "2026-12-04T03:00:00+00:00"}]
    inside = {"start": "2026-12-04T02:00:00+00:00", "end": "2026-12-04T02:30:00+00:00"}
    across = {"start": "2026-12-04T02:45:00+00:00", "end": "2026-12-04T03:15:00+00:00"}
    assert in_windows(inside, windows) and not in_windows(across, windows)
    assert parse_slot(slot_value("kg-sato", inside["start"])) == (
        "kg-sato",
        datetime(2026, 12, 4, 2, tzinfo=UTC),
    )


def test_every_template_compiles_and_every_page_is_japanese_with_a_main() -> None:
    from services.console.web import HERE, templates

    env = templates().env
    names = sorted(p.name for p in (HERE / "templates").glob("*.html"))
    assert len(names) >= 15
    for name in names:
        env.get_template(name)  # a syntax error fails here, not in front of a person
    base = (HERE / "templates" / "base.html").read_text()
    assert '<html lang="ja">' in base and '<main id="main"' in base and "<script>" not in base


def test_r05_free_slots_closest_to_the_wished_windows_come_first() -> None:
    from services.console.routes.coordination import nearness

    windows = [{"start": "2026-12-04T01:00:00+00:00", "end": "2026-12-04T01:30:00+00:00"}]
    right_after = {"start": "2026-12-04T01:30:00+00:00", "end": "2026-12-04T02:00:00+00:00"}
    at_dawn = {"start": "2026-12-03T15:00:00+00:00", "end": "2026-12-03T15:30:00+00:00"}
    assert nearness(right_after, windows) == 0 < nearness(at_dawn, windows)


def signin_from(peer: str, forwarded: str | None, trusted: list[str]) -> str:
    """The address a sign-in from `peer` (with that X-Forwarded-For) counts against."""
    settings = Settings(environment="test", trusted_proxies=trusted)
    signin = SignIn(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return signin.client(Request({"type": "http", "client": (peer, 40000), "headers": headers}))


def test_failed_sign_ins_count_against_the_person_behind_the_load_balancer_not_the_balancer() -> None:
    """Two console replicas behind HAProxy or an ingress (deploy/cluster): the peer is the proxy for
    everyone, so counting by it would let one person's mistakes lock the whole office out."""
    behind = ["172.28.20.0/24"]
    assert signin_from("172.28.20.7", "198.51.100.23", behind) == "198.51.100.23"
    assert signin_from("172.28.20.7", "198.51.100.23, 172.28.20.1", behind) == "198.51.100.23"
    # a header from anyone else is only a claim: the peer is the client
    assert signin_from("203.0.113.9", "198.51.100.23", behind) == "203.0.113.9"
    assert signin_from("172.28.20.7", "198.51.100.23", []) == "172.28.20.7"

"""Property-based tests of the intake validators (R02) and the office calendar (R04, R06, year-end).

Hardened inputs: whatever a portal sends, a validator either returns a normalised value or raises
ValueError (which becomes a 422 field error), never anything else; normalising twice changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import commands
from shared.calendar import OfficeCalendar
from shared.policy import load_file

OFFICES = Path(__file__).resolve().parents[2] / "deploy" / "offices"
CALENDARS = {p.stem: OfficeCalendar(load_file(p)) for p in sorted(OFFICES.glob("*.yaml"))}
DAYS = st.dates(min_value=date(2024, 1, 10), max_value=date(2032, 12, 31))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Normalizer = Callable[[str], str]
NORMALIZERS: dict[str, Normalizer] = {
    "name": commands.normalize_name,
    "kana": commands.normalize_kana,
    "phone": commands.normalize_phone,
    "email": commands.normalize_email,
    "address": commands.normalize_address,
    "jobseeker_number": commands.normalize_jobseeker_number,
    "text": commands.normalize_text,
}
#: characters portals really send: full-width digits and letters, half-width kana, dashes, spaces
JAPANESE = st.sampled_from(
    list("０１２３４５６７８９－‐ー−ｰ　 ()（）@＠.．")
    + [chr(c) for c in range(0x3041, 0x3097)]  # hiragana
    + [chr(c) for c in range(0x30A1, 0x30FB)]  # katakana
    + [chr(c) for c in range(0xFF66, 0xFF9F)]  # half-width katakana
    + list("山田太郎花子ＡＢＣabc0123456789-")
)
INPUTS = st.one_of(st.text(max_size=80), st.text(JAPANESE, max_size=40))


def _normalized(fn: Normalizer, value: str) -> str | None:
    try:
        return fn(value)
    except ValueError:
        return None  # the only refusal a validator may give (→ 422 field error)


@pytest.mark.parametrize("field", sorted(NORMALIZERS))
@FAST
@given(value=INPUTS)
def test_r02_validators_refuse_only_with_valueerror_and_are_idempotent(field: str, value: str) -> None:
    fn = NORMALIZERS[field]
    once = _normalized(fn, value)
    if once is None:
        return
    assert isinstance(once, str)
    assert fn(once) == once  # idempotent: a stored value validates to itself


@pytest.mark.parametrize("field", ["name", "kana", "address", "jobseeker_number", "text"])
@FAST
@given(value=INPUTS)
def test_r02_validators_give_nfkc_text(field: str, value: str) -> None:
    once = _normalized(NORMALIZERS[field], value)
    if once is not None:
        assert unicodedata.normalize("NFKC", once) == once
        assert once == once.strip()


@FAST
@given(value=INPUTS)
def test_r02_phone_is_e164_and_jobseeker_number_has_fixed_shape(value: str) -> None:
    phone = _normalized(commands.normalize_phone, value)
    assert phone is None or re.fullmatch(r"\+81\d{9,10}", phone)
    number = _normalized(commands.normalize_jobseeker_number, value)
    assert number is None or re.fullmatch(r"\d{5}-\d{8}", number)


@given(digits=st.from_regex(r"\A0[1-9][0-9]{8,9}\Z"))
@FAST
def test_r02_full_width_phone_equals_ascii_phone(digits: str) -> None:
    full = "".join(chr(ord(c) + 0xFEE0) for c in digits)
    assert _normalized(commands.normalize_phone, full) == _normalized(commands.normalize_phone, digits)


@pytest.mark.parametrize("office", sorted(CALENDARS))
@FAST
@given(d=DAYS)
def test_r04_deadline_is_an_open_day_exactly_n_open_days_before(office: str, d: date) -> None:
    cal = CALENDARS[office]
    n = cal.policy.lead_time_open_days
    deadline = cal.confirmation_deadline(d)
    if not n:
        assert deadline is None
        return
    assert deadline is not None
    assert deadline < d
    assert cal.is_open(deadline)
    span = [deadline + timedelta(days=i) for i in range((d - deadline).days)]
    assert sum(cal.is_open(x) for x in span) == n  # the deadline itself and n-1 open days after it


@pytest.mark.parametrize("office", sorted(CALENDARS))
@FAST
@given(d=DAYS)
def test_r06_notice_date_is_the_day_before_or_the_last_open_day_before(office: str, d: date) -> None:
    cal = CALENDARS[office]
    notice = cal.notice_date(d)
    if not cal.policy.notice.day_before:
        assert notice is None
        return
    assert notice is not None
    assert notice < d
    yesterday = d - timedelta(days=1)
    if cal.is_open(yesterday):
        assert notice == yesterday
    else:
        assert cal.is_open(notice)
        closed_between = [notice + timedelta(days=i) for i in range(1, (d - notice).days)]
        assert not any(cal.is_open(x) for x in closed_between)


YEAR_END_CLOSED = sorted(o for o, c in CALENDARS.items() if c.policy.year_end_closure)


def test_every_office_has_a_year_end_closure_to_check() -> None:
    assert sorted(CALENDARS) == YEAR_END_CLOSED  # public offices close Dec 29 – Jan 3 (閉庁日)


@pytest.mark.parametrize("office", YEAR_END_CLOSED)
@FAST
@given(year=st.integers(2024, 2040), offset=st.integers(0, 5))
def test_year_end_closure_dec29_to_jan3(office: str, year: int, offset: int) -> None:
    cal = CALENDARS[office]
    day = date(year, 12, 29) + timedelta(days=offset)  # 29, 30, 31, 1, 2, 3
    assert not cal.is_open(day)

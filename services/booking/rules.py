"""The rules a booking request must pass, as pure functions of the office policy, the form and the time.

Two kinds of answer: per-field errors the portal shows next to its inputs (HTTP 422: missing or
malformed fields, R02 R15 R19, windows outside open days or hours), and a refusal with its rule id
(HTTP 409: R01 too long, R17 stale terms, R20 outside the served areas, R04 too late, R03 ineligible,
R09/R13 refused person). Refusals are checked in that order and the first one answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.booking.domain import InvalidFields, RuleViolation
from services.booking.refusals import PersonRecord
from shared.calendar import OfficeCalendar, jst_date
from shared.clock import format_jst, jst
from shared.commands import BookingForm, FieldError, WindowsForm, WishedWindow, form_errors
from shared.policy import FormField, OfficePolicy

#: form fields holding personal data: asked only when the office's form lists them (R02)
PERSONAL = (
    FormField.NAME,
    FormField.ADDRESS,
    FormField.PHONE,
    FormField.EMAIL,
    FormField.JOBSEEKER_NUMBER,
    FormField.TOPIC,
)


@dataclass(frozen=True)
class RegisteredJobseeker:
    """What the HW registry holds about a job seeker (R02, R03), decrypted."""

    number: str
    name: str
    phone: str
    mypage_email: str | None
    active: bool


def duration_of(policy: OfficePolicy, form: BookingForm) -> int:
    """The length asked for; an office whose form does not ask gets its maximum (R01)."""
    return form.duration_minutes or policy.max_minutes


def form_field_errors(policy: OfficePolicy, form: BookingForm) -> list[FieldError]:
    """R02: the office's fields are present, no other personal data is sent; R15 and R19 declared."""
    errors = []
    for f in PERSONAL:
        value = getattr(form, f.value)
        if f in policy.form and value is None:
            errors.append(FieldError(field=f.value, message="required by this office", rule="R02"))
        elif f not in policy.form and value is not None:
            errors.append(FieldError(field=f.value, message="not collected by this office", rule="R02"))
    if FormField.DURATION in policy.form and form.duration_minutes is None:
        errors.append(FieldError(field="duration_minutes", message="required by this office", rule="R02"))
    if form.companions is None:  # R15: an interpreter or assistant must be declared in advance
        errors.append(
            FieldError(
                field="companions", message="declare who attends: [] or interpreter/assistant", rule="R15"
            )
        )
    if form.terms_version is None:
        errors.append(FieldError(field="terms_version", message="the terms version agreed to", rule="R17"))
    return errors + checklist_errors(policy, form.device_checklist)


def checklist_errors(policy: OfficePolicy, confirmed: list[str]) -> list[FieldError]:
    """R19 (R03 for the webcam item): every item of the office's checklist confirmed, no unknown ids."""
    known = {c.id: c for c in policy.device_checklist}
    errors = [
        FieldError(field="device_checklist", message=f"unknown checklist item {i!r}", rule="R19")
        for i in confirmed
        if i not in known
    ]
    for item in policy.device_checklist:
        if item.id not in confirmed:
            errors.append(
                FieldError(
                    field=f"device_checklist.{item.id}", message=f"not confirmed: {item.text}", rule=item.rule
                )
            )
    return errors


def window_errors(
    policy: OfficePolicy, calendar: OfficeCalendar, windows: list[WishedWindow], minutes: int, now: datetime
) -> list[FieldError]:
    """Each wished range: one open day, within office hours, in the future, long enough (R02, KG 4(1)⑤)."""
    errors = []
    for i, w in enumerate(windows):
        problem = _window_problem(policy, calendar, w, minutes, now)
        if problem:
            errors.append(FieldError(field=f"windows.{i}", message=problem, rule="R02"))
    return errors


def _window_problem(
    policy: OfficePolicy, calendar: OfficeCalendar, w: WishedWindow, minutes: int, now: datetime
) -> str | None:
    start, end = jst(w.start), jst(w.end)
    if end <= start:
        return "the end must be after the start"
    if start.date() != end.date():
        return "a window lies within one day"
    closed = calendar.closed_because(start.date())
    if closed:
        return f"{start.date()} is not an open day ({closed})"
    opens, closes = calendar.hours_on(start.date())
    if start < opens or end > closes:
        return f"outside office hours {policy.hours.opens:%H:%M}–{policy.hours.closes:%H:%M}"
    if start <= now:
        return "the window has already begun"
    if start > now + policy.booking_horizon:
        return f"more than {policy.booking_horizon.days} days ahead"
    if minutes <= policy.max_minutes and end - start < timedelta(minutes=minutes):
        return f"shorter than the {minutes} minutes asked for"
    return None


def policy_refusal(
    policy: OfficePolicy, calendar: OfficeCalendar, form: BookingForm, now: datetime
) -> RuleViolation | None:
    """R01, R17, R20, R04 — the first that refuses the request, or None."""
    too_long = length_refusal(policy, duration_of(policy, form))
    if too_long is not None:
        return too_long
    terms = policy.terms_in_force(now)
    if form.terms_version != terms.version:  # R17: applying means agreeing to the terms in force
        return RuleViolation(
            "R17",
            f"the terms in force are version {terms.version} (from {terms.effective_from}); agree to them",
            field="terms_version",
            current_terms_version=terms.version,
        )
    if policy.areas and policy.refuse_outside_areas and policy.area_of(form.address or "") is None:
        areas = "、".join(a.name for a in policy.areas)
        return RuleViolation("R20", f"the office serves the {areas} areas only", field="address")
    return lead_time_refusal(calendar, form.windows, now)


def length_refusal(policy: OfficePolicy, minutes: int) -> RuleViolation | None:
    """R01: a consultation lasts at most the office's maximum (30 minutes)."""
    if minutes <= policy.max_minutes:
        return None
    return RuleViolation(
        "R01", f"a consultation lasts at most {policy.max_minutes} minutes", field="duration_minutes"
    )


def lead_time_refusal(
    calendar: OfficeCalendar, windows: list[WishedWindow], now: datetime
) -> RuleViolation | None:
    """R04: every wished day can still be confirmed by the office's deadline (HW: 2 open days before)."""
    return next(iter(lead_time_refusals(calendar, windows, now)), None)


def lead_time_refusals(
    calendar: OfficeCalendar, windows: list[WishedWindow], now: datetime
) -> list[RuleViolation]:
    """R04: each wished window whose day can no longer be confirmed by the office's deadline."""
    today, found = jst_date(now), []
    for i, w in enumerate(windows):
        day = jst_date(w.start)
        if not calendar.can_confirm_on(day, today):
            deadline = calendar.confirmation_deadline(day)
            found.append(
                RuleViolation(
                    "R04",
                    f"a consultation on {day} had to be confirmed by {deadline}; "
                    f"the earliest day still bookable is {calendar.first_bookable(now)}",
                    field=f"windows.{i}",
                    confirmation_deadline=str(deadline),
                    first_bookable=str(calendar.first_bookable(now)),
                )
            )
    return found


def read_windows(body: Any) -> WindowsForm:
    """The person's new wished windows (R05) as sent, or InvalidFields naming each field and rule."""
    try:
        return WindowsForm.model_validate(body)
    except ValidationError as exc:
        raise InvalidFields(form_errors(exc)) from None


def new_window_errors(
    policy: OfficePolicy, calendar: OfficeCalendar, form: WindowsForm, minutes: int, now: datetime
) -> list[FieldError]:
    """R05: new wished windows pass what the intake's pass, as per-field errors: each range (R02),
    the length asked for (R01) and, on a window otherwise fine, the office's lead time (R04)."""
    errors = window_errors(policy, calendar, form.windows, minutes, now)
    if (too_long := length_refusal(policy, minutes)) is not None:
        errors.append(FieldError(field="duration_minutes", message=too_long.message, rule="R01"))
    wrong = {e.field for e in errors}
    late = [v for v in lead_time_refusals(calendar, form.windows, now) if v.field not in wrong]
    return errors + [FieldError(field=v.field or "windows", message=v.message, rule=v.rule) for v in late]


def eligibility_refusal(
    policy: OfficePolicy, form: BookingForm, jobseeker: RegisteredJobseeker | None
) -> RuleViolation | None:
    """R03 (HW): registered at this office with My Page opened; then R02: the phone given is the one
    registered with the job-seeker record (HW 第6条(2): a changed number is reported to the office)."""
    rules = policy.eligibility
    if not rules.requires_jobseeker_registration:
        return None
    if jobseeker is None or not jobseeker.active:
        return RuleViolation("R03", "no job-seeker registration at this office", field="jobseeker_number")
    if rules.requires_mypage and not jobseeker.mypage_email:
        return RuleViolation("R03", "the job-seeker My Page has not been opened", field="jobseeker_number")
    if rules.phone_must_match_registration and form.phone != jobseeker.phone:
        return RuleViolation(
            "R02",
            "the phone differs from the one registered with the job seeker; report the change to the office",
            field="phone",
            phone=policy.phone,
        )
    return None


def refused_person(person: PersonRecord | None, now: datetime) -> RuleViolation | None:
    """R09/R13: a person refused by the office cannot book until the refusal expires or is lifted."""
    refusal = person.refusal_in_force(now) if person else None
    if refusal is None:
        return None
    until = f" until {format_jst(refusal.until)}" if refusal.until else ""
    return RuleViolation(
        refusal.rule,
        f"online consultations are refused{until}; please contact the office",
        until=refusal.until.isoformat() if refusal.until else None,
    )


def person_identity(policy: OfficePolicy, form: BookingForm) -> list[tuple[str, str]]:
    """R09: the normalised values that identify the person at this office."""
    return [(f.value, str(getattr(form, f.value) or "")) for f in policy.person_identity]

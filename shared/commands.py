"""What portals and upstream systems send to the booking service: the booking form and intake messages.

A portal books over HTTP (`POST /v1/offices/{office_id}/bookings` with a `BookingForm` as JSON body) or
over AMQP: publish a `RequestBooking` to the exchange `consult.intake` with routing key
`booking.request` (persistent, content type application/json). Both run the same handler. An AMQP
request the booking service cannot read is parked with the reason; a readable one that is refused
produces a `booking.rejected` event on `consult.events` (request_id = the idempotency key), and its
outcome can be read with `GET /v1/requests/{idempotency_key}`. The booking id of an accepted request
is the same however often it is sent (see `booking_id_for`).

The job-seeker system (HW) feeds the registry with `JobseekerRecord` messages (routing keys
`jobseeker.registered` and `jobseeker.updated`, each carrying the whole current record). Portals may
report the device a person uses with `ObserveDevice` (routing key `device.observed`, R10).

When the office coordinates a booking again (R05, KG 第4条(2): the person declined the proposed
times, or none could be offered), the person may give new wished windows: over HTTP
(`POST /v1/bookings/{booking_id}/windows` with a `WindowsForm`) or over AMQP (`ChangeWindows`,
routing key `booking.change_windows`). A command booking cannot take is parked with the reason.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from shared.events import Envelope, MessageError, Payload, UtcDatetime, iso_only
from shared.text import PROSE_ALLOWED, CleanText, IpAddress, no_controls, shown

# --------------------------------------------------------------------------- normalisation

_NAME_PUNCT = frozenset(" ・ー-'.")
_DASHES = "‐‑‒–—―−ーｰ－"


def _nfkc(value: str) -> str:
    """NFKC (full-width digits and letters to ASCII, half-width kana to full-width), spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def normalize_name(value: str) -> str:
    """A person's name in kanji, kana or Latin letters, NFKC-normalised."""
    name = _nfkc(value)
    if not 1 <= len(name) <= 60:
        raise ValueError("a name of 1 to 60 characters is required")
    for ch in name:
        if not (unicodedata.category(ch)[0] in "LM" or ch in _NAME_PUNCT):
            raise ValueError(f"a name may hold letters (kanji, kana, Latin) only, not {ch!r}")
    return name


def normalize_kana(value: str) -> str:
    """The reading of a name in katakana (hiragana is converted)."""
    kana = _nfkc(value)
    kana = "".join(chr(ord(c) + 0x60) if "ぁ" <= c <= "ゖ" else c for c in kana)
    if not 1 <= len(kana) <= 100 or any(not ("ァ" <= c <= "ヺ" or c in " ー・") for c in kana):
        raise ValueError("the reading must be written in kana")
    return kana


def normalize_phone(value: str) -> str:
    """A Japanese phone number, stored in E.164 form (+81...)."""
    try:
        number = phonenumbers.parse(_nfkc(value), "JP")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number) or number.country_code != 81:
        raise ValueError("not a valid Japanese phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_email(value: str) -> str:
    """An email address, syntax checked and normalised; no DNS look-up."""
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def normalize_address(value: str) -> str:
    address = no_controls(_nfkc(value))
    if not 4 <= len(address) <= 200:
        raise ValueError("an address of 4 to 200 characters is required")
    return address


_JOBSEEKER = re.compile(r"^(\d{5})-?(\d{8})$")


def normalize_jobseeker_number(value: str) -> str:
    """求職番号: 5-digit office code and 8-digit serial, written 12345-12345678 (hyphen optional)."""
    raw = unicodedata.normalize("NFKC", value).strip()
    raw = re.sub(f"[{_DASHES}]", "-", raw).replace(" ", "")
    m = _JOBSEEKER.match(raw)
    if m is None:
        raise ValueError("a job-seeker number is 5 digits, a hyphen and 8 digits, e.g. 12345-12345678")
    return f"{m.group(1)}-{m.group(2)}"


def normalize_text(value: str) -> str:
    text = no_controls(unicodedata.normalize("NFKC", value).strip(), allowed=PROSE_ALLOWED)
    if not 1 <= len(text) <= 1000:
        raise ValueError("1 to 1000 characters")
    return text


Name = Annotated[str, AfterValidator(normalize_name)]
Kana = Annotated[str, AfterValidator(normalize_kana)]
Phone = Annotated[str, AfterValidator(normalize_phone)]
Email = Annotated[str, AfterValidator(normalize_email)]
Address = Annotated[str, AfterValidator(normalize_address)]
JobseekerNumber = Annotated[str, AfterValidator(normalize_jobseeker_number)]
Text = Annotated[str, AfterValidator(normalize_text)]


# --------------------------------------------------------------------------- the booking form


class Form(CleanText):
    """Every string field meets the text rules (`shared.text`), besides its own normalisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _plausible(at: datetime) -> datetime:
    """A wished time this century, convertible to UTC (year 1 or 9999 with an offset overflows)."""
    try:
        utc_at = at.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date out of range") from exc
    if not 2000 <= utc_at.year <= 2999:
        raise ValueError("date out of range")
    return at


WishedTime = Annotated[AwareDatetime, BeforeValidator(iso_only), AfterValidator(_plausible)]


class WishedWindow(Form):
    """A range in which a consultation of `duration_minutes` is wished (KG 第4条(1)⑤)."""

    start: WishedTime = Field(description="start of the range, with offset (JST +09:00)")
    end: WishedTime = Field(description="end of the range; same day, within office hours")


class DeviceInfo(Form):
    """Identification of the device the person uses (R10); goes to audit only, pseudonymised (R11)."""

    user_agent: str | None = Field(None, max_length=500)
    ip_address: IpAddress | None = Field(
        None, max_length=64, description="the person's IPv4 or IPv6 address as the portal saw it"
    )
    device_id: str | None = Field(None, max_length=200)
    app_version: str | None = Field(None, max_length=100)


class BookingForm(Form):
    """Body of a booking request. Which personal fields are required is office policy (R02): KG name,
    address, phone, email, windows, duration; HW name, jobseeker_number, phone, topic (plus windows).
    Fields an office does not ask for are refused, so no more personal data is kept than needed."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"topic"})

    name: Name | None = Field(None, description="氏名 (kanji, kana or Latin letters)")
    name_kana: Kana | None = Field(None, description="reading of the name, optional")
    address: Address | None = Field(None, description="住所 (KG); places the person in an area (R20)")
    phone: Phone | None = Field(None, description="電話番号; HW: the one registered with the job seeker")
    email: Email | None = Field(None, description="メールアドレス (KG); HW notices go to My Page's address")
    jobseeker_number: JobseekerNumber | None = Field(None, description="求職番号 (HW) 12345-12345678")
    topic: Text | None = Field(None, description="相談したい内容 (HW)")
    windows: list[WishedWindow] = Field(
        min_length=1, max_length=5, description="wished ranges, in order of preference (open days, hours)"
    )
    duration_minutes: int | None = Field(
        None, ge=1, description="length asked for (R01: at most the office's maximum, 30)"
    )
    companions: list[Literal["interpreter", "assistant"]] | None = Field(
        None, description="R15: who attends with the person; [] for nobody. Must be declared."
    )
    device_checklist: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=50,
        description="R19 (and R03 webcam): ids of the checklist items confirmed",
    )
    terms_version: str | None = Field(
        None, max_length=50, description="R17: the terms version the person agreed to"
    )
    device: DeviceInfo | None = Field(None, description="R10: device identification, optional")


class WindowsForm(Form):
    """The person's new wished windows for a booking the office coordinates again (R05, KG 第4条(2)
    改めて日程調整): checked as at intake (open days, office hours, in the future, long enough;
    R04 lead time; R01 length), then coordinated like a new request."""

    windows: list[WishedWindow] = Field(
        min_length=1, max_length=5, description="the new wished ranges, in order of preference"
    )
    duration_minutes: int | None = Field(
        None, ge=1, description="length asked for (R01: at most the office's maximum); default: as booked"
    )


#: which rule a form field's problem belongs to, for the per-field errors of a 422
FIELD_RULES = {
    "companions": "R15",
    "device_checklist": "R19",
    "terms_version": "R17",
    "duration_minutes": "R01",
    "device": "R10",
}


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the field, e.g. windows.0.start")
    message: str
    rule: str | None = Field(None, description="rule the field belongs to, e.g. R02")


def form_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic's errors as per-field errors a portal can show next to its inputs."""
    out = []
    for e in exc.errors():
        # no location: the body is not an object; a key from outside is answered escaped
        path = ".".join(shown(str(p), 100) for p in e["loc"]) or "body"
        msg = shown(str(e["msg"]).removeprefix("Value error, "), 500, PROSE_ALLOWED)
        out.append(FieldError(field=path, message=msg, rule=FIELD_RULES.get(path.split(".")[0], "R02")))
    return out


# --------------------------------------------------------------------------- intake messages


class IntakeMessage(Payload):
    """Common head of every message on `consult.intake`."""

    message_id: uuid.UUID = Field(description="unique per message; a redelivered copy is handled once")
    type: str
    office_id: str = Field(max_length=64)
    sent_at: UtcDatetime

    def producer(self) -> str:
        return "intake"

    @classmethod
    def routing_keys(cls) -> tuple[str, ...]:
        """The routing keys on consult.intake: the values its `type` field admits."""
        return get_args(cls.model_fields["type"].annotation)


class RequestBooking(IntakeMessage):
    """Routing key `booking.request`: a portal asks for a booking; `body` is a `BookingForm`."""

    CHECKED_LATER: ClassVar[frozenset[str]] = frozenset({"body"})  # as a BookingForm, with its rules
    type: Literal["booking.request"]
    portal_id: str = Field(min_length=1, max_length=64)
    idempotency_key: str = Field(min_length=1, max_length=200, description="same key, same answer")
    body: dict[str, Any] = Field(description="the BookingForm, exactly as over HTTP")

    def producer(self) -> str:
        return f"portal:{self.portal_id}"


class ChangeWindows(IntakeMessage):
    """Routing key `booking.change_windows`: a portal sends the person's new wished windows for one of
    its bookings that the office coordinates again (R05); `body` is a `WindowsForm`. Booking answers
    by coordinating again (`booking.windows_changed`); a command it cannot take (invalid windows,
    another portal's or an unknown booking, a booking not waiting for coordination) is parked with
    the reason."""

    CHECKED_LATER: ClassVar[frozenset[str]] = frozenset({"body"})  # as a WindowsForm, with its rules
    type: Literal["booking.change_windows"]
    portal_id: str = Field(min_length=1, max_length=64)
    booking_id: str = Field(min_length=1, max_length=64)
    body: dict[str, Any] = Field(description="the WindowsForm, exactly as over HTTP")

    def producer(self) -> str:
        return f"portal:{self.portal_id}"


class JobseekerRecord(IntakeMessage):
    """Routing keys `jobseeker.registered` / `jobseeker.updated` (HW, R02/R03): the whole current record.
    A record older than the one held is ignored, so out-of-order delivery is harmless."""

    type: Literal["jobseeker.registered", "jobseeker.updated"]
    source: str = Field(min_length=1, max_length=100, description="upstream system that sent it")
    jobseeker_number: JobseekerNumber
    name: Name
    phone: Phone = Field(description="the phone registered with the job-seeker record")
    mypage_email: Email | None = Field(None, description="My Page address; None: no My Page opened")
    active: bool = Field(True, description="False once the registration has ended")

    def producer(self) -> str:
        return f"upstream:{self.source}"


class ObserveDevice(IntakeMessage):
    """Routing key `device.observed`: a portal reports the device a person used (R10)."""

    type: Literal["device.observed"]
    portal_id: str = Field(min_length=1, max_length=64)
    booking_id: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=500)
    ip_address: IpAddress | None = Field(None, max_length=64)
    device_id: str | None = Field(None, max_length=200)
    app_version: str | None = Field(None, max_length=100)

    def producer(self) -> str:
        return f"portal:{self.portal_id}"


#: routing key on consult.intake -> message model
INTAKE_TYPES: dict[str, type[IntakeMessage]] = {
    key: model
    for model in (RequestBooking, ChangeWindows, JobseekerRecord, ObserveDevice)
    for key in model.routing_keys()
}

#: namespace of booking ids derived from (portal, idempotency key)
_BOOKING_NS = uuid.UUID("5b0c1d2e-8f2a-4c3e-9d4b-6a7e8f9a0b1c")


def booking_id_for(portal_id: str, idempotency_key: str) -> str:
    """The booking id a request gets: a portal can compute it before the answer arrives."""
    return uuid.uuid5(_BOOKING_NS, f"{portal_id}\x1f{idempotency_key}").hex


def parse_intake(data: dict[str, Any]) -> Envelope[Any]:
    """An intake message as an envelope the consumer can dedupe (message_id) and dispatch (type)."""
    model = INTAKE_TYPES[data["type"]]
    try:
        msg = model.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        raise MessageError("invalid-command", shown("; ".join(parts), 2000, PROSE_ALLOWED)) from exc
    envelope: Envelope[Any] = Envelope[model](  # type: ignore[valid-type]
        event_id=msg.message_id,
        type=msg.type,
        occurred_at=msg.sent_at,
        producer=msg.producer(),
        correlation_id=msg.message_id,
        office_id=msg.office_id,
        payload=msg,
    )
    return envelope

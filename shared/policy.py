"""Office policies are data: one validated YAML file per office under deploy/offices/.

Adding an office is adding a file. Every rule the offices' terms leave open (R09 thresholds, record
retention, what device information is kept) has a documented default here.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.clock import jst


class Channel(StrEnum):
    """How a person may reach the office to cancel (R07)."""

    PHONE = "phone"
    EMAIL = "email"
    PORTAL = "portal"


class MeetingApp(StrEnum):
    """Meeting applications the offices name (R16)."""

    TEAMS = "teams"
    SKYPE_FOR_BUSINESS = "skype-for-business"
    TELEOFFICE = "teleoffice"


class FormField(StrEnum):
    """Booking fields an office asks for (R02)."""

    NAME = "name"
    ADDRESS = "address"
    PHONE = "phone"
    EMAIL = "email"
    WINDOWS = "windows"
    DURATION = "duration"
    JOBSEEKER_NUMBER = "jobseeker_number"
    TOPIC = "topic"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Eligibility(Strict):
    """R03."""

    requires_jobseeker_registration: bool = Field(False, description="HW: registered at this office")
    requires_mypage: bool = Field(False, description="HW: job-seeker My Page opened")
    phone_must_match_registration: bool = Field(False, description="HW: phone equals the registered one")


class NoticePolicy(Strict):
    """R06: when the date, time and URL go to the person."""

    on_confirmation: bool = Field(description="KG: as soon as the appointment is coordinated")
    day_before: bool = Field(description="HW: on the day before (or the open day before that)")
    send_at: time = Field(time(10, 0), description="JST time of day for day-before notices")
    subject: str = Field(description="email subject; HW: exactly 「オンライン職業相談」")
    before_start: timedelta | None = Field(
        None, description="demo and test offices only: send this long before the start instead"
    )
    to_registered_address: bool = Field(False, description="HW: to the My Page address on record")


class CoordinationPolicy(Strict):
    """R05: what happens when the wished windows cannot be met."""

    alternatives: Literal["automatic", "staff"] = Field(
        "automatic",
        description="'automatic': the scheduler holds and proposes other times itself; 'staff': such a "
        "request always goes to staff, who propose or confirm by hand",
    )
    tell_person_when_left_to_staff: bool = Field(
        True,
        description="send the person a short 'we are arranging a time and will contact you' message "
        "when staff take over (nothing to offer, or the person declined); false: nothing until staff "
        "propose or confirm",
    )


class CounsellorAgendaPolicy(Strict):
    """Office policy the terms are silent on: each counsellor with consultations on the office's next
    open day is sent the day's agenda (time, app, join URL, the person's name and topic) once, at
    `at` (JST) on the open day before. Off unless the office turns it on: the agenda gathers personal
    data into one email, so an office asks for it (deploy/offices/*.yaml)."""

    enabled: bool = Field(False, description="send counsellors the agenda of the next open day")
    at: time = Field(
        time(17, 0), description="JST time of day on each open day (default: when the office closes)"
    )


class CancellationPolicy(Strict):
    """R07: channels accepted, and the narrower set on the consultation day itself."""

    channels: list[Channel]
    same_day_channels: list[Channel]
    staff_recorded_channels: list[Channel] = Field(
        default_factory=lambda: [Channel.PHONE],
        description="channels that only staff may record (a phone call is taken by a person)",
    )


class RefusalPolicy(Strict):
    """R09 is 'may refuse'; the numbers are office policy. Default: 2 no-shows in 365 days → 180 days.

    No-shows are counted per person, identified by a keyed hash of the `identify_by` fields (KG: phone
    and email; HW: the job-seeker number). No-shows that led to a refusal, or that precede a lifted
    refusal, are not counted again.
    """

    no_shows: int = Field(2, ge=1, description="no-shows without contact that lead to refusal")
    within: timedelta = Field(timedelta(days=365), description="counting period")
    refuse_for: timedelta = Field(timedelta(days=180), description="how long the refusal lasts")
    decide: Literal["automatic", "staff"] = Field(
        "automatic",
        description="both terms say the office MAY refuse: 'automatic' refuses at the threshold; 'staff' "
        "puts the person on the office's review list, where staff refuse (R09) or dismiss",
    )
    identify_by: list[FormField] | None = Field(
        None,
        min_length=1,
        description="booking fields whose normalised values identify a person (keyed hash); default: "
        "the job-seeker number if the form asks for it, else phone and email",
    )


class TermsVersion(Strict):
    """R17: applying means agreeing to the terms in force on the day of the application."""

    version: str
    effective_from: date
    announced_on: date | None = Field(
        None,
        description="when the change was announced (HW 第14条: a change without consent is announced, with "
        "its text and effective date, before it applies); a version announced in the future is not shown",
    )
    summary: str = Field("", description="what changed, as the office words it")
    url: str | None = Field(None, pattern=r"^https://", description="where the full text is published")

    def announced_by(self, day: date) -> bool:
        return self.announced_on is not None and self.announced_on <= day


#: hosts each app's own join URLs live on (pre-issued rooms are checked against these, R16)
APP_HOSTS: dict[MeetingApp, tuple[str, ...]] = {
    MeetingApp.TEAMS: ("teams.microsoft.com", "teams.live.com", "teams.microsoft.us"),
    MeetingApp.SKYPE_FOR_BUSINESS: (),  # Server only: the office's own meet.<domain> host
    MeetingApp.TELEOFFICE: (),  # the host the office's TeleOffice contract gives it
}


class GraphTenant(Strict):
    """R16: the office's Microsoft Entra app registration that creates its Teams meetings through
    Microsoft Graph (app-only). The secret or certificate is a setting of the scheduler
    (`GRAPH_CREDENTIALS`), never in this file."""

    tenant_id: str = Field(min_length=1, max_length=100)
    client_id: str = Field(min_length=1, max_length=100)


class MeetingConfig(Strict):
    """R16: an app the office uses and how a consultation gets a room in it.

    - `graph` (Teams): a meeting is created per consultation through Microsoft Graph, organised by the
      counsellor's account (`organizer` on the counsellor), with a lobby the person waits in;
    - `pre-issued`: staff register each counsellor's standing join URLs (TeleOffice, whose host
      registers meetings in the app; Teams or Skype for Business Server links); a consultation gets a
      room no other consultation uses at an overlapping time.
    """

    app: MeetingApp
    provider: Literal["graph", "pre-issued"]
    graph: GraphTenant | None = None
    hosts: list[str] = Field(
        default_factory=list,
        description="hosts accepted in registered join URLs besides the app's own (office policy)",
    )
    deprecated: str | None = Field(
        None, description="why the office should stop offering this app (shown to staff and at start-up)"
    )

    @model_validator(mode="after")
    def _provider(self) -> MeetingConfig:
        if self.provider == "graph" and (self.app is not MeetingApp.TEAMS or self.graph is None):
            raise ValueError(
                "R16: the graph provider creates Teams meetings and needs `graph` (tenant, client)"
            )
        return self

    def accepted_hosts(self) -> tuple[str, ...]:
        return APP_HOSTS[self.app] + tuple(h.lower() for h in self.hosts)


class DeviceCheck(Strict):
    """One item of the user-side checklist the person confirms when applying (R19; R03 for the webcam)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    text: str
    rule: Literal["R03", "R19"] = Field("R19", description="rule the item proves: R19 device, R03 webcam")


class OfficeHours(Strict):
    opens: time = time(9, 0)
    closes: time = time(17, 0)
    slot_minutes: int = Field(30, description="granularity of bookable start times")


#: Japan's prefectures, to tell 北海道 清水町 from 静岡県 清水町 when placing an address (R20).
PREFECTURES = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
]


class Area(Strict):
    """R20: an area the office serves and the municipalities in it, to place an address."""

    name: str
    prefecture: str | None = Field(None, description="prefecture the municipalities belong to")
    municipalities: list[str]

    def contains(self, address: str) -> bool:
        named = [p for p in PREFECTURES if address.startswith(p)]
        if named and self.prefecture and named[0] != self.prefecture:
            return False  # same municipality name in another prefecture
        return any(m in address for m in self.municipalities)


class OfficePolicy(Strict):
    office_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    name: str
    short_name: str
    service_name: str = Field(description="what the office calls the service, e.g. オンライン相談")
    phone: str
    email: str | None = None
    address: str
    contact_example: bool = Field(
        False,
        description="the phone, email and address are examples, not the office's published ones: "
        "fine for development and tests, refused in prod",
    )
    max_minutes: int = Field(30, ge=1, le=30, description="R01: at most 30 minutes")
    form: list[FormField] = Field(description="R02: required booking fields")
    eligibility: Eligibility = Eligibility()
    lead_time_open_days: int = Field(0, ge=0, description="R04: HW 2, KG none")
    lead_time_exception: bool = Field(
        False,
        description="R04: staff may confirm later than the deadline, giving a reason that is recorded and "
        "audited (HW 第6条(1): 原則として); a portal never can",
    )
    notice: NoticePolicy
    coordination: CoordinationPolicy = CoordinationPolicy()
    counsellor_agenda: CounsellorAgendaPolicy = CounsellorAgendaPolicy()
    cancellation: CancellationPolicy
    no_show_grace: timedelta = Field(timedelta(minutes=10), description="R08")
    identity_check: bool = Field(
        False,
        description="R02: staff confirm at the session that the person is who booked (KG 第4条(1)); "
        "a consultation is completed only after staff recorded it",
    )
    refusal: RefusalPolicy = RefusalPolicy()
    meeting: list[MeetingConfig] = Field(min_length=1, description="R16; the first is the default")
    terms: list[TermsVersion] = Field(min_length=1)
    terms_change: Literal["any", "general-interest-or-reasonable"] = Field(
        description="R17: KG may change its terms at any time (use means consent); HW only under 第14条, "
        "announcing the change before it applies"
    )
    terms_notice_days: int = Field(
        0, ge=0, description="R17: an announced change is announced at least this many days before it applies"
    )
    hours: OfficeHours = OfficeHours()
    areas: list[Area] = Field(default_factory=list, description="R20")
    refuse_outside_areas: bool = Field(
        True, description="R20: refuse an address outside the served areas (only when areas are listed)"
    )
    closed_weekdays: list[int] = Field(default_factory=lambda: [5, 6], description="0=Mon … 6=Sun")
    national_holidays_closed: bool = True
    year_end_closure: bool = Field(True, description="Dec 29 – Jan 3")
    extra_closed_days: list[date] = Field(default_factory=list)
    device_checklist: list[DeviceCheck] = Field(description="R19")
    misconduct: list[str] = Field(description="R13: what stops or refuses a consultation")
    fee_note: str = Field(description="R18")
    private_room_note: str = Field(description="R15")
    recording_note: str = Field(description="R14")
    record_retention: timedelta = Field(
        timedelta(days=365 * 5), description="R10: how long usage and device records are kept"
    )
    booking_horizon: timedelta = Field(
        timedelta(days=180), description="how far ahead a consultation may be asked for (office policy)"
    )
    hold_alternatives_for: timedelta = Field(
        timedelta(days=2), description="R05: how long proposed alternative times stay held"
    )
    max_alternatives: int = 3

    def example_details(self) -> list[str]:
        """What in this policy is an example rather than the office's own (refused in prod): the
        contact details if marked so, and any address on a domain reserved for examples (RFC 2606)."""
        found = ["phone, email and address (contact_example: true)"] if self.contact_example else []
        if self.email and _reserved_host(self.email.rpartition("@")[2]):
            found.append(f"email {self.email}")
        found += [f"meeting host {h}" for m in self.meeting for h in m.hosts if _reserved_host(h)]
        found += [
            f"{m.app.value} tenant {m.graph.tenant_id}"
            for m in self.meeting
            if m.graph is not None and set(m.graph.tenant_id) <= set("0-")
        ]
        return found

    @field_validator("terms")
    @classmethod
    def _terms_in_order(cls, v: list[TermsVersion]) -> list[TermsVersion]:
        return sorted(v, key=lambda t: t.effective_from)

    @model_validator(mode="after")
    def _consistent(self) -> OfficePolicy:
        if not set(self.cancellation.same_day_channels) <= set(self.cancellation.channels):
            raise ValueError("same-day cancellation channels must be among the channels")
        if not set(self.person_identity) <= set(self.form):
            raise ValueError("refusal.identify_by must name fields of the booking form")
        if len({c.id for c in self.device_checklist}) != len(self.device_checklist):
            raise ValueError("device checklist ids must be unique")
        if self.hours.opens >= self.hours.closes:
            raise ValueError("office hours: opens must be before closes")
        if self.terms_change == "general-interest-or-reasonable":  # R17, HW 第14条
            for t in self.terms[1:]:
                latest = t.effective_from - timedelta(days=self.terms_notice_days)
                if t.announced_on is None or t.announced_on > latest:
                    raise ValueError(
                        f"R17: terms {t.version} change without consent, so they are announced by {latest} "
                        f"(effective {t.effective_from}, announced {t.announced_on or 'never'})"
                    )
        return self

    def terms_announced(self, at: datetime) -> TermsVersion | None:
        """R17: the next version, once announced and not yet in force (what a portal shows)."""
        day = jst(at).date()
        return next((t for t in self.terms if t.effective_from > day and t.announced_by(day)), None)

    # ----------------------------------------------------------------- questions

    def terms_in_force(self, at: datetime) -> TermsVersion:
        """R17: the version in force at that instant (JST date)."""
        day = jst(at).date()
        current = [t for t in self.terms if t.effective_from <= day]
        if not current:
            raise ValueError(f"{self.office_id}: no terms in force on {day}")
        return current[-1]

    def area_of(self, address: str) -> str | None:
        """R20: the served area an address lies in, by municipality name; None when outside."""
        for area in self.areas:
            if area.contains(address):
                return area.name
        return None

    @property
    def person_identity(self) -> list[FormField]:
        """R09: the form fields that identify a person for counting no-shows and refusals."""
        if self.refusal.identify_by:
            return list(self.refusal.identify_by)
        if FormField.JOBSEEKER_NUMBER in self.form:
            return [FormField.JOBSEEKER_NUMBER]
        return [f for f in (FormField.PHONE, FormField.EMAIL) if f in self.form] or [FormField.NAME]

    @property
    def default_meeting(self) -> MeetingConfig:
        return self.meeting[0]

    @property
    def meeting_apps(self) -> list[MeetingApp]:
        return [m.app for m in self.meeting]


class PolicyError(Exception):
    pass


def load_file(path: Path) -> OfficePolicy:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        policy = OfficePolicy.model_validate(data)
    except ValueError as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    if policy.office_id != path.stem:
        raise PolicyError(f"{path}: office_id {policy.office_id!r} must match the file name")
    return policy


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _reserved_host(host: str) -> bool:
    """RFC 2606 / 6761 names for examples and tests."""
    host = host.lower().rstrip(".")
    labels = host.split(".")
    reserved_sld = {"example.com", "example.net", "example.org"}
    return labels[-1] in {"example", "invalid", "test", "localhost"} or ".".join(labels[-2:]) in reserved_sld


class Policies:
    """Every office's policy, loaded and validated at start-up."""

    def __init__(self, policies: dict[str, OfficePolicy]) -> None:
        self._by_id = policies

    @classmethod
    def load(cls, *dirs: Path) -> Policies:
        found: dict[str, OfficePolicy] = {}
        for d in dirs:
            for path in sorted(d.glob("*.yaml")):
                policy = load_file(path)
                if policy.office_id in found:
                    raise PolicyError(f"office {policy.office_id} defined twice")
                found[policy.office_id] = policy
        if not found:
            raise PolicyError(f"no office policies in {', '.join(map(str, dirs))}")
        return cls(found)

    def get(self, office_id: str) -> OfficePolicy | None:
        return self._by_id.get(office_id)

    def __getitem__(self, office_id: str) -> OfficePolicy:
        return self._by_id[office_id]

    def __contains__(self, office_id: object) -> bool:
        return office_id in self._by_id

    def ids(self) -> list[str]:
        return sorted(self._by_id)


@cache
def _cached(dirs: tuple[Path, ...]) -> Policies:
    return Policies.load(*dirs)


def load_policies(offices_dir: Path, extra_dirs: tuple[Path, ...] = ()) -> Policies:
    return _cached((offices_dir, *extra_dirs))

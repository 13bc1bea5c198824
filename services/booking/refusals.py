"""R09 and R13: counting no-shows per person and refusing a person. Plain Python, no I/O.

A person is a keyed-hash pseudonym per office (`Vault.person_key` of the policy's identifying fields),
so this record holds no personal data. R09 leaves the numbers to the office: `policy.refusal` says how
many no-shows within what period lead to a refusal and for how long. No-shows that led to a refusal, or
that precede a lifted one or a dismissed review, are not counted again (`counted_from`).

Both offices *may* refuse (お断りする場合があります); `policy.refusal.decide` says who decides: the
threshold itself (`automatic`), or staff (`staff`): the person is then put on the office's review
list, and staff refuse them (R09) or dismiss the review. A misconduct refusal (R13) names one of the
grounds the office's terms list (`policy.misconduct`), with what happened in staff's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.events import Payload, PersonRefused, Recipient, RefusalLifted
from shared.policy import OfficePolicy


@dataclass
class Refusal:
    rule: Literal["R09", "R13"]
    reason: str
    since: datetime
    until: datetime | None  # None: until staff lift it
    by: str
    ground: str | None = None  # R13: which of the terms' listed grounds (policy.misconduct)

    def in_force(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass
class Review:
    """R09 with `decide: staff`: the threshold was reached; staff refuse or dismiss."""

    since: datetime
    no_shows: int
    last_booking_id: str  # whose person the refusal mail goes to


@dataclass
class NoShowMark:
    booking_id: str
    at: datetime


@dataclass
class PersonRecord:
    person_key: str
    office_id: str
    no_shows: list[NoShowMark] = field(default_factory=list)
    counted_from: datetime | None = None
    refusal: Refusal | None = None
    review: Review | None = None
    version: int = 0
    placed: dict[str, Any] = field(default_factory=dict)  # the store's: where this version is listed

    def refusal_in_force(self, now: datetime) -> Refusal | None:
        return self.refusal if self.refusal and self.refusal.in_force(now) else None

    def counted(self, now: datetime, policy: OfficePolicy) -> list[NoShowMark]:
        since = now - policy.refusal.within
        if self.counted_from is not None:
            since = max(since, self.counted_from)
        return [m for m in self.no_shows if m.at > since]

    def record_no_show(
        self, booking_id: str, at: datetime, policy: OfficePolicy, recipient: Recipient | None
    ) -> list[Payload]:
        """R09: one mark per booking (a redelivery counts once); the threshold refuses the person."""
        if any(m.booking_id == booking_id for m in self.no_shows):
            return []
        self.no_shows.append(NoShowMark(booking_id, at))
        if self.refusal_in_force(at):
            return []
        n = len(self.counted(at, policy))
        if n < policy.refusal.no_shows:
            return []
        if policy.refusal.decide == "staff":  # the office decides: on its review list until it does
            self.review = Review(self.review.since if self.review else at, n, booking_id)
            return []
        return self._refuse_for_no_shows(n, at, at + policy.refusal.refuse_for, "system", recipient)

    def _refuse_for_no_shows(
        self, n: int, now: datetime, until: datetime | None, by: str, recipient: Recipient | None
    ) -> list[Payload]:
        reason = f"連絡のないキャンセルが{n}回となったため"  # shown to the person (notifier's refusal mail)
        self.refusal = Refusal("R09", reason, now, until, by)
        self.counted_from, self.review = now, None
        return [
            PersonRefused(
                person_key=self.person_key, rule="R09", reason=reason, until=until, recipient=recipient
            )
        ]

    def decide_review(
        self,
        refuse: bool,
        until: datetime | None,
        by: str,
        now: datetime,
        recipient: Recipient | None,
    ) -> list[Payload]:
        """Staff decide a review (R09, `decide: staff`): refuse until `until`, or dismiss it (the
        no-shows counted so far are then not counted again). Decided already: nothing changes."""
        if self.review is None:
            return []
        if not refuse:
            self.review, self.counted_from = None, now
            return []
        return self._refuse_for_no_shows(self.review.no_shows, now, until, by, recipient)

    def refuse(
        self,
        ground: str,
        detail: str | None,
        *,
        until: datetime | None,
        by: str,
        now: datetime,
        recipient: Recipient | None,
    ) -> list[Payload]:
        """R13: staff refuse a person for misconduct: one of the terms' grounds, in staff's words what
        happened, until a date or until lifted. The reason shown to the person names the ground."""
        reason = f"{ground}（{detail}）" if detail else ground
        self.refusal = Refusal("R13", reason, now, until, by, ground)
        self.counted_from, self.review = now, None
        return [
            PersonRefused(
                person_key=self.person_key, rule="R13", reason=reason, until=until, recipient=recipient
            )
        ]

    def lift(self, by: str, now: datetime) -> list[Payload]:
        if self.refusal_in_force(now) is None:
            return []
        self.refusal = None
        self.counted_from = now
        return [RefusalLifted(person_key=self.person_key, lifted_by=by)]

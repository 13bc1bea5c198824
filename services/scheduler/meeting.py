"""R16: meeting rooms in the office's app, behind one adapter interface.

Each adapter issues a unique, unguessable join URL (256 random bits from `secrets`) under the base the
office configures (`policy.meeting`). There is no outside network here, so no provider is called: the
three apps differ only in their link's shape, so one `LinkMeetings` serves them all, as data.
Extension point: a deployment that has the providers' credentials puts in `PROVIDERS` an adapter whose
`create_room` calls their APIs — Microsoft Graph `POST /users/{id}/onlineMeetings` (Teams), UCWA
`onlineMeetings/myOnlineMeetings` (Skype for Business Server), the TeleOffice reservation API — and
returns the URL they issue.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.policy import MeetingApp, MeetingConfig, OfficePolicy

TOKEN_BYTES = 32  # 256 bits; the URL is the only key to the room


@dataclass(frozen=True)
class MeetingRoom:
    app: MeetingApp
    url: str


class MeetingProvider(Protocol):
    @property
    def app(self) -> MeetingApp: ...

    def create_room(
        self, config: MeetingConfig, *, booking_id: str, start: datetime, end: datetime
    ) -> MeetingRoom:
        """A join URL for one consultation."""
        ...


def _base(config: MeetingConfig) -> str:
    return config.base_url if config.base_url.endswith("/") else config.base_url + "/"


@dataclass(frozen=True)
class LinkMeetings:
    """Join links in one app's URL shape: the office's base, then `path` with a fresh token in it."""

    app: MeetingApp
    path: str  # after the base; `{token}` marks where the token goes

    def create_room(
        self, config: MeetingConfig, *, booking_id: str, start: datetime, end: datetime
    ) -> MeetingRoom:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        return MeetingRoom(self.app, _base(config) + self.path.format(token=token))


PROVIDERS: dict[MeetingApp, MeetingProvider] = {
    p.app: p
    for p in (
        LinkMeetings(MeetingApp.TEAMS, "19%3ameeting_{token}%40thread.v2/0"),  # KG, 第3条
        LinkMeetings(MeetingApp.SKYPE_FOR_BUSINESS, "{token}"),  # KG, 第3条
        LinkMeetings(MeetingApp.TELEOFFICE, "room/{token}"),  # HW, 第4条
    )
}


def create_room(
    policy: OfficePolicy, app: MeetingApp, *, booking_id: str, start: datetime, end: datetime
) -> MeetingRoom:
    """R16: a room in the given app under the office's configured base; the app must be the office's."""
    config = next((m for m in policy.meeting if m.app == app), None)
    if config is None:
        raise ValueError(f"R16: {policy.office_id} does not use {app.value}")
    return PROVIDERS[app].create_room(config, booking_id=booking_id, start=start, end=end)

"""`consultctl notifier sample OFFICE KIND`: one notice rendered from sample data, without SMTP.

It sits in `ops/` rather than in the notifier because the sample events (`examples/notices.py`)
are not shipped inside the service: the notifier only sends what really happened. `ops/cli.py`
mounts the command on the notifier's sub-app, so operators find it beside `notifier mail`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from examples import notices
from services.notifier import agenda, domain, preview
from services.notifier.compose import Composer
from services.notifier.config import Settings


def render(office_id: str, kind: str) -> str:
    """A notice rendered from sample data, framed like a delivered one (no SMTP)."""
    settings = Settings()
    policy = settings.policies()[office_id]
    which = domain.Kind(kind)
    notice: domain.Notice | None
    if which is domain.Kind.COUNSELLOR_AGENDA:
        notice = _agenda(policy)
    elif which in domain.COUNSELLOR_KINDS:
        found = domain.plan_counsellors(notices.counsellor_event(which, policy), policy)
        notice = next((n for n in found if n.kind is which), None)
    else:
        notice = domain.plan(notices.event(which, policy), policy)
    if notice is None:
        return f"{office_id}: {kind} is not sent under this office's policy"
    message = Composer(settings.mail_from).compose(
        notice, policy, message_id=domain.message_id(notice.key, settings.mail_domain), now=notices.NOW
    )
    return preview.format_message(preview.mailpit_shape(message))


def _agenda(policy: Any) -> domain.Notice:
    """A counsellor's agenda of two sample consultations on the sample day."""
    brief = domain.counsellor_brief(notices.brief(policy), policy)
    entries = [
        {
            "start": x.start,
            "end": x.end,
            "app": x.app,
            "meeting_url": x.meeting_url,
            "meeting_id": None,
            "passcode": None,
            "person": brief,
        }
        for x in (
            notices.appointment(policy, f"bk-{h}", start=notices.START + timedelta(hours=h)) for h in (0, 4)
        )
    ]
    sample = agenda.Agenda(
        "c-001",
        policy.office_id,
        notices.START.date(),
        "相談員 佐藤",
        "sato@counsellors.example.org",
        entries,
    )
    return agenda.agenda_notice(policy, sample)


def sample(office_id: str, kind: str) -> None:
    """Render one notice from sample data (no SMTP): kinds confirmation, notice, change, recoordination,
    cancellation, no_show, refusal; counsellor_assignment, counsellor_change, counsellor_cancellation,
    counsellor_agenda."""
    print(render(office_id, kind))

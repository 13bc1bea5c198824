"""The booking views and the models that document them in OpenAPI say the same (no servers)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.booking import views
from services.booking.domain import Booking
from services.booking.refusals import PersonRecord
from shared.events import Recipient
from shared.policy import Channel
from tests.unit.test_booking_domain import KG, NOW, TUE, at, booking, confirmed


def _documented(view: dict[str, Any], model: type[BaseModel]) -> None:
    model.model_validate(view)
    assert set(view) == set(model.model_fields), "a view's keys and its model's fields differ"


def _bookings() -> list[Booking]:
    cancelled = confirmed()
    cancelled.cancel(
        channel=Channel.PHONE, by="person", recorded_by="s", staff=True, now=at(TUE, 8), policy=KG
    )
    return [booking(), confirmed(), cancelled]


def test_portal_and_staff_views_match_their_documented_models() -> None:
    for b in _bookings():
        _documented(views.portal_view(b), views.PortalView)
        _documented(views.staff_view(b), views.StaffView)


def test_the_refusal_view_matches_its_documented_model() -> None:
    p = PersonRecord("p_x", "kushiro-gyosei")
    p.record_no_show("b1", NOW, KG, Recipient(name="n", email="e@x.jp"))
    _documented(views.refusal_view(p), views.RefusalView)

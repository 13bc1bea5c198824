"""Rate limits on intake (issue 8): per portal key and per person, 429 with Retry-After.

Fixed windows counted by unique inserts in MongoDB (`store/guards.WindowSlots`: one document per
admitted request), so the limits hold exactly under parallel requests and across replicas. The
person is the office's R09 identity (`rules.person_identity`) as the vault's keyed hash, so the
slot ids carry no personal data (R12); a body that is not a valid form is counted for the portal
only (it is refused with 422 anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from services.booking import rules
from services.booking.crypto import Vault
from services.booking.store.access import Credential
from services.booking.store.guards import WindowSlots
from shared.clock import Clock
from shared.commands import BookingForm
from shared.policy import Policies


@dataclass(frozen=True)
class Limited:
    """A request over a limit: who, the limit, and when to try again."""

    who: str
    limit: int
    window: timedelta
    retry_after: int

    @property
    def message(self) -> str:
        seconds = int(self.window.total_seconds())
        return f"too many requests from {self.who}: at most {self.limit} per {seconds} s"


class RateLimits:
    """The same limits over HTTP (429, `check`) and AMQP (`booking.rejected`, `admit`): a portal's
    budget is one, whichever way its requests come."""

    def __init__(
        self,
        counters: WindowSlots,
        clock: Clock,
        policies: Policies,
        vault: Vault,
        *,
        portal: tuple[int, timedelta],
        person: tuple[int, timedelta],
    ) -> None:
        self.counters = counters
        self.clock = clock
        self.policies = policies
        self.vault = vault
        self.portal = portal
        self.person = person

    async def check(self, cred: Credential, office_id: str, body: Any) -> None:
        """HTTP: raise 429 with Retry-After when the portal or the person is over a limit."""
        if (limited := await self.admit(cred.subject, office_id, body)) is not None:
            raise HTTPException(429, limited.message, {"Retry-After": str(limited.retry_after)})

    async def admit(self, portal_id: str, office_id: str, body: Any) -> Limited | None:
        """Count one request of this portal (and person); None if admitted."""
        limited = await self._hit(f"portal:{portal_id}", *self.portal, "this portal")
        if limited is not None:
            return limited
        person = self._person_key(office_id, body)
        if person is not None:
            return await self._hit(f"person:{office_id}:{person}", *self.person, "this person")
        return None

    def _person_key(self, office_id: str, body: Any) -> str | None:
        policy = self.policies.get(office_id)
        if policy is None or not isinstance(body, dict):
            return None
        try:
            form = BookingForm.model_validate(body)
        except ValidationError:
            return None
        return self.vault.person_key(office_id, rules.person_identity(policy, form))

    async def _hit(self, key: str, limit: int, window: timedelta, who: str) -> Limited | None:
        if limit <= 0:  # 0 switches the limit off
            return None
        now = self.clock.now()
        admitted, ends = await self.counters.admit(key, limit, window, now)
        if admitted:
            return None
        return Limited(who, limit, window, max(1, math.ceil((ends - now).total_seconds())))

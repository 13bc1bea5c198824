"""The scheduler's MongoDB access (the only package of the service that talks to the database).

Collections: `counsellors`, `reservations` (one document per counsellor and grid cell: the unique
index that rules out double booking), `requests` (one per booking: coordination state plus its
outbox), `timers` and `timer_outcomes` (durable timers; a firing's event in its outcome's outbox),
`timer_feed` (timers armed since the leader last looked) and `timer_effects` (hold firings whose
after-effects are owed), `leases` (which replica runs the timers) and `staff_keys` (hashed staff
API keys, one office each: staff_keys.py).
FerretDB has no transactions: every state change is one conditional single-document write.
"""

from services.scheduler.store.counsellors import CounsellorStore
from services.scheduler.store.lease import LeaseStore
from services.scheduler.store.requests import RequestStore
from services.scheduler.store.reservations import Reservations
from services.scheduler.store.timers import TimerStore

__all__ = ["CounsellorStore", "LeaseStore", "RequestStore", "Reservations", "TimerStore"]

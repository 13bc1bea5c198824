"""Booking's reads by `_id` on the real server: a day's bookings from its marker bucket, look-ups from
numbered slots, the refusal and review lists; moves, stale markers, paging, data from before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from examples.bookings import requested
from services.booking.crypto import Vault
from services.booking.domain import Booking, Person, Status
from services.booking.refusals import PersonRecord, Review
from services.booking.store import Conflict, Stores
from services.booking.store.bookings import DAYS
from services.booking.store.indexes import LISTED
from services.booking.store.listings import CURRENT, marker_id
from shared.clock import JST
from shared.events import Appointment
from shared.mongo import Doc, connect
from shared.store.buckets import Buckets, Layout, period_key
from tests.support import MONGODB_URL
from tests.support.booking import HW, KG, running

D = date(2026, 11, 24)
NOW = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


class Finds(monitoring.CommandListener):
    """Every find the store sends: (collection, filter)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Doc]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.seen.append((event.command["find"], dict(event.command.get("filter", {}))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def watched(db_prefix: str) -> AsyncIterator[tuple[AsyncDatabase[Doc], Finds]]:
    finds = Finds()
    client = connect(MONGODB_URL, app_name="test-booking-reads", listeners=[finds])
    yield client[f"{db_prefix}booking"], finds
    await client.close()


def stores_of(db: AsyncDatabase[Doc], layout: Layout | None = None) -> Stores:
    stores = Stores.open(db, Vault.from_secret("test-booking-reads"))
    if layout is not None:  # either layout runs on FerretDB; MongoDB's is `indexed`
        stores.bookings.days._buckets = Buckets(db, DAYS, period="day", layout=layout)
    return stores


def at(day: date, hhmm: str = "10:00") -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), JST)


def booking(
    office: str, day: date, hhmm: str = "10:00", phone: str = "+81154221234", **person: Any
) -> Booking:
    email = person.pop("email", "taro@example.jp")
    return requested(office, at(day, hhmm), NOW, Person(name="釧路 太郎", phone=phone, email=email, **person))


def confirm(b: Booking, day: date, hhmm: str = "10:00") -> Booking:
    start = at(day, hhmm)
    b.status = Status.CONFIRMED
    version = b.appointment.version + 1 if b.appointment else 1
    b.appointment = Appointment(
        counsellor_id="c1", counsellor_name="相談 員", start=start, end=start + timedelta(minutes=30),
        meeting_url="https://teams.example/m", app="teams", version=version,
    )  # fmt: skip
    return b


async def on(stores: Stores, office: str, day: date, days: int = 1, **kw: Any) -> list[str]:
    found = await stores.bookings.find(
        office, after=at(day, "00:00"), before=at(day + timedelta(days=days), "00:00"), **kw
    )
    return [b.booking_id for b in found]


async def markers(stores: Stores, office: str, day: date) -> set[str]:
    buckets = await stores.bookings.days.buckets()
    return {m["_id"] for m in await buckets.read(office, day)}


@pytest.mark.parametrize("layout", ["collections", "indexed"])
async def test_a_day_is_read_from_its_bucket_and_by_id_only(
    watched: tuple[AsyncDatabase[Doc], Finds], layout: Layout
) -> None:
    db, finds = watched
    stores = stores_of(db, layout)
    await stores.ensure_indexes()
    mine = [booking(KG, D, hhmm) for hhmm in ("11:00", "09:30", "10:00")]
    others = [booking(KG, D + timedelta(days=1)), booking(HW, D), booking(KG, D - timedelta(days=1), "23:30")]
    for b in mine + others:
        assert await stores.bookings.insert(b, [])
    # a booking written beside the store, without its marker, is not seen: the read scans nothing else
    stray = stores.bookings.to_doc(booking(KG, D))
    await db["bookings"].insert_one({**stray, "_id": "stray", "version": 1})

    finds.seen.clear()
    got = await on(stores, KG, D)
    assert got == [mine[1].booking_id, mine[2].booking_id, mine[0].booking_id]  # by time of day
    bucket = f"{KG}.{period_key(D, 'day')}"
    for collection, query in finds.seen:
        if collection.startswith(DAYS):  # the one bucket, whole
            expected = (f"{DAYS}.{bucket}", {}) if layout == "collections" else (DAYS, {"bucket": bucket})
            assert (collection, query) == expected
        else:  # each booking by `_id` alone: its head, then the probe for a newer version
            assert collection in ("bookings", "booking_changes") and set(query) == {"_id"}, (
                collection,
                query,
            )
            assert isinstance(query["_id"], str)
    assert len(finds.seen) == 1 + 2 * len(mine)  # bounded by the day's bookings, not the office's


async def test_a_booking_that_moves_is_listed_on_its_new_day_only_and_may_come_back(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    stores = stores_of(watched[0])
    b = booking(KG, D)
    await stores.bookings.insert(b, [])
    assert await on(stores, KG, D) == [b.booking_id]

    await stores.bookings.save(confirm(b, D + timedelta(days=2)), [])  # the appointment is another day
    assert await on(stores, KG, D) == []
    assert await on(stores, KG, D + timedelta(days=2)) == [b.booking_id]
    assert await markers(stores, KG, D) == set(), "the day it left keeps no marker"

    await stores.bookings.save(confirm(b, D, "14:00"), [])  # and back to the first day
    assert await on(stores, KG, D) == [b.booking_id]
    assert await on(stores, KG, D + timedelta(days=2)) == []
    assert await markers(stores, KG, D) == {marker_id(b.booking_id, 3)}
    await stores.bookings.save(confirm(b, D, "15:00"), [])  # the same day: the marker stays
    assert await markers(stores, KG, D) == {marker_id(b.booking_id, 3)}
    [listed] = await stores.bookings.find(KG, after=at(D, "00:00"), before=at(D + timedelta(days=1), "00:00"))
    assert listed.appointment is not None and listed.appointment.start == at(D, "15:00")


async def test_stale_markers_are_ignored_and_dropped_and_a_pending_one_is_left(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    stores = stores_of(watched[0])
    b = booking(KG, D)
    await stores.bookings.insert(b, [])
    await stores.bookings.save(confirm(b, D + timedelta(days=1)), [])  # v2 on D+1
    await stores.bookings.save(confirm(b, D), [])  # v3 on D again
    days = await stores.bookings.days.buckets()
    # a crash after a commit, before the old marker went: an old marker where it is now, and one
    # where it no longer is
    await days.add(KG, D, marker_id(b.booking_id, 1), {"item": b.booking_id, "v": 1})
    await days.add(KG, D + timedelta(days=1), marker_id(b.booking_id, 2), {"item": b.booking_id, "v": 2})
    # a writer between its two writes: the marker of version 4, not committed yet, on D+5
    state = stores.bookings.to_doc(confirm(b, D + timedelta(days=5)))
    await stores.bookings.days.place(b.booking_id, 4, b.placed, state)

    assert await on(stores, KG, D) == [b.booking_id]  # once
    assert await on(stores, KG, D + timedelta(days=1)) == []
    assert await on(stores, KG, D + timedelta(days=5)) == []  # not committed: not believed
    assert await markers(stores, KG, D) == {marker_id(b.booking_id, 3)}, "the current marker alone is left"
    assert await markers(stores, KG, D + timedelta(days=1)) == set()
    assert await markers(stores, KG, D + timedelta(days=5)) == {marker_id(b.booking_id, 4)}, "pending: left"

    current = await stores.bookings.get(b.booking_id)
    assert current is not None and current.version == 3
    await stores.bookings.save(confirm(current, D + timedelta(days=5)), [])  # now it commits v4 there
    assert await on(stores, KG, D + timedelta(days=5)) == [b.booking_id]
    assert await on(stores, KG, D) == []


async def test_concurrent_moves_of_one_booking_leave_it_listed_where_it_is(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    """Two processes move one booking at once (a conflict, a retry) while readers read both days."""
    first, second = stores_of(watched[0]), stores_of(watched[0])
    b = booking(KG, D)
    await first.bookings.insert(b, [])

    async def move(stores: Stores, day: date) -> None:
        for _ in range(20):
            current = await stores.bookings.get(b.booking_id)
            assert current is not None
            with contextlib.suppress(Conflict):  # the other one committed first: read again
                await stores.bookings.save(confirm(current, day), [])
                return

    for _ in range(4):
        readers = [on(first, KG, D), on(second, KG, D + timedelta(days=1))]
        await asyncio.gather(move(first, D + timedelta(days=1)), move(second, D), *readers)
    latest = await first.bookings.get(b.booking_id)
    assert latest is not None and latest.appointment is not None
    here = latest.appointment.start.astimezone(JST).date()
    elsewhere = D if here != D else D + timedelta(days=1)
    assert await on(first, KG, here) == [b.booking_id]
    assert await on(first, KG, elsewhere) == []


async def test_pages_run_across_days_in_order(watched: tuple[AsyncDatabase[Doc], Finds]) -> None:
    stores = stores_of(watched[0])
    made = [booking(KG, D + timedelta(days=i // 2), f"{10 + i % 2}:00") for i in range(7)]
    for b in reversed(made):
        await stores.bookings.insert(b, [])
    await stores.bookings.save(confirm(made[3], D + timedelta(days=1), "11:00"), [])  # same place
    everything = await on(stores, KG, D, days=4, limit=100)
    assert everything == [b.booking_id for b in made]
    pages = [await on(stores, KG, D, days=4, limit=3, skip=s) for s in (0, 3, 6)]
    assert [i for page in pages for i in page] == everything
    assert await on(stores, KG, D, days=4, status=["confirmed"]) == [made[3].booking_id]


async def test_look_ups_find_a_persons_bookings_by_phone_email_and_jobseeker_number(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    db, finds = watched
    stores = stores_of(db)
    same = [booking(KG, D + timedelta(days=i), phone="+81154110000") for i in range(3)]
    other = booking(KG, D, phone="+81154119999", email="hanako@example.jp")
    elsewhere = booking(HW, D, phone="+81154110000", jobseeker_number="12345-00000011")
    for b in [*same, other, elsewhere]:
        await stores.bookings.insert(b, [])
    # a slot written by an intake that failed before its booking: ignored
    digest = stores.bookings.vault.index("phone", "+81154110000")
    await stores.bookings.lookups.add(KG, "phone", digest, "never-committed")

    finds.seen.clear()
    found = await stores.bookings.looked_up(KG, ("phone", "+81154110000"))
    assert [b.booking_id for b in found] == [b.booking_id for b in same]
    assert all(set(q) == {"_id"} for _, q in finds.seen), finds.seen
    by_email = await stores.bookings.looked_up(KG, ("email", "hanako@example.jp"))
    assert [b.booking_id for b in by_email] == [other.booking_id]
    by_number = await stores.bookings.looked_up(HW, ("jobseeker_number", "12345-00000011"))
    assert [b.booking_id for b in by_number] == [elsewhere.booking_id]
    later = await stores.bookings.looked_up(
        KG, ("phone", "+81154110000"), after=at(D + timedelta(days=1), "00:00"), limit=1
    )
    assert [b.booking_id for b in later] == [same[1].booking_id]

    many = [booking(KG, D, phone="+81154112222") for _ in range(12)]  # at once: numbers taken once each
    await asyncio.gather(*(stores.bookings.insert(b, []) for b in many))
    got = await stores.bookings.looked_up(KG, ("phone", "+81154112222"), limit=100)
    assert sorted(b.booking_id for b in got) == sorted(b.booking_id for b in many)


async def test_r09_r13_refusal_and_review_lists_follow_each_persons_latest_state(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    stores = stores_of(watched[0])
    people = stores.people
    refused, expiring, reviewed = (PersonRecord(person_key=f"p_{n}", office_id=KG) for n in "abc")
    hw = PersonRecord(person_key="p_hw", office_id=HW)
    for p in (refused, hw):  # R13
        p.refuse("威圧的な言動", None, until=None, by="tanaka", now=NOW, recipient=None)
        await people.save(p, [])
    expiring.refuse("威圧的な言動", None, until=NOW + timedelta(days=1), by="tanaka", now=NOW, recipient=None)
    await people.save(expiring, [])
    reviewed.review = Review(since=NOW, no_shows=2, last_booking_id="b1")  # R09, decide: staff
    await people.save(reviewed, [])

    assert [p.person_key for p in await people.refused(KG, NOW)] == ["p_a", "p_b"]
    assert [p.person_key for p in await people.in_review(KG)] == ["p_c"]
    assert [p.person_key for p in await people.refused(HW, NOW)] == ["p_hw"]

    later = NOW + timedelta(days=2)  # p_b's refusal has ended: not listed, its marker gone
    assert [p.person_key for p in await people.refused(KG, later)] == ["p_a"]
    bucket = await people.refusals.buckets()
    assert {m["item"] for m in await bucket.read(KG, CURRENT)} == {"p_a"}

    refused.lift("tanaka", later)
    await people.save(refused, [])
    assert await people.refused(KG, later) == []
    reviewed.decide_review(False, None, "tanaka", later, None)  # dismissed
    await people.save(reviewed, [])
    assert await people.in_review(KG) == []

    expiring.refuse("録音・録画", None, until=None, by="tanaka", now=later, recipient=None)  # refused again
    await people.save(expiring, [])
    [again] = await people.refused(KG, later)
    assert again.person_key == "p_b" and again.refusal is not None and again.refusal.reason == "録音・録画"


async def test_data_from_before_the_listings_is_listed_once_at_start_up(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    db = watched[0]
    stores = stores_of(db)
    old = [booking(KG, D), booking(KG, D, phone="+81154113333")]
    for b in old:  # as the previous version wrote them: no placement, no marker, no slot
        await stores.bookings.versions.commit(b.booking_id, 1, stores.bookings.to_doc(b), [])
    state = {"office_id": KG, "no_shows": [], "counted_from": NOW, "review": None,
             "refusal": {"rule": "R13", "reason": "威圧的な言動", "since": NOW, "until": None, "by": "tanaka",
                         "ground": "威圧的な言動"}}  # fmt: skip
    await stores.people.versions.commit("p_old", 1, state, [])
    assert await on(stores, KG, D) == []

    await stores.ensure_indexes()  # start-up
    assert sorted(await on(stores, KG, D)) == sorted(b.booking_id for b in old)
    found = await stores.bookings.looked_up(KG, ("phone", "+81154113333"))
    assert [b.booking_id for b in found] == [old[1].booking_id]
    assert [p.person_key for p in await stores.people.refused(KG, NOW)] == ["p_old"]
    assert await db["booking_meta"].find_one({"_id": LISTED}) is not None
    again = await stores.list_existing()  # consultctl booking list-existing: nothing doubles
    assert again == {"bookings": 2, "people": 1}
    assert sorted(await on(stores, KG, D)) == sorted(b.booking_id for b in old)
    assert len(await stores.bookings.looked_up(KG, ("phone", "+81154113333"))) == 1

    moved = await stores.bookings.get(old[0].booking_id)  # its next version places its own marker
    assert moved is not None and moved.placed == {}
    await stores.bookings.save(confirm(moved, D + timedelta(days=3)), [])
    assert await on(stores, KG, D) == [old[1].booking_id]
    assert await on(stores, KG, D + timedelta(days=3)) == [old[0].booking_id]


async def test_indexes_no_read_uses_are_dropped_at_start_up(
    watched: tuple[AsyncDatabase[Doc], Finds],
) -> None:
    db = watched[0]
    await db["bookings"].create_index([("office_id", 1), ("sort_at", 1)])
    await db["people"].create_index("office_id")
    await stores_of(db).ensure_indexes()
    assert "office_id_1_sort_at_1" not in await db["bookings"].index_information()
    assert "office_id_1" not in await db["people"].index_information()


async def test_the_staff_list_covers_a_bounded_span_of_days(
    make_settings: Callable[..., Any], amqp_url: str, mongo: AsyncMongoClient[Doc]
) -> None:
    async with running(make_settings, amqp_url, list_max_days=10) as h:
        path = f"/v1/offices/{KG}/bookings"
        r = await h.staff("GET", path, params={"from": "2026-11-01", "to": "2026-11-10"})
        assert r.status_code == 200, r.text
        r = await h.staff("GET", path, params={"from": "2026-11-01", "to": "2026-11-11"})
        assert r.status_code == 422
        [error] = r.json()["errors"]
        assert error["field"] == "to" and "at most 10 days" in error["message"]
        # without dates: LIST_DAYS_BACK before today to the office's horizon, over the maximum here
        assert (await h.staff("GET", path)).status_code == 422
        assert (await h.staff("GET", path, params={"email": "taro@example.jp"})).status_code == 200

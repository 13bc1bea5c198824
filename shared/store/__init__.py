"""The persistence idioms every service's store uses, in one place.

MongoDB in production, FerretDB 1.x (SQLite) locally and in CI: the same code has to be correct on
both, and fast on the one that answers only `{_id: value}` from an index and isolates no update.

- `backend`: `is_ferretdb`, asked once per client, for the few places the two servers differ.
- `conditional`: `update_if`, `find_one_and_update_if`, `delete_if`: a write to one `_id` on a
  condition, sent as one filter to MongoDB, as a read by `_id`, a check and a write by `_id` to FerretDB.
- `versioned`: `VersionedStore`, an aggregate whose every change is an insert keyed by
  (id, version): the one compare-and-set FerretDB keeps, so no lost updates on either server.
- `outbox`: the events of a write ride inside the written document; a relay publishes them
  (`MarkedRelay` for aggregates, `OutboxRelay` for carrier documents deleted once sent).
"""

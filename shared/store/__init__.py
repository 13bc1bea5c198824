"""The persistence idioms every service's store uses, in one place.

MongoDB in production, FerretDB 1.x (SQLite) locally and in CI: the same code has to be correct on
both, and fast on the one that answers only `{_id: value}` from an index and isolates no update.

- `outbox`: the events of a write ride inside the written document; a relay publishes them
  (`MarkedRelay` for aggregates, `OutboxRelay` for carrier documents deleted once sent).
"""

"""The bench's e2e knee: a step holds with ≥ 95 % completed and p99 request → audit record ≤ 2 s;
the knee is the last load that held; the limit is the scarcest resource's raw rate ÷ its use per
booking at the knee, from the services' counters and CPU of that step."""

from __future__ import annotations

import os

from bench import e2e, report
from bench.results import Figure, Run


def _bookings(n: int, latency: float, failed: int = 0) -> list[e2e.Booking]:
    out = []
    for i in range(n):
        b = e2e.Booking(index=i, email=f"b{i}@example.org", sent=1000.0 + i, status=202, http_seconds=0.05)
        if i < failed:
            b.outcome = "email but no audit record of it"
        else:
            b.mailed, b.audited, b.outcome = b.sent + latency / 2, b.sent + latency, "done"
        out.append(b)
    return out


def _spent(n: int) -> dict[str, dict[str, float]]:
    return {  # per booking: 30 commands, 6 publishes, 8 deliveries
        "db_commands": {"booking": 20.0 * n, "audit": 10.0 * n},
        "broker_publishes": {"booking": 4.0 * n, "scheduler": 2.0 * n},
        "deliveries": {"audit": 8.0 * n},
    }


def test_the_knee_is_the_last_step_that_held_and_is_divided_by_the_scarcest_limit() -> None:
    run = Run(machine={}, options={})
    for name, value in (
        ("mongo_insert_one", 600.0),
        ("amqp_publish_pipelined", 3000.0),
        ("amqp_consume", 2400.0),
    ):
        run.add(Figure("baseline", name, value, "op/s", ""))
    held = []
    for load, latency, failed in ((1, 0.4, 0), (2, 0.5, 0), (4, 0.6, 0), (8, 2.5, 0)):
        n = load * 10
        cpu = {"ferretdb": 0.1 * load, "booking": 0.05 * load, "bench": 0.5}
        fig, why = e2e.record_step(
            run, load, _bookings(n, latency, failed), cpu=cpu, wall=10.0, spent=_spent(n)
        )
        if why:
            assert "p99" in why and load == 8
            break
        held.append(fig)
    _, why = e2e.record_step(run, 16, _bookings(20, 0.5, failed=2), cpu={}, wall=10.0, spent=_spent(20))
    assert why is not None and "18 of 20 completed" in why  # 90 %: below the 95 % bar

    last = run.get("e2e/bookings_at_8_per_s")
    e2e.record_knee(run, held, last)
    knee, limit = run.get("e2e/knee"), run.get("e2e/limit")
    assert knee is not None and limit is not None
    assert knee.value == 4.0
    use = run.get("e2e/bookings_at_4_per_s").extra["per_booking"]  # type: ignore[union-attr]
    assert use["db_commands"] == {"total": 30.0, "audit": 10.0, "booking": 20.0}
    assert use["cpu_ms"]["total"] == 150.0  # (0.4 + 0.2) cores × 10 s ÷ 40 bookings, the bench apart
    # database 600/s ÷ 30 = 20/s; broker 3000 ÷ 6 = 500/s; deliveries 2400 ÷ 8 = 300/s; CPU 2000 ÷ 150
    cores = os.cpu_count() or 1
    expected = min(20.0, round(cores * 1000 / 150, 1))
    assert limit.value == expected and limit.extra["scarcest"] in ("db_commands", "cpu")
    assert knee.ratio == round(4.0 / expected, 3)
    assert knee.extra["held"] == [1, 2, 4] and "p99" in knee.extra["stopped_because"]
    text = report.markdown(run, None)
    assert "- knee 4 bookings/s, knee ÷ limit" in text


def test_the_default_steps_double_from_one() -> None:
    from bench.__main__ import parse

    assert parse([]).loads == (1, 2, 4, 8, 16, 32, 64, 128)
    assert "e2e" in parse([]).parts

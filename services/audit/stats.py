"""Usage statistics (R10) published as aggregates only, small cells suppressed (R11).

A cell with fewer than the threshold's records could single out one person's device or visit, so
its figures are withheld; no totals are published, since a total minus the shown cells would give
the suppressed ones back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.mongo import Doc


@dataclass
class Tally:
    """Counts per (office, JST day, JST hour); fed row by row, memory grows with cells, not rows."""

    cells: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)

    def add(self, row: Doc) -> None:
        cell = self.cells.setdefault((row["office_id"], row["day"], int(row["hour"])), [0, 0.0])
        cell[0] += 1
        cell[1] += float(row.get("usage_minutes") or 0.0)

    def publish(self, threshold: int) -> list[Doc]:
        out: list[Doc] = []
        for (office, day, hour), (count, minutes) in sorted(self.cells.items()):
            shown = count >= threshold
            out.append(
                {
                    "office_id": office,
                    "day": day,
                    "hour": hour,
                    "count": int(count) if shown else None,
                    "minutes": round(minutes, 1) if shown else None,
                    "suppressed": not shown,
                }
            )
        return out

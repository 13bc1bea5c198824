"""Counsellors from a YAML file (deploy/counsellors.yaml): the demo's and a new office's first staff.

    counsellors:
      - {counsellor_id: kg-sato, office_id: kushiro-gyosei, name: 佐藤 一郎, areas: [釧路],
         weekly: {mon: ["09:00-12:00", "13:00-17:00"]}}

Each record is checked against its office's policy (R16 apps, R20 areas); records of offices not
loaded here (demo offices without EXTRA_OFFICES_DIR) are skipped and reported, never half-loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from services.scheduler.availability import Counsellor, check_against_policy
from services.scheduler.store import CounsellorStore
from shared.policy import Policies


class CounsellorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    counsellors: list[Counsellor]


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def read(path: Path) -> list[Counsellor]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return CounsellorFile.model_validate(data).counsellors


async def load(
    store: CounsellorStore,
    policies: Policies,
    counsellors: list[Counsellor],
    at: datetime,
    dev_hosts: Sequence[str] = (),
) -> LoadReport:
    """Upsert every counsellor whose office is known and whose record fits the office's policy
    (`dev_hosts`: development join hosts accepted for rooms, never in prod)."""
    report = LoadReport()
    for c in counsellors:
        policy = policies.get(c.office_id)
        if policy is None:
            report.skipped[c.counsellor_id] = f"office {c.office_id} not loaded"
            continue
        if problems := check_against_policy(c, policy, dev_hosts):
            report.skipped[c.counsellor_id] = "; ".join(problems)
            continue
        (report.created if await store.put(c, at) else report.updated).append(c.counsellor_id)
    return report

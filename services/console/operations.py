"""The operations page's figures, from what the RabbitMQ management API says of the queues (no I/O).

Per service: its inbox, its delay (retry) queues and its parking queue, each with the messages ready
and unacknowledged, consumers and the in/out rates. Parked counts come from the queue list alone (it
reads no message). The reasons of parked messages are read only when an operator asks (`Broker.peek`,
which costs each one shown one more delivery: shared/parking.py `peek_body`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared import parking, topology

#: the services that replay their parked messages over HTTP (`POST /v1/ops/parked/replay`); the
#: console binds no queue (`consultctl dlq replay console` if ever needed)
REPLAYS_OVER_HTTP = ("booking", "scheduler", "notifier", "audit")
NAMES = {
    "booking": "予約",
    "scheduler": "日程調整",
    "notifier": "通知",
    "audit": "監査記録",
    "console": "コンソール",
}
KINDS = {"inbox": "受信", "delay": "再試行待ち", "parking": "保留（パーキング）"}
#: the reasons the services park with (shared/messaging.py, `MessageError`), in Japanese; another
#: reason is shown as the service wrote it
REASONS = {
    "invalid-event": "読み取れないイベント",
    "unparseable": "読み取れない形式",
    "retries-exhausted": "再試行の上限に達した",
    "message-id-reused": "同じIDで内容の違うメッセージ",
    "no-handler": "このサービスが扱わない種類",
    "sealed-copy": "封印を開けない",
    "invalid-command": "不正なコマンド",
    "invalid-header": "不正なヘッダー",
    "unknown-booking": "不明な予約",
    "unknown-office": "不明な事務所",
    "smtp-rejected": "メールサーバーが拒否",
    "smtp-unavailable": "メールサーバーに接続できない",
    parking.BROKER_LIMIT: "配信回数の上限（ブローカー）",
}


def reason_text(reason: str) -> str:
    """A parking reason in Japanese, with the code the service wrote."""
    return f"{REASONS[reason]}（{reason}）" if reason in REASONS else reason


@dataclass(frozen=True)
class QueueFigures:
    name: str
    kind: str  # inbox, delay, parking
    ready: int
    unacked: int
    consumers: int
    rate_in: float
    rate_out: float
    found: bool = True  # False: the broker has no such queue (the service never started here)

    @property
    def total(self) -> int:
        return self.ready + self.unacked


@dataclass(frozen=True)
class ServiceFigures:
    service: str
    queues: tuple[QueueFigures, ...]

    @property
    def name(self) -> str:
        return NAMES.get(self.service, self.service)

    @property
    def parked(self) -> int:
        return sum(q.total for q in self.queues if q.kind == "parking")

    @property
    def consumers(self) -> int:
        return sum(q.consumers for q in self.queues if q.kind == "inbox")

    @property
    def replays_over_http(self) -> bool:
        return self.service in REPLAYS_OVER_HTTP


def _rate(q: Mapping[str, Any], key: str) -> float:
    details = (q.get("message_stats") or {}).get(f"{key}_details") or {}
    return float(details.get("rate", 0.0))


def _figures(name: str, kind: str, q: Mapping[str, Any] | None) -> QueueFigures:
    if q is None:
        return QueueFigures(name, kind, 0, 0, 0, 0.0, 0.0, found=False)
    return QueueFigures(
        name,
        kind,
        int(q.get("messages_ready", 0) or 0),
        int(q.get("messages_unacknowledged", 0) or 0),
        int(q.get("consumers", 0) or 0),
        _rate(q, "publish"),
        _rate(q, "deliver_get"),
    )


def figures(
    listed: Iterable[Mapping[str, Any]], services: Mapping[str, topology.ServiceQueues] = topology.SERVICES
) -> list[ServiceFigures]:
    """Every service's queues, in the topology's order, from the management API's queue list."""
    by_name = {str(q.get("name")): q for q in listed}
    out = []
    for service, sq in services.items():
        names = [(sq.inbox, "inbox")]
        names += [(sq.retry_queue(d), "delay") for d in sq.retry_delays]
        names.append((sq.parking, "parking"))
        out.append(ServiceFigures(service, tuple(_figures(n, k, by_name.get(n)) for n, k in names)))
    return out


def of_service(listed: Iterable[Mapping[str, Any]], service: str) -> ServiceFigures:
    """One service's figures; KeyError for a service the topology does not have."""
    return figures(listed, {service: topology.SERVICES[service]})[0]

"""Example inputs of the audit service: an HTTP request as a service's access-log middleware reports it.

access_logged(at=clock.now())                               # a portal's booking request, 202
access_logged(at=now, service="probe", method="GET", route="/", status=200)
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.events import AccessLogged


def access_logged(*, at: datetime, request_id: str | None = None, **fields: Any) -> AccessLogged:
    """An R10 access record, by default KG's portal posting a booking from its server; any field may be
    given."""
    values: dict[str, Any] = {
        "service": "booking",
        "actor": "portal:kg",
        "method": "POST",
        "route": "/v1/offices/{office_id}/bookings",
        "status": 202,
        "latency_ms": 3.2,
        "ip_address": "192.0.2.10",  # the portal's server (TEST-NET-1)
        "user_agent": "kg-portal/2.3 python-httpx/0.28",
        **fields,
    }
    return AccessLogged(request_id=request_id or uuid.uuid4().hex, at=at, **values)

"""The workaround in shared/mongo.py for PyMongo's pool-paused loop, on the real MongoDB-wire server.

After a clear (the monitor's heartbeat timed out, say) the pool is paused until the next heartbeat.
An operation whose error handler was created after that clear gets "connection pool paused" carrying
the pool's current generation. Unpatched, PyMongo 4.20 takes that as a fresh network error: the server
goes Unknown and the pool is cleared again, which under load kept a service's pool paused for minutes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.errors import AutoReconnect

from shared.mongo import connect, ping
from tests import support


async def test_a_checkout_refused_by_a_paused_pool_does_not_clear_it_again(servers: None) -> None:
    client = connect(support.MONGODB_URL, app_name="pool-cleared-test", timeout_ms=2000)
    try:
        await client.admin.command("ping")
        topology: Any = client._topology
        [server] = topology._servers.values()
        pool = server.pool
        await pool.reset()  # what a failed heartbeat does: new generation, paused
        generation = pool.gen.get_overall()

        # refused (unpatched, the retry may instead wait out the Unknown server and succeed)
        with contextlib.suppress(AutoReconnect):
            await client["pool_cleared_test"]["c"].find_one({"_id": "x"})

        assert pool.gen.get_overall() == generation, "the paused pool was cleared again"
        assert server.description.is_server_type_known, "a paused-pool refusal marked the server Unknown"
        # the refusal asked for a heartbeat: the pool is ready again well before the 10 s period
        await support.eventually(lambda: ping(client), timeout=5.0, what="the pool ready again")
    finally:
        await client.close()

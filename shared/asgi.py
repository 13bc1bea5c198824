"""Pure-ASGI pieces the HTTP middlewares share: knowing whether an answer has begun, and answering
with a JSON body of one's own.

An error raised by the app can still be answered as long as no `http.response.start` has gone out;
after that the status line is sent and the only honest thing left is to let the server cut the
connection (the client sees a truncated answer, never a wrong one).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Send


class Tracking:
    """`send`, remembering whether the answer has started."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole answer: `body` (JSON) with its type and length, and any further headers."""
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})

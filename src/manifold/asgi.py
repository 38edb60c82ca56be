"""The few ASGI helpers every face needs (app, admin API, relay): raw ASGI, because they run on every
relayed call and a framework's request/response objects cost more than the call's own work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

JSON = dict[str, Any]
Scope = dict[str, Any]
Send = Callable[[JSON], Awaitable[None]]
Receive = Callable[[], Awaitable[JSON]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    # An explicit content-length spares the response chunked framing.
    head = [*(headers if headers is not None else JSON_HEADERS), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (ASGI servers lower-case them already), each value without
    the optional whitespace around it (RFC 9110 §5.5; uvicorn's httptools parser leaves it in)."""
    return {k.decode("latin-1"): v.decode("latin-1").strip(" \t") for k, v in scope["headers"]}

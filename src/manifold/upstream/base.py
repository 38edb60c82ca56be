"""The seam between the gateway and one upstream MCP server.

The relay never sees a transport. It asks the pool for an `UpstreamSession` and sends raw JSON-RPC
requests through it as plain dicts: results pass through unchanged, and there is no per-message model
validation on the hot path (see docs/design.md, "Hot path").

Everything an upstream sends that belongs to one in-flight request (progress, logging, server→client
requests such as sampling and elicitation) is handed to that request's `RequestSink`. Everything that
belongs to no request (list_changed, resources/updated) goes to the session's `on_notification`.

Below the session sits one more seam, `MessageTransport`: how a session's messages travel (HTTP, stdio,
SSE). The session (session.py) and the transports (http.py, lean_http.py, stdio.py, sse.py) both import
the types they share from here, so neither imports the other.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from manifold.protocol import Era

JSON = dict[str, Any]


# What the stdio transport says, as a JSON-RPC error with a null id, of a line it could not read because it is
# nested too deep (upstream/session.py fails the one request in flight with it).
TOO_DEEP = "sent a message nested too deep to read, most likely the answer (a protocol error of the upstream)"


class ErrorKind(enum.StrEnum):
    """Why an upstream could not answer; callers decide on it (retry, fetch a new credential, report)."""

    UNAVAILABLE = "unavailable"  # refused, unreachable, dropped the response
    TIMEOUT = "timeout"  # no answer within call_timeout
    PROTOCOL = "protocol"  # answered, but not in a way the gateway can use (handshake refused, no reply)
    CLOSED = "closed"  # the session ended (process gone, session expired, gateway shutting down)
    AUTH = "auth"  # refused the gateway's credentials (HTTP 401/403): a per-user token may be renewed


class UpstreamError(Exception):
    """An upstream could not answer. The message is safe to show a client: it names the upstream and
    the cause, and never contains a header value, token, URL credential or argument."""

    # The ids of requests the upstream provably never read before the connection ended (a stdio process that died
    # with their messages still in its stdin pipe): sending them again cannot run them twice, so a session that
    # ends with this error fails them as UpstreamSessionLost (session.py `_mark_closed`).
    never_read: frozenset[int] = frozenset()

    def __init__(self, upstream_id: str, reason: str, *, kind: ErrorKind = ErrorKind.UNAVAILABLE) -> None:
        self.upstream_id = upstream_id
        self.reason = reason
        self.kind = kind
        super().__init__(f"upstream '{upstream_id}' {reason}")


class UpstreamTimeout(UpstreamError):
    def __init__(self, upstream_id: str, seconds: float) -> None:
        super().__init__(upstream_id, f"did not answer within {seconds:g}s", kind=ErrorKind.TIMEOUT)


class UpstreamSessionLost(UpstreamError):
    """The session is dead and this request was NOT delivered (upstream restarted, session expired,
    process gone before the write, connection refused). Reconnecting and retrying is safe."""

    def __init__(self, upstream_id: str, reason: str) -> None:
        super().__init__(upstream_id, reason, kind=ErrorKind.CLOSED)


class RequestSink(Protocol):
    """Where an in-flight request's side traffic goes (implemented by the relay, per client request)."""

    # Whose request it is: the session guesses a message that names no request to be the one call in flight
    # only while no request of someone else's it gave up may still be running upstream.
    principal_id: str

    @property
    def client_session(self) -> object | None:
        """The 2025-11-25 client session (or legacy SSE connection) the request came on, compared by identity;
        None for a sessionless 2026-07-28 request. A question the upstream relates to no request, asked while
        several calls of one such session are in flight, is that session's to answer."""
        ...

    @property
    def client_capabilities(self) -> JSON:
        """The capabilities of the client the request is made for: a 2026-07-28 upstream request declares
        exactly these, so the upstream asks only for input this client can give."""
        ...

    async def notify(self, message: JSON) -> None:
        """A notification related to the request (progress with the caller's own progressToken restored,
        logging). `message` is a complete JSON-RPC notification dict."""

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        """A server→client request (sampling/createMessage, elicitation/create, roots/list) made while
        serving this request. Returns the client's JSON-RPC reply as {"result": ...} or {"error": ...}.
        `shared`: put to this request's client as one of several of its calls in flight (the upstream did not say
        which asked): it belongs to the client session, not to this call, and is not withdrawn when this call ends."""
        ...


NotificationHandler = Callable[[str, JSON], Awaitable[None] | None]
"""(upstream_id, notification) for notifications that belong to no request: list_changed,
resources/updated. Called by the session; must not block."""


class UpstreamSession(Protocol):
    """One live MCP client session to one upstream, shared by many concurrent gateway requests."""

    upstream_id: str
    era: Era
    protocol_version: str
    server_info: JSON
    capabilities: JSON
    instructions: str | None

    @property
    def closed(self) -> bool: ...

    async def request(
        self,
        method: str,
        params: JSON | None = None,
        *,
        sink: RequestSink | None = None,
        timeout: float | None = None,
    ) -> JSON:
        """Send one request and return the upstream's reply as {"result": ...} or {"error": {...}}
        (the JSON-RPC envelope minus `jsonrpc`/`id`). Request ids and progress tokens are rewritten
        so concurrent callers never collide. Cancelling the awaiting task cancels upstream
        (notifications/cancelled, or closing the stream in the modern era).
        Raises UpstreamError (including UpstreamTimeout) when there is no reply."""
        ...

    async def notify(self, method: str, params: JSON | None = None) -> None: ...

    async def aclose(self) -> None: ...


Deliver = Callable[[JSON, int | None], Awaitable[None]]
"""(message, the gateway's id of the request it answers or belongs to, None when the transport cannot tell, or
`STANDALONE` when it knows the message belongs to no request) — the transport hands every received message to
the session."""

# A streamable-HTTP upstream's GET stream: what comes on it belongs to no request (what does is sent on that
# request's POST stream). Our request ids count up from 1, so this is never one of them.
STANDALONE = -1
OnClosed = Callable[[UpstreamError], None]
"""Called once by the transport when its channel dies on its own (stream ended, process exited)."""


class MessageTransport(Protocol):
    """How a session's messages travel. One implementation per upstream transport kind."""

    kind: str  # "http" | "stdio" | "sse"

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        """Open the channel (start the process, open the SSE stream). HTTP connects lazily."""

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        """Send one request. Transports that carry the reply on the request's own response stream
        (streamable HTTP) deliver it, and everything before it, before returning; others return once
        written. Cancelling the caller aborts the request's response stream where there is one."""

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        """Send a notification or a reply to a server→client request."""

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        """Run the handshake-era standalone stream (HTTP GET) until the session closes; set `ready` once
        it is open or known to be unavailable. Transports without one set `ready` and return."""

    def set_negotiated(self, protocol_version: str) -> None:
        """Remember the negotiated version (sent as `MCP-Protocol-Version` on later HTTP requests)."""

    async def aclose(self) -> None: ...

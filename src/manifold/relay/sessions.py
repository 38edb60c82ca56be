"""Client-facing session state.

2025-11-25 clients get an `Mcp-Session-Id` (unless the gateway runs stateless). The session is bound to
the principal that created it: the same id with another credential is "Session not found", so a leaked
session id is worth nothing without the credential. 2026-07-28 clients have no session at all.

What one caller can hold is limited (`gateway.limits`): sessions per principal, sessions in total, and open
notification streams per principal (GET streams, `/sse` streams, `subscriptions/listen`). Reaching a limit
refuses the newcomer (`LimitReached`: HTTP 429 with a JSON-RPC error and a Retry-After); nobody's session is
ever evicted to make room. Sessions idle for IDLE_SECONDS (and with no open stream) expire.

Server→client requests (sampling, elicitation) relayed from an upstream wait in `PendingReplies` under a
random id until the client POSTs the answer; the id is unguessable and bound to the principal too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manifold.asgi import JSON_HEADERS, Send, send_body
from manifold.catalog.view import VirtualServerView
from manifold.config.models import LimitsSettings
from manifold.principal import Principal
from manifold.protocol import LIMIT_REACHED
from manifold.relay.hub import Hub, Listener
from manifold.relay.jsonrpc import error_bytes

JSON = dict[str, Any]
IDLE_SECONDS = 1800.0
RETRY_AFTER_SECONDS = 30  # what a refused client is told to wait before trying again


class LimitReached(Exception):
    """A caller reached one of its limits: the newcomer is refused, nobody else is touched."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def refuse(send: Send, exc: LimitReached, request_id: Any = None) -> None:
    """Answer a refused request: 429, a JSON-RPC error naming the limit, and when to try again."""
    await send_body(
        send,
        429,
        error_bytes(request_id, LIMIT_REACHED, exc.message),
        JSON_HEADERS + [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
    )


@dataclass(eq=False)
class ClientSession:
    id: str
    server_id: str
    principal_id: str
    protocol_version: str
    client_capabilities: JSON
    client_info: JSON
    listener: Listener
    log_level: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    inflight: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)


class SessionStore:
    def __init__(
        self,
        hub: Hub,
        limits: LimitsSettings | None = None,
        *,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self.limits = limits or LimitsSettings()
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()  # least recently seen first
        self._per_principal: dict[str, int] = {}
        self._streams: dict[str, int] = {}  # open streams per principal

    def __len__(self) -> int:
        return len(self._sessions)

    def listener(
        self, view: VirtualServerView, kinds: set[str], principal: Principal, subscription_id: Any = None
    ) -> Listener:
        """A listener whose stream queue has this gateway's byte bound."""
        return Listener(
            view=view,
            kinds=kinds,
            subscription_id=subscription_id,
            principal=principal,
            max_bytes=self.limits.queued_bytes_per_stream,
        )

    def create(
        self,
        *,
        server_id: str,
        principal_id: str,
        protocol_version: str,
        client_capabilities: JSON,
        client_info: JSON,
        listener: Listener,
    ) -> ClientSession:
        """A new session, or LimitReached when its principal (or everyone together) holds as many as allowed."""
        self._expire()
        if self._per_principal.get(principal_id, 0) >= self.limits.sessions_per_principal:
            raise LimitReached(
                f"Session limit reached: at most {self.limits.sessions_per_principal} open sessions per caller; "
                "end one (DELETE) or wait for one to expire"
            )
        if len(self._sessions) >= self.limits.sessions_total:
            raise LimitReached("Session limit reached: the gateway holds as many sessions as it allows")
        session = ClientSession(
            id=secrets.token_hex(16),
            server_id=server_id,
            principal_id=principal_id,
            protocol_version=protocol_version,
            client_capabilities=client_capabilities,
            client_info=client_info,
            listener=listener,
            last_seen=self._clock(),
        )
        listener.session_id = session.id
        self._sessions[session.id] = session
        self._per_principal[principal_id] = self._per_principal.get(principal_id, 0) + 1
        self._hub.add(listener)
        return session

    def get(self, session_id: str, principal_id: str) -> ClientSession | None:
        session = self._sessions.get(session_id)
        if session is None or session.principal_id != principal_id:
            return None
        session.last_seen = self._clock()
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        left = self._per_principal.get(session.principal_id, 1) - 1
        if left > 0:
            self._per_principal[session.principal_id] = left
        else:
            self._per_principal.pop(session.principal_id, None)
        self._hub.remove(session.listener)
        session.listener.close()
        for task in session.inflight.values():
            task.cancel()
        return True

    def close_all(self) -> None:
        for sid in list(self._sessions):
            self.close(sid)

    # ---- streams ----------------------------------------------------------------------------------

    def check_stream(self, principal_id: str) -> None:
        """LimitReached when this principal holds as many open streams as allowed."""
        if self._streams.get(principal_id, 0) >= self.limits.streams_per_principal:
            raise LimitReached(
                f"Stream limit reached: at most {self.limits.streams_per_principal} open notification streams "
                "per caller; close one first"
            )

    def open_stream(self, principal_id: str) -> None:
        """Count one more open stream of this principal, or LimitReached. Pair with `stream_closed`."""
        self.check_stream(principal_id)
        self._streams[principal_id] = self._streams.get(principal_id, 0) + 1

    def stream_closed(self, principal_id: str) -> None:
        left = self._streams.get(principal_id, 1) - 1
        if left > 0:
            self._streams[principal_id] = left
        else:
            self._streams.pop(principal_id, None)

    def open_streams(self, principal_id: str) -> int:
        return self._streams.get(principal_id, 0)

    # ---- expiry -----------------------------------------------------------------------------------

    def _expire(self) -> None:
        """Close sessions not seen for the idle time, oldest first. A session whose stream is open is in
        use: it is kept (and counted as seen now)."""
        now = self._clock()
        cutoff = now - self._idle_seconds
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if session.last_seen >= cutoff:
                return
            if session.listener.streaming:
                session.last_seen = now
                self._sessions.move_to_end(sid)
                continue
            self.close(sid)


class PendingReplies:
    """Server→client requests waiting for the client's answer."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[str, asyncio.Future[JSON]]] = {}

    def new(self, principal_id: str) -> tuple[str, asyncio.Future[JSON]]:
        rid = "mf-" + secrets.token_urlsafe(12)
        fut: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (principal_id, fut)
        return rid, fut

    def drop(self, rid: str) -> None:
        self._waiting.pop(rid, None)

    def resolve(self, message: JSON, principal_id: str) -> bool:
        rid = message.get("id")
        if not isinstance(rid, str):
            return False
        entry = self._waiting.get(rid)
        if entry is None or entry[0] != principal_id:
            return False
        del self._waiting[rid]
        fut = entry[1]
        if not fut.done():
            fut.set_result({"error": message["error"]} if "error" in message else {"result": message.get("result", {})})
        return True

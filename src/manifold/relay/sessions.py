"""Client-facing session state.

2025-11-25 clients get an `Mcp-Session-Id` (unless the gateway runs stateless). The session is bound to
the principal that created it: the same id with another credential is "Session not found", so a leaked
session id is worth nothing without the credential. 2026-07-28 clients have no session at all.

Server→client requests (sampling, elicitation) relayed from an upstream wait in `PendingReplies` under a
random id until the client POSTs the answer; the id is unguessable and bound to the principal too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from manifold.relay.hub import Hub, Listener

JSON = dict[str, Any]
IDLE_SECONDS = 1800.0
MAX_SESSIONS = 10_000


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
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._sessions: dict[str, ClientSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, **fields: Any) -> ClientSession:
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            self.close(oldest.id)
        session = ClientSession(id=secrets.token_hex(16), **fields)
        session.listener.session_id = session.id
        self._sessions[session.id] = session
        self._hub.add(session.listener)
        return session

    def get(self, session_id: str, principal_id: str) -> ClientSession | None:
        session = self._sessions.get(session_id)
        if session is None or session.principal_id != principal_id:
            return None
        session.last_seen = time.monotonic()
        return session

    def close(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        self._hub.remove(session.listener)
        session.listener.close()
        for task in session.inflight.values():
            task.cancel()
        return True

    def close_all(self) -> None:
        for sid in list(self._sessions):
            self.close(sid)

    def _expire(self) -> None:
        cutoff = time.monotonic() - IDLE_SECONDS
        for sid in [s.id for s in self._sessions.values() if s.last_seen < cutoff]:
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

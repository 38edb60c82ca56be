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

Replicas (docs/replicas.md, "Sessions across replicas"): with a `SessionSeal` the session id is
`{handle}.{sealed}` — a random 32-hex handle, then a Fernet token (key derived from the gateway's secret key)
carrying the handle, virtual server, principal, negotiated protocol version, client capabilities and client
info. Another replica sharing the secret key and database opens the seal the first time it sees the id and
adopts the session (`adopt`): one decryption and one indexed read of the ended-sessions list, then the
session is in its memory like one it created, so every later request is the same dict lookup as before.
DELETE ends a session everywhere (`end`): the handle is written to the ended list (`EndedSessions`) and the
`sessions` revision is bumped, so other replicas close their copy before their next request is decided
(runtime/changes.py). A sealed id is adoptable for SEALED_SESSION_SECONDS; idle expiry only frees a
replica's memory (the session comes back from the seal on its next request).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.asgi import JSON_HEADERS, Send, send_body
from manifold.catalog.view import VirtualServerView
from manifold.config.models import LimitsSettings
from manifold.outbound.oauth.tables import spent_links
from manifold.principal import Principal
from manifold.protocol import LIMIT_REACHED
from manifold.relay.hub import ALL_LIST_KINDS, Hub, Listener
from manifold.relay.jsonrpc import error_bytes
from manifold.security.crypto import Cipher
from manifold.store import revisions
from manifold.store.db import write_transaction

log = logging.getLogger(__name__)

JSON = dict[str, Any]
IDLE_SECONDS = 1800.0
RETRY_AFTER_SECONDS = 30  # what a refused client is told to wait before trying again
HANDLE_CHARS = 32  # the random handle every session id starts with (16 bytes, hex)
SEALED_SESSION_SECONDS = 86400.0  # how long another replica (or this one, after idle expiry) adopts a sealed id
SESSIONS_SCOPE = "sessions"  # the revision scope bumped when a session is ended (DELETE)
_SEAL_PURPOSE = b"manifold client-session v1"
# What of the client's clientInfo a sealed id carries, each value cut to SEALED_INFO_CHARS: the id is sent
# back on every request as a header, and a client's icons (data URIs of kilobytes) made it too long for a
# balancer's header buffer (haproxy answered 502; replica probe). Capabilities are kept whole unless the id
# would pass SEALED_RAW_BYTES, then without `experimental`.
SEALED_INFO_KEYS = ("name", "version", "title")
SEALED_INFO_CHARS = 200
SEALED_RAW_BYTES = 2048
_ENDED_PREFIX = "s-"  # ended sessions share the spent one-time tokens table: "s-" + handle
_CLOCK_SKEW_SECONDS = 120.0  # replicas' clocks may differ this much when reading the ended list
_PRUNE_SECONDS = 60.0


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


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a sealed session id carries: enough for any replica to serve the session."""

    handle: str
    server_id: str
    principal_id: str
    protocol_version: str
    client_capabilities: JSON
    client_info: JSON


class SessionSeal:
    """Seals and opens session ids with keys derived from the gateway's secret keys (the first seals, every
    one opens: a rotated key keeps the sessions sealed just before). Encrypted, so an id shows no principal,
    and authenticated, so nobody can make one up."""

    def __init__(self, keys: list[bytes], *, max_age_seconds: float = SEALED_SESSION_SECONDS) -> None:
        if not keys:
            raise ValueError("sealing session ids needs at least one key")
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(k)) for k in keys])
        self.max_age_seconds = max_age_seconds

    @classmethod
    def from_cipher(cls, cipher: Cipher, *, max_age_seconds: float = SEALED_SESSION_SECONDS) -> SessionSeal:
        return cls(cipher.derive(_SEAL_PURPOSE), max_age_seconds=max_age_seconds)

    def seal(self, sealed: Sealed) -> str:
        info = {
            key: value[:SEALED_INFO_CHARS]
            for key in SEALED_INFO_KEYS
            if isinstance(value := sealed.client_info.get(key), str)
        }
        caps = sealed.client_capabilities
        head = [sealed.handle, sealed.server_id, sealed.principal_id, sealed.protocol_version]
        raw = orjson.dumps([*head, caps, info])
        if len(raw) > SEALED_RAW_BYTES and "experimental" in caps:
            raw = orjson.dumps([*head, {k: v for k, v in caps.items() if k != "experimental"}, info])
        payload = b"z" + zlib.compress(raw) if len(raw) > 160 else b"j" + raw
        return f"{sealed.handle}.{self._fernet.encrypt(payload).decode('ascii')}"

    def open(self, session_id: str) -> Sealed | None:
        """What the id carries; None for an id not sealed by this gateway, altered, or too old."""
        handle, dot, token = session_id.partition(".")
        if not dot or len(handle) != HANDLE_CHARS:
            return None
        try:
            payload = self._fernet.decrypt(token.encode("ascii"), ttl=int(self.max_age_seconds))
            raw = zlib.decompress(payload[1:]) if payload[:1] == b"z" else payload[1:]
            found = orjson.loads(raw)
        except (InvalidToken, UnicodeEncodeError, zlib.error, orjson.JSONDecodeError):
            return None
        if not (isinstance(found, list) and len(found) == 6 and found[0] == handle):
            return None
        _, server_id, principal_id, version, caps, info = found
        if not (isinstance(server_id, str) and isinstance(principal_id, str) and isinstance(version, str)):
            return None
        return Sealed(
            handle,
            server_id,
            principal_id,
            version,
            caps if isinstance(caps, dict) else {},
            info if isinstance(info, dict) else {},
        )


class EndedSessions:
    """The sessions ended with DELETE, in the database every replica shares: one row per ended session (in
    the table of spent one-time tokens, `spent_links`, as "s-" + handle), kept as long as its sealed id could
    still be adopted.

    A DELETE is answered once its row is written, or after `answer_seconds` if the database is slow to take
    it. When the database cannot take the write then (SQLite busy with another writer, PostgreSQL unreachable
    for a moment) the session still ends: the handle is kept here — this replica treats it as ended at once —
    and written in the background, retried with back-off until it lands or the sealed id could no longer be
    used anyway. Only the other replicas learn of the end later. (Answering 503 instead left a client's
    clean-up failing for a database hiccup: 9 of 30,000 requests in a 10-minute soak on a loaded machine.)"""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        keep_seconds: float = SEALED_SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
        retry_seconds: float = 0.5,
        answer_seconds: float = 0.5,
    ) -> None:
        self._engine = engine
        self._answer_seconds = answer_seconds
        self._pending: set[asyncio.Future[None]] = set()  # writes a DELETE stopped waiting for
        self._keep = keep_seconds
        self._clock = clock
        self._next_prune = 0.0
        self._retry_seconds = retry_seconds
        self._unwritten: dict[str, float] = {}  # handle -> when it ended, not yet in the database
        self._writer: asyncio.Task[None] | None = None

    async def end(self, handle: str) -> None:
        """Record the session as ended, and tell the other replicas (the `sessions` revision). Waits for the
        write at most `answer_seconds`: SQLite busy with another writer would otherwise hold the DELETE for its
        whole busy timeout (5 s) before it fell back; the session ends here at once either way."""
        now = self._clock()
        write = asyncio.ensure_future(self._write({handle: now}))
        try:
            done, _ = await asyncio.wait((write,), timeout=self._answer_seconds)
        except asyncio.CancelledError:  # the client left: the write goes on, and is settled as below
            self._wait_for(handle, now, write)
            raise
        if not done:
            log.warning("the end of a session could not be recorded now (the database is busy); it will be")
            self._wait_for(handle, now, write)
            return
        exc = write.exception()
        if exc is None or isinstance(exc, IntegrityError):  # IntegrityError: ended by another replica just now
            return
        if not isinstance(exc, SQLAlchemyError):
            raise exc
        log.warning("the end of a session could not be recorded now (%s); retrying", type(exc).__name__)
        self._unwritten[handle] = now
        self._start_writer()

    def _wait_for(self, handle: str, at: float, write: asyncio.Future[None]) -> None:
        """The session is ended on this replica now; its still running write settles it for the others."""
        self._unwritten[handle] = at
        self._pending.add(write)

        def settled(write: asyncio.Future[None]) -> None:
            self._pending.discard(write)
            exc = None if write.cancelled() else write.exception()
            if not write.cancelled() and (exc is None or isinstance(exc, IntegrityError)):
                if self._unwritten.pop(handle, None) is not None:
                    log.info("recorded 1 session end(s) the database could not take at first")
                return
            self._start_writer()  # failed or cancelled: written with the others, with back-off

        write.add_done_callback(settled)

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_later(), name="manifold-ended-sessions")

    async def _write(self, ended: dict[str, float]) -> None:
        now = self._clock()
        # BEGIN IMMEDIATE on SQLite: many DELETEs at once wait their turn (busy timeout) instead of
        # failing with "database is locked" when two deferred transactions both try to upgrade.
        async with write_transaction(self._engine) as conn:
            if now >= self._next_prune:
                self._next_prune = now + _PRUNE_SECONDS
                await conn.execute(delete(spent_links).where(spent_links.c.expires_at < now))
            digests = [_ENDED_PREFIX + handle for handle in ended]
            known = select(spent_links.c.digest).where(spent_links.c.digest.in_(digests))
            already = set((await conn.execute(known)).scalars())  # ended by another replica a moment ago
            # Stamped with the time of writing, not of the DELETE: the other replicas look for ends newer than
            # their last look (less a skew margin), and an end written late, after a database outage, would
            # otherwise fall before it and never close their copy of the session (replica probe). It is kept a
            # little longer than its sealed id could be used: harmless.
            rows = [
                {"digest": _ENDED_PREFIX + handle, "expires_at": max(at, now) + self._keep}
                for handle, at in ended.items()
                if _ENDED_PREFIX + handle not in already
            ]
            if rows:
                await conn.execute(insert(spent_links), rows)
                await revisions.bump(conn, SESSIONS_SCOPE)

    async def _write_later(self) -> None:
        delay = self._retry_seconds
        while self._unwritten:
            await asyncio.sleep(delay)
            now = self._clock()
            for handle, at in list(self._unwritten.items()):
                if at + self._keep < now:  # its sealed id expired meanwhile: nothing left to refuse
                    del self._unwritten[handle]
            batch = dict(self._unwritten)
            if not batch:
                return
            try:
                await self._write(batch)
            except SQLAlchemyError as exc:
                delay = min(delay * 2, 30.0)
                log.warning("%d session end(s) still not recorded (%s)", len(batch), type(exc).__name__)
                continue
            for handle in batch:
                self._unwritten.pop(handle, None)
            log.info("recorded %d session end(s) the database could not take at first", len(batch))

    async def is_ended(self, handle: str) -> bool:
        if handle in self._unwritten:
            return True
        query = select(spent_links.c.digest).where(spent_links.c.digest == _ENDED_PREFIX + handle)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def ended_since(self, since: float) -> list[str]:
        """The handles of sessions ended at or after `since` (Unix time)."""
        query = select(spent_links.c.digest).where(
            spent_links.c.expires_at >= since + self._keep, spent_links.c.digest.startswith(_ENDED_PREFIX)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [row.digest[len(_ENDED_PREFIX) :] for row in rows]


@dataclass(eq=False, slots=True, weakref_slot=True)  # slots: thousands are held (bench/scale_sessions.py)
class ClientSession:
    id: str
    server_id: str
    principal_id: str
    protocol_version: str
    client_capabilities: JSON
    client_info: JSON
    listener: Listener
    log_level: str | None = None
    # tool search (relay/tool_search.py): names of found tools this session's tools/list shows, oldest first
    revealed: dict[str, None] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    inflight: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)
    # requests the client itself cancelled (notifications/cancelled): answered with nothing, while a request
    # cancelled by the gateway (the session ended, access revoked) still gets an error to end its wait
    cancelled_by_client: set[Any] = field(default_factory=set)


class SharedObjects:
    """One copy of each distinct small JSON object (a client's capabilities, its clientInfo) for every session
    that brings an equal one: clients of one kind send the same ones, and thousands of sessions are held
    (bench/scale_sessions.py). The objects are read, never changed, once a session holds them. Bounded: the
    `max_entries` most recently seen values of at most `max_bytes` serialised each; a bigger one, or one
    that cannot be serialised, is kept as it is."""

    __slots__ = ("_by_text", "_max_entries", "_max_bytes")

    def __init__(self, max_entries: int = 1024, max_bytes: int = 2048) -> None:
        self._by_text: OrderedDict[bytes, JSON] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._by_text)

    def get(self, value: JSON) -> JSON:
        """The shared object equal to `value` (`value` itself the first time)."""
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            return value
        if len(text) > self._max_bytes:
            return value
        shared = self._by_text.get(text)
        if shared is not None:
            self._by_text.move_to_end(text)
            return shared
        self._by_text[text] = value
        if len(self._by_text) > self._max_entries:
            self._by_text.popitem(last=False)
        return value


class SessionStore:
    def __init__(
        self,
        hub: Hub,
        limits: LimitsSettings | None = None,
        *,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        seal: SessionSeal | None = None,
        ended: EndedSessions | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`seal` and `ended`: sessions that move between replicas (module docstring); without them a
        session lives in this process only."""
        self._hub = hub
        self.limits = limits or LimitsSettings()
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._seal = seal
        self._ended = ended
        self._wall_clock = wall_clock
        self._ended_checked = wall_clock()
        # By handle (the first HANDLE_CHARS of the id), least recently seen first.
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()
        self._per_principal: dict[str, int] = {}
        self._streams: dict[str, int] = {}  # open streams per principal
        self._shared = SharedObjects()  # the clients' capabilities and info, one copy per distinct value

    def __len__(self) -> int:
        return len(self._sessions)

    def listener(
        self, view: VirtualServerView, kinds: AbstractSet[str], principal: Principal, subscription_id: Any = None
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
        portable: bool = True,
    ) -> ClientSession:
        """A new session, or LimitReached when its principal (or everyone together) holds as many as allowed.
        `portable`: its id is sealed, so another replica can serve it (a legacy SSE session cannot move: its
        replies travel on its one stream)."""
        self._expire()
        self._check_limits(principal_id)
        client_capabilities = self._shared.get(client_capabilities)
        client_info = self._shared.get(client_info)
        handle = secrets.token_hex(HANDLE_CHARS // 2)
        session_id = handle
        if portable and self._seal is not None:
            session_id = self._seal.seal(
                Sealed(handle, server_id, principal_id, protocol_version, client_capabilities, client_info)
            )
        return self._add(
            ClientSession(
                id=session_id,
                server_id=server_id,
                principal_id=principal_id,
                protocol_version=protocol_version,
                client_capabilities=client_capabilities,
                client_info=client_info,
                listener=listener,
                last_seen=self._clock(),
            )
        )

    def _check_limits(self, principal_id: str) -> None:
        if self._per_principal.get(principal_id, 0) >= self.limits.sessions_per_principal:
            raise LimitReached(
                f"Session limit reached: at most {self.limits.sessions_per_principal} open sessions per caller; "
                "end one (DELETE) or wait for one to expire"
            )
        if len(self._sessions) >= self.limits.sessions_total:
            raise LimitReached("Session limit reached: the gateway holds as many sessions as it allows")

    def _add(self, session: ClientSession) -> ClientSession:
        session.listener.session_id = session.id
        self._sessions[session.id[:HANDLE_CHARS]] = session
        self._per_principal[session.principal_id] = self._per_principal.get(session.principal_id, 0) + 1
        self._hub.add(session.listener)
        return session

    def get(self, session_id: str, principal_id: str) -> ClientSession | None:
        """The session this process holds under this id, for this principal (one dict lookup)."""
        handle = session_id[:HANDLE_CHARS]
        session = self._sessions.get(handle)
        if session is None or session.id != session_id or session.principal_id != principal_id:
            return None
        session.last_seen = self._clock()
        self._sessions.move_to_end(handle)
        return session

    async def adopt(self, session_id: str, principal: Principal, view: VirtualServerView) -> ClientSession | None:
        """A session this process does not hold, made here from its sealed id: one another replica created
        (or this one, before the session idled out of memory). None when the id is not a sealed id of this
        gateway, belongs to another principal or server, is too old, or was ended (DELETE). Raises
        LimitReached like `create`."""
        if self._seal is None:
            return None
        sealed = self._seal.open(session_id)
        if sealed is None or sealed.principal_id != principal.id or sealed.server_id != view.id:
            return None
        if self._ended is not None and await self._ended.is_ended(sealed.handle):
            return None
        held = self.get(session_id, principal.id)  # adopted by a concurrent request meanwhile
        if held is not None:
            return held
        self._expire()
        self._check_limits(principal.id)
        return self._add(
            ClientSession(
                id=session_id,
                server_id=sealed.server_id,
                principal_id=sealed.principal_id,
                protocol_version=sealed.protocol_version,
                client_capabilities=self._shared.get(sealed.client_capabilities),
                client_info=self._shared.get(sealed.client_info),
                listener=self.listener(view, ALL_LIST_KINDS, principal),  # the one shared set
                last_seen=self._clock(),
            )
        )

    async def end(self, session_id: str, principal: Principal, view: VirtualServerView) -> bool:
        """DELETE: end the session on every replica. False when there is no such session of this principal
        on this server (held here or sealed)."""
        session = self.get(session_id, principal.id)
        if session is not None:
            if session.server_id != view.id:
                return False
        elif self._seal is None:
            return False
        else:
            sealed = self._seal.open(session_id)
            if sealed is None or sealed.principal_id != principal.id or sealed.server_id != view.id:
                return False
            if self._ended is not None and await self._ended.is_ended(sealed.handle):
                return False
        if self._ended is not None and self._seal is not None and "." in session_id:
            await self._ended.end(session_id[:HANDLE_CHARS])
        self.close(session_id)
        return True

    async def sync_ended(self) -> None:
        """Close the sessions held here that another replica ended (call when the `sessions` revision moved)."""
        if self._ended is None:
            return
        since = self._ended_checked - _CLOCK_SKEW_SECONDS
        now = self._wall_clock()
        ended = await self._ended.ended_since(since)
        self._ended_checked = now  # only once read: a failed read is read again from the same moment
        closed = 0
        for handle in ended:
            session = self._sessions.get(handle)
            if session is not None:
                self.close(session.id)
                closed += 1
        if closed:
            log.info("closed %d session(s) ended on another replica", closed)

    def close(self, session_id: str) -> bool:
        handle = session_id[:HANDLE_CHARS]
        session = self._sessions.get(handle)
        if session is None or session.id != session_id:
            return False
        del self._sessions[handle]
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
        for session in list(self._sessions.values()):
            self.close(session.id)

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
            handle, session = next(iter(self._sessions.items()))
            if session.last_seen >= cutoff:
                return
            if session.listener.streaming:
                session.last_seen = now
                self._sessions.move_to_end(handle)
                continue
            self.close(session.id)


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

    def cancel(self, rid: str, error: JSON) -> None:
        """Stop waiting for an answer that no longer matters: the one waiting gets `error`."""
        entry = self._waiting.pop(rid, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result({"error": error})

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

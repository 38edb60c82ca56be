"""The response channel of one POSTed client request: how its reply, and everything the upstream says on its
behalf before the reply, reach the client.

The reply is one `application/json` body unless something has to go out first (progress, a log message, a
server→client request): only then does the response switch to `text/event-stream`, and the reply becomes
the stream's last event. SSE framing costs about a fifth of a relayed call, so the common case never pays
for it (docs/design.md, "One JSON body unless something streams").

A `ResponseChannel` is the `upstream.base.RequestSink` of the upstream call made for the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from manifold import jsoncodec
from manifold.asgi import JSON_HEADERS, SSE_HEADERS, Send, send_body
from manifold.protocol import (
    CANCELLED,
    CAPABILITY_FOR,
    LOG_LEVELS,
    LOG_MESSAGE,
    METHOD_NOT_FOUND,
    PING,
    REQUEST_CANCELLED,
    REQUEST_TIMEOUT,
    Era,
)
from manifold.relay.jsonrpc import sse_event
from manifold.relay.sessions import ClientSession, PendingReplies

JSON = dict[str, Any]

CLIENT_REPLY_TIMEOUT = 300.0
# Log messages relayed for one request. An upstream sent 50,000 about one call: a 2025-11-25 SDK client spent
# 7 s taking them in before it saw the answer (and more is only more). The rest are dropped, with one warning.
MAX_LOG_MESSAGES = 10_000
# What may wait to be written to one client that reads its stream slowly or not at all. Events are written by
# a task of the channel's own, never by the caller of `notify`: that is the upstream's reader, which on stdio
# and SSE serves every caller of the upstream (one client that stopped reading held it, and every other call
# timed out). Past the bound, progress and log messages are dropped (with one warning); the reply never is.
MAX_BACKLOG_BYTES = 1024 * 1024
log = logging.getLogger(__name__)


class ResponseChannel:
    """One POSTed request's response: JSON by default, SSE once side traffic has to go out first."""

    __slots__ = (
        "send",
        "request_id",
        "sse_ok",
        "session",
        "caps",
        "era",
        "pending",
        "principal_id",
        "extra_headers",
        "streaming",
        "reply_timeout",
        "log_level",
        "_lock",
        "_logs",
        "_ended",
        "_backlog",
        "_backlog_bytes",
        "_writer",
        "_dropped",
        "_asked",
    )

    def __init__(
        self,
        send: Send,
        request_id: Any,
        *,
        sse_ok: bool,
        session: ClientSession | None,
        caps: JSON,
        era: Era,
        pending: PendingReplies,
        principal_id: str,
        reply_timeout: float = CLIENT_REPLY_TIMEOUT,
        log_level: str | None = None,
    ) -> None:
        self.send = send
        self.request_id = request_id
        self.sse_ok = sse_ok  # the client accepts text/event-stream
        self.session = session
        self.caps = caps
        self.era = era
        self.pending = pending
        self.principal_id = principal_id
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.streaming = False
        self.reply_timeout = reply_timeout  # limits.client_reply_seconds
        self.log_level = log_level  # a 2026-07-28 request's `_meta` logLevel (None: no log messages)
        self._lock: asyncio.Lock | None = None  # made on the first event: most replies never need one
        self._logs = 0  # log messages relayed so far
        self._ended = False  # the response's last body went out: a late notification is dropped, not sent
        self._backlog: deque[bytes] | None = None  # events waiting for the writer (made on the first)
        self._backlog_bytes = 0
        self._writer: asyncio.Task[None] | None = None  # writes the backlog; at most one at a time
        self._dropped = 0  # notifications dropped past MAX_BACKLOG_BYTES
        self._asked: set[str] | None = None  # the client's questions (server→client requests) still open

    @property
    def client_capabilities(self) -> JSON:
        return self.caps

    @property
    def client_session(self) -> object | None:
        return self.session if self.era is Era.HANDSHAKE else None

    def standing(self) -> SessionQuestions | None:
        """The sink of this request's 2025-11-25 client session itself, outliving the request; None for a
        sessionless request (2026-07-28, or a stateless gateway)."""
        if self.session is None or self.era is not Era.HANDSHAKE:
            return None
        return SessionQuestions(self.session, self.caps, self.pending, self.principal_id, self.reply_timeout)

    async def _event(self, payload: bytes) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._ended:
                return  # a notification routed here just as the reply went (ASGI would raise: second review)
            if not self.streaming:
                self.streaming = True
                await self.send(
                    {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.extra_headers}
                )
            await self.send({"type": "http.response.body", "body": sse_event(payload), "more_body": True})

    def _queue(self, payload: bytes, *, droppable: bool) -> None:
        """Hand an event to the channel's writer without waiting for the client to take it."""
        if self._ended:
            return
        backlog = self._backlog
        if backlog is None:
            backlog = self._backlog = deque()
        if droppable and backlog and self._backlog_bytes + len(payload) > MAX_BACKLOG_BYTES:
            # (one event alone always goes: a big one to a client that reads was dropped as if it did not, review)
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "a client is not reading its response stream: the upstream's progress and log messages for "
                    "its request (id %s) past %d bytes waiting are dropped",
                    str(self.request_id)[:40],
                    MAX_BACKLOG_BYTES,
                )
            return
        backlog.append(payload)
        self._backlog_bytes += len(payload)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_backlog())

    async def _write_backlog(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            while backlog:
                payload = backlog.popleft()
                self._backlog_bytes -= len(payload)
                await self._event(payload)
        except Exception as exc:  # noqa: BLE001 — the client's connection failed: the reply will find out too
            log.debug("writing to a client's response stream failed: %s", type(exc).__name__)
        finally:
            self._writer = None

    async def written(self) -> None:
        """Wait until every queued event is written (before the reply, which must come last)."""
        while (writer := self._writer) is not None:
            await asyncio.shield(writer)  # the writer ends by itself; its failures are its own (logged)

    async def notify(self, message: JSON) -> None:
        if not self.sse_ok:
            return
        if message.get("method") == LOG_MESSAGE:
            # The upstream session is shared, so its log level is the most verbose any client asked for. A
            # 2026-07-28 client hears log messages only when its request asked (`_meta` logLevel).
            floor = self.session.log_level if self.session is not None else self.log_level
            if floor is None and self.era is Era.MODERN:
                return
            level = (message.get("params") or {}).get("level")
            if floor and level in LOG_LEVELS and LOG_LEVELS.index(level) < LOG_LEVELS.index(floor):
                return
            self._logs += 1
            if self._logs > MAX_LOG_MESSAGES:
                if self._logs == MAX_LOG_MESSAGES + 1:
                    log.warning(
                        "an upstream sent more than %d log messages for one request; the rest are not relayed",
                        MAX_LOG_MESSAGES,
                    )
                return
        self._queue(jsoncodec.dumps(message), droppable=True)

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        if (answered := answered_here(method, params, self.caps)) is not None:
            return answered
        if self.era is Era.MODERN or not self.sse_ok:
            # A 2026-07-28 response carries no server→client requests: Gateway.relay asks such a client with
            # input_required (relay/input_exchange.py); this channel is only its fallback.
            return _cannot(f"the client cannot receive {method} through this gateway connection")
        rid, fut = self.pending.new(self.principal_id)
        message: JSON = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        # Withdrawn with this call (`_cancel_questions`) unless it only rides on it for another call of the
        # client's session (`shared`): the call that asked may go on after this one ended (review).
        if not shared:
            if self._asked is None:
                self._asked = set()
            self._asked.add(rid)
        try:
            self._queue(jsoncodec.dumps(message), droppable=False)
            return await asyncio.wait_for(fut, self.reply_timeout)
        except TimeoutError:
            self._tell_cancelled(rid, "not answered in time")
            return {"error": {"code": REQUEST_TIMEOUT, "message": f"the client did not answer {method} in time"}}
        except asyncio.CancelledError:
            self._tell_cancelled(rid, "the server cancelled it")  # the upstream withdrew its request
            raise
        finally:
            if self._asked is not None:
                self._asked.discard(rid)
            self.pending.drop(rid)

    def _cancel_questions(self, reason: str) -> None:
        """The call ended (answered, or cancelled by the client) with questions of it still open: the client is
        told to drop them (its dialog for a dead call stayed open; real-clients probe), and the upstream, if it
        still waits, hears that they were cancelled."""
        asked, self._asked = self._asked, None
        for rid in list(asked or ()):
            self.pending.cancel(rid, {"code": REQUEST_CANCELLED, "message": f"cancelled: {reason}"})
            self._tell_cancelled(rid, reason)

    def _tell_cancelled(self, rid: str, reason: str) -> None:
        """`notifications/cancelled` for a question of ours, outside this call's stream, which may be ending or
        gone (`_tell_session`)."""
        self._tell_session({"jsonrpc": "2.0", "method": CANCELLED, "params": {"requestId": rid, "reason": reason}})

    def _tell_session(self, message: JSON) -> None:
        """A message for the client session rather than this call: on the session's own (GET) stream."""
        if self.session is not None and self.era is Era.HANDSHAKE:
            self.session.listener.push(message)

    async def _before_reply(self) -> None:
        """What must go before the reply: the call's open questions withdrawn, and the progress and log
        messages already queued written (the reply comes last)."""
        if self._asked:
            self._cancel_questions("the call has ended")
        if self._writer is not None:
            await self.written()

    async def abandon(self) -> None:
        """The client cancelled the request: it gets no answer (MCP: the receiver of a cancellation does not
        respond; SDK clients report a reply to an id they dropped as an error). An event stream ends without
        one; a response not started yet is a bare 202, as for a notification."""
        self._cancel_questions("the call was cancelled")
        writer = self._writer
        if writer is not None:
            writer.cancel()  # nothing queued is wanted now
            self._backlog = None
        lock = self._lock
        if self.streaming and lock is not None:
            async with lock:
                self._ended = True
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            self._ended = True
            await send_body(self.send, 202, b"")

    async def finish(self, payload: bytes, status: int = 200) -> None:
        """Send the reply: the last SSE event once streaming, else the whole JSON response."""
        await self._before_reply()
        lock = self._lock
        if self.streaming and lock is not None:
            async with lock:
                self._ended = True
                await self.send({"type": "http.response.body", "body": sse_event(payload), "more_body": False})
        else:
            self._ended = True
            await send_body(self.send, status, payload, JSON_HEADERS + self.extra_headers)


class SessionQuestions:
    """The `RequestSink` of a 2025-11-25 client session rather than of one of its calls: a question an upstream
    session of this caller's own asks outside any call (server-filesystem's roots/list, right after its
    handshake and after the client's roots/list_changed) goes out on the session's own (GET) stream, where the
    client answers it as it would the server directly; the answer comes back as any other (`PendingReplies`)."""

    __slots__ = ("session", "caps", "pending", "principal_id", "reply_timeout")

    def __init__(
        self, session: ClientSession, caps: JSON, pending: PendingReplies, principal_id: str, reply_timeout: float
    ) -> None:
        self.session = session
        self.caps = caps
        self.pending = pending
        self.principal_id = principal_id
        self.reply_timeout = reply_timeout

    @property
    def client_capabilities(self) -> JSON:
        return self.caps

    @property
    def client_session(self) -> object | None:
        return self.session

    async def notify(self, message: JSON) -> None:
        return  # side traffic of a call goes with the call; this sink makes none

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        if (answered := answered_here(method, params, self.caps)) is not None:
            return answered
        listener = self.session.listener
        if listener.ended:
            return _cannot(f"the client session that would answer {method} has ended")
        rid, fut = self.pending.new(self.principal_id)
        message: JSON = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        try:
            listener.push(message)  # held until the client's stream takes it
            return await asyncio.wait_for(fut, self.reply_timeout)
        except TimeoutError:
            listener.push(_cancelled(rid, "not answered in time"))
            return {"error": {"code": REQUEST_TIMEOUT, "message": f"the client did not answer {method} in time"}}
        except asyncio.CancelledError:
            listener.push(_cancelled(rid, "the server cancelled it"))
            raise
        finally:
            self.pending.drop(rid)


def _cancelled(rid: str, reason: str) -> JSON:
    return {"jsonrpc": "2.0", "method": CANCELLED, "params": {"requestId": rid, "reason": reason}}


def answered_here(method: str, params: JSON | None, caps: JSON) -> JSON | None:
    """What the gateway answers an upstream's server→client request with itself, without asking the client: a
    ping (the gateway is there), or `refusal_for`; None when the client must be asked."""
    if method == PING:
        return {"result": {}}
    return refusal_for(method, params, caps)


def refusal_for(method: str, params: JSON | None, caps: JSON) -> JSON | None:
    """The error an upstream gets at once for a server→client request this client cannot answer (it did
    not declare the capability, or URL-mode elicitation), or None."""
    needed = CAPABILITY_FOR.get(method)
    if needed is None:
        return None
    if needed not in caps:
        return _cannot(f"the client does not support {needed} (it did not declare the '{needed}' capability)")
    if needed == "elicitation" and (params or {}).get("mode") == "url":
        elicitation = caps.get("elicitation")
        if not isinstance(elicitation, dict) or "url" not in elicitation:
            return _cannot("the client did not declare URL-mode elicitation")
    return None


def _cannot(message: str) -> JSON:
    return {"error": {"code": METHOD_NOT_FOUND, "message": message}}

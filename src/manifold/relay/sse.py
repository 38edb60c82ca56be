"""The legacy HTTP+SSE transport (2024-11-05) at `/sse/{server}`.

GET opens the stream and is told where to POST (`endpoint` event); every response, notification and
server→client request then travels on that one stream. Each connection is a client session bound to the
principal that opened it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from manifold import jsoncodec
from manifold.asgi import SHUTDOWN_CUT_REASON, SSE_HEADERS, Receive, Send, cut_at_shutdown, release_headers, send_body
from manifold.catalog.view import VirtualServerView
from manifold.principal import Principal
from manifold.protocol import (
    CANCELLED,
    INITIALIZE,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LEGACY_SSE_VERSION,
    RESOURCES_READ,
    Era,
)
from manifold.relay.call import Call
from manifold.relay.era_adapt import adapt_to_era, uri_in_error
from manifold.relay.handlers import Gateway
from manifold.relay.hub import ALL_LIST_KINDS, Listener
from manifold.relay.inbound import Inbound, InboundCheck, Refusal, as_object
from manifold.relay.jsonrpc import RpcError, error_bytes, response_bytes, sse_event
from manifold.relay.response_channel import ResponseChannel
from manifold.relay.sessions import ClientSession, LimitReached, PendingReplies, SessionStore, refuse
from manifold.relay.stream_queue import KeepAlive, StreamQueue
from manifold.relay.streamable_http import KEEPALIVE_SECONDS, pump_events

log = logging.getLogger(__name__)
JSON = dict[str, Any]


class StreamResponseChannel(ResponseChannel):
    """A response channel whose every message goes onto the connection's one SSE stream."""

    __slots__ = ("queue",)

    def __init__(
        self,
        queue: StreamQueue,
        request_id: Any,
        *,
        session: ClientSession,
        pending: PendingReplies,
        principal_id: str,
        reply_timeout: float,
    ) -> None:
        super().__init__(
            _no_send,
            request_id,
            sse_ok=True,
            session=session,
            caps=session.client_capabilities,
            era=Era.HANDSHAKE,
            pending=pending,
            principal_id=principal_id,
            reply_timeout=reply_timeout,
        )
        self.queue = queue

    async def _event(self, payload: bytes) -> None:
        self.queue.put(payload)  # never waits for the client: past its bound the stream ends instead

    async def finish(self, payload: bytes, status: int = 200) -> None:
        await self._before_reply()  # progress and log messages queued before the reply go first (probe)
        self.queue.put(payload)

    def _tell_session(self, message: JSON) -> None:
        self.queue.put(jsoncodec.dumps(message))  # the connection's one stream is the session's too


async def _no_send(message: JSON) -> None:
    raise AssertionError("a legacy SSE response goes onto the connection's stream, never its own body")


class LegacySse:
    def __init__(
        self,
        gateway: Gateway,
        sessions: SessionStore,
        pending: PendingReplies,
        *,
        inbound: InboundCheck,
        in_flight_per_session: int = 16,
        in_flight_bytes_per_session: int = 16 * 1024 * 1024,
    ) -> None:
        self.gw = gateway
        self.sessions = sessions
        self.pending = pending
        self.inbound = inbound
        self.in_flight_per_session = in_flight_per_session  # limits.requests_in_flight_per_sse_session
        # The request bodies one session's running requests may hold (limits.queued_bytes_per_stream): a count
        # alone let 16 calls of a megabyte each hold ~100 MB in parsed arguments, upstream requests and replies.
        self.in_flight_bytes_per_session = in_flight_bytes_per_session
        self._inflight_bytes: dict[str, int] = {}
        self._busy: dict[str, ClientSession] = {}  # sessions with requests running, by id
        self._tasks: set[asyncio.Task[None]] = set()
        # Sessions at their in-flight bound: the POSTs waiting for one of its requests to finish.
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.keepalive = KeepAlive(KEEPALIVE_SECONDS)  # one timer for every stream held here
        self._stopping = False  # the server is stopping: a stream ends once its session has nothing running

    def stopping(self) -> set[Listener]:
        """The server is stopping: the streams of sessions with requests still running, which must stay open
        until their replies are queued (`_finished` ends each then); every other stream may end now."""
        self._stopping = True
        return {session.listener for session in self._busy.values()}

    async def open_stream(
        self, scope: JSON, receive: Receive, send: Send, view: VirtualServerView, principal: Principal
    ) -> None:
        # The connection is both a session and a stream: both count against the caller's limits.
        listener = self.sessions.listener(view, ALL_LIST_KINDS, principal)
        try:
            self.sessions.check_stream(principal.id)
            session = self.sessions.create(
                server_id=view.id,
                principal_id=principal.id,
                protocol_version=LEGACY_SSE_VERSION,
                client_capabilities={},
                client_info={},
                listener=listener,
                portable=False,  # its replies travel on this one stream: it cannot move to another replica
            )
            self.sessions.open_stream(principal.id)
        except LimitReached as exc:
            await refuse(send, exc)
            return
        queue = listener.attach()  # replies and notifications: one bounded queue, never waited on
        root = scope.get("root_path", "")
        endpoint = f"{root}/sse/{view.id}/messages?session_id={session.id}"
        release_headers(scope)  # the held stream needs none of them
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            opening = f"event: endpoint\ndata: {endpoint}\n\n".encode()
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            await pump_events(receive, send, queue, self.keepalive)
        except asyncio.CancelledError as exc:
            if cut_at_shutdown(exc):
                # The shutdown grace ran out with calls of this session still running: each is answered here,
                # the gateway is shutting down, try again (their replies travel on this stream alone, and it
                # ends now: the client was told nothing of them and waited for its own timeout).
                for request_id in list(session.inflight):
                    cut = sse_event(error_bytes(request_id, INTERNAL_ERROR, SHUTDOWN_CUT_REASON))
                    try:
                        await send({"type": "http.response.body", "body": cut, "more_body": True})
                    except Exception:  # noqa: BLE001 — the client is gone: nobody to tell
                        break
            raise
        finally:
            listener.detach(queue)
            self.sessions.stream_closed(principal.id)
            self.sessions.close(session.id)

    async def post_message(
        self, scope: JSON, send: Send, view: VirtualServerView, principal: Principal, body: bytes
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        sid = (query.get("session_id") or [""])[0]
        session = self.sessions.get(sid, principal.id) if sid else None
        if session is None or session.server_id != view.id:
            await send_body(send, 404, error_bytes(None, INVALID_REQUEST, "Session not found"))
            return
        # Every way a message can be unusable is decided in relay/inbound.py. This transport's answers travel on
        # the connection's stream, so a refused request with an id is answered there (an SSE client treats a
        # 4xx on its POST as a broken connection); one without an id gets the 4xx and its error body.
        try:
            self.inbound.content_type(scope["_headers"])
            inbound = self.inbound.parse(body)
        except Refusal as refusal:
            if refusal.request_id is None:
                await send_body(send, refusal.status, refusal.body())
                return
            await send_body(send, 202, b"Accepted", [(b"content-type", b"text/plain")])
            session.listener.queue.put(refusal.body())
            return
        if inbound.is_request and inbound.method is not None:
            # Backpressure: this POST is answered once the session has room for one more running request.
            while session.inflight and (
                len(session.inflight) >= self.in_flight_per_session
                or self._inflight_bytes.get(session.id, 0) + len(body) > self.in_flight_bytes_per_session
            ):
                slot = asyncio.get_running_loop().create_future()
                self._waiting.setdefault(session.id, []).append(slot)
                try:
                    await slot
                finally:
                    self._forget_waiter(session.id, slot)
        if inbound.is_request and inbound.request_id in session.inflight:
            # An id still running names that request (its answer, a cancellation): a second one is refused, or
            # a client could run any number at once past the in-flight bound by reusing one id. Checked once
            # this request has its room (not before the wait: two waiting with one id would both get in).
            self._wake_next(session.id)  # the room it was given goes to the next one waiting (before any await)
            refused = error_bytes(inbound.request_id, INVALID_REQUEST, "A request with this id is still running")
            session.listener.queue.put(refused)
            await send_body(send, 202, b"Accepted", [(b"content-type", b"text/plain")])
            return
        method = inbound.method
        if method is None or not inbound.is_request:
            await send_body(send, 202, b"Accepted", [(b"content-type", b"text/plain")])
            if method is None:
                self.pending.resolve(inbound.message, principal.id)
            elif method == CANCELLED:
                task = session.inflight.get(inbound.params.get("requestId"))  # an id inbound.py accepted
                if task is not None:
                    task.cancel()
            return
        # A request is recorded before any await (its 202 may wait for a client that stopped reading its POST
        # answers): the room and the id checked above cannot be taken by another request meanwhile.
        forwarded = scope["_headers"].get("x-mcp-headers")
        request_id = inbound.request_id
        task = asyncio.ensure_future(self._handle(session, view, principal, inbound, method, forwarded))
        self._tasks.add(task)
        session.inflight[request_id] = task
        self._busy[session.id] = session
        size = len(body)
        self._inflight_bytes[session.id] = self._inflight_bytes.get(session.id, 0) + size
        task.add_done_callback(lambda t: self._finished(t, session, request_id, size))
        await send_body(send, 202, b"Accepted", [(b"content-type", b"text/plain")])

    def _finished(self, task: asyncio.Task[None], session: ClientSession, request_id: Any, size: int) -> None:
        self._tasks.discard(task)
        if session.inflight.get(request_id) is task:  # an id reused while in flight names the newer call
            del session.inflight[request_id]
        left = self._inflight_bytes.get(session.id, 0) - size
        if left > 0:
            self._inflight_bytes[session.id] = left
        else:
            self._inflight_bytes.pop(session.id, None)
        if not session.inflight:
            self._busy.pop(session.id, None)
            if self._stopping:
                session.listener.close()  # its last reply is queued: the stream ends once it is written
        self._wake_next(session.id)

    def _wake_next(self, session_id: str) -> None:
        waiters = self._waiting.get(session_id)
        while waiters:
            slot = waiters.pop(0)
            if not slot.done():
                slot.set_result(None)  # one waiting POST may go on
                break

    def _forget_waiter(self, session_id: str, slot: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(session_id)
        if waiters is None:
            return
        if slot in waiters:
            waiters.remove(slot)
        if not waiters:
            del self._waiting[session_id]

    async def _handle(
        self,
        session: ClientSession,
        view: VirtualServerView,
        principal: Principal,
        inbound: Inbound,
        method: str,
        forwarded: str | None,
    ) -> None:
        request_id = inbound.request_id
        params = inbound.params
        queue = session.listener.queue
        if method == INITIALIZE:
            session.client_capabilities = as_object(params.get("capabilities"))
            session.client_info = as_object(params.get("clientInfo"))
            result = self.gw.initialize_result(view, params.get("protocolVersion"))
            session.protocol_version = result["protocolVersion"]
            queue.put(response_bytes(request_id, {"result": result}))
            return
        channel = StreamResponseChannel(
            queue,
            request_id,
            session=session,
            pending=self.pending,
            principal_id=principal.id,
            reply_timeout=self.gw.inputs.reply_timeout,
        )
        call = Call(
            view=view,
            era=Era.HANDSHAKE,
            client_capabilities=session.client_capabilities,
            sink=channel,
            listener=session.listener,
            session=session,
            principal=principal,
            request_id=request_id,
            forwarded_raw=forwarded,
        )
        try:
            reply = await self.gw.handle(call, method, params)
        except RpcError as exc:
            reply = exc.to_reply()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("internal error handling %s on server '%s'", method, view.id)
            reply = {"error": {"code": INTERNAL_ERROR, "message": "Internal error"}}
        if method == RESOURCES_READ and "error" in reply:
            reply = uri_in_error(reply, params)
        await channel.finish(response_bytes(request_id, adapt_to_era(reply, Era.HANDSHAKE, self.gw.server_info(view))))

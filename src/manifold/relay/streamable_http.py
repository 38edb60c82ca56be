"""Streamable HTTP, the client-facing transport at `/mcp/{server}`, for both protocol eras.

- 2025-11-25 (and older handshake versions): `initialize` opens a session (`Mcp-Session-Id`, unless the
  gateway is stateless); GET opens the session's notification stream; DELETE ends it.
- 2026-07-28: every POST stands alone (`MCP-Protocol-Version` header + `params._meta`), `server/discover`
  describes the server, `subscriptions/listen` is the notification stream.

A request is answered with one JSON body unless something has to be said before the result (progress,
logging, a server→client request): only then does the response switch to `text/event-stream`. One JSON
body is what keeps a relayed call close to a direct one (docs/design.md, "Hot path").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, assert_never

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from sqlalchemy.exc import SQLAlchemyError

from manifold.asgi import (
    JSON_HEADERS,
    SHUTDOWN_CUT_REASON,
    SSE_HEADERS,
    Receive,
    Send,
    cancel_when_lost,
    cut_at_shutdown,
    release_headers,
    send_body,
)
from manifold.catalog.view import Built, VirtualServerView
from manifold.config.models import TOOL_SEARCH_NAMES
from manifold.principal import Principal
from manifold.protocol import (
    CANCELLED,
    FORBIDDEN_CREDENTIAL,
    INITIALIZE,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LISTEN_FLAGS,
    LOG_LEVELS,
    META_LOG_LEVEL,
    METHOD_NOT_FOUND,
    MODERN_VERSION,
    RATE_LIMITED,
    REMOVED_IN_MODERN,
    REQUEST_CANCELLED,
    RESOURCES_READ,
    ROOTS_LIST_CHANGED,
    SERVER_DISCOVER,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    SUBSCRIPTIONS_LISTEN,
    TOOLS_CALL,
    Era,
)
from manifold.relay.call import Call
from manifold.relay.era_adapt import adapt_to_era, uri_in_error
from manifold.relay.handlers import Gateway
from manifold.relay.hub import ALL_LIST_KINDS, Listener
from manifold.relay.inbound import Inbound, InboundCheck, ParamHeaders, Refusal, as_object
from manifold.relay.jsonrpc import RpcError, error_bytes, response_bytes, sse_event
from manifold.relay.response_channel import ResponseChannel
from manifold.relay.sessions import ClientSession, LimitReached, PendingReplies, SessionStore, refuse
from manifold.relay.stream_queue import KeepAlive, StreamQueue
from manifold.relay.tasks import NAMED_BY_TASK_ID, check_routing_name

log = logging.getLogger(__name__)
_BACKGROUND: set[asyncio.Future[None]] = set()  # notifications forwarded upstream while the client goes on
JSON = dict[str, Any]

KEEPALIVE_SECONDS = 20.0
UNMATCHED_ANSWER_LOG_SECONDS = 60.0  # an answer to no question here is logged at most this often


class StreamableHttp:
    def __init__(
        self,
        gateway: Gateway,
        sessions: SessionStore,
        pending: PendingReplies,
        *,
        stateless: bool,
        inbound: InboundCheck,
    ) -> None:
        self.gw = gateway
        self.sessions = sessions
        self.pending = pending
        self.stateless = stateless
        self.inbound = inbound
        self.param_headers = ParamHeaders()
        self.keepalive = KeepAlive(KEEPALIVE_SECONDS)  # one timer for every stream held here
        self._unmatched_quiet_until = 0.0

    def __call__(
        self,
        scope: JSON,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        body: bytes | None,
    ) -> Awaitable[None]:
        """What to await for this request. A plain function, so no frame of its own stays on the stack of
        each of the thousands of GET streams held open (bench/scale_sessions.py)."""
        method = scope["method"]
        headers = scope["_headers"]
        if method == "POST":
            return self._post(scope, receive, send, view, principal, body or b"", headers)
        if method == "GET":
            return self._get(scope, receive, send, view, principal, headers)
        if method == "DELETE":
            sid = headers.get("mcp-session-id")
            if self.stateless or not sid:
                return send_body(send, 405, b'{"error":"no session to end"}')
            return self._delete(send, sid, principal, view)
        return send_body(
            send, 405, b'{"error":"method not allowed"}', JSON_HEADERS + [(b"allow", b"GET, POST, DELETE")]
        )

    # ---- POST -----------------------------------------------------------------------------------

    async def _post(
        self,
        scope: JSON,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        # Every way a message can be unusable is decided in relay/inbound.py and answered with a 4xx here.
        try:
            self.inbound.content_type(headers)
            inbound = self.inbound.parse(body)
            era = self.inbound.era(headers, inbound)
        except Refusal as refusal:
            await send_body(send, refusal.status, refusal.body())
            return
        message, rpc_method = inbound.message, inbound.method
        accept = headers.get("accept", "")
        sse_ok = "text/event-stream" in accept or not accept

        # A reply from the client to a server→client request we relayed.
        if rpc_method is None:
            if not self.pending.resolve(message, principal.id):
                self._unmatched_answer(message)
            await send_body(send, 202, b"")
            return

        match era:
            case Era.MODERN:
                await self._post_modern(receive, send, view, principal, inbound, rpc_method, headers, sse_ok)
            case Era.HANDSHAKE:
                await self._post_handshake(receive, send, view, principal, inbound, rpc_method, headers, sse_ok)
            case _:
                assert_never(era)

    def _unmatched_answer(self, message: JSON) -> None:
        """A client's answer to no question this replica is waiting on: late (the call ended), not the caller's,
        or sent to another replica than the one that asked (a balancer without affinity: docs/replicas.md).
        Said, at most once a minute: the question's call waits for it until limits.client_reply_seconds."""
        now = time.monotonic()
        if now < self._unmatched_quiet_until:
            return
        self._unmatched_quiet_until = now + UNMATCHED_ANSWER_LOG_SECONDS
        rid = message.get("id")
        log.warning(
            "a client answered a question this gateway is not waiting on (id %s): the call it belonged to ended, or "
            "its question was asked by another replica; behind a balancer, keep each caller on one replica "
            "(docs/replicas.md, 'Balancing')",
            repr(rid)[:60],
        )

    async def _post_modern(
        self,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        inbound: Inbound,
        rpc_method: str,
        headers: dict[str, str],
        sse_ok: bool,
    ) -> None:
        if not inbound.is_request:
            await send_body(send, 202, b"")  # 2026-07-28 defines no client notifications on this wire
            return
        request_id = inbound.request_id
        verdict = classify_inbound_request(inbound.message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            await send_body(
                send,
                ERROR_CODE_HTTP_STATUS.get(verdict.code, 400),
                error_bytes(request_id, verdict.code, verdict.message, verdict.data),
            )
            return
        caps = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
        if not isinstance(caps, dict):
            caps = {}
        params = inbound.params
        if rpc_method == SERVER_DISCOVER:
            await send_body(send, 200, response_bytes(request_id, {"result": self.gw.discover_result(view)}))
            return
        if rpc_method == SUBSCRIPTIONS_LISTEN:
            await self._listen(receive, send, view, request_id, params, principal, caps, headers)
            return
        if rpc_method in REMOVED_IN_MODERN:
            # Not part of 2026-07-28: an unknown method there (404, -32601), as the spec asks of a server
            # that does not implement it. A handshake-era client sends these without the envelope.
            await send_body(
                send,
                404,
                error_bytes(
                    request_id, METHOD_NOT_FOUND, f"Method not found: {rpc_method} is not part of {MODERN_VERSION}"
                ),
            )
            return
        if rpc_method in NAMED_BY_TASK_ID and (mismatch := check_routing_name(params, headers)) is not None:
            await send_body(send, 400, error_bytes(request_id, mismatch.code, mismatch.message))
            return
        meta = params.get("_meta")  # a dict: the ladder checked the envelope in it
        level = meta.get(META_LOG_LEVEL) if isinstance(meta, dict) else None
        channel, call = self._channel(
            send,
            request_id,
            sse_ok,
            None,
            caps,
            view,
            principal,
            headers,
            Era.MODERN,
            log_level=level if level in LOG_LEVELS else None,  # no level asked for: no log messages
        )
        watch = cancel_when_lost(send)  # closing the stream is this era's cancellation: the upstream's call too
        try:
            if rpc_method == TOOLS_CALL and isinstance(name := params.get("name"), str):
                # The caller's own list (per-caller lists: another caller's may name other tools, or this one
                # with another schema); a dict lookup for a server whose members list the same for everyone.
                credential = self.gw.credential_for(call)
                built = await view.current("tools", credential)
                # The first call before any list, or a tool the list lacks (a list_changed may just have brought
                # it): resolved as the handler will, so the headers are checked against the list the call goes by
                # (they went unchecked when the handler's refresh found the tool). Not for the tool search's own.
                if built is None or (
                    name not in built.targets and (view.search is None or name not in TOOL_SEARCH_NAMES)
                ):
                    try:
                        built = (await view.lookup("tools", name, credential))[1]
                    except Exception:  # the handler meets the same failure and answers it
                        pass
                schema = self.param_headers.schema(name, built)  # None (a dict lookup) unless the tool asks
                if schema is not None and built is not None:
                    try:
                        self._check_param_headers(view, call, name, schema, params, headers, built)
                    except Refusal as refusal:
                        await send_body(send, refusal.status, refusal.body())
                        return
            await self._run(channel, call, rpc_method, params)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and cut_at_shutdown(exc) and not (watch is not None and watch.lost):
                task.uncancel()
                await _answer_cut(channel, request_id)  # its id, and a stream under way ends with it
                return
            if watch is None or not watch.lost or task is None:
                raise
            task.uncancel()
            await channel.abandon()  # nobody is there to answer

    def _check_param_headers(
        self,
        view: VirtualServerView,
        call: Call,
        name: str,
        schema: JSON,
        params: JSON,
        headers: dict[str, str],
        built: Built,
    ) -> None:
        """The call's `Mcp-Param-*` headers against its arguments, for a tool that this caller may call (for
        any other the handler answers, as for a tool that does not exist). `built`: the caller's tool list."""
        target = built.targets.get(name)
        if target is not None and self.gw.access.allows(call.principal, view, "tools", target):
            self.param_headers.check(schema, params, headers, call.request_id)

    async def _post_handshake(
        self,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        inbound: Inbound,
        rpc_method: str,
        headers: dict[str, str],
        sse_ok: bool,
    ) -> None:
        is_request = inbound.is_request
        request_id = inbound.request_id
        params = inbound.params

        if rpc_method == INITIALIZE:
            if not is_request:
                await send_body(send, 400, error_bytes(None, INVALID_REQUEST, "initialize must be a request"))
                return
            result = self.gw.initialize_result(view, params.get("protocolVersion"), sessionless=self.stateless)
            extra: list[tuple[bytes, bytes]] = []
            if not self.stateless:
                try:
                    session = self.sessions.create(
                        server_id=view.id,
                        principal_id=principal.id,
                        protocol_version=result["protocolVersion"],
                        client_capabilities=as_object(params.get("capabilities")),
                        client_info=as_object(params.get("clientInfo")),
                        listener=self.sessions.listener(view, ALL_LIST_KINDS, principal),
                    )
                except LimitReached as exc:
                    await refuse(send, exc, request_id)
                    return
                extra.append((b"mcp-session-id", session.id.encode()))
            await send_body(send, 200, response_bytes(request_id, {"result": result}), JSON_HEADERS + extra)
            return

        session: ClientSession | None = None
        if not self.stateless:
            sid = headers.get("mcp-session-id")
            if not sid:
                await send_body(send, 400, error_bytes(request_id, INVALID_REQUEST, "Bad Request: Missing session ID"))
                return
            session = self.sessions.get(sid, principal.id)
            if session is None:  # not held here: another replica's (or idled out of memory), from its seal
                try:
                    session = await self.sessions.adopt(sid, principal, view)
                except LimitReached as exc:
                    await refuse(send, exc, request_id)
                    return
            if session is None or session.server_id != view.id:
                await send_body(send, 404, error_bytes(request_id, INVALID_REQUEST, "Session not found"))
                return

        if not is_request:
            if rpc_method == CANCELLED and session is not None:
                task = session.inflight.get(params.get("requestId"))  # an id inbound.py accepted
                if task is not None:
                    session.cancelled_by_client.add(params.get("requestId"))
                    task.cancel()
            elif rpc_method == ROOTS_LIST_CHANGED and session is not None:
                _, call = self._channel(
                    send, None, sse_ok, session, session.client_capabilities, view, principal, headers, Era.HANDSHAKE
                )
                # In the background: credentials may be resolved and upstreams written to, and the client's
                # next messages must not wait for that (second review).
                task = asyncio.ensure_future(self.gw.roots_changed(call))
                _BACKGROUND.add(task)
                task.add_done_callback(_BACKGROUND.discard)
            await send_body(send, 202, b"")
            return

        caps = session.client_capabilities if session else {}
        channel, call = self._channel(send, request_id, sse_ok, session, caps, view, principal, headers, Era.HANDSHAKE)
        if session is None:
            await self._run(channel, call, rpc_method, params)
            return
        task = asyncio.current_task()
        session.inflight[request_id] = task  # type: ignore[assignment]
        try:
            await self._run(channel, call, rpc_method, params)
        except asyncio.CancelledError as exc:
            if task is not None and task.cancelling():
                task.uncancel()
            if request_id in session.cancelled_by_client:
                await channel.abandon()  # the client cancelled it: no answer (MCP)
            elif cut_at_shutdown(exc):
                await _answer_cut(channel, request_id)
            else:  # the gateway ended it (session closed, access revoked): an answer, or the client would wait
                await channel.finish(error_bytes(request_id, REQUEST_CANCELLED, "Request cancelled"))
        finally:
            session.inflight.pop(request_id, None)
            session.cancelled_by_client.discard(request_id)

    def _channel(
        self,
        send: Send,
        request_id: Any,
        sse_ok: bool,
        session: ClientSession | None,
        caps: JSON,
        view: VirtualServerView,
        principal: Principal,
        headers: dict[str, str],
        era: Era,
        log_level: str | None = None,
    ) -> tuple[ResponseChannel, Call]:
        """The response channel of one client request and what its handler is told (`session` is None for
        2026-07-28 requests and in stateless mode)."""
        channel = ResponseChannel(
            send,
            request_id,
            sse_ok=sse_ok,
            session=session,
            caps=caps,
            era=era,
            pending=self.pending,
            principal_id=principal.id,
            reply_timeout=self.gw.inputs.reply_timeout,
            log_level=log_level,
        )
        call = Call(
            view=view,
            era=era,
            client_capabilities=caps,
            sink=channel,
            listener=session.listener if session else None,
            session=session,
            principal=principal,
            request_id=request_id,
            forwarded_raw=headers.get("x-mcp-headers"),
        )
        return channel, call

    async def _run(self, channel: ResponseChannel, call: Call, rpc_method: str, params: JSON) -> None:
        try:
            reply = await self.gw.handle(call, rpc_method, params)
        except RpcError as exc:
            reply = exc.to_reply()
        except asyncio.CancelledError:
            raise
        except Exception:  # never a traceback to the client
            log.exception("internal error handling %s on server '%s'", rpc_method, call.view.id)
            reply = {"error": {"code": INTERNAL_ERROR, "message": "Internal error"}}
        status = 200
        if "error" in reply:
            status = _error_status(reply["error"].get("code"), call.era)
            if status == 429:  # over a rate limit (policy/rate_limits.py): and when to come back
                channel.extra_headers.append((b"retry-after", str(reply["error"]["data"]["retryAfter"]).encode()))
            if rpc_method == RESOURCES_READ:
                reply = uri_in_error(reply, params)
        adapted = adapt_to_era(reply, call.era, self.gw.server_info(call.view), cacheable=rpc_method == RESOURCES_READ)
        await channel.finish(response_bytes(channel.request_id, adapted), status)

    # ---- notification streams -------------------------------------------------------------------

    async def _delete(self, send: Send, sid: str, principal: Principal, view: VirtualServerView) -> None:
        try:
            ended = await self.sessions.end(sid, principal, view)  # on every replica (relay/sessions.py)
        except SQLAlchemyError as exc:  # the ended-list could not be read (a failed write is retried later
            # by EndedSessions, never raised): nothing was changed, the client may try again
            log.warning("could not record the end of a session of %s: %s", principal.id, type(exc).__name__)
            await send_body(send, 503, b'{"error":"the session could not be ended now; try again"}')
            return
        if not ended:
            await send_body(send, 404, error_bytes(None, INVALID_REQUEST, "Session not found"))
        else:
            await send_body(send, 200, b"{}")

    def _get(
        self,
        scope: JSON,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        headers: dict[str, str],
    ) -> Awaitable[None]:
        """What to await for a GET. A plain function, so no frame of its own (0.3 kB) stays on the stack of
        each of the thousands of streams held open (bench/scale_sessions.py)."""
        if headers.get("mcp-protocol-version") == MODERN_VERSION or self.stateless:
            return send_body(
                send,
                405,
                b'{"error":"no standalone stream; use subscriptions/listen"}',
                JSON_HEADERS + [(b"allow", b"POST")],
            )
        if "text/event-stream" not in headers.get("accept", "text/event-stream"):
            return send_body(send, 406, b'{"error":"GET needs Accept: text/event-stream"}')
        sid = headers.get("mcp-session-id")
        session = self.sessions.get(sid, principal.id) if sid else None
        if session is None and sid:  # the stream reconnecting on another replica: adopt the session here
            return self._adopt_then_stream(scope, receive, send, view, principal, sid)
        return self._session_stream(scope, receive, send, view, principal, session, sid)

    async def _adopt_then_stream(
        self, scope: JSON, receive: Receive, send: Send, view: VirtualServerView, principal: Principal, sid: str
    ) -> None:
        try:
            session = await self.sessions.adopt(sid, principal, view)
        except LimitReached as exc:
            await refuse(send, exc)
            return
        await self._session_stream(scope, receive, send, view, principal, session, sid)

    def _session_stream(
        self,
        scope: JSON,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        principal: Principal,
        session: ClientSession | None,
        sid: str | None,
    ) -> Awaitable[None]:
        if session is None or session.server_id != view.id:
            status = 400 if not sid else 404
            return send_body(
                send,
                status,
                error_bytes(None, INVALID_REQUEST, "Session not found" if sid else "Bad Request: Missing session ID"),
            )
        release_headers(scope)  # the stream needs none of them while it is held
        return self._stream(receive, send, session.listener, principal, None)

    async def _listen(
        self,
        receive: Receive,
        send: Send,
        view: VirtualServerView,
        request_id: Any,
        params: JSON,
        principal: Principal,
        caps: JSON,
        headers: dict[str, str],
    ) -> None:
        notifications = params.get("notifications")
        wanted: JSON = notifications if isinstance(notifications, dict) else {}
        kinds = {kind for kind, flag in LISTEN_FLAGS.items() if wanted.get(flag)}
        try:
            self.sessions.check_stream(principal.id)  # before subscribing anything upstream
        except LimitReached as exc:
            await refuse(send, exc, request_id)
            return
        listener = self.sessions.listener(view, kinds, principal, subscription_id=request_id)
        honored: JSON = {LISTEN_FLAGS[kind]: True for kind in sorted(kinds)}
        uris = wanted.get("resourceSubscriptions")
        if isinstance(uris, list):
            accepted = []
            # One call for the stream's subscriptions, with the caller's `x-mcp-headers`: a `forwarded` member's
            # URIs resolve in that caller's own lists and are subscribed on their own session (without them, in
            # and on those of a caller who sends none), each member's credential resolved once.
            call = Call(
                view=view,
                era=Era.MODERN,
                client_capabilities=caps,
                principal=principal,
                forwarded_raw=headers.get("x-mcp-headers"),
            )
            for uri in uris:
                if not isinstance(uri, str):
                    continue
                target = await view.resolve_uri_for(uri, self.gw.credential_for(call))
                if target is None or not self.gw.access.allows(principal, view, "resources", target):
                    continue  # unknown, or not granted: the same answer (not in the acknowledged list)
                try:
                    if "error" in await self.gw.subscribe(call, target, listener, uri):
                        continue
                except RpcError as exc:  # an upstream that is down just doesn't get the subscription
                    log.warning("subscriptions/listen: cannot subscribe %s upstream: %s", uri, exc.message)
                    continue
                accepted.append(uri)
            honored["resourceSubscriptions"] = accepted
        ack = {
            "jsonrpc": "2.0",
            "method": SUBSCRIPTIONS_ACKNOWLEDGED,
            "params": {"notifications": honored},
        }
        self.gw.hub.add(listener)
        try:
            listener.push(ack)
            await self._stream(receive, send, listener, principal, request_id)
        finally:
            self.gw.hub.remove(listener)

    def _stream(
        self, receive: Receive, send: Send, listener: Listener, principal: Principal, request_id: Any
    ) -> Awaitable[None]:
        """Write the listener's notifications as one SSE response, counted against the caller's streams (a
        plain function: the stream's one frame is `pump_events`')."""
        try:
            self.sessions.open_stream(principal.id)
        except LimitReached as exc:
            return refuse(send, exc, request_id)
        return pump_events(
            receive,
            send,
            listener.attach(),
            self.keepalive,
            opening=b": stream open\n\n",
            counted=self.sessions,
            owner=principal.id,
        )


async def pump_events(
    receive: Receive,
    send: Send,
    queue: StreamQueue,
    keepalive: KeepAlive,
    *,
    opening: bytes | None = None,
    counted: SessionStore | None = None,
    owner: str = "",
) -> None:
    """Write queued messages (serialised) as SSE events until the queue ends or the client goes away; a
    comment line when the stream has been quiet for a while (`keepalive`) keeps proxies from timing out.
    `opening`: start the response first (SSE headers), with this as its first bytes. `counted`: the stream is
    all this function's (no frame of its caller stays on a held stream's stack): when it ends, it lets go of
    its queue (`Listener.detach`) and stops counting against `owner`'s open streams (`stream_closed`).

    One task, nothing more per held stream: it waits in `receive()` (where the client going away is heard), and
    the queue — a message, the end, the keep-alive's tick — interrupts that wait (relay/stream_queue.py)."""
    task = asyncio.current_task()
    assert task is not None
    keepalive.add(queue)
    try:
        if opening is not None:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": opening, "more_body": True})
        while True:
            payload = queue.pop()
            if payload is not None:
                queue.quiet_ticks = 0
                while payload is not None:
                    await send({"type": "http.response.body", "body": sse_event(payload), "more_body": True})
                    payload = queue.pop()
                    if payload is not None:
                        # Let that write leave (and flow control pause this stream) before the next: what is
                        # bounded is the queue, and a send that does not wait would move all of it into the
                        # connection's unbounded write buffer (asgi.py's write combining holds a step's writes).
                        await asyncio.sleep(0)
            if queue.closed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if queue.quiet_ticks >= 2:
                queue.quiet_ticks = 0
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                continue
            message: JSON | None = None
            cancelling = task.cancelling()
            queue.interrupt_on_wake(task)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not queue.interrupted(task, cancelling):
                    raise  # not the queue's: the server is shutting down
            finally:
                queue.interrupt_on_wake(None)
            if message is not None and message["type"] == "http.disconnect":
                return
    finally:
        keepalive.discard(queue)
        if counted is not None:
            queue.attached = False  # what Listener.detach does
            counted.stream_closed(owner)


async def _answer_cut(channel: ResponseChannel, request_id: Any) -> None:  # noqa: ANN401
    """A request cut because the shutdown grace ran out (asgi.py SHUTDOWN_CUT): 503 with Retry-After and the
    JSON-RPC error saying so (a client or balancer tries again, elsewhere), or that error as the last event of a
    stream under way. Was, for a 2025-11-25 session's call: a 200 -32800 "Request cancelled", which nobody retries."""
    channel.extra_headers.append((b"retry-after", b"1"))
    await channel.finish(error_bytes(request_id, INTERNAL_ERROR, SHUTDOWN_CUT_REASON), status=503)


def _error_status(code: Any, era: Era) -> int:
    """The HTTP status of a JSON-RPC error reply."""
    if code == FORBIDDEN_CREDENTIAL:
        return 403  # the outbound credential was refused (e.g. passthrough with the wrong audience)
    if code == RATE_LIMITED:
        return 429  # both eras: a POST's JSON answer may say it (inside an SSE stream only the error does)
    match era:
        case Era.MODERN:
            # 2026-07-28 maps some JSON-RPC errors to HTTP statuses (e.g. unknown method -> 404).
            return ERROR_CODE_HTTP_STATUS.get(code, 200)
        case Era.HANDSHAKE:
            return 200
        case _:
            assert_never(era)

"""The JSON-RPC client session to one upstream, on top of any message transport.

One session is shared by many concurrent gateway requests, so it rewrites request ids (callers'
ids would collide) and progress tokens (restored on the way back to the right request's sink).
Messages stay plain dicts end to end: no model validation, nothing re-serialised through SDK types.

The handshake depends on the era:
- 2025-11-25 and older: `initialize` + `notifications/initialized`; the HTTP transport keeps the
  `Mcp-Session-Id`; list_changed arrives on the standalone GET stream (or stdout for stdio).
- 2026-07-28: `server/discover`; every request then carries the `_meta` envelope (protocol version,
  client capabilities, client info) and, on HTTP, the `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name`
  headers; list_changed arrives on a `subscriptions/listen` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, assert_never

import orjson
from mcp.shared.inbound import (
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)

from manifold import jsoncodec
from manifold.config.models import ProtocolChoice, UpstreamConfig
from manifold.protocol import (
    CANCELLED,
    CAPABILITY_FOR,
    HANDSHAKE_VERSIONS,
    INITIALIZE,
    INITIALIZED,
    INTERNAL_ERROR,
    LATEST_HANDSHAKE,
    LIST_CHANGED,
    LIST_CHANGED_NOTIFICATION,
    LISTEN_FLAGS,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    METHOD_NOT_FOUND,
    MODERN_VERSION,
    MODERN_VERSIONS,
    PING,
    PROGRESS,
    RESOURCES_SUBSCRIBE,
    RESOURCES_UNSUBSCRIBE,
    RESOURCES_UPDATED,
    ROOTS_LIST,
    ROOTS_LIST_CHANGED,
    SERVER_DISCOVER,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    SUBSCRIPTIONS_LISTEN,
    TOOLS_CALL,
    TOOLS_LIST,
    UNSUPPORTED_PROTOCOL_VERSION,
    Era,
)
from manifold.upstream.base import (
    JSON,
    STANDALONE,
    TOO_DEEP,
    ErrorKind,
    MessageTransport,
    NotificationHandler,
    RequestSink,
    UpstreamError,
    UpstreamSessionLost,
    UpstreamTimeout,
)
from manifold.upstream.shapes import ITEM_SHAPES, RESULT_CHECKS, checked_result, only_well_formed

logger = logging.getLogger(__name__)
# How a JSON-RPC refusal of `initialize` begins its reason: the upstream read the handshake and said no (the
# pool tells it from a refused HTTP request, which may be about the credential it carried).
REFUSED_INITIALIZE = "refused initialize: "

try:
    _VERSION = importlib.metadata.version("mcp-manifold")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0"
CLIENT_INFO: JSON = {"name": "manifold", "version": _VERSION}
# What the gateway can relay back to its own callers. Declared in a handshake-era `initialize`, whose session
# is shared by many clients: a client that lacks one gets an error from its response channel instead. A
# 2026-07-28 request declares exactly the calling client's capabilities (the request sink's), or none.
CLIENT_CAPABILITIES: JSON = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}}
NO_CAPABILITIES: JSON = {}

# Notifications that belong to no request: they go to the session-level callback.
SESSION_NOTIFICATIONS = frozenset({*LIST_CHANGED, RESOURCES_UPDATED})
# How long protocol `auto` waits for the answer to its `server/discover` probe before it sends `initialize` instead,
# as the SDK's client does (mcp.client.session DISCOVER_TIMEOUT_SECONDS, 10 s, then `initialize`): a server that
# ignores methods it does not know (hand-written ones, older SDKs) never answers it, and waiting the whole start
# (stdio: 120 s) left its tools missing for that long. Counted from when the upstream read the probe where the
# transport can tell (stdio: a command still starting, `npx -y pkg` fetching its package, has not read it yet, and
# is waited for); else from when it was sent. A modern server that answers the probe late all the same answers the
# `initialize` after it with -32022, which is taken as the evidence it is (one probe more, at once).
DISCOVER_PROBE_SECONDS = 5.0
PROBE_POLL_SECONDS = 0.25  # how often the probe looks whether the upstream has read it
# How long connect waits for the change-notification channel (GET stream / listen ack) to be up,
# so that a list change right after connect is not lost. Not fatal when it expires.
CHANNEL_READY_WAIT = 2.0
# Server→client requests (ping, sampling, elicitation, roots) one session answers at once. Each is a task until
# answered; an upstream that sends more (a flood of pings) has the excess dropped unanswered, so it costs the
# gateway bounded memory (50,000 pings were ~350 MB of tasks). Far above what its callers' requests need.
MAX_SERVER_REQUESTS = 512
# How long a request given up is thought to be still running upstream (its call_timeout, within these bounds).
ABANDONED_HOLD_MIN_SECONDS = 60.0
ABANDONED_HOLD_MAX_SECONDS = 3600.0
MAX_ABANDONED = 1024


# Requests that are not cancelled when given up: a server that has not completed a handshake may not expect one.
HANDSHAKE_METHODS = frozenset({INITIALIZE, SERVER_DISCOVER})


def _names_modern_version(error: Any) -> bool:
    """Whether a JSON-RPC error is -32022 naming the modern version among those the server speaks."""
    if type(error) is not dict or error.get("code") != UNSUPPORTED_PROTOCOL_VERSION:
        return False
    data = error.get("data")
    supported = data.get("supported") if type(data) is dict else None
    return type(supported) is list and MODERN_VERSION in supported


def _object(value: Any) -> JSON:
    """An upstream's handshake field that must be an object: anything else counts as absent (everyone after the
    handshake calls `.get` on server info and capabilities)."""
    return value if type(value) is dict else {}


def _text(value: Any) -> str | None:
    return value if type(value) is str else None


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[JSON]
    sink: RequestSink | None
    progress_token: Any = None  # the caller's token, restored on the way back
    method: str = ""
    owner: str | None = None  # the principal the request is made for (RequestSink.principal_id)


@dataclass
class ServerHello:
    """What the handshake learned (from `initialize` or `server/discover`)."""

    era: Era
    protocol_version: str
    server_info: JSON = field(default_factory=dict)
    capabilities: JSON = field(default_factory=dict)
    instructions: str | None = None


class JsonRpcSession:
    """An `UpstreamSession` (see base.py) over a `MessageTransport`."""

    def __init__(
        self,
        upstream_id: str,
        config: UpstreamConfig,
        transport: MessageTransport,
        on_notification: NotificationHandler | None = None,
        *,
        owned: bool = False,
    ) -> None:
        self.upstream_id = upstream_id
        # One caller's own session (`sessions: per_user`, a per-user credential): the roots/list its server asks
        # outside any call (server-filesystem: right after the handshake, and after the client's
        # roots/list_changed) goes to that caller's client session (`use_roots_client`), as it would directly.
        self.owned = owned
        self._roots_client: RequestSink | None = None
        self._roots_client_known = asyncio.Event()
        self._roots_missed = False  # a roots/list was refused for want of a client: asked again once one comes
        self.config = config
        self._asking_discover = False  # the handshake waits for the answer to server/discover (connect's message)
        self.era = Era.HANDSHAKE
        self.protocol_version = ""
        self.server_info: JSON = {}
        self.capabilities: JSON = {}
        self.instructions: str | None = None
        self._transport = transport
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        # Requests given up (timed out, cancelled) that the upstream may still be running, and whose: until it
        # answers one, or their hold passes, a request of it that names no call is not guessed to belong to
        # another caller's call (isolation probe: Bob was asked Alice's question once hers was given up).
        self._abandoned: dict[int, tuple[str | None, float]] = {}
        self._resource_streams: dict[str, asyncio.Future[Any]] = {}
        self._subscribed: set[str] = set()  # resources/subscribe'd on a 2025-11-25 session
        self._closed = False
        self._close_reason: UpstreamError | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._listen_acked = asyncio.Event()
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}  # tool -> x-mcp-header map (modern)
        self._answering = 0  # server→client requests being answered (at most MAX_SERVER_REQUESTS)
        self._answers: dict[Any, asyncio.Task[None]] = {}  # by the upstream's request id: withdrawn by a cancel
        self.answered = 0  # requests the upstream answered since the handshake (a session that served none and
        # died at once is a failed start to the pool's back-off)
        self._start_within: float | None = None  # connect(within): the handshake requests' timeout (None: call_timeout)
        self._flood_warned = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> UpstreamError | None:
        return self._close_reason

    async def connect(self, within: float | None = None) -> None:
        """Open the transport and run the handshake; raises UpstreamError (never hangs past `within`, by default
        connect_timeout; the pool gives a stdio command longer, upstream/pool.py `STDIO_START_SECONDS`)."""
        limit = self.config.connect_timeout if within is None else within
        # The handshake's own requests get the whole window (not call_timeout, which would end a slow start early).
        self._start_within = within
        try:
            async with asyncio.timeout(limit):
                await self._transport.connect(self._deliver, self._transport_closed)
                await self._handshake()
        except TimeoutError:
            await self.aclose()
            # named, so an operator whose command starts slowly (npx fetching a package) knows what to raise
            setting = "its connect_timeout" if within is None else "the time a stdio command is given to start"
            reason = f"did not complete the handshake within {limit:g}s ({setting})"
            if self._asking_discover:
                # A server that ignores methods it does not know never answers the probe (ops probe: it was
                # restarted for good, the message naming no way out).
                reason += (
                    f": it never answered {SERVER_DISCOVER}, which protocol `auto` asks first; a server that"
                    " ignores methods it does not know needs `protocol: 2025-11-25`"
                )
            raise UpstreamError(self.upstream_id, reason) from None
        except BaseException:
            await self.aclose()
            raise
        await self._open_change_channel()

    # ------------------------------------------------------------------ resource subscriptions

    async def subscribe_resource(self, uri: str) -> JSON:
        """Ask for notifications/resources/updated for `uri` (delivered to the session callback).
        2025-11-25: resources/subscribe. 2026-07-28 has no such method: a listen stream of its own."""
        match self.era:
            case Era.HANDSHAKE:
                reply = await self.request(RESOURCES_SUBSCRIBE, {"uri": uri})
                if "result" in reply:
                    self._subscribed.add(uri)
                return reply
            case Era.MODERN:
                stream = self._resource_streams.get(uri)
                if stream is None or stream.done():
                    params = {"notifications": {"resourceSubscriptions": [uri]}}
                    stream = asyncio.ensure_future(self.request(SUBSCRIPTIONS_LISTEN, params, timeout=float("inf")))
                    # never "exception not retrieved"
                    stream.add_done_callback(lambda f: f.cancelled() or f.exception())
                    self._resource_streams[uri] = stream
                return {"result": {}}
            case _:
                assert_never(self.era)

    async def unsubscribe_resource(self, uri: str) -> JSON:
        match self.era:
            case Era.HANDSHAKE:
                self._subscribed.discard(uri)
                return await self.request(RESOURCES_UNSUBSCRIBE, {"uri": uri})
            case Era.MODERN:
                stream = self._resource_streams.pop(uri, None)
                if stream is not None:
                    stream.cancel()
                return {"result": {}}
            case _:
                assert_never(self.era)

    def holds_subscriptions(self) -> bool:
        """Whether some client's resource subscription lives on this session (closing it would end them)."""
        return bool(self._subscribed) or any(not stream.done() for stream in self._resource_streams.values())

    def in_flight(self) -> int:
        """Requests sent and not yet answered (a listen stream does not count)."""
        return sum(1 for p in self._pending.values() if p.method != SUBSCRIPTIONS_LISTEN)

    async def aclose(self) -> None:
        for stream in self._resource_streams.values():
            stream.cancel()
        if not self._closed:
            self._mark_closed(UpstreamSessionLost(self.upstream_id, "session was closed"))
        for task in list(self._background):
            task.cancel()
        await self._transport.aclose()

    def _transport_closed(self, reason: UpstreamError) -> None:
        self._mark_closed(reason)

    def _mark_closed(self, reason: UpstreamError) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        for request_id, pending in self._pending.items():
            if pending.future.done():
                continue
            if request_id in reason.never_read:  # the upstream never read it: the pool sends it again
                pending.future.set_exception(UpstreamSessionLost(self.upstream_id, reason.reason))
            else:
                pending.future.set_exception(UpstreamError(self.upstream_id, reason.reason, kind=ErrorKind.CLOSED))

    # ------------------------------------------------------------------ handshake

    async def _handshake(self) -> None:
        choice = self.config.protocol
        if self._transport.kind == "sse":  # HTTP+SSE (2024-11-05) predates discover
            choice = ProtocolChoice.HANDSHAKE
        match choice:
            case ProtocolChoice.HANDSHAKE:
                hello = await self._initialize()
            case ProtocolChoice.MODERN:
                hello = self._adopt_discover(await self._discover(), strict=True)
                assert hello is not None
            case ProtocolChoice.AUTO:
                hello = await self._negotiate_auto()
            case _:
                assert_never(choice)
        self.era = hello.era
        self.protocol_version = hello.protocol_version
        self.server_info = hello.server_info
        self.capabilities = hello.capabilities
        self.instructions = hello.instructions
        self.answered = 0  # counted from here: the handshake's own answers are not service

    async def _negotiate_auto(self) -> ServerHello:
        """Like mcp.client._probe: discover, and fall back to initialize on anything that is not positive
        evidence of a modern server. Only -32022 naming modern-only versions we don't speak is fatal.
        Transport failures (refused, timeout) propagate: an outage is never an era verdict."""
        try:
            reply = await self._discover(probe=True)
        except UpstreamTimeout:
            # Unanswered within the probe: a server that ignores methods it does not know (or one still starting,
            # which reads the probe before the `initialize` and says -32022 to it if it is modern: `reprobe`).
            return await self._initialize(reprobe=True)
        except UpstreamError as exc:
            if exc.kind is not ErrorKind.PROTOCOL:
                raise
            return await self._initialize()  # a garbled answer to discover is no evidence of a modern server
        error = reply.get("error")
        if isinstance(error, dict):
            data = error.get("data")
            supported = data.get("supported") if isinstance(data, dict) else None
            if error.get("code") == UNSUPPORTED_PROTOCOL_VERSION and isinstance(supported, list) and supported:
                if not any(v in HANDSHAKE_VERSIONS or v in MODERN_VERSIONS for v in supported):
                    raise UpstreamError(
                        self.upstream_id, "speaks only protocol versions this gateway does not", kind=ErrorKind.PROTOCOL
                    )
            return await self._initialize()
        hello = self._adopt_discover(reply, strict=False)
        return hello if hello is not None else await self._initialize()

    async def _discover(self, *, probe: bool = False) -> JSON:
        """`probe`: protocol `auto`'s, given up (UpstreamTimeout) once unanswered for DISCOVER_PROBE_SECONDS after the
        upstream read it (`_probe`)."""
        params = {
            "_meta": {
                META_PROTOCOL_VERSION: MODERN_VERSION,
                META_CLIENT_INFO: CLIENT_INFO,
                META_CLIENT_CAPABILITIES: NO_CAPABILITIES,  # made for no client
            }
        }
        headers = {"mcp-protocol-version": MODERN_VERSION, "mcp-method": SERVER_DISCOVER}
        self._asking_discover = True  # stays set only if connect's timeout cuts the wait short: its message says so
        try:
            timeout = self._start_within if self._start_within is not None else self.config.connect_timeout
            asking = self._send_request(SERVER_DISCOVER, params, headers=headers, timeout=timeout, sink=None)
            reply = await (self._probe(asking) if probe else asking)
        except Exception:
            self._asking_discover = False
            raise
        self._asking_discover = False
        return reply

    async def _probe(self, asking: Awaitable[JSON]) -> JSON:
        """The answer to the discover probe, or UpstreamTimeout once DISCOVER_PROBE_SECONDS have passed since the
        upstream read it unanswered (since it was sent, where the transport cannot tell)."""
        request = asyncio.ensure_future(asking)
        sent = time.monotonic()
        read_by: float | None = None
        try:
            while True:
                await asyncio.wait({request}, timeout=PROBE_POLL_SECONDS)
                if request.done():
                    return request.result()
                now = time.monotonic()
                if read_by is None:
                    unread = self._unread(SERVER_DISCOVER)
                    self._asking_discover = not unread  # a start cut short before it read the probe is not its fault
                    if unread:
                        continue  # still starting: not ignoring it
                    read_by = sent if unread is None else now
                if now - read_by >= DISCOVER_PROBE_SECONDS:
                    raise UpstreamTimeout(self.upstream_id, DISCOVER_PROBE_SECONDS)
        finally:
            request.cancel()  # not told upstream (HANDSHAKE_METHODS)

    def _unread(self, method: str) -> bool | None:
        """Whether the upstream has not yet read the request in flight of this method (a stdio command: its stdin
        pipe, upstream/stdio.py `unread`); None where the transport cannot tell."""
        unread = getattr(self._transport, "unread", None)
        request_id = next((i for i, pending in self._pending.items() if pending.method == method), None)
        if unread is None or request_id is None:
            return None
        return unread(request_id)

    def _adopt_discover(self, reply: JSON, *, strict: bool) -> ServerHello | None:
        result = reply.get("result")
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        if not isinstance(result, dict) or type(versions) is not list or MODERN_VERSION not in versions:
            if strict:
                raise UpstreamError(
                    self.upstream_id, f"does not speak protocol {MODERN_VERSION}", kind=ErrorKind.PROTOCOL
                )
            return None
        self._transport.set_negotiated(MODERN_VERSION)
        return ServerHello(
            era=Era.MODERN,
            protocol_version=MODERN_VERSION,
            server_info=_object(_object(result.get("_meta")).get(META_SERVER_INFO)),
            capabilities=_object(result.get("capabilities")),
            instructions=_text(result.get("instructions")),
        )

    async def _initialize(self, *, reprobe: bool = False) -> ServerHello:
        """`reprobe`: sent after a `server/discover` probe went unanswered; a -32022 naming the modern version says
        the server read that probe late (it was still starting) and speaks 2026-07-28: it is asked again (as
        mcp.client._probe does)."""
        params = {"protocolVersion": LATEST_HANDSHAKE, "capabilities": CLIENT_CAPABILITIES, "clientInfo": CLIENT_INFO}
        reply = await self._send_request(INITIALIZE, params, headers={}, timeout=self._start_within, sink=None)
        result = reply.get("result")
        if not isinstance(result, dict) and reprobe and _names_modern_version(reply.get("error")):
            hello = self._adopt_discover(await self._discover(), strict=True)
            assert hello is not None
            return hello
        if not isinstance(result, dict):
            message = (reply.get("error") or {}).get("message", "no result")
            # Long enough to hold what it echoes whole: the pool blanks credentials in it, then cuts it (pool.py).
            raise UpstreamError(self.upstream_id, f"{REFUSED_INITIALIZE}{str(message)[:2000]}", kind=ErrorKind.PROTOCOL)
        version = _text(result.get("protocolVersion")) or LATEST_HANDSHAKE
        self._transport.set_negotiated(version)
        self.era = Era.HANDSHAKE
        await self._transport.send(orjson.dumps({"jsonrpc": "2.0", "method": INITIALIZED}), {})
        return ServerHello(
            era=Era.HANDSHAKE,
            protocol_version=version,
            server_info=_object(result.get("serverInfo")),
            capabilities=_object(result.get("capabilities")),
            instructions=_text(result.get("instructions")),
        )

    # ------------------------------------------------------------------ change notifications

    async def _open_change_channel(self) -> None:
        """Open the channel that carries list_changed, and wait briefly until it is up."""
        ready = asyncio.Event()
        match self.era:
            case Era.MODERN:
                kinds = [kind for kind in LISTEN_FLAGS if (self.capabilities.get(kind) or {}).get("listChanged")]
                if not kinds:
                    return
                self._spawn(self._listen_loop(kinds, ready))
            case Era.HANDSHAKE:
                self._spawn(self._transport.open_change_channel(self._deliver, ready))
            case _:
                assert_never(self.era)
        try:
            async with asyncio.timeout(CHANNEL_READY_WAIT):
                await ready.wait()
        except TimeoutError:
            logger.debug("upstream %s: change-notification channel not ready yet", self.upstream_id)

    async def _listen_loop(self, kinds: list[str], ready: asyncio.Event) -> None:
        """Keep one `subscriptions/listen` stream open while the session lives. The stream's reply only
        comes when it ends; a re-opened stream announces a change, since events may have been missed."""
        notifications = {LISTEN_FLAGS[kind]: True for kind in kinds}
        attempt = 0
        while not self._closed:
            self._listen_acked = acked = asyncio.Event()
            waiter = asyncio.ensure_future(acked.wait())
            request = asyncio.ensure_future(
                self.request(SUBSCRIPTIONS_LISTEN, {"notifications": notifications}, timeout=float("inf"))
            )
            try:
                await asyncio.wait({waiter, request}, return_when=asyncio.FIRST_COMPLETED)
                if acked.is_set():
                    ready.set()
                    if attempt:
                        for kind in kinds:
                            await self._session_notification(
                                {"jsonrpc": "2.0", "method": LIST_CHANGED_NOTIFICATION[kind]}
                            )
                    attempt = 0
                try:
                    reply = await request
                    if "error" in reply:  # not supported after all: stop asking
                        ready.set()
                        return
                except UpstreamError:
                    pass
            finally:
                waiter.cancel()
                if not request.done():
                    request.cancel()
            attempt += 1
            await asyncio.sleep(min(0.5 * attempt, 5.0))

    async def _session_notification(self, message: JSON) -> None:
        if self._on_notification is None:
            return
        try:
            outcome = self._on_notification(self.upstream_id, message)
            if outcome is not None:
                await outcome
        except Exception:
            logger.exception("upstream %s: notification handler failed", self.upstream_id)

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        params: JSON | None = None,
        *,
        sink: RequestSink | None = None,
        timeout: float | None = None,
        trace_headers: dict[str, str] | None = None,  # W3C traceparent of the gateway's span (telemetry/)
    ) -> JSON:
        if self._closed:
            reason = self._close_reason.reason if self._close_reason else "session is closed"
            raise UpstreamSessionLost(self.upstream_id, reason)
        headers: dict[str, str] = {} if trace_headers is None else dict(trace_headers)
        if self.era is Era.MODERN:
            params = self._stamp_modern(method, params, headers, sink)
        reply = await self._send_request(method, params, headers=headers, timeout=timeout, sink=sink)
        if method in RESULT_CHECKS:  # tools/call (the hot path: a lookup and a few type tests), prompts/get, ...
            return checked_result(self.upstream_id, method, reply)
        if method in ITEM_SHAPES:
            reply = only_well_formed(self.upstream_id, method, reply)
            if method == TOOLS_LIST and self.era is Era.MODERN:
                self._learn_param_headers(reply)
        return reply

    async def _send_request(
        self,
        method: str,
        params: JSON | None,
        *,
        headers: dict[str, str],
        timeout: float | None,
        sink: RequestSink | None,
    ) -> JSON:
        request_id = next(self._ids)
        caller_token = None
        meta = params.get("_meta") if params else None
        if isinstance(meta, dict) and "progressToken" in meta and params is not None:
            # Callers' tokens may collide; the upstream sees our request id and we restore theirs.
            caller_token = meta["progressToken"]
            params = {**params, "_meta": {**meta, "progressToken": request_id}}
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        owner = sink.principal_id if sink is not None else None
        self._pending[request_id] = _Pending(future, sink, caller_token, method, owner)
        limit = timeout if timeout is not None else self.config.call_timeout
        try:
            async with asyncio.timeout(None if limit == float("inf") else limit):
                await self._transport.request(request_id, jsoncodec.dumps(message), headers)
                return await future
        except TimeoutError:
            if method not in HANDSHAKE_METHODS:  # never cancelled (the SDK's client does not either)
                self._abandon(request_id, owner, reason="timed out")
            raise UpstreamTimeout(self.upstream_id, limit) from None
        except asyncio.CancelledError:
            if method not in HANDSHAKE_METHODS:
                self._abandon(request_id, owner, reason="cancelled by the client")
            raise
        except UpstreamSessionLost as lost:
            self._mark_closed(lost)
            raise
        finally:
            del self._pending[request_id]
            if future.done():
                if not future.cancelled():
                    future.exception()  # mark retrieved: a reply racing a transport error is not an error
            else:
                future.cancel()

    def _abandon(self, request_id: int, owner: str | None, *, reason: str) -> None:
        """Tell the upstream to stop working on a request nobody waits for any more. Modern-era HTTP has
        no client notifications: the transport already closed the request's response stream."""
        if self._closed or (self.era is Era.MODERN and self._transport.kind == "http"):
            return
        # It may go on all the same (servers that ignore cancellation do), and ask questions later. The gateway's
        # own requests (lists, with no client behind them) are not held against anyone (review: a list that
        # timed out turned every caller's questions away).
        if owner is not None:
            if len(self._abandoned) >= MAX_ABANDONED:
                del self._abandoned[next(iter(self._abandoned))]  # the oldest
            hold = min(max(self.config.call_timeout, ABANDONED_HOLD_MIN_SECONDS), ABANDONED_HOLD_MAX_SECONDS)
            self._abandoned[request_id] = (owner, time.monotonic() + hold)
        params: JSON = {"requestId": request_id, "reason": reason}
        if self.era is Era.MODERN:
            params["_meta"] = self._envelope()
        body = orjson.dumps({"jsonrpc": "2.0", "method": CANCELLED, "params": params})
        self._spawn(self._send_quietly(body, {}))

    async def notify(self, method: str, params: JSON | None = None) -> None:
        if self._closed:
            return
        headers: dict[str, str] = {}
        if self.era is Era.MODERN:
            if self._transport.kind == "http":
                return  # the 2026-07-28 HTTP wire has no client→server notifications
            params = self._stamp_modern(method, params, headers)
        message: JSON = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._transport.send(jsoncodec.dumps(message), headers)

    # ------------------------------------------------------------------ modern-era stamping

    def _envelope(self, capabilities: JSON = NO_CAPABILITIES) -> JSON:
        return {
            META_PROTOCOL_VERSION: self.protocol_version,
            META_CLIENT_CAPABILITIES: capabilities,
            META_CLIENT_INFO: CLIENT_INFO,
        }

    def _stamp_modern(
        self, method: str, params: JSON | None, headers: dict[str, str], sink: RequestSink | None = None
    ) -> JSON:
        """The per-request envelope and the routing headers. The envelope is the gateway's (its clientInfo)
        but declares the capabilities of the client the request is made for, taken from its sink: the
        upstream may ask in `input_required` only for what that client can answer (SEP-2322)."""
        params = dict(params) if params else {}
        envelope = self._envelope(sink.client_capabilities if sink is not None else NO_CAPABILITIES)
        meta = params.get("_meta")
        params["_meta"] = {**meta, **envelope} if isinstance(meta, dict) else envelope
        headers["mcp-protocol-version"] = self.protocol_version
        headers["mcp-method"] = method
        name_key = NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(name := params.get(name_key), str):
            headers["mcp-name"] = encode_header_value(name)
            if method == TOOLS_CALL and (header_map := self._param_headers.get(name)):
                arguments = params.get("arguments")
                headers.update(mcp_param_headers(header_map, arguments if isinstance(arguments, dict) else {}))
        return params

    def _learn_param_headers(self, reply: JSON) -> None:
        """Remember which tool arguments the upstream wants mirrored as `Mcp-Param-*` headers."""
        tools = (reply.get("result") or {}).get("tools")
        if not isinstance(tools, list):
            return
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(name := tool.get("name"), str):
                continue
            schema = tool.get("inputSchema")
            if isinstance(schema, dict) and b"x-mcp-header" in jsoncodec.dumps(schema):
                if find_invalid_x_mcp_header(schema) is None:
                    self._param_headers[name] = x_mcp_header_map(schema)
            else:
                self._param_headers.pop(name, None)

    # ------------------------------------------------------------------ inbound messages

    async def _deliver(self, message: JSON, related_id: Any) -> None:
        """Route one received message. Called by the transport, in arrival order."""
        if "method" not in message:
            self._resolve(message, related_id)
            return
        method = message["method"]
        if type(method) is not str:  # an array or object would break every lookup below (unhashable)
            logger.debug("upstream %s: dropped a message whose method is not a string", self.upstream_id)
            return
        if "id" in message:
            if self._answering >= MAX_SERVER_REQUESTS:
                if not self._flood_warned:  # once per session: a flood must not flood the log too
                    self._flood_warned = True
                    logger.warning(
                        "upstream %s: more than %d requests to the gateway at once; the excess is dropped",
                        self.upstream_id,
                        MAX_SERVER_REQUESTS,
                    )
                return
            self._answering += 1
            task = self._spawn(self._answer_server_request(message, related_id))
            request_id = message["id"]
            if isinstance(request_id, int | str) and request_id not in self._answers:
                # Known at once: a withdrawal read in the same chunk as the request must find it (review).
                self._answers[request_id] = task
            task.add_done_callback(partial(self._answered, request_id))
            return
        if method == CANCELLED:
            # The upstream withdraws a request of its own (its tool stopped waiting): the client's question is
            # dropped and the client told (relay/response_channel.py). Never passed on with the upstream's id.
            answering = self._answering_task((message.get("params") or {}).get("requestId"))
            if answering is not None:
                answering.cancel()
            return
        if method in SESSION_NOTIFICATIONS:
            await self._session_notification(message)
        elif method == SUBSCRIPTIONS_ACKNOWLEDGED:
            self._listen_acked.set()
        elif method == PROGRESS:
            await self._route_progress(message)
        else:
            # A notification from the GET stream belongs to no call: given to the one call in flight it reached
            # another client than the one whose action caused it (a log message of a timer another user turned
            # on; found with server-everything), so it goes nowhere.
            pending = None if related_id == STANDALONE else self._related(related_id)
            if pending is not None and pending.sink is not None:
                await self._notify_sink(pending.sink, message)
            else:
                logger.debug("upstream %s: dropped unrelated %s", self.upstream_id, method)

    def _resolve(self, message: JSON, related_id: Any) -> None:
        reply_id = message.get("id")
        # Our ids are ints; anything else (an array, an object: unhashable) cannot be one of them. Where the
        # transport knows which request a reply answers (an HTTP POST's response), a reply with another id is
        # misaddressed: it must neither answer another caller's request nor leave this one waiting.
        if type(reply_id) is not int or (
            type(related_id) is int and related_id != STANDALONE and reply_id != related_id
        ):
            pending = None
        else:
            pending = self._pending.get(reply_id)
        if pending is None:
            self._misaddressed(reply_id, related_id, message)
            return
        if pending.future.done():
            return
        if "result" in message:
            result = message["result"]
            if type(result) is dict:
                pending.future.set_result({"result": result})
                self.answered += 1
                return
            problem = "answered with a result that is not a JSON object"
        else:
            error = message.get("error")
            if type(error) is dict and type(error.get("code")) is int and type(error.get("message")) is str:
                pending.future.set_result({"error": error})
                self.answered += 1
                return
            problem = "answered with a malformed JSON-RPC error" if "error" in message else "answered with no result"
        # Relayed as it is, the client could not even parse the answer, let alone tell whose fault it was.
        pending.future.set_exception(
            UpstreamError(self.upstream_id, f"{problem} (a protocol error of the upstream)", kind=ErrorKind.PROTOCOL)
        )

    def _misaddressed(self, reply_id: Any, related_id: Any, message: JSON) -> None:
        """A reply whose id is not one of ours in flight. Where the transport knows which request it answers
        (the response to an HTTP POST), that request fails naming the upstream instead of waiting for its
        timeout; a late reply to a request already given up (an int id on stdio/SSE) is only dropped."""
        if type(reply_id) is int and self._abandoned:
            self._abandoned.pop(reply_id, None)  # a request given up has ended upstream: it asks nothing more
        pending = self._pending.get(related_id) if type(related_id) is int else None
        if pending is None and type(reply_id) is not int:
            pending = self._related(None)  # malformed id on stdio/SSE: the one request in flight, if only one
        if pending is None or pending.future.done():
            logger.debug("upstream %s: dropped a reply to no request of ours", self.upstream_id)
            return
        error = message.get("error")
        if reply_id is None and type(error) is dict and type(said := error.get("message")) is str:
            # JSON-RPC's answer to a message the server could not read (a parse error) has a null id; so has the
            # stdio transport's word for an answer it could not read (TOO_DEEP).
            # The upstream's own words are not shown: a parse error may quote what it could not read (arguments).
            reason = (
                said if said == TOO_DEEP else "answered with an error for no request (id null: it could not read one)"
            )
        else:
            reason = "answered with a JSON-RPC id the gateway never sent for this request"
            reason += " (a protocol error of the upstream)"
        pending.future.set_exception(UpstreamError(self.upstream_id, reason, kind=ErrorKind.PROTOCOL))

    async def _route_progress(self, message: JSON) -> None:
        params = message.get("params") or {}
        token = params.get("progressToken")
        pending = self._pending.get(token) if isinstance(token, int) else None  # ours are request ids
        if pending is None or pending.sink is None:
            return
        restored = {**message, "params": {**params, "progressToken": pending.progress_token}}
        await self._notify_sink(pending.sink, restored)

    def _related(self, related_id: Any) -> _Pending | None:
        """The in-flight request a message belongs to. When the transport cannot tell (stdio, SSE, a request on
        the GET stream), the only safe guess is the single request in flight, if there is exactly one and no
        request given up for someone else may still be running upstream (`_another_may_ask`)."""
        return self._relate(related_id)[0]

    def _relate(self, related_id: Any) -> tuple[_Pending | None, bool]:
        """`_related`, and whether the request it names is only one of several of one client session in flight:
        the one that asked may be another of them."""
        if related_id is not None and related_id != STANDALONE:
            return self._pending.get(related_id), False
        candidates = [p for p in self._pending.values() if p.method != SUBSCRIPTIONS_LISTEN]
        if not candidates or self._another_may_ask(candidates[0].owner):
            return None, False
        if len(candidates) == 1:
            return candidates[0], False
        # Several in flight, all of one 2025-11-25 client session (an agent's parallel tool calls): whichever of
        # its calls carries the question, that client answers it (real-clients probe: every question failed
        # while two calls ran). Calls of different sessions, or sessionless ones: not guessed.
        client = _client_session(candidates[0])
        if client is None or any(_client_session(p) is not client for p in candidates):
            return None, False
        return candidates[-1], True

    def _another_may_ask(self, owner: str | None) -> bool:
        """Whether a request given up on this session, made for someone other than `owner`, may still be
        running upstream (and so be the one asking)."""
        if not self._abandoned:
            return False
        now = time.monotonic()
        for request_id, (whose, until) in list(self._abandoned.items()):
            if until < now:
                del self._abandoned[request_id]
            elif whose != owner:
                return True
        return False

    async def _notify_sink(self, sink: RequestSink, message: JSON) -> None:
        try:
            await sink.notify(message)
        except Exception:
            logger.exception("upstream %s: request sink failed on a notification", self.upstream_id)

    async def _answer_server_request(self, message: JSON, related_id: Any) -> None:
        task = asyncio.current_task()
        try:
            await self._answer(message, related_id)
        except asyncio.CancelledError:
            if task is not None and self._answering_task(message.get("id")) is task and not self._closed:
                task.uncancel()  # withdrawn by the upstream: no answer (the receiver of a cancel does not respond)
                return
            raise

    def _answering_task(self, request_id: Any) -> asyncio.Task[None] | None:
        """The task answering the upstream's request `request_id` (any JSON value: an unhashable one is none)."""
        return self._answers.get(request_id) if isinstance(request_id, int | str) else None

    def _answered(self, request_id: Any, task: asyncio.Task[Any]) -> None:
        """A server→client request is done with (answered, refused, withdrawn even before it began): a done
        callback, not a `finally`, since a task cancelled before its first step never enters its body."""
        self._answering -= 1
        if self._answering_task(request_id) is task:
            del self._answers[request_id]

    def use_roots_client(self, client: RequestSink) -> None:
        """The client session of this (owned) session's caller that answers its server's roots/list when no call
        in flight can: the latest one the caller was relayed through."""
        self._roots_client = client
        self._roots_client_known.set()
        if (
            self._roots_missed
            and self.in_flight() == 0
            and CAPABILITY_FOR[ROOTS_LIST] in (client.client_capabilities or {})
        ):
            # Its server's question at the handshake was refused (the session was opened by a list, and the
            # caller's first call came after connect_timeout): told the roots changed, it asks again, now answered.
            # Once no call is in flight (the relay introduces again after the reply): on stdio a question during
            # one would be taken for that call's, and withdrawn with it when it ends.
            self._roots_missed = False
            self._spawn(self._tell_roots_changed())

    async def _tell_roots_changed(self) -> None:
        if not self._closed:
            await self._send_quietly(orjson.dumps({"jsonrpc": "2.0", "method": ROOTS_LIST_CHANGED}), {})

    async def _ask_roots_client(self, params: JSON | None, *, during_call: bool) -> JSON:
        """A roots/list outside any call on an owned session, put to its caller's client session: the one known,
        else the first the caller is relayed through (asked right after the handshake, it came before the call
        that opened the session reached it), for at most connect_timeout. Not waited for when a client's call is
        in flight (one without roots: a 2026-07-28 client, a stateless gateway's): that call would wait too
        (review: 10 s per call of a stdio tool that asks roots); it is refused at once, as before."""
        if not during_call and not self._roots_client_known.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.connect_timeout):
                    await self._roots_client_known.wait()
        if not self._roots_client_known.is_set():
            self._roots_missed = True  # the caller's client, once it comes, is asked again (`use_roots_client`)
            return {"error": {"code": METHOD_NOT_FOUND, "message": "no client of this session's caller can answer"}}
        client = self._roots_client
        assert client is not None
        return await client.request(ROOTS_LIST, params, shared=True)

    async def _asked(self, method: str, asking: Awaitable[JSON]) -> JSON:
        """The client's answer to a server→client request, or an error the upstream can read if asking failed."""
        try:
            return await asking
        except Exception:
            logger.exception("upstream %s: request sink failed on %s", self.upstream_id, method)
            return {"error": {"code": INTERNAL_ERROR, "message": f"the client could not answer {method}"}}

    async def _answer(self, message: JSON, related_id: Any) -> None:
        method = message["method"]
        reply: JSON
        if method == PING:
            reply = {"result": {}}
        else:
            pending, shared = self._relate(related_id)
            sink = pending.sink if pending is not None else None
            unrelated = related_id is None or related_id == STANDALONE
            # Roots belong to a client's session, not to a call: a roots/list naming no call that the call in flight
            # (if any) cannot answer.
            roots_unanswered = (
                method == ROOTS_LIST
                and unrelated
                and (sink is None or CAPABILITY_FOR[ROOTS_LIST] not in (sink.client_capabilities or {}))
            )
            if self.owned and roots_unanswered:
                # One caller's own session: its caller's client session answers (`use_roots_client`).
                reply = await self._asked(
                    method, self._ask_roots_client(message.get("params"), during_call=sink is not None)
                )
            elif sink is None:
                in_flight = sum(1 for p in self._pending.values() if p.method != SUBSCRIPTIONS_LISTEN)
                why = f"no client can answer {method} now"
                if unrelated and in_flight > 1:
                    # Said to whoever reads the upstream's error (the tool's result, a log): what to change. One
                    # caller's calls from several client sessions: per_user would not help (probe).
                    owners = {p.owner for p in self._pending.values() if p.method != SUBSCRIPTIONS_LISTEN}
                    why += (
                        f": {in_flight} calls are in flight on the gateway's one session to this upstream, which did"
                        " not say which of them asked"
                    )
                    if len(owners) > 1:
                        why += "; `sessions: per_user` on the upstream gives each caller a session of its own"
                elif unrelated and in_flight == 1:
                    why += (
                        ": a call the gateway gave up may still be running on this upstream, which did not say"
                        " which call asked; `sessions: per_user` on the upstream gives each caller a session of its"
                        " own"
                    )
                reply = {"error": {"code": METHOD_NOT_FOUND, "message": why}}
            elif roots_unanswered:
                # A roots/list only guessed to be the one call's in flight (stdio, SSE, the GET stream:
                # server-everything asks right after its handshake), from a client that has no roots, is answered
                # for it with an error, and the call goes on (fastmcp interop: a 2026-07-28 client's first call
                # failed with -32021). Sampling and elicitation asked mid-call stay the call's own (a client without
                # them is told so, as the spec asks).
                reply = {"error": {"code": METHOD_NOT_FOUND, "message": "the client asked has no roots"}}
            else:
                # `shared`: not withdrawn when the call that carried it ends (the asking one may go on; review). Nor
                # an owned session's roots/list naming no call (stdio): its server's, asked right after the handshake
                # while the call that opened the session runs, is the session's, not the call's (review: a client
                # slower to answer than the call was to end would have its answer refused, the server keeping its
                # folders).
                shared = shared or (self.owned and method == ROOTS_LIST and unrelated)
                reply = await self._asked(method, sink.request(method, message.get("params"), shared=shared))
        body = jsoncodec.dumps({"jsonrpc": "2.0", "id": message["id"], **reply})
        await self._send_quietly(body, {})

    async def _send_quietly(self, body: bytes, headers: dict[str, str]) -> None:
        """Send a notice nothing waits for (a cancellation, a reply): within call_timeout, so one stuck behind
        unread bytes (a stdio process that stopped reading) does not stay a task for good."""
        try:
            async with asyncio.timeout(self.config.call_timeout):
                await self._transport.send(body, headers)
        except (UpstreamError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, UpstreamError) else "timed out"
            logger.debug("upstream %s: could not send: %s", self.upstream_id, reason)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _client_session(pending: _Pending) -> object | None:
    return pending.sink.client_session if pending.sink is not None else None

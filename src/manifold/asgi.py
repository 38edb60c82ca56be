"""The few ASGI helpers every face needs (app, admin API, relay): raw ASGI, because they run on every
relayed call and a framework's request/response objects cost more than the call's own work."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

JSON = dict[str, Any]
Scope = dict[str, Any]
Send = Callable[[JSON], Awaitable[None]]
Receive = Callable[[], Awaitable[JSON]]

# nosniff on every JSON and event-stream answer: a browser must never run one as a script or style sheet (a
# tool's result is text an upstream chose).
JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    # An explicit content-length spares the response chunked framing.
    head = [*(headers if headers is not None else JSON_HEADERS), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class LostConnection:
    """Cancels a request's task when its connection is lost (`cancel_when_lost`); `lost` tells afterwards."""

    __slots__ = ("lost", "_task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.lost = False
        self._task = task

    def __call__(self) -> None:
        self.lost = True
        self._task.cancel()


def cancel_when_lost(send: Send) -> LostConnection | None:
    """Have the current task cancelled if the client's connection is lost before its response is complete: a
    2026-07-28 client cancels a request by closing its stream ("the server MUST treat a client disconnect as
    cancellation"). Waiting in `receive()` for the disconnect would cost a task per request; `manifold serve`'s
    protocol (`write_combining_http`) tells the request's cycle instead, whose `send` this is. None where the
    server is another (an ASGI test transport): the request then runs to its end."""
    cycle = getattr(send, "__self__", None)
    task = asyncio.current_task()
    if cycle is None or task is None or not hasattr(cycle, "on_lost"):
        return None
    watch = cycle.on_lost = LostConnection(task)
    return watch


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (ASGI servers lower-case them already), each value without
    the optional whitespace around it (RFC 9110 §5.5; uvicorn's httptools parser leaves it in)."""
    return {k.decode("latin-1"): v.decode("latin-1").strip(" \t") for k, v in scope["headers"]}


def release_headers(scope: Scope) -> None:
    """Empty the request's headers, raw (`scope["headers"]`) and decoded (`scope["_headers"]`, app.py), in
    place: for a response held open for hours (a notification stream) that has read all it needs from them.
    The connection and the request's frames keep both alive while the stream is held: about 2 kB of each of
    the thousands of held streams (bench/scale_sessions.py)."""
    raw = scope.get("headers")
    if isinstance(raw, list):
        raw.clear()  # uvicorn's protocol holds the same list
    else:
        scope["headers"] = []
    decoded = scope.get("_headers")
    if isinstance(decoded, dict):
        decoded.clear()


class _WriteCombining:
    """A connection's transport as uvicorn sees it: the writes of one event-loop step leave as one.

    uvicorn writes a response's status line and headers as soon as `http.response.start` is sent, and the
    body with the next message, so every JSON answer left as two TCP segments: two send(2) calls here and two
    wake-ups of the client, which reads the head and then waits again for the body. Here writes made in the
    same step are joined and handed to the real transport once, at the end of the step (`call_soon`): the
    answer leaves whole, one segment, a moment later than its first half would have. Closing sends what is
    held first. Everything else is the real transport's."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: list[bytes] | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            held.append(bytes(data))

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # pause_reading, resume_reading, set_protocol, abort, ...
        return getattr(self._transport, name)


class _LeanEvent:
    """`asyncio.Event` as uvicorn's protocol uses it (set, clear, is_set, wait), with its list of waiters made
    only while someone waits: an `asyncio.Event` makes a deque up front (0.7 kB), and every held connection had
    two of them (the request's message event, the flow control's writable event)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    def waiter(self) -> asyncio.Future[bool]:
        """A future done when the event is set (call while it is not): `await event.waiter()` is `await
        event.wait()` without a coroutine of its own on the waiting task's stack. A waiter cancelled meanwhile
        is dropped here or by `set`."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [waiter]
        else:
            waiters[:] = [w for w in waiters if not w.done()]
            waiters.append(waiter)
        return waiter

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None


class _LeanFlowControl:
    """uvicorn's `FlowControl` (the same five operations and two flags), slotted, its writable event a
    `_LeanEvent`: one per connection. It also carries the connection's request guard (`head_bytes`,
    `head_timer`, `body_deadline`, see `write_combining_http`): new attributes on uvicorn's protocol object
    itself would take its instances past the 30 attributes CPython shares keys for, and each held
    connection's dict grew by ~1.4 kB."""

    __slots__ = (
        "_transport",
        "read_paused",
        "write_paused",
        "_is_writable_event",
        "head_bytes",
        "head_timer",
        "body_deadline",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._is_writable_event = _LeanEvent()
        self._is_writable_event.set()
        self.head_bytes = 0  # of the request head being read; -1 once the head is complete
        # Runs from a request's first byte (or the connection) until its body is complete: the head's time,
        # then the body's (`body_deadline`, the loop's clock), see `write_combining_http`.
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_deadline = 0.0

    async def drain(self) -> None:
        await self._is_writable_event.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._is_writable_event.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._is_writable_event.set()


# What every connection shares instead of a copy each: the scope's `asgi` entry (by ASGI version) and the
# server's own address (a listening socket or two).
_ASGI_BY_VERSION: dict[str, dict[str, str]] = {}
_SERVER_ADDRESSES: dict[tuple[str, int | None], tuple[str, int | None]] = {}
_MAX_SERVER_ADDRESSES = 64


def _shared_address(address: tuple[str, int | None] | None) -> tuple[str, int | None] | None:
    if address is None:
        return None
    shared = _SERVER_ADDRESSES.get(address)
    if shared is None:
        if len(_SERVER_ADDRESSES) >= _MAX_SERVER_ADDRESSES:
            return address
        shared = _SERVER_ADDRESSES[address] = address
    return shared


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (rare) as a list: an empty deque is 0.6 kB per connection."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


_REFUSED_HEAD = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: 52\r\nconnection: close\r\n\r\n"
    b'{"error":"the request line and headers are too big"}'
)


_HEAD_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: 49\r\nconnection: close\r\n\r\n"
    b'{"error":"the request head did not come in time"}'
)


_BODY_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: 49\r\nconnection: close\r\n\r\n"
    b'{"error":"the request body did not come in time"}'
)


_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"content-length: 70\r\nconnection: close\r\n\r\n"
    b'{"error":"the gateway holds as many connections as it may; try again"}'
)
CONNECTIONS_LOG_SECONDS = 60.0  # refused connections are said at most this often
# The message of the cancellation that cuts a request still running when the shutdown grace
# (gateway.shutdown_grace_seconds) runs out (runtime/server.py): such a request is answered 503, try again.
SHUTDOWN_CUT = "cut at shutdown: gateway.shutdown_grace_seconds ran out"
# What the client of such a request is told (a JSON-RPC -32603 error), by whichever layer answers it: the relay
# where it knows the request (a 2025-11-25 session's call, one on a legacy /sse stream), else `run_asgi` below.
SHUTDOWN_CUT_REASON = "the gateway is shutting down and cut this request (gateway.shutdown_grace_seconds); try again"
_CUT_BODY = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"%s"}}' % SHUTDOWN_CUT_REASON.encode()


def cut_at_shutdown(exc: BaseException) -> bool:
    """Whether a cancellation is the one that cuts a request still running when the shutdown grace ran out."""
    return isinstance(exc, asyncio.CancelledError) and SHUTDOWN_CUT in exc.args


_CUT_AT_SHUTDOWN = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_CUT_BODY)
    + _CUT_BODY
)


class _HeadTooBig(Exception):
    """Raised by `on_headers_complete` (through httptools, as the context of its callback error): the
    request's line and headers exceed limits.request_head_bytes."""


def _head_size(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """A request head's size in bytes as sent with single spaces: `METHOD url HTTP/1.1` CRLF, each
    `name: value` CRLF, the empty line's CRLF."""
    return len(method) + len(url) + 12 + sum(len(name) + len(value) + 4 for name, value in headers) + 2


def write_combining_http(
    max_head_bytes: int = 64 * 1024,
    head_seconds: float = 20.0,
    body_seconds: float = 60.0,
    max_connections: int | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol whose responses leave in one write (see `_WriteCombining`), for
    uvicorn's `http=` (`manifold serve`). Built on first use: importing uvicorn is the server's business,
    not that of every module that uses these helpers.

    A request's line and headers may take at most `max_head_bytes` (limits.request_head_bytes): past it the
    answer is 431 and the connection is closed. uvicorn's httptools protocol sets no bound of its own, so one
    connection sending an endless header line grew the gateway by ~150 MB in 20 s. And they must arrive
    within `head_seconds` of the connection being opened or the request's first byte
    (limits.request_head_seconds): otherwise 408 (or, if nothing came, just the close). uvicorn kept a
    connection that sent nothing, or half a head, open forever — a few thousand such sockets ("slowloris")
    would use up the gateway's file descriptors. Likewise its body must be complete within `body_seconds`
    of the head's end (limits.request_body_seconds): otherwise 408 if nothing was answered yet, and the
    connection closed either way (a body trickling in a byte at a time held its connection and its task). The
    head's timer runs on into the body and is cancelled when the request is complete, so a request costs no
    timer more than before.

    At most `max_connections` connections are held at once (limits.connections): one past it is answered 503
    with Retry-After and closed at once, and said in the log at most once a minute. Every connection is a file
    and some memory; with the open-file limit raised (runtime/server.py) nothing else bounded how many idle
    ones a client could hold open for request_head_seconds each.

    Its per-connection objects are lighter too (thousands of connections are held open by idle 2025-11-25
    sessions' GET streams: bench/scale_sessions.py): the events it waits on are `_LeanEvent`s, its flow
    control slotted and its pipeline a `_Pipeline`, each made where uvicorn makes them (the connection, the
    request's headers); the scope's `asgi` dict and the server's address are shared by every request; its
    request cycle (`LeanCycle`) waits in `receive()` on the event's future itself, one coroutine fewer on a
    held stream's stack — same behaviour, a few hundred bytes instead of 3 kB. `on_message_begin`,
    `on_headers_complete` and `data_received` are uvicorn 0.54's with those changes: uvicorn is pinned
    (constraints.txt), and upgrading it means comparing them again (tests/unit/test_asgi_lean_connection.py
    compares the scopes)."""
    import httptools
    from uvicorn.protocols.http.flow_control import service_unavailable
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    class LeanCycle(RequestResponseCycle):
        on_lost: Callable[[], object] | None = None  # see `cancel_when_lost`

        async def run_asgi(self, app: Any) -> None:  # noqa: ANN401 - uvicorn's ASGI3Application
            # uvicorn's, but a request cut because the shutdown grace ran out (runtime/server.py) is answered
            # 503 "try again" (a balancer's retry reaches another replica), or its stream ended, instead of
            # uvicorn's 500 and an "Exception in ASGI application" traceback in the log.
            try:
                result = await app(self.scope, self.receive, self.send)
            except asyncio.CancelledError as exc:
                if not cut_at_shutdown(exc):
                    await self._failed(exc)
                elif not self.response_started:
                    if not self.transport.is_closing():
                        self.transport.write(_CUT_AT_SHUTDOWN)
                        self.transport.close()
                elif not self.response_complete and not self.disconnected:
                    # A stream under way (SSE): ended, so the client sees its end rather than a reset.
                    with contextlib.suppress(Exception):
                        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            except BaseException as exc:
                await self._failed(exc)
            else:
                if result is not None:
                    self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                    self.transport.close()
                elif not self.response_started and not self.disconnected:
                    self.logger.error("ASGI callable returned without starting response.")
                    await self.send_500_response()
                elif not self.response_complete and not self.disconnected:
                    self.logger.error("ASGI callable returned without completing response.")
                    self.transport.close()
            finally:
                self.on_response = lambda: None

        async def _failed(self, exc: BaseException) -> None:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()

        async def receive(self) -> Any:  # noqa: ANN401 - uvicorn's ASGIReceiveEvent
            # uvicorn's, waiting on the message event's future itself: one coroutine fewer on the stack of
            # a request that waits here for hours (a held stream).
            if self.waiting_for_100_continue and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.waiting_for_100_continue = False
            if not self.disconnected and not self.response_complete:
                self.flow.resume_reading()
                event: _LeanEvent = self.message_event  # type: ignore[assignment]
                if not event.is_set():
                    await event.waiter()
                event.clear()
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
            self.body = bytearray()
            return message

    refused_said_until = [0.0]

    class WriteCombiningHttpTools(HttpToolsProtocol):
        flow: _LeanFlowControl  # type: ignore[assignment]  # made in connection_made

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if max_connections is not None and len(self.server_state.connections) >= max_connections:
                transport.write(_TOO_MANY_CONNECTIONS)
                transport.close()
                now = self.loop.time()
                if now >= refused_said_until[0]:
                    refused_said_until[0] = now + CONNECTIONS_LOG_SECONDS
                    self.logger.warning(
                        "refused a connection: %d are open, limits.connections; more are refused (said once a minute)",
                        max_connections,
                    )
                return
            super().connection_made(_WriteCombining(transport))  # type: ignore[arg-type]
            self.flow = _LeanFlowControl(self.transport)  # type: ignore[assignment]
            self.pipeline = _Pipeline()  # type: ignore[assignment]
            self.server = _shared_address(self.server)
            self.flow.head_timer = self.loop.call_later(head_seconds, self.head_timed_out)

        def head_timed_out(self) -> None:
            flow = self.flow
            flow.head_timer = None
            transport = self.transport
            if transport.is_closing():
                return
            if flow.head_bytes < 0:  # the head came in time; this is the body's
                remaining = flow.body_deadline - self.loop.time()
                if remaining > 0:
                    flow.head_timer = self.loop.call_later(remaining, self.head_timed_out)
                    return
                cycle = self.cycle
                self.logger.warning("Closed a connection whose request body did not come in %g s.", body_seconds)
                if cycle is not None and not cycle.response_started:
                    transport.write(_BODY_TIMED_OUT)
                transport.close()
                return
            if flow.head_bytes > 0:
                transport.write(_HEAD_TIMED_OUT)
            transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            flow = self.flow
            if flow is None:  # refused in connection_made (limits.connections): nothing of it was made
                return
            if flow.head_timer is not None:
                flow.head_timer.cancel()
                flow.head_timer = None
            cycle: Any = self.cycle
            if cycle is not None and cycle.on_lost is not None and not cycle.response_complete:
                cycle.on_lost()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # uvicorn's, telling a head refused by `on_headers_complete` from a request it cannot parse.
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)  # type: ignore[union-attr]  # made in __init__
            except httptools.HttpParserCallbackError as error:
                if isinstance(error.__context__, _HeadTooBig):
                    self.refuse_head()
                    return
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserError:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            # Counted after parsing: a chunk that completes the head (and carries the start of a body) is
            # not the head's; one that leaves it incomplete is. The head that completes is measured whole,
            # this read's part included, in `on_headers_complete`.
            flow = self.flow
            if flow.head_bytes >= 0:
                flow.head_bytes += len(data)
                if flow.head_bytes > max_head_bytes:
                    self.refuse_head()

        def refuse_head(self) -> None:
            if self.transport.is_closing():
                return
            self.logger.warning("Refused a request whose line and headers exceed %d bytes.", max_head_bytes)
            self.transport.write(_REFUSED_HEAD)
            self.transport.close()

        def on_message_begin(self) -> None:
            # uvicorn's, with the one `asgi` dict for every request instead of a new one each.
            version = self.asgi_version
            asgi = _ASGI_BY_VERSION.get(version)
            if asgi is None:
                asgi = _ASGI_BY_VERSION[version] = {"version": version, "spec_version": "2.3"}
            flow = self.flow
            flow.head_bytes = 0  # counted again from the next data: this request's head
            if flow.head_timer is None:  # a later request on the connection: its head has its own time
                flow.head_timer = self.loop.call_later(head_seconds, self.head_timed_out)
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.scope = {  # type: ignore[typeddict-item]
                "type": "http",
                "asgi": asgi,  # type: ignore[typeddict-item]
                "http_version": "1.1",
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,  # type: ignore[typeddict-item]
                "root_path": self.root_path,
                "headers": self.headers,
                "state": self.app_state.copy(),
            }

        def on_headers_complete(self) -> None:
            # uvicorn's, making a `LeanCycle` with a `_LeanEvent`, after measuring the head whole: the read
            # that completes it is not counted by `data_received`, so a head of up to the limit and one
            # more read (64 KiB) passed. Measured from its parts (request line, header lines as
            # `name: value`), not from the reads, which may carry a body or the next request.
            parser: Any = self.parser
            if _head_size(parser.get_method(), self.url, self.headers) > max_head_bytes:
                raise _HeadTooBig  # feed_data stops here; `data_received` answers 431
            http_version = parser.get_http_version()
            method = parser.get_method()
            self.scope["method"] = method.decode("ascii")
            if http_version != "1.1":
                self.scope["http_version"] = http_version
            flow = self.flow
            flow.head_bytes = -1  # the head is complete; the timer runs on for the body (on_message_complete)
            flow.body_deadline = self.loop.time() + body_seconds
            if parser.should_upgrade() and self._should_upgrade():
                return
            parsed_url = httptools.parse_url(self.url)
            raw_path = parsed_url.path
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            self.scope["path"] = self.root_path + path
            self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
            self.scope["query_string"] = parsed_url.query or b""
            app: Any
            if self.limit_concurrency is not None and (
                len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
            ):
                app = service_unavailable
                self.logger.warning("Exceeded concurrency limit.")
            else:
                app = self.app
            existing_cycle = self.cycle
            self.cycle = LeanCycle(
                scope=self.scope,
                transport=self.transport,
                flow=self.flow,  # type: ignore[arg-type]  # the same five operations
                logger=self.logger,
                access_logger=self.access_logger,
                access_log=self.access_log,
                default_headers=self.server_state.default_headers,
                message_event=_LeanEvent(),  # type: ignore[arg-type]
                expect_100_continue=self.expect_100_continue,
                keep_alive=http_version != "1.0" and parser.should_keep_alive(),
                on_response=self.on_response_complete,
            )
            if existing_cycle is None or existing_cycle.response_complete:
                self._start_asgi_task(self.cycle, app)  # the standard case
            else:
                self.flow.pause_reading()  # a pipelined request waits its turn
                self.pipeline.appendleft((self.cycle, app))

        def on_message_complete(self) -> None:
            flow = self.flow
            if flow.head_timer is not None:  # the request is whole: its head's and body's time is over
                flow.head_timer.cancel()
                flow.head_timer = None
            super().on_message_complete()

    return WriteCombiningHttpTools

"""A lean HTTP/1.1 client for the Streamable HTTP transport's POSTs to plain-http upstreams.

Why not aiohttp for these: every relayed tools/call is one POST, and aiohttp builds a ClientRequest, a
ClientResponse, a payload object, timers and a CIMultiDict per request; on a quiet machine that was a fifth
of the gateway's CPU per call. This client writes the request as one buffer over a pooled keep-alive
connection and parses the reply with httptools (the same C parser uvicorn uses), so a call costs a few
callbacks instead.

Scope, deliberately small: http:// only (https stays on aiohttp), POST only, one request at a time per
connection (no pipelining), content-length, chunked and read-until-close bodies, no redirects, no
compression (no Accept-Encoding is sent, so a conforming server never compresses). The response object
mirrors the bit of aiohttp's ClientResponse surface the transport uses (`status`, `headers.get`, `read()`,
`content.iter_any()`, `release()`, `close()`), and failures are raised as the same exceptions
`manifold.upstream.http.post` and the transport already map, so callers see identical errors.
Timeouts are the caller's (the session wraps every request in `asyncio.timeout`); only connecting has its
own limit, the upstream's `connect_timeout`, as with aiohttp's `sock_connect`.

A request is sent at most once. It is sent again (on another connection) only when it provably never left:
a kept-alive connection the server closed while idle is noticed before the first byte is written (the
kernel already holds its EOF, reset or stray bytes: one zero-timeout poll per reuse), or the very first
write failed outright. A connection that ends after the request was written ends the call with an
UpstreamError, never a resend: the server may have read the request and acted on it.

On by default; set `MANIFOLD_LEAN_HTTP=0` in the gateway's environment to send every POST through aiohttp
again (for A/B measurement, or to rule this client out when chasing an upstream problem).
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator
from typing import overload

import aiohttp
import httptools
from yarl import URL

from manifold.upstream.base import ErrorKind, UpstreamError, UpstreamSessionLost

# Stop reading from the socket while this much of a streamed body waits for the consumer.
READ_HIGH_WATER = 1024 * 1024
MAX_CONNECTIONS = 256
# A response's status line and headers at most (interim responses included): an upstream sending header after
# header would otherwise be buffered until call_timeout (about 500 MB a second). aiohttp bounds each line instead.
MAX_HEAD_BYTES = 1024 * 1024


class _Disconnected(Exception):
    """The connection ended after the request was written and before a response head arrived."""


class _HeadTooLarge(ValueError):
    """The response head passed MAX_HEAD_BYTES before it ended."""


class _NotSent(Exception):
    """Writing the request's first byte failed (the connection was already gone): nothing was sent."""


def input_waiting(sock_fd: int) -> bool:
    """Whether the kernel holds input for an idle connection's socket: its EOF, a reset, or bytes nobody
    asked for. Any of them means the connection must not carry another request. Zero timeout."""
    if not HAS_POLL:  # Windows: no poll(2); select's fd limit does not apply there
        readable, _, failed = select.select([sock_fd], [], [sock_fd], 0)
        return bool(readable or failed)
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN)
    return bool(poller.poll(0))


HAS_POLL = hasattr(select, "poll")


class LeanHeaders(dict[str, str]):
    """Response headers keyed by lower-cased name; `get` is case-insensitive like aiohttp's CIMultiDict.
    A repeated header keeps its first value, as CIMultiDict.get returns."""

    # Narrower than dict.get on purpose: names and defaults are always str.
    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        return dict.get(self, name.lower(), default)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries at most one request/response at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._poller: select.poll | None = None
        self.closed = False
        self.idle_since = 0.0
        self._active = False
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._head_bytes = 0
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self._error: BaseException | None = None
        self._interim = False
        self.status = 0
        self.headers = LeanHeaders()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and HAS_POLL:
            self._poller = select.poll()
            self._poller.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        if not self._active:
            self.close()  # bytes nobody asked for: the connection can't be trusted for another request
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ValueError(f"malformed HTTP response ({type(exc).__name__})"))
            self.close()
            return
        head = self._head
        if head is not None and not head.done():  # still in the head after these bytes
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(_HeadTooLarge())
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._active or self.complete:
            return
        if self._head is not None and not self._head.done():
            self._fail(_Disconnected())
        elif self._ends_at_close():
            self.complete = True
            self.keep_alive = False
            self._wake()
        else:
            self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))

    def pause_writing(self) -> None:  # request bodies are written whole; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim response (103 Early Hints, ...): the real one follows
            self._interim = True
            self.headers = LeanHeaders()
            return
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # ------------------------------------------------------------------ used by LeanResponse / the pool

    def gone_while_idle(self) -> bool:
        """Whether this idle kept-alive connection was closed (or written to) by the server: checked just
        before reuse, so a request is never written onto a connection the kernel already knows is dead."""
        if self.closed:
            return True
        if self._poller is not None:
            return bool(self._poller.poll(0))
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        return sock is None or input_waiting(sock.fileno())

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Send one request; the returned future resolves once the response head has been parsed.
        Raises _NotSent when the first write failed outright (the transport closed itself at once)."""
        assert self.transport is not None
        self._active = True
        self.complete = False
        self.keep_alive = False
        self._error = None
        self._interim = False
        self._chunks = []
        self._buffered = 0
        self._head_bytes = 0
        self.status = 0
        self.headers = LeanHeaders()
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        if self.transport.is_closing():
            # asyncio and uvloop both try the send at once on an idle connection; a failure there closes the
            # transport before any byte left (a partial send would leave the rest buffered, not closing).
            raise _NotSent
        return self._head

    async def next_chunk(self) -> bytes | None:
        """Body bytes received so far (waiting for some if none), or None once the body is complete."""
        while True:
            if self._chunks:
                chunk = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks = []
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self._error is None

    def finish(self) -> None:
        self._active = False
        self._head = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _ends_at_close(self) -> bool:
        """A response with neither length nor chunked framing runs until the server closes."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: a cancelled caller must not leave it "never retrieved"
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Content:
    def __init__(self, response: LeanResponse) -> None:
        self._response = response

    async def iter_any(self) -> AsyncIterator[bytes]:
        while (chunk := await self._response._connection.next_chunk()) is not None:
            yield chunk


class LeanResponse:
    """One response: the head is parsed, the body is read on demand. Release or close it exactly once."""

    def __init__(self, client: LeanHttpClient, connection: _Connection) -> None:
        self._client = client
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self.content = _Content(self)
        self._done = False

    @property
    def complete(self) -> bool:
        """The body has been received to its end (whether or not all of it was read)."""
        return self._connection.complete

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._connection.next_chunk()) is not None:
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Return the connection to the pool if the body was read to its end; otherwise drop it."""
        if not self._done:
            self._done = True
            self._client._give_back(self._connection)

    def close(self) -> None:
        """Drop the connection (how an in-flight 2026-07-28 request is cancelled)."""
        if not self._done:
            self._done = True
            self._connection.close()
            self._client._give_back(self._connection)

    async def __aenter__(self) -> LeanResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _add_lines(lines: dict[str, str], headers: dict[str, str]) -> None:
    """Each header as its request line, keyed by lower-cased name (a later name replaces an earlier one)."""
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("Newline or carriage return character detected in HTTP header")
        lines[name.lower()] = f"{name}: {value}\r\n"


class LeanHttpClient:
    """Keep-alive pool of connections to one http:// origin, POSTing to one URL."""

    def __init__(
        self, url: str, *, connect_timeout: float | None, keepalive_seconds: float, default_headers: dict[str, str]
    ) -> None:
        parsed = URL(url)
        if parsed.scheme != "http" or not parsed.host:
            raise ValueError(f"lean HTTP client needs an http:// URL, not {parsed.scheme!r}")
        self._host = parsed.raw_host or parsed.host
        self._port = parsed.port or 80
        self._target = parsed.raw_path_qs or "/"
        host_header = parsed.host_port_subcomponent or self._host
        self._head_start = f"POST {self._target} HTTP/1.1\r\nHost: {host_header}\r\n"
        self._default_headers = default_headers
        # The encoded header lines of the last `headers` dict seen (the transport's base headers: the same
        # dict object on every call until it rebuilds them), so a call encodes only its own few headers.
        self._block_for: dict[str, str] | None = None
        self._block: dict[str, str] = {}
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_seconds
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._open: set[_Connection] = set()
        self._closed = False

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith("http://")

    async def post(
        self, body: bytes, headers: dict[str, str], upstream_id: str, extra: dict[str, str] | None = None
    ) -> LeanResponse:
        """POST `body` with `headers` and then `extra` (later names win, case-insensitively). Pass the same
        `headers` dict on every call while it does not change (its encoding is kept) and this request's own
        headers in `extra`. Errors map as `manifold.upstream.http.post` maps aiohttp's: refused/unreachable (or
        twice unable to write a byte) means the session is lost, with the request never delivered; a
        connection that ended after the request was written is an UpstreamError, and the request is not sent
        again (the upstream may have read it)."""
        request = self._encode(body, headers, extra)
        await self._slots.acquire()
        try:
            for attempt in (1, 2):
                connection = await self._connection(upstream_id)
                try:
                    await connection.start(request)
                except _NotSent:
                    connection.finish()
                    self._open.discard(connection)
                    connection.close()
                    if attempt == 2:
                        raise UpstreamSessionLost(
                            upstream_id, "closed the connection before the request was sent"
                        ) from None
                    continue
                except _Disconnected:
                    connection.finish()
                    self._open.discard(connection)
                    raise UpstreamError(upstream_id, "closed the connection without answering") from None
                except _HeadTooLarge:
                    connection.finish()
                    self._open.discard(connection)
                    connection.close()
                    raise UpstreamError(
                        upstream_id,
                        f"sent a response head larger than {MAX_HEAD_BYTES // (1024 * 1024)} MB",
                        kind=ErrorKind.PROTOCOL,
                    ) from None
                except ValueError:
                    connection.finish()
                    self._open.discard(connection)
                    connection.close()
                    # httptools could not parse the head: said as aiohttp's path says it (upstream/http.py `post`)
                    unreadable = "sent a response head the gateway could not read (malformed, or too long)"
                    raise UpstreamError(upstream_id, unreadable, kind=ErrorKind.PROTOCOL) from None
                except BaseException:
                    connection.finish()
                    self._open.discard(connection)
                    connection.close()
                    raise
                return LeanResponse(self, connection)
        except BaseException:
            self._slots.release()
            raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    # ------------------------------------------------------------------ internals

    def _encode(self, body: bytes, headers: dict[str, str], extra: dict[str, str] | None = None) -> bytes:
        # Merged case-insensitively, later names winning, as aiohttp merges session and request headers.
        if headers is not self._block_for:
            block: dict[str, str] = {}
            _add_lines(block, self._default_headers)
            _add_lines(block, headers)
            self._block_for, self._block = headers, block
        if extra:
            merged = dict(self._block)
            _add_lines(merged, extra)
        else:
            merged = self._block.copy()
        if "host" in merged:
            head = f"POST {self._target} HTTP/1.1\r\n"
        else:
            head = self._head_start
        merged["content-length"] = f"Content-Length: {len(body)}\r\n\r\n"
        return (head + "".join(merged.values())).encode("latin-1") + body

    async def _connection(self, upstream_id: str) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self._keepalive and not connection.gone_while_idle():
                return connection
            self._open.discard(connection)
            connection.close()
        if self._closed:
            raise UpstreamSessionLost(upstream_id, "session was closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except TimeoutError:
            raise UpstreamError(upstream_id, "could not be reached (ConnectionTimeoutError)") from None
        except ConnectionRefusedError:
            raise UpstreamSessionLost(upstream_id, "refused the connection") from None
        except OSError as exc:
            raise UpstreamSessionLost(upstream_id, f"is unreachable ({type(exc).__name__})") from None
        self._open.add(connection)
        return connection

    def _give_back(self, connection: _Connection) -> None:
        self._slots.release()
        connection.finish()
        if connection.reusable() and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._open.discard(connection)
            connection.close()

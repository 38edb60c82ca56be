"""Streamable HTTP message transport (one keep-alive connection pool per upstream).

POSTs to an http:// upstream go through the lean client in `lean_http` (far less CPU per call than aiohttp;
`MANIFOLD_LEAN_HTTP=0` turns it off); https upstreams, the standalone GET stream and the closing DELETE use
aiohttp.

Each request is its own POST; its reply comes back as one JSON body or as an SSE stream that may carry
progress, logging and server→client requests before the result (all tagged with the request's id).
Only the upstream's configured static headers and the MCP protocol headers are sent: nothing of the
gateway's own caller ever reaches an upstream through here.

A POST is never sent twice by this layer, whichever client carries it: once a request may have been read
(the connection ended after it was written), the call fails with an UpstreamError naming the upstream.
Only what provably never left is retried or reported as a lost session (see lean_http.py and `post`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from manifold import jsoncodec
from manifold.config.models import UpstreamConfig
from manifold.protocol import METHOD_NOT_FOUND
from manifold.upstream.base import (
    JSON,
    STANDALONE,
    Deliver,
    ErrorKind,
    OnClosed,
    UpstreamError,
    UpstreamSessionLost,
)
from manifold.upstream.lean_http import LeanHttpClient, LeanResponse, input_waiting
from manifold.upstream.session import CLIENT_INFO

logger = logging.getLogger(__name__)

ACCEPT_BOTH = "application/json, text/event-stream"
# uvicorn drops idle keep-alive connections after 5 s; never reuse one that has idled longer than this.
KEEPALIVE_SECONDS = 3.5
MAX_SSE_EVENT_BYTES = 32 * 1024 * 1024
# A JSON response body at most (a reply, or the answer to a message the gateway sent): the same bound as one event
# of a stream and one line of a stdio upstream. Past it the call fails at once, naming the upstream, instead of the
# gateway buffering an endless or enormous body until call_timeout (a fast upstream sends ~250 MB a second).
MAX_RESPONSE_BYTES = MAX_SSE_EVENT_BYTES
GET_STREAM_MAX_FAILURES = 3
# A POST's event stream the upstream closed before the reply (SEP-1699 polling) is resumed with a GET carrying
# Last-Event-ID: at most this many times in a row without a new event, each after the upstream's `retry:`
# interval, capped.
RESUME_ATTEMPTS = 3
RESUME_WAIT_CAP_SECONDS = 5.0
# POSTs to http:// upstreams go through the lean client (see lean_http.py) unless MANIFOLD_LEAN_HTTP=0;
# https, the GET stream and DELETE always use aiohttp.
LEAN_HTTP_ENV = "MANIFOLD_LEAN_HTTP"
USER_AGENT = f"manifold/{CLIENT_INFO['version']}"


def lean_http_enabled() -> bool:
    return os.environ.get(LEAN_HTTP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class SseDecoder:
    """Incremental text/event-stream parser: feed bytes, get (event, data, id) tuples.

    Linear in what it is fed: a line split over many chunks is kept as its parts and joined once, and each
    chunk is scanned from where the last line ended (joining the buffer with every chunk and cutting it after
    every line was quadratic: a 10 MB result in 64 kB chunks copied ~800 MB)."""

    def __init__(self, max_event_bytes: int = MAX_SSE_EVENT_BYTES) -> None:
        self._partial: list[bytes] = []  # the parts of the line not yet ended by a newline
        self._partial_size = 0
        self._event = ""
        self._data: list[bytes] = []
        self._id: str | None = None
        self._size = 0
        self._max = max_event_bytes
        self.retry_ms: int | None = None  # the last `retry:` field: how long to wait before resuming

    def feed(self, chunk: bytes) -> Iterator[tuple[str, bytes, str | None]]:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                if start < len(chunk):
                    self._partial.append(chunk[start:])
                    self._partial_size += len(chunk) - start
                    if self._partial_size > self._max:
                        raise ValueError("SSE event too large")
                return
            line = chunk[start:newline]
            start = newline + 1
            if self._partial:
                self._partial.append(line)
                line = b"".join(self._partial)
                self._partial, self._partial_size = [], 0
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data or self._event:
                    yield self._event or "message", b"\n".join(self._data), self._id
                self._event, self._data, self._size = "", [], 0
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._size += len(value)
                if self._size > self._max:
                    raise ValueError("SSE event too large")
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry_ms = int(value)

    @property
    def last_event_id(self) -> str | None:
        return self._id


def parse_messages(raw: bytes) -> list[JSON]:
    decoded = jsoncodec.loads(raw)
    if isinstance(decoded, list):
        return [m for m in decoded if isinstance(m, dict)]
    return [decoded] if isinstance(decoded, dict) else []


async def read_body(
    response: aiohttp.ClientResponse | LeanResponse, upstream_id: str, limit: int = MAX_RESPONSE_BYTES
) -> bytes:
    """The whole body, in at most `limit` bytes of memory. A body announced larger fails before a byte is read;
    one without a length (chunked, or until the connection closes) fails as soon as it passes the limit."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        if int(length) <= limit:
            return await response.read()  # the parser stops at the announced length
        raise _too_large(upstream_id, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(upstream_id, limit)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(upstream_id: str, limit: int) -> UpstreamError:
    return UpstreamError(
        upstream_id, f"sent a response larger than {limit // (1024 * 1024)} MB", kind=ErrorKind.PROTOCOL
    )


class CheckedConnector(aiohttp.TCPConnector):
    """aiohttp's keep-alive pool hands out a connection whose transport is still open, which misses a close
    the event loop has not processed yet: the POST then goes out on a dead connection and fails after it
    may have been read, and must not be sent again. This also asks the kernel (one zero-timeout poll)
    before a pooled connection is reused, as the lean client does, so an idle close is noticed before any
    byte is written. `_get` is private to aiohttp (pinned in pyproject.toml); the idle-close test in
    tests/integration/test_no_double_delivery.py fails if it stops being called."""

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        while (connection := await super()._get(key, traces)) is not None:
            transport = connection.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and not input_waiting(sock.fileno()):
                return connection
            connection.close()
        return None


def new_client_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """One per upstream: its connector is the keep-alive pool. No cookie jar (nothing carried between
    requests except what the protocol says), no redirects followed (see callers)."""
    return aiohttp.ClientSession(
        connector=CheckedConnector(limit=256, keepalive_timeout=KEEPALIVE_SECONDS),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )


def connect_error(upstream_id: str, exc: aiohttp.ClientConnectorError) -> UpstreamError:
    if isinstance(exc.os_error, ConnectionRefusedError):
        return UpstreamSessionLost(upstream_id, "refused the connection")
    return UpstreamSessionLost(upstream_id, f"is unreachable ({type(exc.os_error).__name__})")


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], upstream_id: str
) -> aiohttp.ClientResponse:
    """POST one message, with the error mapping every HTTP transport shares: refused/unreachable means the
    session is lost (never delivered, so the pool may reconnect and send it); anything that fails once a
    connection was handed the request is an UpstreamError and is not sent again (it may have been read).
    aiohttp itself resends only idempotent methods, never a POST."""
    try:
        return await http.post(url, data=body, headers=headers, allow_redirects=False)
    except aiohttp.ClientConnectorError as exc:
        raise connect_error(upstream_id, exc) from None
    except aiohttp.ServerDisconnectedError:
        raise UpstreamError(upstream_id, "closed the connection without answering") from None
    except aiohttp.ClientResponseError:
        # aiohttp's own words quote the bytes it choked on: never shown (an upstream's headers may hold secrets).
        unreadable = "sent a response head the gateway could not read (malformed, or too long)"
        raise UpstreamError(upstream_id, unreadable, kind=ErrorKind.PROTOCOL) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(upstream_id, f"could not be reached ({type(exc).__name__})") from None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(no standard name)"


STREAM_END_SECONDS = 5.0  # how long a response stream whose reply came may take to end before it is dropped
# At most this many such streams are read to their end at once per upstream; past it one is dropped at its reply.
# Each holds its connection and one of the lean client's slots (lean_http.MAX_CONNECTIONS) while it is read: an
# upstream that keeps its streams open after the reply held a slot per call for STREAM_END_SECONDS, and once
# all 256 were held every call waited for one (400 calls in a row: 5.2 s, one of them 4.9 s; 0.14 s before).
MAX_ENDING_STREAMS = 16


async def _read_to_end(response: LeanResponse) -> bool:
    """Read a response stream whose reply was delivered to its end (what else it carries has no call waiting for
    it: dropped, as closing the connection dropped it), then give its connection back for the next request; one
    that does not end within STREAM_END_SECONDS, or fails, is closed. False: it did not end in time."""
    try:
        async with asyncio.timeout(STREAM_END_SECONDS):
            async for _ in response.content.iter_any():
                pass
    except asyncio.CancelledError:  # the transport is closing
        response.close()
        raise
    except TimeoutError:
        response.close()
        return False
    except Exception:  # noqa: BLE001 — it broke: the connection is not reused
        response.close()
        return True
    response.release()
    return True


class StreamableHttpTransport:
    kind = "http"

    def __init__(self, upstream_id: str, config: UpstreamConfig) -> None:
        assert config.url
        self.upstream_id = upstream_id
        self._config = config
        self._url = config.url
        self._http: aiohttp.ClientSession | None = None
        self._lean: LeanHttpClient | None = None
        self._session_id: str | None = None
        self._version: str | None = None
        self._on_closed: OnClosed | None = None
        self._closed = False
        self._base_headers: dict[str, str] = {}
        self._rebuild_headers()
        self._ending: set[asyncio.Task[None]] = set()  # response streams read to their end after the reply (`request`)
        # The upstream left a stream open STREAM_END_SECONDS after its reply: it keeps them open, and its streams are
        # dropped at the reply from then on (as before they were read to their end), not each held that long.
        self._streams_linger = False

    def _rebuild_headers(self) -> None:
        # A new dict each time, never changed in place: the lean client caches the encoding of this object.
        headers = {**self._config.headers, "Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        if self._session_id:
            headers["Mcp-Session-Id"] = self._session_id
        if self._version:
            headers["MCP-Protocol-Version"] = self._version
        self._base_headers = headers

    # ------------------------------------------------------------------ MessageTransport

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        self._deliver = deliver
        self._on_closed = on_closed
        self._http = new_client_session(self._config)
        if lean_http_enabled() and LeanHttpClient.supports(self._url):
            self._lean = LeanHttpClient(
                self._url,
                connect_timeout=self._config.connect_timeout,
                keepalive_seconds=KEEPALIVE_SECONDS,
                default_headers={"User-Agent": USER_AGENT},
            )

    def set_negotiated(self, protocol_version: str) -> None:
        self._version = protocol_version
        self._rebuild_headers()

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        response = await self._post(body, headers)
        finished = handed_off = False
        try:
            if response.status >= 300 or response.status == 202:
                await self._reply_from_status(response, request_id)
            else:
                if self._session_id is None and (session_id := response.headers.get("Mcp-Session-Id")):
                    self._session_id = session_id
                    self._rebuild_headers()
                content_type = response.headers.get("Content-Type", "")
                if content_type.startswith("text/event-stream"):
                    await self._read_event_stream(response, request_id)
                    if (
                        isinstance(response, LeanResponse)
                        and not response.complete
                        and not self._streams_linger
                        and len(self._ending) < MAX_ENDING_STREAMS
                    ):
                        # The reply came; the upstream ends the stream right after it (the spec's SHOULD), most
                        # often a moment later. That end is read in the background so the connection carries the
                        # next request: dropped here, every call to an upstream that answers with SSE (FastMCP to
                        # 2025-11-25 sessions) opened a new connection (~0.1 ms of the gateway's CPU, and the
                        # upstream's accept).
                        task = asyncio.ensure_future(self._read_to_end(response))
                        self._ending.add(task)
                        task.add_done_callback(self._ending.discard)
                        handed_off = True
                else:
                    await self._read_json(response, request_id)
            finished = True
        except aiohttp.ClientPayloadError:
            raise UpstreamError(self.upstream_id, "dropped the response stream", kind=ErrorKind.UNAVAILABLE) from None
        except (aiohttp.ClientConnectionError, ValueError) as exc:
            raise UpstreamError(self.upstream_id, f"sent a broken response ({type(exc).__name__})") from None
        finally:
            if handed_off:
                pass  # `_read_to_end` releases or closes it
            elif finished:
                response.release()
            else:
                # Closing the connection is how a 2026-07-28 request is cancelled.
                response.close()

    async def _read_to_end(self, response: LeanResponse) -> None:
        if not await _read_to_end(response) and not self._streams_linger:
            self._streams_linger = True
            logger.info(
                "upstream %s keeps its response streams open after the reply: they are closed at the reply",
                self.upstream_id,
            )

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            # Nobody awaits most of these (replies to the upstream's requests): bounded in time as a call is.
            async with asyncio.timeout(self._config.call_timeout):
                await self._acknowledged(body, headers)
        except TimeoutError:
            raise UpstreamError(
                self.upstream_id,
                f"did not acknowledge a message within {self._config.call_timeout:g}s",
                kind=ErrorKind.TIMEOUT,
            ) from None

    async def _acknowledged(self, body: bytes, headers: dict[str, str]) -> None:
        response = await self._post(body, headers)
        read = False
        try:
            await read_body(response, self.upstream_id)
            read = True
            if response.status == 404 and self._session_id:
                raise UpstreamSessionLost(self.upstream_id, "no longer knows the gateway's session")
            if response.status >= 400:
                raise UpstreamError(self.upstream_id, f"rejected a message with HTTP {response.status}")
        finally:
            if read:
                response.release()
            else:
                response.close()  # a body not read to its end: the connection cannot carry another request

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        """The handshake era's standalone GET stream (list_changed and other unrelated messages)."""
        failures = 0
        try:
            while not self._closed and self._session_id and failures < GET_STREAM_MAX_FAILURES:
                try:
                    assert self._http is not None
                    headers = {**self._base_headers, "Accept": "text/event-stream"}
                    headers.pop("Content-Type", None)
                    async with self._http.get(self._url, headers=headers, allow_redirects=False) as response:
                        if response.status == 404:
                            self._lost("no longer knows the gateway's session")
                            return
                        if response.status != 200:  # 405: the server offers no standalone stream
                            return
                        ready.set()
                        decoder = SseDecoder()
                        async for chunk in response.content.iter_any():
                            for event, data, _ in decoder.feed(chunk):
                                if event == "message" and data:
                                    for message in parse_messages(data):
                                        await deliver(message, STANDALONE)
                    failures = 0
                except (aiohttp.ClientError, ValueError) as exc:
                    failures += 1
                    logger.debug("upstream %s: GET stream failed (%s)", self.upstream_id, type(exc).__name__)
                await asyncio.sleep(1.0)
        finally:
            ready.set()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._ending):
            task.cancel()
        http, self._http = self._http, None
        lean, self._lean = self._lean, None
        if lean is not None:
            await lean.aclose()
        if http is None:
            return
        if self._session_id:
            try:
                async with asyncio.timeout(1.0):
                    headers = dict(self._base_headers)
                    headers.pop("Content-Type", None)
                    async with http.delete(self._url, headers=headers, allow_redirects=False):
                        pass
            except (TimeoutError, aiohttp.ClientError):
                pass
        await http.close()

    # ------------------------------------------------------------------ internals

    def _lost(self, reason: str) -> None:
        if self._on_closed is not None:
            self._on_closed(UpstreamSessionLost(self.upstream_id, reason))

    async def _post(self, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse | LeanResponse:
        if self._http is None:
            raise UpstreamSessionLost(self.upstream_id, "session was closed")
        if self._lean is not None:
            # The base headers go as the same dict until rebuilt (never mutated): the lean client keeps their encoding.
            return await self._lean.post(body, self._base_headers, self.upstream_id, headers)
        all_headers = {**self._base_headers, **headers} if headers else self._base_headers
        return await post(self._http, self._url, body, all_headers, self.upstream_id)

    async def _reply_from_status(self, response: aiohttp.ClientResponse | LeanResponse, request_id: int) -> None:
        status = response.status
        if status == 404 and self._session_id:
            raise UpstreamSessionLost(self.upstream_id, "no longer knows the gateway's session")
        if status in (401, 403):
            raise UpstreamError(
                self.upstream_id, f"refused the gateway's credentials (HTTP {status})", kind=ErrorKind.AUTH
            )
        if 300 <= status < 400:
            raise UpstreamError(self.upstream_id, f"redirected the request (HTTP {status}); redirects are not followed")
        if status >= 500:
            raise UpstreamError(self.upstream_id, f"failed with HTTP {status}")
        # A 4xx may carry the JSON-RPC error itself (400 invalid params, 404 unknown method, ...).
        error: Any = None
        if response.headers.get("Content-Type", "").startswith("application/json"):
            try:
                for message in parse_messages(await read_body(response, self.upstream_id)):
                    error = message.get("error")
            except (ValueError, aiohttp.ClientError):
                error = None
        if not isinstance(error, dict):
            if status != 404:
                # Not a JSON-RPC answer: the upstream refused the HTTP request itself (413 a body too large for
                # it, 415, 429 ...). Said as its failure, naming it; it was a bare "-32600 HTTP 413" (resilience
                # review), an Invalid Request code that blamed the client and named nobody.
                # PROTOCOL: it answered, just not in MCP; a 2025-11-25 server answering `server/discover` so (a
                # plain-text 400 "Missing session ID") is then tried with `initialize` (review).
                raise UpstreamError(
                    self.upstream_id, f"refused the request (HTTP {status} {_phrase(status)})", kind=ErrorKind.PROTOCOL
                )
            error = {"code": METHOD_NOT_FOUND, "message": "HTTP 404"}
        await self._deliver({"jsonrpc": "2.0", "id": request_id, "error": error}, request_id)

    async def _read_json(self, response: aiohttp.ClientResponse | LeanResponse, request_id: int) -> None:
        for message in parse_messages(await read_body(response, self.upstream_id)):
            if "method" not in message and message.get("id") is None:
                message["id"] = request_id  # an error for a request the server could not parse
            await self._deliver(message, request_id)

    async def _read_event_stream(self, response: aiohttp.ClientResponse | LeanResponse, request_id: int) -> None:
        decoder = SseDecoder()
        if await self._events_until_reply(response, request_id, decoder):
            return
        # Closed before the reply. An upstream that gave its events ids may have closed on purpose (SEP-1699
        # polling): resume with GET + Last-Event-ID; the rest, server→client requests included, follows there.
        failures = 0
        while (last := decoder.last_event_id) is not None and failures < RESUME_ATTEMPTS and self._http is not None:
            wait = (decoder.retry_ms or 0) / 1000
            if wait:
                await asyncio.sleep(min(wait, RESUME_WAIT_CAP_SECONDS))
            headers = {**self._base_headers, "Accept": "text/event-stream", "Last-Event-ID": last}
            headers.pop("Content-Type", None)
            try:
                async with self._http.get(self._url, headers=headers, allow_redirects=False) as resumed:
                    if resumed.status != 200 or not resumed.headers.get("Content-Type", "").startswith(
                        "text/event-stream"
                    ):
                        break
                    if await self._events_until_reply(resumed, request_id, decoder):
                        return
            except aiohttp.ClientError as exc:
                logger.debug(
                    "upstream %s: resuming a response stream failed (%s)", self.upstream_id, type(exc).__name__
                )
            failures = failures + 1 if decoder.last_event_id == last else 0
        raise UpstreamError(self.upstream_id, "ended the response stream without a reply", kind=ErrorKind.PROTOCOL)

    async def _events_until_reply(
        self, response: aiohttp.ClientResponse | LeanResponse, request_id: int, decoder: SseDecoder
    ) -> bool:
        """Deliver a stream's messages; True once the reply to `request_id` was among them."""
        async for chunk in response.content.iter_any():
            for event, data, _ in decoder.feed(chunk):
                if event != "message" or not data:
                    continue  # priming events carry only an id
                for message in parse_messages(data):
                    await self._deliver(message, request_id)
                    if "method" not in message and message.get("id") == request_id:
                        return True
        return False

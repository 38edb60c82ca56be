"""The deprecated HTTP+SSE transport (protocol 2024-11-05).

GET the SSE URL; the first `endpoint` event names where to POST messages; every reply, notification and
server→client request then arrives on that one GET stream (so replies carry no relation to a POST).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin, urlsplit

import aiohttp

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import Deliver, ErrorKind, OnClosed, UpstreamError, UpstreamSessionLost
from manifold.upstream.http import (
    SseDecoder,
    connect_error,
    new_client_session,
    parse_messages,
    post,
    read_body,
)

logger = logging.getLogger(__name__)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class LegacySseTransport:
    kind = "sse"

    def __init__(self, upstream_id: str, config: UpstreamConfig) -> None:
        assert config.url
        self.upstream_id = upstream_id
        self._config = config
        self._http: aiohttp.ClientSession | None = None
        self._endpoint: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._headers = {**config.headers, "Content-Type": "application/json"}
        self._closed = False

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        self._http = new_client_session(self._config)
        endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_stream(deliver, on_closed, endpoint))
        self._endpoint = await endpoint

    def set_negotiated(self, protocol_version: str) -> None:
        pass

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        await self.send(body, headers)

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            # Nobody awaits most of these (replies to the upstream's requests): bounded in time as a call is.
            async with asyncio.timeout(self._config.call_timeout):
                await self._send(body)
        except TimeoutError:
            raise UpstreamError(
                self.upstream_id,
                f"did not acknowledge a message within {self._config.call_timeout:g}s",
                kind=ErrorKind.TIMEOUT,
            ) from None

    async def _send(self, body: bytes) -> None:
        if self._http is None or self._endpoint is None or self._closed:
            raise UpstreamSessionLost(self.upstream_id, "event stream is closed")
        response = await post(self._http, self._endpoint, body, self._headers, self.upstream_id)
        async with response:
            await read_body(response, self.upstream_id)  # an endless acknowledgement fails, at a bound
            if response.status == 404:
                raise UpstreamSessionLost(self.upstream_id, "no longer knows the gateway's session")
            if response.status >= 400:
                raise UpstreamError(self.upstream_id, f"rejected a message with HTTP {response.status}")

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        ready.set()  # unrelated notifications arrive on the one event stream

    async def aclose(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._http is not None:
            await self._http.close()

    async def _read_stream(self, deliver: Deliver, on_closed: OnClosed, endpoint: asyncio.Future[str]) -> None:
        reason = "closed the event stream"
        try:
            assert self._http is not None
            headers = {**self._config.headers, "Accept": "text/event-stream"}
            async with self._http.get(self._config.url, headers=headers, allow_redirects=False) as response:  # type: ignore[arg-type]
                if response.status != 200:
                    raise UpstreamError(self.upstream_id, f"refused the event stream (HTTP {response.status})")
                decoder = SseDecoder()
                async for chunk in response.content.iter_any():
                    for event, data, _ in decoder.feed(chunk):
                        if event == "endpoint" and not endpoint.done():
                            url = urljoin(self._config.url, data.decode("utf-8", "replace").strip())  # type: ignore[type-var]
                            if _origin(url) != _origin(self._config.url):  # type: ignore[arg-type]
                                raise UpstreamError(self.upstream_id, "named a message endpoint on another origin")
                            endpoint.set_result(url)
                        elif event == "message" and data:
                            for message in parse_messages(data):
                                await deliver(message, None)
        except aiohttp.ClientConnectorError as exc:
            error = connect_error(self.upstream_id, exc)
            reason = error.reason
            if not endpoint.done():
                endpoint.set_exception(error)
        except UpstreamError as exc:
            reason = exc.reason
            if not endpoint.done():
                endpoint.set_exception(exc)
        except (aiohttp.ClientError, ValueError) as exc:
            reason = f"broke the event stream ({type(exc).__name__})"
        finally:
            if not endpoint.done():
                endpoint.set_exception(UpstreamError(self.upstream_id, reason))
            if not self._closed:
                on_closed(UpstreamError(self.upstream_id, reason, kind=ErrorKind.CLOSED))

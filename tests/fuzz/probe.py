"""Sending one request to the gateway under attack, and the properties every answer must hold: no 5xx, no
traceback in the body or in the gateway's log, the gateway still up (healthz answers) and its resident memory
within RSS_GROWTH_LIMIT of what it was when the probe opened. Every request is counted (report.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from tests.e2e.harness import Gateway
from tests.fuzz import report

RSS_GROWTH_LIMIT = 256 * 1024 * 1024
ANSWER_TIMEOUT_S = 10.0
# What a traceback or an unhandled error leaves in the log, and in a body.
TRACEBACK_SIGNS = ("Traceback (most recent call last)", "Task exception was never retrieved", "Exception in ASGI")
BODY_TRACEBACK = re.compile(r'Traceback|File "[^"]+", line \d+')


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        """The body as JSON (integers of any size kept exact), or None."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Probe:
    """Sends one request to the gateway and checks what every answer must hold."""

    gw: Gateway
    http: aiohttp.ClientSession
    rss_start: int
    log_offset: int = 0

    @classmethod
    def open(cls, gw: Gateway) -> _ProbeContext:
        return _ProbeContext(gw)

    async def send(
        self,
        target: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str | None] | None = None,
        data: bytes | None = None,
        stream: bool = False,
        with_key: bool = True,
    ) -> Reply:
        """`method path` with exactly these headers (a None value leaves the header out; `with_key` adds the
        dev key unless `headers` has an Authorization of its own). `stream`: the answer may be an endless
        event stream, so only its start is read. Fails the example when any property does not hold."""
        sent: dict[str, str] = {}
        if with_key:
            sent["Authorization"] = f"Bearer {self.gw.key}"
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        skip = {"Accept", "Content-Type", "User-Agent", "Accept-Encoding"} - {name.title() for name in sent}
        request = f"{method} {path} headers={_short(sent)} body={_short(data)}"
        reply: Reply | None = None
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                async with self.http.request(
                    method,
                    URL(self.gw.base + path, encoded=True),
                    headers=sent,
                    data=data,
                    skip_auto_headers=skip,
                    allow_redirects=False,
                ) as response:
                    if stream and response.content_type == "text/event-stream":
                        body = await _stream_start(response)
                    else:
                        body = await response.read()
                    reply = Reply(response.status, response.headers, body)
        except aiohttp.ClientResponseError as exc:
            # An answer the client could not parse whole, e.g. the server's own 400 for a request line too long,
            # sent with a body even to a HEAD: the status is still the answer.
            reply = Reply(exc.status, exc.headers or {}, str(exc.message).encode())
        except (aiohttp.ClientError, TimeoutError) as exc:
            report.record(target, None)
            await self.check_gateway(request)
            raise AssertionError(f"no answer to {request}: {type(exc).__name__}: {exc}") from None
        report.record(target, reply.status)
        self.check_reply(request, reply)
        await self.check_gateway(request)
        return reply

    def check_reply(self, request: str, reply: Reply) -> None:
        """No 5xx and no traceback in the body (the log written meanwhile is shown with either)."""
        found = BODY_TRACEBACK.search(reply.text)
        if reply.status < 500 and found is None:
            return
        log = self.new_log()
        problem = f"{reply.status} for" if reply.status >= 500 else "a traceback in the body of"
        raise AssertionError(f"{problem} {request}:\n{reply.text[:2000]}\n--- gateway log meanwhile ---\n{log[-4000:]}")

    async def check_gateway(self, request: str) -> None:
        """The gateway is still up, wrote no traceback since the last check, and its memory is bounded."""
        assert self.gw.process.poll() is None, f"the gateway exited after {request}:\n{self.gw.log()[-4000:]}"
        self.check_log(request)
        async with self.http.get(self.gw.base + "/healthz") as health:
            assert health.status == 200, f"healthz answered {health.status} after {request}"
        rss = rss_bytes(self.gw.process.pid)
        assert rss - self.rss_start < RSS_GROWTH_LIMIT, (
            f"gateway RSS grew from {self.rss_start >> 20} MiB to {rss >> 20} MiB after {request}"
        )

    def new_log(self) -> str:
        """What the gateway logged since the last look."""
        with open(self.gw.log_path, "rb") as log:
            log.seek(self.log_offset)
            new = log.read().decode(errors="replace")
            self.log_offset = log.tell()
        return new

    def check_log(self, request: str) -> None:
        new = self.new_log()
        for sign in TRACEBACK_SIGNS:
            if sign in new:
                start = max(new.find(sign) - 200, 0)
                raise AssertionError(f"the gateway logged {sign!r} after {request}:\n{new[start : start + 4000]}")


class _ProbeContext:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Probe:
        # No cookie jar: a test sends exactly the cookies it means to. No connection limit to wait on.
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=0, force_close=False)
        )
        probe = Probe(self.gw, self.http, rss_bytes(self.gw.process.pid))
        probe.check_log("start-up")  # the log so far: a traceback while starting fails the first test
        return probe

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()


async def _stream_start(response: aiohttp.ClientResponse) -> bytes:
    """The first bytes of an event stream (the gateway writes a comment or an event at once)."""
    try:
        async with asyncio.timeout(2.0):
            return await response.content.readany()
    finally:
        response.close()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"

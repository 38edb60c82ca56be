"""Fuzzing the legacy HTTP+SSE transport: GET `/sse/{server}` opens the stream, fuzzed messages are POSTed
to the endpoint it names. Beyond the properties of `Probe.send`: a request the gateway accepted (202) is
answered on the stream, and a result carries the id it was asked with."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import report
from tests.fuzz import strategies as fs
from tests.fuzz.mcp import initialize_body, sent_message
from tests.fuzz.probe import ANSWER_TIMEOUT_S, Probe, Reply

pytestmark = pytest.mark.anyio

TARGET = "sse"


class Stream:
    """One open legacy SSE stream: its messages endpoint, and the JSON-RPC messages read from it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.endpoint = ""

    async def event(self) -> tuple[str, str]:
        """The next event: (event name, data); comments are skipped."""
        name, data = "message", []
        while True:
            line = (await self.response.content.readline()).decode(errors="replace")
            if not line:
                raise AssertionError("the gateway ended the SSE stream")
            line = line.rstrip("\r\n")
            if not line:
                if data:
                    return name, "\n".join(data)
                name = "message"
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    async def answer(self) -> Any:
        """The next response (a message with `result` or `error`) on the stream, skipping notifications."""
        while True:
            _, data = await self.event()
            try:
                message = json.loads(data)
            except ValueError:
                raise AssertionError(f"an event that is not JSON on the stream: {data[:500]!r}") from None
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return message


@asynccontextmanager
async def open_stream(probe: Probe, server: str) -> AsyncIterator[Stream]:
    request = f"GET /sse/{server}"
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            response = await probe.http.get(
                probe.gw.base + f"/sse/{server}",
                headers={"Authorization": f"Bearer {probe.gw.key}", "Accept": "text/event-stream"},
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.record(TARGET, None)
        raise AssertionError(f"no answer to {request}: {exc!r}") from None
    report.record(TARGET, response.status)
    try:
        if response.status != 200:
            probe.check_reply(request, Reply(response.status, response.headers, await response.read()))
            raise AssertionError(f"{request}: {response.status}")
        stream = Stream(response)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            name, data = await stream.event()
        assert name == "endpoint", (name, data)
        stream.endpoint = data
        yield stream
    finally:
        response.close()


async def legacy_message(probe: Probe, server: str, body: bytes, content_type: str | None, initialize: bool) -> None:
    async with open_stream(probe, server) as stream:
        if initialize:
            reply = await probe.send(
                TARGET, "POST", stream.endpoint, headers={"Content-Type": "application/json"}, data=initialize_body()
            )
            assert reply.status == 202, reply.text
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await stream.answer()
        reply = await probe.send(TARGET, "POST", stream.endpoint, headers={"Content-Type": content_type}, data=body)
        message = sent_message(body)
        if reply.status != 202 or not isinstance(message, dict) or "id" not in message:
            return
        if not isinstance(message.get("method"), str):
            return  # a reply to a server→client request, or not a request at all
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                answer = await stream.answer()
        except TimeoutError:
            await probe.check_gateway(f"POST {stream.endpoint} {body[:300]!r}")
            raise AssertionError(
                f"request accepted (202) but never answered on the stream within {ANSWER_TIMEOUT_S:g}s: {body[:300]!r}"
            ) from None
        await probe.check_gateway(f"POST {stream.endpoint} {body[:300]!r}")
        if "result" in answer and type(message["id"]) in (int, str):
            assert type(answer.get("id")) is type(message["id"]) and answer.get("id") == message["id"], (
                f"request id {message['id']!r:.200} answered as {answer.get('id')!r:.200}"
            )


@given(
    server=st.sampled_from(fs.SERVERS),
    body=fs.bodies(),
    content_type=fs.mostly("application/json", fs.CONTENT_TYPES),
    initialize=st.booleans(),
)
async def test_legacy_sse_messages(
    probe: Probe, server: str, body: bytes, content_type: str | None, initialize: bool
) -> None:
    await legacy_message(probe, server, body, content_type, initialize)


# The cases issue 9 names: `initialize` with params that are not an object, an id that is an array.
ISSUE_CASES = [
    (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":[1]}', False),
    (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', True),
    (b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":[1]}}', True),
    (b'{"jsonrpc":"2.0","id":18446744073709551617,"method":"ping"}', True),
]


@given(case=st.sampled_from(ISSUE_CASES))
async def test_legacy_sse_issue_cases(probe: Probe, case: tuple[bytes, bool]) -> None:
    body, initialize = case
    await legacy_message(probe, "kitchen", body, "application/json", initialize)


@given(
    server=st.sampled_from(fs.SERVERS),
    session_id=st.one_of(fs.HEADER_TEXT, st.sampled_from(["", "%00", "../x", "a" * 5000])),
    body=fs.bodies(),
    query=st.sampled_from(
        [
            "session_id={sid}",
            "session_id={sid}",
            "session_id=",
            "session_id={sid}&session_id=x",
            "x=1",
            "",
            "s%00={sid}",
        ]
    ),
)
async def test_legacy_sse_endpoint_guesses(probe: Probe, server: str, session_id: str, body: bytes, query: str) -> None:
    """POSTs to the messages endpoint with made-up or mangled session ids: refused, never a 5xx."""
    target_query = query.format(sid=quote(session_id, safe=""))
    headers = {"Content-Type": "application/json"}
    await probe.send(TARGET, "POST", f"/sse/{server}/messages?{target_query}", headers=headers, data=body)

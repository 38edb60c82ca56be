"""Whatever a client sends, the gateway answers with a 4xx and a JSON-RPC error that says what is wrong, never a
500 or silence (issue 9, defects 1 and 9): ids that cannot be matched back, requests nested too deep, params
that are not an object, unknown protocol versions, a wrong Content-Type; both eras on `/mcp/{server}` and the
legacy `/sse/{server}`. And an upstream that answers with an id the gateway never sent is named in the error.
A real gateway process and real upstream processes; raw HTTP, so the assertions are about the wire."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import within

pytestmark = pytest.mark.anyio

WRONG_IDS = str(Path(__file__).resolve().parents[1] / "upstreams" / "wrong_ids.py")
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ID_LENGTH = 40
JSON_DEPTH = 32
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
}
# Ids the gateway cannot match back reliably: refused as invalid requests, with id null.
BAD_IDS: list[Any] = [[1], {"a": 1}, True, None, 1.5, 2**64, 2**53 + 1, -(2**53) - 1, "x" * (ID_LENGTH + 1)]
GOOD_IDS: list[Any] = [2**53, -(2**53), 0, "x" * ID_LENGTH, ""]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


HEAD_SECONDS = 1.5  # limits.request_head_seconds of this module's gateway
BODY_SECONDS = 1.5  # limits.request_body_seconds


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN) as up, run_http_upstream(WRONG_IDS) as bad:
        async with run_gateway(
            {"up": {"transport": "http", "url": up}, "bad": {"transport": "http", "url": bad}},
            gateway={
                "limits": {
                    "id_length": ID_LENGTH,
                    "json_depth": JSON_DEPTH,
                    "request_head_seconds": HEAD_SECONDS,
                    "request_body_seconds": BODY_SECONDS,
                }
            },
        ) as gateway:
            yield gateway
            log = gateway.log()
            assert "Traceback" not in log, log[-4000:]
            assert "Task exception was never retrieved" not in log, log[-4000:]


@dataclass(frozen=True)
class Nested:
    """Objects nested `depth` deep, written into the body as text (no JSON encoder recurses that far)."""

    depth: int

    def text(self) -> str:
        return '{"a":' * self.depth + '"bottom"' + "}" * self.depth


def nested(depth: int) -> Any:
    return Nested(depth)


def encode(message: Any) -> bytes:
    """The body of `message`, with any `Nested` value written out in place."""
    parts: list[str] = []

    def placeholder(value: Any) -> str:
        if not isinstance(value, Nested):
            raise TypeError(type(value))
        parts.append(value.text())
        return f"@@nested{len(parts) - 1}@@"

    text = json.dumps(message, default=placeholder)
    for index, part in enumerate(parts):
        text = text.replace(f'"@@nested{index}@@"', part)
    return text.encode()


def echo(request_id: Any, arguments: Any, *, modern: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "echo", "arguments": arguments}
    if modern:
        params["_meta"] = ENVELOPE
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def assert_refused(response: httpx2.Response, code: int, *, status: int = 400, request_id: Any = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["id"] == request_id, body
    assert "Traceback" not in response.text
    return body["error"]


class Handshake:
    """A raw 2025-11-25 session on /mcp/up."""

    def __init__(self, gw: Gateway, http: httpx2.AsyncClient, sid: str) -> None:
        self.gw, self.http, self.sid = gw, http, sid

    async def post(self, message: Any, **headers: str) -> httpx2.Response:
        sent = {**ACCEPT, "MCP-Protocol-Version": HANDSHAKE, "Mcp-Session-Id": self.sid, **headers}
        sent = {k: v for k, v in sent.items() if v != ""}
        return await self.http.post(self.gw.url("up"), content=encode(message), headers=sent)


@asynccontextmanager
async def handshake(gw: Gateway) -> AsyncIterator[Handshake]:
    async with gw.http() as http:
        r = await http.post(gw.url("up"), json=INIT, headers=ACCEPT)
        assert r.status_code == 200
        yield Handshake(gw, http, r.headers["mcp-session-id"])


async def modern_post(gw: Gateway, message: Any, version: str = MODERN, **headers: str) -> httpx2.Response:
    method = message.get("method", "") if isinstance(message, dict) else ""
    sent = {**ACCEPT, "MCP-Protocol-Version": version, "Mcp-Method": method, **headers}
    params = message.get("params") if isinstance(message, dict) else None
    if method == "tools/call" and isinstance(params, dict):
        sent["Mcp-Name"] = params.get("name", "")
    async with gw.http() as http:
        return await http.post(gw.url("up"), content=encode(message), headers=sent)


@dataclass
class Legacy:
    """A raw /sse/up connection: POSTs to its endpoint, reads answers off its stream."""

    http: httpx2.AsyncClient
    endpoint: str
    lines: AsyncIterator[str]

    async def post(self, message: Any) -> httpx2.Response:
        return await self.http.post(self.endpoint, content=encode(message), headers=ACCEPT)

    async def answer(self) -> dict[str, Any]:
        async def next_data() -> str:
            while not (line := await anext(self.lines)).startswith("data: "):
                pass
            return line

        line = await within(next_data(), 10, what="an answer on the SSE stream")
        return json.loads(line.removeprefix("data: "))


@asynccontextmanager
async def legacy(gw: Gateway) -> AsyncIterator[Legacy]:
    async with gw.http() as http, http.stream("GET", gw.sse_url("up")) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()  # read with anext: a dropped iterator would hang up the stream
        while not (line := await anext(lines)).startswith("data: "):
            pass
        connection = Legacy(http, gw.base + line.removeprefix("data: "), lines)
        assert (await connection.post(INIT)).status_code == 202
        assert (await connection.answer())["id"] == 1
        yield connection


# ---- defect 1: ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
async def test_an_id_that_cannot_be_matched_is_an_invalid_request_in_a_handshake_session(
    gw: Gateway, bad_id: Any
) -> None:
    async with handshake(gw) as session:
        error = assert_refused(await session.post({"jsonrpc": "2.0", "id": bad_id, "method": "ping"}), -32600)
        assert "id must be a string" in error["message"]
        ok = await session.post({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert ok.status_code == 200 and ok.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
async def test_an_id_that_cannot_be_matched_is_an_invalid_request_in_2026_07_28(gw: Gateway, bad_id: Any) -> None:
    message = {"jsonrpc": "2.0", "id": bad_id, "method": "tools/list", "params": {"_meta": ENVELOPE}}
    assert_refused(await modern_post(gw, message), -32600)


@pytest.mark.parametrize("good_id", GOOD_IDS, ids=repr)
async def test_ids_within_the_rule_come_back_unchanged_in_both_eras(gw: Gateway, good_id: Any) -> None:
    async with handshake(gw) as session:
        r = await session.post({"jsonrpc": "2.0", "id": good_id, "method": "ping"})
        assert r.status_code == 200 and r.json()["id"] == good_id
    message = {"jsonrpc": "2.0", "id": good_id, "method": "tools/list", "params": {"_meta": ENVELOPE}}
    r = await modern_post(gw, message)
    assert r.status_code == 200 and r.json()["id"] == good_id


async def test_an_id_that_cannot_be_matched_is_refused_on_sse_and_the_connection_goes_on(gw: Gateway) -> None:
    async with legacy(gw) as connection:
        for bad_id in BAD_IDS:
            assert_refused(await connection.post({"jsonrpc": "2.0", "id": bad_id, "method": "ping"}), -32600)
        assert (await connection.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})).status_code == 202
        assert await connection.answer() == {"jsonrpc": "2.0", "id": 9, "result": {}}


async def test_cancelling_an_id_that_cannot_be_matched_is_invalid_params_in_both_transports(gw: Gateway) -> None:
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}}
    async with handshake(gw) as session:
        error = assert_refused(await session.post(cancel), -32602)
        assert "requestId" in error["message"]
        fine = {**cancel, "params": {"requestId": 12345}}  # nothing in flight with that id: nothing happens
        assert (await session.post(fine)).status_code == 202
    async with legacy(gw) as connection:
        assert_refused(await connection.post(cancel), -32602)
        assert (await connection.post({"jsonrpc": "2.0", "id": 3, "method": "ping"})).status_code == 202
        assert (await connection.answer())["id"] == 3


async def test_a_second_call_with_the_id_of_one_still_running_on_an_sse_connection_is_refused(gw: Gateway) -> None:
    """Reusing an id while its call runs ran both (and let a client run any number of calls at once past the
    session's in-flight bound, found by review): the second is refused, the first answered, the session goes on
    (the module's gateway must log no traceback)."""
    async with legacy(gw) as connection:
        first = {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 0.3}},
        }
        second = {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}},
        }
        for message in (first, second):
            assert (await connection.post(message)).status_code == 202
        refused, answered = await connection.answer(), await connection.answer()
        assert refused["id"] == 9 and refused["error"]["message"] == "A request with this id is still running"
        assert answered["id"] == 9 and answered["result"]["content"][0]["text"] == "slept 0.3"
        assert (await connection.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})).status_code == 202  # free again
        assert (await connection.answer()) == {"jsonrpc": "2.0", "id": 9, "result": {}}


async def test_calls_waiting_for_room_with_one_id_are_refused_once_one_of_them_runs() -> None:
    """Review found the first fix checking the id before the wait for room: four calls with id 9 that waited
    behind a full session all got in, one overwriting the other's entry, past the session's bound."""

    def slow(request_id: int, seconds: float) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": seconds}}}  # fmt: skip

    async with run_http_upstream(KITCHEN) as up:
        limits = {"limits": {"requests_in_flight_per_sse_session": 2}}
        async with run_gateway({"up": {"transport": "http", "url": up}}, gateway=limits) as small, legacy(small) as c:
            for request_id in (1, 2):  # the session is full
                assert (await c.post(slow(request_id, 0.3))).status_code == 202
            async with anyio.create_task_group() as posts:
                for _ in range(4):
                    posts.start_soon(c.post, slow(9, 0.3))
                answers = [await c.answer() for _ in range(6)]
            ran = [a for a in answers if a["id"] == 9 and "result" in a]
            refused = [a for a in answers if a["id"] == 9 and "error" in a]
            assert len(ran) == 1 and len(refused) == 3, answers
            assert {a["error"]["message"] for a in refused} == {"A request with this id is still running"}
            assert "Traceback" not in small.log()


# ---- defect 9: nesting, params, versions, content type ---------------------------------------------------


@pytest.mark.parametrize("depth", [JSON_DEPTH + 1, 300, 1000, 5000])
async def test_arguments_nested_too_deep_are_invalid_params_saying_so_in_both_eras(gw: Gateway, depth: int) -> None:
    parsed = depth + 3 < 1024  # past 1,024 levels the JSON parser itself stops, before the id is known
    async with handshake(gw) as session:
        reply = await session.post(echo(5, {"text": nested(depth)}))
        error = assert_refused(reply, -32602, request_id=5 if parsed else None)
        assert f"deeper than {JSON_DEPTH}" in error["message"]
    reply = await modern_post(gw, echo(6, {"text": nested(depth)}, modern=True))
    error = assert_refused(reply, -32602, request_id=6 if parsed else None)
    assert f"deeper than {JSON_DEPTH}" in error["message"]


async def test_arguments_nested_too_deep_are_answered_on_the_sse_stream(gw: Gateway) -> None:
    async with legacy(gw) as connection:
        assert (await connection.post(echo(7, {"text": nested(300)}))).status_code == 202
        answer = await connection.answer()
        assert answer["id"] == 7 and answer["error"]["code"] == -32602
        assert f"deeper than {JSON_DEPTH}" in answer["error"]["message"]


async def test_nesting_within_the_limit_is_relayed(gw: Gateway) -> None:
    async with handshake(gw) as session:
        r = await session.post(echo(8, {"text": "plain", "extra": nested(JSON_DEPTH - 6)}))
    assert r.status_code == 200 and "error" not in r.json(), r.text


@pytest.mark.parametrize("arguments", [["delete", "everything"], "DROP TABLE users", 3, True])
async def test_tool_arguments_that_are_not_an_object_are_invalid_params_in_both_eras(
    gw: Gateway, arguments: Any
) -> None:
    """Was: relayed upstream as they came (a lenient upstream might run them), while an approval gate showed its
    approver `{}` for them (found by a security probe)."""
    async with handshake(gw) as session:
        error = assert_refused(await session.post(echo(12, arguments)), -32602, status=200, request_id=12)
    assert error["message"] == "tools/call 'arguments' must be an object"
    assert_refused(await modern_post(gw, echo(13, arguments, modern=True)), -32602, request_id=13)


@pytest.mark.parametrize("params", [[1], "text", 3, [], True])
async def test_params_that_are_not_an_object_are_invalid_params_on_every_method(gw: Gateway, params: Any) -> None:
    for method in ("ping", "tools/call", "initialize", "resources/read", "no/such/method"):
        message = {"jsonrpc": "2.0", "id": 11, "method": method, "params": params}
        async with handshake(gw) as session:
            assert_refused(await session.post(message), -32602, request_id=11)
        assert_refused(await modern_post(gw, message), -32602, request_id=11)
        async with legacy(gw) as connection:
            assert (await connection.post(message)).status_code == 202
            answer = await connection.answer()
            assert answer["id"] == 11 and answer["error"]["code"] == -32602, answer


async def test_initialize_with_params_that_are_not_an_object_is_answered_on_sse(gw: Gateway) -> None:
    async with gw.http() as http, http.stream("GET", gw.sse_url("up")) as stream:
        lines = stream.aiter_lines()
        while not (line := await anext(lines)).startswith("data: "):
            pass
        connection = Legacy(http, gw.base + line.removeprefix("data: "), lines)
        message = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": ["2025-11-25"]}
        assert (await connection.post(message)).status_code == 202
        answer = await connection.answer()
        assert answer["id"] == 1 and answer["error"]["code"] == -32602, answer


async def test_an_unsupported_protocol_version_in_2026_07_28_lists_the_supported_versions(gw: Gateway) -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 12,
        "method": "tools/list",
        "params": {"_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}},
    }
    error = assert_refused(await modern_post(gw, message, version="2099-01-01"), -32022, request_id=12)
    assert MODERN in error["data"]["supported"] and error["data"]["requested"] == "2099-01-01"


async def test_an_unknown_protocol_version_header_is_refused_in_a_handshake_session(gw: Gateway) -> None:
    async with handshake(gw) as session:
        for version in ("1999-01-01", "2025-11-25x", "latest"):
            ping = {"jsonrpc": "2.0", "id": 13, "method": "ping"}
            error = assert_refused(await session.post(ping, **{"MCP-Protocol-Version": version}), -32022, request_id=13)
            assert version in error["message"] and HANDSHAKE in error["data"]["supported"]
        # No version header at all is the spec's 2025-03-26, still accepted; so is every version served.
        for version in ("", "2025-06-18", "2025-03-26", HANDSHAKE):
            ok = await session.post({"jsonrpc": "2.0", "id": 14, "method": "ping"}, **{"MCP-Protocol-Version": version})
            assert ok.status_code == 200 and ok.json()["result"] == {}, (version, ok.text)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
async def test_a_body_that_does_not_say_it_is_json_is_refused_in_both_eras(gw: Gateway, content_type: str) -> None:
    ping = {"jsonrpc": "2.0", "id": 15, "method": "ping"}
    async with handshake(gw) as session:
        error = assert_refused(await session.post(ping, **{"Content-Type": content_type}), -32600)
        assert "Content-Type" in error["message"]
    listing = {"jsonrpc": "2.0", "id": 16, "method": "tools/list", "params": {"_meta": ENVELOPE}}
    assert_refused(await modern_post(gw, listing, **{"Content-Type": content_type}), -32600)


async def test_json_with_a_charset_or_no_content_type_is_accepted(gw: Gateway) -> None:
    ping = {"jsonrpc": "2.0", "id": 17, "method": "ping"}
    async with handshake(gw) as session:
        for content_type in ("application/json; charset=utf-8", "Application/JSON", ""):
            ok = await session.post(ping, **{"Content-Type": content_type})
            assert ok.status_code == 200 and ok.json()["result"] == {}, (content_type, ok.text)


# ---- an upstream that answers with an id it was never sent ------------------------------------------------


@pytest.mark.parametrize(("mode", "transport"), [("legacy", "http"), (MODERN, "http"), ("legacy", "sse")])
async def test_an_upstream_reply_with_an_array_id_names_the_upstream(gw: Gateway, mode: str, transport: str) -> None:
    async with gw.client("bad", mode=mode, transport=transport) as client:
        result = await client.call_tool("wrong_id", {})
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        assert result.is_error and "upstream 'bad'" in text and "id" in text, text
        # The upstream's other tools, and the session, are fine.
        again = await client.call_tool("echo", {"text": "still here"})
        assert not again.is_error


# ---- a WebSocket handshake (MCP has no WebSocket transport) -----------------------------------------------


async def test_a_websocket_upgrade_is_refused_with_403_and_the_gateway_goes_on(gw: Gateway) -> None:
    host, port = gw.base.removeprefix("http://").split(":")
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(
            (
                f"GET /mcp/up HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {gw.key}\r\n"
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ).encode()
        )
        with anyio.fail_after(10):
            head = await stream.receive()
    assert head.startswith(b"HTTP/1.1 403"), head[:200]  # was 500: the handshake was left unanswered
    async with gw.client("up") as client:
        assert not (await client.call_tool("echo", {"text": "still here"})).is_error
    assert "without completing handshake" not in gw.log()


# ---- a request head without end ----------------------------------------------------------------------------


async def raw_exchange(gw: Gateway, head: bytes) -> bytes:
    """Send `head` on a new connection and read until the gateway closes it (or 10 s pass)."""
    host, port = gw.base.removeprefix("http://").split(":")
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(head)
        return await read_until_closed(stream)


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    """What the gateway sends until it closes the connection (or 10 s pass)."""
    answer = b""
    with anyio.move_on_after(10):
        while True:
            try:
                answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    return answer


async def test_a_request_head_past_the_limit_is_refused_with_431_and_a_big_one_within_it_is_served(gw: Gateway) -> None:
    host, port = gw.base.removeprefix("http://").split(":")
    start = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n"
    # 65 kB of one header and no end of the head: before, the gateway kept reading (and holding) all of it.
    endless = (start + "X-Filler: " + "a" * (65 * 1024)).encode()
    refused = await raw_exchange(gw, endless)
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]
    assert b"too big" in refused
    # 40 kB of headers (a large token, cookies) is a request like any other.
    big = (start + "X-Filler: " + "a" * (40 * 1024) + "\r\nConnection: close\r\n\r\n").encode()
    served = await raw_exchange(gw, big)
    assert served.startswith(b"HTTP/1.1 200"), served[:200]
    assert "exceed 65536 bytes" in gw.log()


async def test_a_connection_that_sends_nothing_or_half_a_head_is_closed_after_the_head_time(gw: Gateway) -> None:
    host, port = gw.base.removeprefix("http://").split(":")
    began = time.monotonic()
    silent = await raw_exchange(gw, b"")
    half = await raw_exchange(gw, f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode())
    took = time.monotonic() - began
    assert silent == b""  # closed without a word: nothing was asked
    assert half.startswith(b"HTTP/1.1 408"), half[:200]
    assert took < 10  # both closed by the gateway (raw_exchange gives up after 10 s each), not left open
    # An ordinary request on a fresh connection is served meanwhile and after.
    served = await raw_exchange(
        gw, f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    assert served.startswith(b"HTTP/1.1 200"), served[:200]


# ---- a request body that trickles in -----------------------------------------------------------------------


def post_head(gw: Gateway, length: int) -> bytes:
    host, port = gw.base.removeprefix("http://").split(":")
    return (
        f"POST /mcp/up HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {gw.key}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def echo_body(text: str) -> bytes:
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
    call["params"]["_meta"] = ENVELOPE  # type: ignore[index]
    return json.dumps(call).encode()


async def test_a_body_that_stops_or_trickles_is_answered_408_and_its_connection_closed(gw: Gateway) -> None:
    body = echo_body("slow")
    began = time.monotonic()
    # Half a body and then nothing: before, the connection and its request waited forever.
    stopped = await raw_exchange(gw, post_head(gw, len(body)) + body[:20])
    assert stopped.startswith(b"HTTP/1.1 408"), stopped[:200]
    assert b"body did not come in time" in stopped
    assert time.monotonic() - began < 8  # closed by the gateway, not by raw_exchange giving up after 10 s

    # A byte every 0.3 s: each byte came "in time" for a per-read timeout; the body as a whole did not.
    host, port = gw.base.removeprefix("http://").split(":")
    stream = await anyio.connect_tcp(host, int(port))
    began = time.monotonic()
    async with stream, anyio.create_task_group() as tasks:

        async def trickle() -> None:
            await stream.send(post_head(gw, len(body)))
            for byte in body:
                await stream.send(bytes([byte]))
                await anyio.sleep(0.3)  # the attack's pace, not a wait for the gateway

        tasks.start_soon(trickle)
        answer = await read_until_closed(stream)
        tasks.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - began < 8
    assert "request body did not come in" in gw.log()


async def test_a_body_sent_in_parts_within_the_body_time_is_served(gw: Gateway) -> None:
    body = echo_body("in two parts")
    host, port = gw.base.removeprefix("http://").split(":")
    stream = await anyio.connect_tcp(host, int(port))
    answer = b""
    async with stream:
        await stream.send(post_head(gw, len(body)) + body[:30])
        await anyio.sleep(0.5)  # a slow client's pause, well within the body time
        await stream.send(body[30:])
        with anyio.fail_after(10):
            while b"in two parts" not in answer:
                answer += await stream.receive()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_answers_do_not_name_the_server_software(gw: Gateway) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        health = await http.get(f"{gw.base}/healthz")
        missing = await http.get(f"{gw.base}/nowhere")
        unsigned = await http.post(f"{gw.base}/mcp/up", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert health.status_code == 200 and missing.status_code == 404
    assert "server" not in health.headers and "server" not in missing.headers  # was "server: uvicorn"
    assert "date" in health.headers  # HTTP's own Date stays
    assert "strict-transport-security" not in health.headers  # served over plain http: HSTS would mean nothing
    # and no JSON answer can be sniffed into a script or a style sheet by a browser
    for answer in (health, missing, unsigned):
        assert answer.headers["content-type"].startswith("application/json"), answer
        assert answer.headers["x-content-type-options"] == "nosniff", answer


async def test_a_gateway_served_as_https_tells_browsers_to_keep_to_https() -> None:
    """Behind a TLS proxy (`public_url: https://...`) every answer carries Strict-Transport-Security, so a
    browser that once reached the console never again sends its cookie over plain http."""
    async with run_gateway({}, {}, gateway={"public_url": "https://mcp.corp.example"}) as gw:
        async with httpx2.AsyncClient(timeout=30) as http:
            health = await http.get(f"{gw.base}/healthz")
            page = await http.get(f"{gw.base}/console", follow_redirects=False)
    for answer in (health, page):
        assert answer.headers.get("strict-transport-security") == "max-age=31536000", answer.headers

"""What one caller can make the gateway hold, against a real gateway process and a real upstream
(issue 9, defects 3 and 4).

- A client that opens its `/sse/{server}` stream and never reads it, then POSTs many large calls, cannot
  grow the gateway's memory: the stream's queue is bounded in bytes; past the bound the stream is ended
  (the client may reconnect) and what was queued is freed. Everyone else is served meanwhile.
- Sessions and streams are limited per principal (and in total); reaching a limit refuses the newcomer with
  HTTP 429, a JSON-RPC error and a Retry-After, and never ends anybody else's session.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "stalled", "version": "1"},
}

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}
MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """The process's resident set, as the kernel reports it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# ---- defect 3: a client that never reads its stream ---------------------------------------------------


@pytest.fixture(scope="module")
async def echo_gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        gateway = {"limits": {"queued_bytes_per_stream": 4 * MB}, "max_body_bytes": 2 * MB}
        async with run_gateway({"web": {"transport": "http", "url": web}}, gateway=gateway) as gw:
            yield gw


async def open_unread_sse_stream(gw: Gateway) -> tuple[anyio.abc.SocketStream, str]:
    """GET /sse/web on a raw socket; read only as far as the endpoint event, never further."""
    host, port = gw.base.removeprefix("http://").split(":")
    sock = await anyio.connect_tcp(host, int(port))
    request = (
        f"GET /sse/web HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {gw.key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    await sock.send(request.encode())
    seen = b""
    with anyio.fail_after(10):
        while (found := re.search(rb"data: (/sse/web/messages\?session_id=[0-9a-f]+)\n", seen)) is None:
            seen += await sock.receive()
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return sock, found.group(1).decode()


async def read_to_end(sock: anyio.abc.SocketStream) -> bytes:
    """What is left of the stream, until the gateway ends it (the chunked body's last chunk) or closes."""
    tail = b""
    while True:
        try:
            chunk = await sock.receive(1 << 20)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return tail
        tail = (tail + chunk)[-64:]
        if tail.endswith(b"0\r\n\r\n"):
            return tail


async def test_a_client_that_never_reads_its_sse_stream_cannot_grow_the_gateways_memory(echo_gw: Gateway) -> None:
    gw = echo_gw
    pid = gw.process.pid
    async with gw.client("web", transport="sse") as other:  # another client, served throughout
        await other.call_tool("echo", {"text": "warm-up"})
        before = rss_bytes(pid)
        sock, endpoint = await open_unread_sse_stream(gw)
        big = "x" * MB
        sent = 0
        peak = before
        statuses: set[int] = set()
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.key}"}, timeout=60) as http:
            initialized = await http.post(gw.base + endpoint, json=INITIALIZE, headers=HEADERS)
            assert initialized.status_code == 202
            for i in range(160):
                body = {
                    "jsonrpc": "2.0",
                    "id": 100 + i,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": big}},
                }
                reply = await http.post(gw.base + endpoint, json=body, headers=HEADERS)
                statuses.add(reply.status_code)
                sent += len(big)
                peak = max(peak, rss_bytes(pid))
                if i % 20 == 0:  # someone else's calls are answered while this goes on
                    result = await other.call_tool("echo", {"text": f"still here {i}"})
                    assert not result.is_error and "still here" in str(result.content)
        assert statuses <= {202, 404}, statuses  # 404 once the gateway has ended the unread stream
        assert peak - before < 100 * MB, f"gateway RSS grew by {(peak - before) / MB:.0f} MB"
        with anyio.fail_after(30):
            await read_to_end(sock)  # the gateway ended the stream that was not read
        await sock.aclose()
        result = await other.call_tool("echo", {"text": "after"})
        assert not result.is_error
        peak = max(peak, rss_bytes(pid))
    assert sent > 150 * MB
    assert peak - before < 100 * MB, f"gateway RSS grew by {(peak - before) / MB:.0f} MB"
    log = gw.log()
    warnings = [line for line in log.splitlines() if "WARNING" in line and "stream" in line and "'web'" in line]
    assert len(warnings) == 1, warnings
    assert "xxxxxxxx" not in log and "Traceback" not in log


async def test_a_legacy_sse_session_cannot_pile_up_running_requests() -> None:
    """/sse answers a POST with 202 before the work is done: past `requests_in_flight_per_sse_session` the
    next POST's 202 waits until one of the session's requests finishes (here: one is cancelled)."""
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        gateway = {"limits": {"requests_in_flight_per_sse_session": 2}}
        async with run_gateway({"web": {"transport": "http", "url": web}}, gateway=gateway) as gw:
            sock, endpoint = await open_unread_sse_stream(gw)
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.key}"}, timeout=60) as http:
                assert (await http.post(gw.base + endpoint, json=INITIALIZE, headers=HEADERS)).status_code == 202

                def call(request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                    params = {"name": name, "arguments": arguments}
                    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

                for request_id in (1, 2):  # two calls that run until cancelled fill the session's bound
                    slow = call(request_id, "slow", {"seconds": 600})
                    assert (await http.post(gw.base + endpoint, json=slow, headers=HEADERS)).status_code == 202
                third: list[int] = []

                async def post_third() -> None:
                    reply = await http.post(gw.base + endpoint, json=call(3, "echo", {"text": "x"}), headers=HEADERS)
                    third.append(reply.status_code)

                async with anyio.create_task_group() as group:
                    group.start_soon(post_third)
                    with anyio.move_on_after(1.0):  # the third POST is held while both run
                        while not third:
                            await anyio.sleep(0.05)
                    assert third == []
                    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
                    assert (await http.post(gw.base + endpoint, json=cancel, headers=HEADERS)).status_code == 202
                assert third == [202]  # one finished: the held POST went on
            await sock.aclose()


# ---- defect 4: per-principal limits refuse the newcomer ----------------------------------------------


@pytest.fixture(scope="module")
async def limited_gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        gateway = {"limits": {"sessions_per_principal": 3, "sessions_total": 5, "streams_per_principal": 2}}
        async with run_gateway({"web": {"transport": "http", "url": web}}, gateway=gateway) as gw:
            yield gw


async def new_user_key(gw: Gateway, email: str) -> str:
    user = json.loads((await manifold_cli(gw, "users", "create", email, "--json")).stdout)
    key = json.loads((await manifold_cli(gw, "keys", "create", "--user", user["id"], "--name", "t", "--json")).stdout)
    return key["token"]


async def initialize(http: httpx2.AsyncClient, gw: Gateway, token: str) -> httpx2.Response:
    return await http.post(gw.url("web"), json=INITIALIZE, headers={**HEADERS, "Authorization": f"Bearer {token}"})


def session_headers(token: str, sid: str) -> dict[str, str]:
    return {**HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": sid, "MCP-Protocol-Version": HANDSHAKE}


async def ping(http: httpx2.AsyncClient, gw: Gateway, token: str, sid: str) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    return await http.post(gw.url("web"), json=body, headers=session_headers(token, sid))


def assert_refused(reply: httpx2.Response, request_id: Any) -> None:
    assert reply.status_code == 429, reply.text
    assert int(reply.headers["retry-after"]) > 0
    body = reply.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id
    assert isinstance(body["error"]["code"], int) and "limit" in body["error"]["message"].lower()


async def test_one_principal_reaching_its_session_limit_is_refused_and_nobody_is_evicted(limited_gw: Gateway) -> None:
    gw = limited_gw
    alice = await new_user_key(gw, "alice@corp.com")
    bob = gw.key
    async with httpx2.AsyncClient(timeout=30) as http:
        bobs = await initialize(http, gw, bob)
        assert bobs.status_code == 200
        bob_sid = bobs.headers["mcp-session-id"]

        alices = []
        for _ in range(3):
            reply = await initialize(http, gw, alice)
            assert reply.status_code == 200, reply.text
            alices.append(reply.headers["mcp-session-id"])
        assert_refused(await initialize(http, gw, alice), 1)  # the newcomer, not anyone's existing session

        assert (await ping(http, gw, bob, bob_sid)).json()["result"] == {}
        for sid in alices:
            assert (await ping(http, gw, alice, sid)).json()["result"] == {}
        second = await initialize(http, gw, bob)  # bob is not held back by alice's limit
        assert second.status_code == 200, second.text

        # Five sessions now: the total. Bob (2 of his 3) is refused too, and still nobody is evicted.
        assert_refused(await initialize(http, gw, bob), 1)
        assert (await ping(http, gw, bob, bob_sid)).json()["result"] == {}

        # Ending a session frees its place.
        ended = await http.delete(gw.url("web"), headers=session_headers(alice, alices.pop()))
        assert ended.status_code == 200
        again = await initialize(http, gw, alice)
        assert again.status_code == 200, again.text
        for sid in [*alices, again.headers["mcp-session-id"]]:
            await http.delete(gw.url("web"), headers=session_headers(alice, sid))
        for sid in (bob_sid, second.headers["mcp-session-id"]):
            await http.delete(gw.url("web"), headers=session_headers(bob, sid))
    assert "Traceback" not in gw.log()


async def test_one_principal_reaching_its_stream_limit_is_refused_and_others_still_stream(limited_gw: Gateway) -> None:
    gw = limited_gw
    carol = await new_user_key(gw, "carol@corp.com")
    bob = gw.key
    stream_headers = {"Accept": "text/event-stream", "MCP-Protocol-Version": HANDSHAKE}
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http:
        carols = [(await initialize(http, gw, carol)).headers["mcp-session-id"] for _ in range(3)]
        bob_sid = (await initialize(http, gw, bob)).headers["mcp-session-id"]

        def get(token: str, sid: str) -> Any:
            headers = {**stream_headers, "Authorization": f"Bearer {token}", "Mcp-Session-Id": sid}
            return http.stream("GET", gw.url("web"), headers=headers)

        async with get(carol, carols[0]) as one, get(carol, carols[1]) as two:
            assert one.status_code == 200 and two.status_code == 200
            async with get(carol, carols[2]) as third:
                await third.aread() if third.status_code == 429 else None
                assert_refused(third, None)
            async with get(bob, bob_sid) as bobs:
                assert bobs.status_code == 200
            assert (await ping(http, gw, carol, carols[0])).json()["result"] == {}
        # The streams are closed: their places are free again, as soon as the gateway has seen them go (a
        # closed connection is noticed asynchronously, so the first try may still count them).
        deadline = time.monotonic() + 10
        while True:
            async with get(carol, carols[2]) as later:
                if later.status_code == 200 or time.monotonic() > deadline:
                    assert later.status_code == 200
                    break
                await later.aread()
        for sid in carols:
            await http.delete(gw.url("web"), headers=session_headers(carol, sid))
        await http.delete(gw.url("web"), headers=session_headers(bob, bob_sid))
    assert "Traceback" not in gw.log()


async def test_a_client_that_stops_reading_its_calls_stream_does_not_hold_up_a_shared_stdio_upstream() -> None:
    """Was (resilience review): a client that stopped reading the event stream of its call (10,000 progress
    notifications) held the stdio upstream's one reader for every caller: each other call timed out, for as
    long as that client kept its socket open. Now its progress waits in a bounded backlog (the rest dropped)."""
    kitchen = {"transport": "stdio", "command": sys.executable, "args": [KITCHEN, "--transport", "stdio"],
               "call_timeout": 5}  # fmt: skip
    async with run_gateway({"k": kitchen}) as gw, gw.client("k") as other:
        await other.call_tool("echo", {"text": "warm-up"})
        host, port = gw.base.removeprefix("http://").split(":")
        meta = {"progressToken": "flood", **ENVELOPE}
        params = {"name": "progress", "arguments": {"steps": 100_000}, "_meta": meta}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        request = (
            f"POST /mcp/k HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {gw.key}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            f"Mcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: progress\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        sock = socket.socket()  # sends the call, then never reads (a small window: it stalls soon)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        try:
            sock.sendall(request.encode())
            with anyio.fail_after(20):  # the upstream's flood outlasts the call's own call_timeout
                while "tools/call progress: member 'k'" not in gw.log():
                    await anyio.sleep(0.02)
            for i in range(5):  # meanwhile: answered at once, not after call_timeout
                with anyio.fail_after(3):
                    result = await other.call_tool("echo", {"text": f"still here {i}"})
                assert not result.is_error and "still here" in str(result.content), result
        finally:
            sock.close()
        assert "Traceback" not in gw.log()

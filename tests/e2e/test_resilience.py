"""Broken, slow, restarted and dead upstreams: each fails only its own tools, and recovers by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN, REPO, free_port, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def start_kitchen(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, KITCHEN, "--transport", "http", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


async def test_http_upstream_restart_is_invisible_to_the_client() -> None:
    port = free_port()
    upstream = start_kitchen(port, "--name", "first")
    try:
        await wait_listening(port)
        async with run_gateway({"up": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}}) as gw:
            for mode in ("legacy", "2026-07-28"):
                async with gw.client("up", mode=mode) as client:
                    before = json.loads(text_of(await client.call_tool("whoami", {})))
                    stop(upstream)
                    upstream = start_kitchen(port, "--name", "second")
                    await wait_listening(port)
                    after = await client.call_tool("whoami", {})
                    assert not after.is_error, text_of(after)
                    assert json.loads(text_of(after))["pid"] != before["pid"]
    finally:
        stop(upstream)


async def test_stdio_upstream_is_one_process_and_restarts_when_it_dies() -> None:
    async with run_gateway({"local": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "local")}) as gw:
        async with gw.client("local") as client:
            pids = {json.loads(text_of(await client.call_tool("whoami", {})))["pid"] for _ in range(10)}
            assert len(pids) == 1, "one stdio upstream is one process, reused across calls"
            (pid,) = pids
            os.kill(pid, signal.SIGKILL)
            result = await client.call_tool("whoami", {})
            if result.is_error:  # the call that found it dead may fail; the next one must work
                assert "local" in text_of(result)
                result = await client.call_tool("whoami", {})
            new_pid = json.loads(text_of(result))["pid"]
            assert new_pid != pid
            again = {json.loads(text_of(await client.call_tool("whoami", {})))["pid"] for _ in range(5)}
            assert again == {new_pid}


async def test_an_upstream_restarted_with_other_tools_is_listed_and_called_anew() -> None:
    """Was (fastmcp interop): after an upstream restarted with a tool `beta` instead of `alpha`, the gateway went
    on serving its list from before for tool_list_ttl_seconds (5 min): `alpha` listed, `beta` an unknown tool.
    A session that replaces an ended one now drops the upstream's lists."""
    port = free_port()
    upstream = start_kitchen(port, "--extra-tools", "alpha")
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await wait_listening(port)
        async with run_gateway({"up": {"transport": "http", "url": url, "protocol": "2025-11-25"}}) as gw:
            async with gw.client("up") as client:
                assert "alpha" in {t.name for t in (await client.list_tools()).tools}
                stop(upstream)
                upstream = start_kitchen(port, "--extra-tools", "beta")
                await wait_listening(port)
                try:  # the client heard nothing: it calls what it listed, and the upstream knows it no more
                    gone = await client.call_tool("alpha", {})
                    assert gone.is_error, text_of(gone)
                except MCPError as exc:
                    assert "alpha" in exc.message
                names = {t.name for t in (await client.list_tools()).tools}
                assert "beta" in names and "alpha" not in names
                assert text_of(await client.call_tool("beta", {})) == "beta"
    finally:
        stop(upstream)


async def test_slow_upstream_hits_its_call_timeout_and_others_still_work() -> None:
    async with run_http_upstream(KITCHEN, "--name", "slowpoke") as slow_url, run_http_upstream(KITCHEN) as fast_url:
        upstreams = {
            "slowpoke": {"transport": "http", "url": slow_url, "call_timeout": 1},
            "fast": {"transport": "http", "url": fast_url},
        }
        servers = {"both": {"members": [{"upstream": "slowpoke"}, {"upstream": "fast"}]}}
        async with run_gateway(upstreams, servers) as gw, gw.client("both") as client:
            started = time.monotonic()
            result = await client.call_tool("slowpoke__slow", {"seconds": 20})
            elapsed = time.monotonic() - started
            assert result.is_error
            assert "slowpoke" in text_of(result) and "1s" in text_of(result)
            assert elapsed < 15, "the call timeout, not the tool's 20 s, ended the call"
            assert text_of(await client.call_tool("fast__echo", {"text": "still here"})) == "still here"


async def test_down_upstream_fails_fast_and_only_its_own_tools() -> None:
    dead_port = free_port()  # nothing listens here
    async with run_http_upstream(KITCHEN) as live_url:
        upstreams = {
            "live": {"transport": "http", "url": live_url},
            "dead": {"transport": "http", "url": f"http://127.0.0.1:{dead_port}/mcp", "connect_timeout": 30},
        }
        servers = {"both": {"members": [{"upstream": "live"}, {"upstream": "dead", "tools": ["*"]}]}}
        async with run_gateway(upstreams, servers) as gw:
            async with gw.client("both") as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "live__echo" in names and not any(n.startswith("dead__") for n in names)
                started = time.monotonic()
                result = await client.call_tool("dead__echo", {"text": "x"})
                assert time.monotonic() - started < 5, "connection refused is not a 30 s connect timeout"
                assert result.is_error
                assert "dead" in text_of(result)
            async with gw.client("dead") as client:
                result = await client.call_tool("echo", {"text": "x"})
                assert result.is_error and "dead" in text_of(result) and "refused" in text_of(result)
            async with gw.http() as http:
                health = (await http.get(f"{gw.base}/healthz")).json()
            assert health["upstreams"]["dead"]["state"] != "connected"
            assert health["upstreams"]["dead"]["last_error"]
            assert health["upstreams"]["live"]["state"] == "connected"
            assert "dead" in gw.log()


async def test_upstream_session_is_pooled_across_calls_and_clients(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        async with run_gateway({"up": {"transport": "http", "url": url}}) as gw:
            for mode in ("legacy", "2026-07-28", "legacy"):
                async with gw.client("up", mode=mode) as client:
                    for _ in range(10):
                        await client.call_tool("noop", {})
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    calls = [r for r in lines if r["method"] == "tools/call"]
    handshakes = [r for r in lines if r["method"] in ("initialize", "server/discover")]
    assert len(calls) == 30
    assert len(handshakes) <= 2, f"one upstream session for all calls, saw {len(handshakes)} handshakes"


async def test_callers_authorization_never_goes_upstream(tmp_path: Path) -> None:
    async with run_http_upstream(KITCHEN) as url:
        upstreams = {"up": {"transport": "http", "url": url, "headers": {"X-Static": "configured"}}}
        async with run_gateway(upstreams) as gw, gw.client("up") as client:
            seen = json.loads(text_of(await client.call_tool("headers", {})))
    assert seen.get("x-static") == "configured"
    assert "authorization" not in seen
    assert gw.key not in json.dumps(seen)


def slow_calls_seen(record: Path) -> Callable[[], int]:
    """How many `slow` calls kitchen.py has recorded in `record` (its --record file)."""

    def seen() -> int:
        lines = record.read_text().splitlines() if record.exists() else []
        return sum(1 for line in lines if json.loads(line).get("name") == "slow")

    return seen


def modern_slow_call(seconds: float) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and body of a 2026-07-28 tools/call of kitchen's `slow` tool on the server `s` (member `k`)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "k__slow",
    }
    params = {"name": "k__slow", "arguments": {"seconds": seconds}, "_meta": meta}
    return headers, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


@pytest.mark.parametrize(
    ("gateway", "seconds"),
    [
        pytest.param(None, 1.5, id="within-the-default-grace"),
        # A call longer than the default 3 s (a tool that samples an LLM): given the time it needs by
        # `gateway.shutdown_grace_seconds`; it was cut at 3 s whatever the deployment's own grace period.
        pytest.param({"shutdown_grace_seconds": 10}, 4.5, id="a-longer-configured-grace"),
    ],
)
async def test_a_call_in_flight_when_the_gateway_is_told_to_stop_is_answered_and_then_it_exits(
    tmp_path: Path, gateway: dict[str, Any] | None, seconds: float
) -> None:
    """SIGTERM (a rolling restart, Ctrl-C) stops the gateway without waiting for a timer (runtime/server.py),
    but a call already on its way upstream still gets its answer first."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        calls_upstream = slow_calls_seen(record)
        headers, body = modern_slow_call(seconds)
        upstreams = {"k": {"transport": "http", "url": url}}
        async with (
            run_gateway(upstreams, {"s": {"members": [{"upstream": "k"}]}}, gateway) as gw,
            gw.http() as http,
        ):
            answers: list[httpx2.Response] = []

            async def call() -> None:
                answers.append(await http.post(gw.url("s"), json=body, headers=headers))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await wait_for(lambda: calls_upstream() == 1, 10, what="the call reaching the upstream")
                gw.process.terminate()
            assert len(answers) == 1 and answers[0].status_code == 200, answers
            result = answers[0].json()["result"]
            assert not result.get("isError") and result["content"][0]["text"] == f"slept {seconds:g}", result
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")


async def test_held_streams_end_cleanly_when_the_gateway_stops_so_it_stops_at_once() -> None:
    """Connected IDEs hold notification streams. On SIGTERM the gateway ends them (their clients reconnect,
    behind a balancer to another replica) instead of waiting out its graceful-shutdown limit and logging the
    cancelled streams' tracebacks: 2025-11-25 GET, 2026-07-28 subscriptions/listen and legacy /sse alike."""
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    listen = {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True}, "_meta": meta},
    }
    modern = {**accept, "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
    async with run_http_upstream(KITCHEN) as url:
        upstreams = {"k": {"transport": "http", "url": url}}
        async with run_gateway(upstreams, {"s": {"members": [{"upstream": "k"}]}}) as gw, gw.http() as http:
            session = (await http.post(gw.url("s"), json=init, headers=accept)).headers["mcp-session-id"]
            handshake = {**accept, "Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": session}
            await http.post(
                gw.url("s"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=handshake
            )
            async with (
                http.stream("GET", gw.url("s"), headers={**handshake, "Accept": "text/event-stream"}) as get,
                http.stream("POST", gw.url("s"), json=listen, headers=modern) as listening,
                http.stream("GET", gw.sse_url("s")) as legacy,
            ):
                streams = {"2025-11-25 GET": get, "subscriptions/listen": listening, "/sse": legacy}
                assert {name: s.status_code for name, s in streams.items()} == dict.fromkeys(streams, 200)
                lines = {name: s.aiter_lines() for name, s in streams.items()}
                # each stream is held (the listen stream acknowledged, the legacy one named its endpoint)
                first = {name: await anext(lines[name]) for name in ("subscriptions/listen", "/sse")}
                assert all(first.values()), first
                gw.process.terminate()
                with anyio.fail_after(10):
                    for stream_lines in lines.values():
                        async for _ in stream_lines:  # read to the end: a clean end, not a reset
                            pass
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")
            log = gw.log()
            assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log, log[-3000:]


async def test_a_legacy_sse_call_in_flight_when_the_gateway_stops_gets_its_answer_on_the_stream_first(
    tmp_path: Path,
) -> None:
    """A legacy /sse session's replies travel on its held stream, not on the POST: ending that stream at once
    on SIGTERM (as the other held streams are) would lose the answer to a call still running. It stays open
    until the answer is written, then ends, and the gateway exits."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        calls_upstream = slow_calls_seen(record)
        upstreams = {"k": {"transport": "http", "url": url}}
        async with (
            run_gateway(upstreams, {"s": {"members": [{"upstream": "k"}]}}) as gw,
            gw.http() as http,
            http.stream("GET", gw.sse_url("s")) as stream,
        ):
            lines = stream.aiter_lines()
            while not (line := await anext(lines)).startswith("data: "):
                pass
            endpoint = gw.base + line.removeprefix("data: ")
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "e", "version": "0"},
                },
            }
            assert (await http.post(endpoint, json=init)).status_code == 202
            await http.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "k__slow", "arguments": {"seconds": 1.5}},
            }
            assert (await http.post(endpoint, json=call)).status_code == 202
            await wait_for(lambda: calls_upstream() == 1, 10, what="the call reaching the upstream")
            gw.process.terminate()
            answers: list[dict[str, Any]] = []
            with anyio.fail_after(10):
                async for line in lines:  # to the stream's end: the gateway ends it once the answer is written
                    if line.startswith("data: "):
                        answers.append(json.loads(line.removeprefix("data: ")))
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")
            log = gw.log()
        by_id = {a.get("id"): a for a in answers}
        assert by_id[2]["result"]["content"][0]["text"] == "slept 1.5", answers
        assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log, log[-3000:]


async def test_a_member_that_stops_answering_lists_does_not_hold_up_its_virtual_servers_lists() -> None:
    """Was (resilience review): a member whose tools/list never came made every tools/list of its virtual server
    wait that member's call_timeout (60 s by default), each time, and left out the tools it had listed moments
    before. Now a list with an earlier one waits at most a moment for the refresh and serves the earlier one,
    and a list that timed out is not waited for again for a while."""
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        run_http_upstream(KITCHEN, "--name", "stuck", "--hang-lists-after", "1") as stuck_url,
        run_http_upstream(KITCHEN, "--name", "fine") as fine_url,
        run_http_upstream(KITCHEN, "--name", "mute", "--hang-lists-after", "0") as mute_url,
    ):
        upstreams = {
            "stuck": {"transport": "http", "url": stuck_url, "call_timeout": 4},
            "fine": {"transport": "http", "url": fine_url},
            "mute": {"transport": "http", "url": mute_url, "call_timeout": 2},  # never lists at all
        }
        servers = {"both": {"members": [{"upstream": "stuck"}, {"upstream": "fine"}, {"upstream": "mute"}]}}
        async with run_gateway(upstreams, servers) as gw, gw.client("both", message_handler=on_message) as client:
            first = {t.name for t in (await client.list_tools()).tools}  # waits for mute's call_timeout, once
            assert {"stuck__echo", "fine__echo"} <= first and "mute__echo" not in first
            await client.call_tool("stuck__add_tool", {"name": "later"})  # list_changed: stuck is listed anew
            with anyio.fail_after(10):
                await changed.wait()
            for _ in range(3):  # stuck's refresh never comes: each list answers at once with what it had
                started = time.monotonic()
                names = {t.name for t in (await client.list_tools()).tools}
                assert time.monotonic() - started < 3.5, "the list waited for the member that does not answer"
                assert {"stuck__echo", "fine__echo"} <= names and "mute__echo" not in names
            assert not (await client.call_tool("fine__echo", {"text": "x"})).is_error


async def test_an_upstream_that_refuses_the_http_request_itself_is_named_with_its_status() -> None:
    """Was (resilience review): a request the upstream refused with a bare HTTP status (here 413: the mcp SDK
    takes at most 4 MiB, this gateway was set to take 8) reached the client as JSON-RPC -32600 "HTTP 413", an
    Invalid Request that blamed the client and named nobody."""
    async with run_http_upstream(KITCHEN, "--name", "small") as url:
        upstreams = {"small": {"transport": "http", "url": url}}
        async with run_gateway(upstreams, gateway={"max_body_bytes": 8 * 1024 * 1024}) as gw, gw.client("small") as c:
            result = await c.call_tool("echo", {"text": "x" * (5 * 1024 * 1024)})
            assert result.is_error
            assert "upstream 'small' refused the request (HTTP 413 Request Entity Too Large)" in text_of(result)
            assert not (await c.call_tool("echo", {"text": "small again"})).is_error


async def test_a_2025_server_that_answers_the_discover_probe_with_plain_text_is_spoken_to_with_initialize() -> None:
    """Review: once a bare 4xx became the upstream's failure, a 2025-11-25 server answering `server/discover`
    with a plain-text 400 (Go's net/http) could not be connected at all under the default `protocol: auto`."""
    script = str(Path(__file__).resolve().parents[1] / "upstreams" / "plaintext_errors.py")
    async with run_http_upstream(script) as url, run_gateway({"plain": {"transport": "http", "url": url}}) as gw:
        for mode in ("legacy", "2026-07-28"):
            async with gw.client("plain", mode=mode) as client:
                assert text_of(await client.call_tool("echo", {"text": f"via {mode}"})) == f"via {mode}"


async def test_a_call_still_running_when_the_shutdown_grace_runs_out_is_answered_503_try_again(
    tmp_path: Path,
) -> None:
    """Past `gateway.shutdown_grace_seconds` a call still running is cut: its client is told 503 with a JSON-RPC
    error saying the gateway is shutting down (a balancer's retry reaches another replica), and the gateway logs
    a warning, not a traceback. Was: uvicorn's 500 "Internal Server Error" and "Exception in ASGI application"."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        calls_upstream = slow_calls_seen(record)
        headers, body = modern_slow_call(30)
        upstreams = {"k": {"transport": "http", "url": url}}
        async with (
            run_gateway(upstreams, {"s": {"members": [{"upstream": "k"}]}}, {"shutdown_grace_seconds": 0.5}) as gw,
            gw.http() as http,
        ):
            answers: list[httpx2.Response] = []

            async def call() -> None:
                answers.append(await http.post(gw.url("s"), json=body, headers=headers))

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(call)
                    await wait_for(lambda: calls_upstream() == 1, 10, what="the call reaching the upstream")
                    gw.process.terminate()
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")
            log = gw.log()
        assert len(answers) == 1 and answers[0].status_code == 503, answers
        assert answers[0].headers.get("retry-after") == "1"
        error = answers[0].json()["error"]
        assert "shutting down" in error["message"] and "try again" in error["message"], error
        assert "cut 1 request(s) still running after the shutdown grace" in log, log[-3000:]
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


CUT = "the gateway is shutting down and cut this request (gateway.shutdown_grace_seconds); try again"


@pytest.mark.parametrize("transport", ["streamable-http", "legacy-sse"])
async def test_a_2025_session_call_cut_at_the_shutdown_grace_is_answered_try_again(
    tmp_path: Path, transport: str
) -> None:
    """A 2025-11-25 client's call still running when `gateway.shutdown_grace_seconds` runs out is told the gateway
    is shutting down (try again), as a 2026-07-28 request is. Was: over streamable HTTP a 200 with -32800 "Request
    cancelled" (as if the gateway had ended it for good: a client does not retry that), and over a legacy /sse
    session the stream ended with no answer to the call at all; the log said "answered 503, try again" either
    way."""
    record = tmp_path / "requests.jsonl"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "k__slow", "arguments": {"seconds": 30}},
    }
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        calls_upstream = slow_calls_seen(record)
        upstreams = {"k": {"transport": "http", "url": url}}
        async with (
            run_gateway(upstreams, {"s": {"members": [{"upstream": "k"}]}}, {"shutdown_grace_seconds": 0.5}) as gw,
            gw.http() as http,
        ):
            answers: list[dict[str, Any]] = []
            statuses: list[int] = []
            if transport == "streamable-http":
                headers = {"Accept": "application/json, text/event-stream"}
                opened = await http.post(gw.url("s"), json=initialize, headers=headers)
                headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
                await http.post(gw.url("s"), json=initialized, headers=headers)

                async def calling() -> None:
                    answer = await http.post(gw.url("s"), json=call, headers=headers)
                    statuses.append(answer.status_code)
                    answers.append(answer.json())

            else:

                async def calling() -> None:
                    async with http.stream("GET", gw.sse_url("s"), headers={"Accept": "text/event-stream"}) as stream:
                        lines = stream.aiter_lines()
                        endpoint = None
                        async for line in lines:
                            if line.startswith("data: "):
                                endpoint = line.removeprefix("data: ")
                                break
                        assert endpoint is not None
                        for message in (initialize, initialized, call):
                            assert (await http.post(gw.base + endpoint, json=message)).status_code == 202
                        async for line in lines:
                            if line.startswith("data: "):
                                answer = json.loads(line.removeprefix("data: "))
                                if answer.get("id") == 2:
                                    answers.append(answer)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(calling)
                    await wait_for(lambda: calls_upstream() == 1, 10, what="the call reaching the upstream")
                    gw.process.terminate()
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")
            log = gw.log()
        assert len(answers) == 1, answers
        assert answers[0]["error"]["message"] == CUT, answers
        if transport == "streamable-http":
            assert statuses == [503]
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]

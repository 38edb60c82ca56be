"""What a client of the gateway sees when an upstream answers with something that is no MCP answer: a tool error
naming the upstream, in both eras, the upstream's other tools unaffected, nothing in the log but a warning.
The other hostile behaviours are tested against the upstream session: tests/integration/test_hostile_upstream.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import KITCHEN, NODE, NODE_MODULES, run_http_upstream
from tests.waiting import wait_for

HOSTILE_HTTP = str(Path(__file__).resolve().parents[1] / "upstreams" / "hostile_http.py")

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(HOSTILE_HTTP, "--garbled-tools") as bad, run_http_upstream(KITCHEN) as good:
        upstreams = {"bad": {"transport": "http", "url": bad, "protocol": "2025-11-25"},
                     "good": {"transport": "http", "url": good}}  # fmt: skip
        mix = {"mix": {"members": [{"upstream": "bad"}, {"upstream": "good"}]}}
        async with run_gateway(upstreams, virtual_servers=mix) as gateway:
            yield gateway
            log = gateway.log()
            assert "Traceback" not in log and " ERROR " not in log, log[-4000:]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_result_that_is_not_an_object_is_a_tool_error_naming_the_upstream(gw: Gateway, mode: str) -> None:
    """Was: `"result": "just a string"` (or `"content": "x"`) relayed as it was: the client failed to parse the
    whole answer, and nothing named the upstream."""
    async with gw.client("bad", mode=mode) as client:
        malformed = ("bad_content", "bad_item", "bare_item", "bad_structured", "unknown_item")
        for tool in ("text_result", "text_error", *malformed):
            result = await client.call_tool(tool, {})
            assert result.is_error, result
            text = text_of(result)
            assert "upstream 'bad' answered " in text and "(a protocol error of the upstream)" in text, text
        assert text_of(await client.call_tool("echo", {})) == "fine"
        odd = await client.call_tool("odd_items", {})  # unusual but valid: relayed as it came
        assert not odd.is_error and text_of(odd) == "odd" and len(odd.content) == 3, odd


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_malformed_prompt_or_resource_is_an_error_naming_the_upstream(gw: Gateway, mode: str) -> None:
    """Was: relayed as it came, so the client's SDK failed to parse the answer and named nobody."""
    async with gw.client("bad", mode=mode) as client:
        fine = await client.get_prompt("good_prompt")
        assert [m.role for m in fine.messages] == ["user"]
        for name in ("bad_role", "bare_message"):
            with pytest.raises(MCPError) as failed:
                await client.get_prompt(name)
            assert "upstream 'bad' answered prompts/get with " in str(failed.value), failed.value
        uris = {r.name: r.uri for r in (await client.list_resources()).resources}
        good = await client.read_resource(uris["good"])
        assert [c.text for c in good.contents if isinstance(c, types.TextResourceContents)] == ["fine"]
        with pytest.raises(MCPError) as failed:
            await client.read_resource(uris["empty"])
        assert "upstream 'bad' answered resources/read with " in str(failed.value), failed.value


VALIDATE = str(NODE_MODULES.parent / "validate_result.mjs")


async def typescript_sdk_refuses(schema: str, result: Any) -> str:
    """What the TypeScript MCP SDK's `schema` finds wrong with `result` ('' when it accepts it)."""
    done = await anyio.run_process([NODE, VALIDATE], input=json.dumps({"schema": schema, "result": result}).encode(),
                                   check=False)  # fmt: skip
    return "" if done.returncode == 0 else done.stdout.decode() or done.stderr.decode()


async def test_nulls_for_optional_fields_are_dropped_so_a_typescript_client_accepts_the_answers(gw: Gateway) -> None:
    """Was: a tool with "description": null was left out of tools/list, and kept with the null it broke the
    TypeScript SDK's whole list (its schemas refuse null); the same in results (annotations, _meta,
    structuredContent, mimeType). Nulls are dropped where they mean "absent" (never inside a schema)."""
    async def modern(method: str, params: dict[str, Any], name: str = "") -> dict[str, Any]:
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": method, **({"Mcp-Name": name} if name else {})}  # fmt: skip
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "ts-check", "version": "0"}}  # fmt: skip
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
        async with gw.http() as http:
            answer = await http.post(gw.url("bad"), json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    tools = await modern("tools/list", {})
    nulls = next(t for t in tools["tools"] if t["name"] == "nulls")
    assert nulls["annotations"] == {"readOnlyHint": True} and "description" not in nulls
    assert nulls["inputSchema"]["properties"]["x"] == {"default": None}  # a schema's null is a value: kept
    checks = {
        "ListToolsResultSchema": tools,
        "CallToolResultSchema": await modern("tools/call", {"name": "odd_items", "arguments": {}}, "odd_items"),
        "GetPromptResultSchema": await modern("prompts/get", {"name": "good_prompt"}, "good_prompt"),
        "ListPromptsResultSchema": await modern("prompts/list", {}),
        "ReadResourceResultSchema": await modern("resources/read", {"uri": "hostile://good"}, "hostile://good"),
    }
    for schema, result in checks.items():
        assert await typescript_sdk_refuses(schema, result) == "", (schema, result)


async def test_a_flood_of_log_messages_about_one_call_reaches_the_client_bounded(gw: Gateway) -> None:
    """Was: all 50,000 relayed; the SDK client spent ~7 s taking them in before it saw the answer. Now the first
    10,000 of one request are relayed, the rest dropped with one warning."""
    heard = 0

    async def logged(params: types.LoggingMessageNotificationParams) -> None:
        nonlocal heard
        heard += 1

    async with gw.client("bad", mode="legacy", logging_callback=logged) as client:
        result = await client.call_tool("log_flood", {})
    assert text_of(result) == "after the logs" and heard == 10_000, heard
    log = gw.log()
    assert log.count("an upstream sent more than 10000 log messages for one request") == 1, log[-2000:]


async def test_a_flood_of_list_changed_does_not_end_the_clients_notification_streams(gw: Gateway) -> None:
    """Was: 5,000 tools/list_changed from the upstream were fanned out at once, so every open notification stream
    on a server with that upstream overflowed and was ended (the client heard nothing), and the gateway logged a
    warning for each notification past its queue."""
    url = gw.url("bad")
    async with gw.http() as http:
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        opened = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
                                 headers=headers)  # fmt: skip
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        heard: list[str] = []
        listening = anyio.Event()

        async def listen() -> None:
            async with http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as stream:
                assert stream.status_code == 200
                listening.set()
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        heard.append(line)
            heard.append("<end>")

        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            with anyio.fail_after(10):
                await listening.wait()
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_changed_flood"}}
            assert "flooded" in (await http.post(url, json=call, headers=headers)).text
            # Then one prompts/list_changed: it reaches the client only if the flood left its stream open.
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "prompts_changed"}}
            assert "changed" in (await http.post(url, json=call, headers=headers)).text
            await wait_for(
                lambda: "<end>" in heard or any("prompts/list_changed" in line for line in heard),
                what="the prompts change or the end of the stream",
            )
            assert "<end>" not in heard, heard[-3:]
            assert any("tools/list_changed" in line for line in heard)
            assert len(heard) < 100, len(heard)  # coalesced: a change still waiting to be written covers the next
            group.cancel_scope.cancel()
    log = gw.log()
    assert "is not being read" not in log, log[-2000:]
    assert log.count("too many notifications") <= 1, log[-2000:]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_tool_with_fields_of_the_wrong_types_is_left_out_not_the_whole_list(gw: Gateway, mode: str) -> None:
    """Was: relayed as listed (inputSchema "x", description 7, ...), so the client's SDK rejected the whole
    tools/list of the virtual server: none of the other upstream's tools could be listed either."""
    async with gw.client("mix", mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"good__echo", "bad__echo", "bad__text_result", "bad__nulls"} <= names  # null: an absent optional field
    assert "bad__bad_schema" not in names
    assert "upstream bad: tools/list: left out 4 item(s) with a missing field or one of the wrong type" in gw.log()

"""Tool search (`tool_search` on a virtual server, docs/tool-search.md) through the real gateway, a real kitchen
upstream and a real MCP client (mcp 2.3.0), in both eras.

Bob (team sales) is granted three of the kitchen's tools (echo, add, whoami); the virtual server `big` shows
only `search_tools` and `call_tool`. A search finds a granted tool by a word of its description; the found tool
is callable by its name and through `call_tool`; a tool Bob is not granted (fail) is never found nor callable.
In a 2025-11-25 session, the found tools join that session's list and list_changed is sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]
EXTRA = {
    "users": {"bob@corp.com": {"teams": ["sales"]}},
    "teams": {"sales": None},
    "grants": [{"who": "team:sales", "what": ["tool:alpha/echo", "tool:alpha/add", "tool:alpha/whoami"]}],
}


@dataclass
class World:
    gw: Gateway
    bob: str


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    upstreams = {"alpha": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "alpha")}
    servers = {"big": {"members": [{"upstream": "alpha"}], "tool_search": {"max_results": 5}}}
    async with run_gateway(upstreams, servers, extra=EXTRA) as gw:
        done = await manifold_cli(gw, "keys", "create", "--user", "bob@corp.com", "--name", "agent", "--json")
        yield World(gw, json.loads(done.stdout)["token"])
        assert "Traceback" not in gw.log()


async def found(client: Any, query: str) -> list[dict[str, Any]]:
    result: types.CallToolResult = await client.call_tool("search_tools", {"query": query})
    assert not result.is_error
    assert result.structured_content is not None
    text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert json.loads(text) == result.structured_content  # the same answer as text, for clients without it
    return result.structured_content["tools"]


@pytest.mark.parametrize("mode", ERAS)
async def test_the_list_shows_only_the_search_tools_and_a_search_finds_a_granted_tool(world: World, mode: str) -> None:
    async with world.gw.client("big", mode=mode, key=world.bob) as client:
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == ["search_tools", "call_tool"]
        tools = await found(client, "add integers")
        assert tools[0]["name"] == "alpha__add"
        assert "Add two integers" in tools[0]["description"]
        assert set(tools[0]["inputSchema"]["properties"]) == {"a", "b"}


@pytest.mark.parametrize("mode", ERAS)
async def test_a_found_tool_is_callable_by_its_name_and_through_call_tool(world: World, mode: str) -> None:
    async with world.gw.client("big", mode=mode, key=world.bob) as client:
        direct = await client.call_tool("alpha__add", {"a": 2, "b": 3})
        assert direct.structured_content == {"sum": 5}
        meta = await client.call_tool("call_tool", {"name": "alpha__echo", "arguments": {"text": "via call_tool"}})
        assert [c.text for c in meta.content if isinstance(c, types.TextContent)] == ["via call_tool"]


@pytest.mark.parametrize("mode", ERAS)
async def test_a_tool_the_caller_is_not_granted_is_never_found_nor_callable(world: World, mode: str) -> None:
    async with world.gw.client("big", mode=mode, key=world.bob) as client:
        assert await found(client, "fail isError message") == []  # only alpha's fail has these words
        names = [t["name"] for t in await found(client, "return text integers server")]
        assert names and "alpha__fail" not in names and set(names) <= {"alpha__echo", "alpha__add", "alpha__whoami"}
        for call in (
            client.call_tool("alpha__fail", {"message": "x"}),
            client.call_tool("call_tool", {"name": "alpha__fail", "arguments": {"message": "x"}}),
        ):
            with pytest.raises(MCPError) as caught:
                await call
            assert caught.value.error.message == "Unknown tool: alpha__fail"


async def test_in_a_2025_11_25_session_a_search_adds_the_found_tools_to_its_list(world: World) -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with world.gw.client("big", key=world.bob, message_handler=on_message) as client:
        assert [t["name"] for t in await found(client, "add integers")][0] == "alpha__add"
        with anyio.fail_after(10):
            await changed.wait()
        names = [t.name for t in (await client.list_tools()).tools]
        assert names[:2] == ["search_tools", "call_tool"] and "alpha__add" in names and "alpha__fail" not in names
    async with world.gw.client("big", key=world.bob) as other:  # another session: its own list
        assert [t.name for t in (await other.list_tools()).tools] == ["search_tools", "call_tool"]

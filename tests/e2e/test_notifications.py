"""Upstream change notifications reach connected clients, in both eras."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import mcp_types as types
import pytest

from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        upstreams = {
            "web": {"transport": "http", "url": web},
            "local": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "local"),
        }
        servers = {"both": {"members": [{"upstream": "web"}, {"upstream": "local"}]}}
        async with run_gateway(upstreams, servers) as gateway:
            yield gateway


@pytest.mark.parametrize("member", ["web", "local"])
async def test_list_changed_reaches_a_2025_11_25_client(gw: Gateway, member: str) -> None:
    changed = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with gw.client("both", message_handler=on_message) as client:
        await client.list_tools()
        fresh = f"fresh_{member}_legacy"
        await client.call_tool(f"{member}__add_tool", {"name": fresh})
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert f"{member}__{fresh}" in names
        result = await client.call_tool(f"{member}__{fresh}", {})
        assert not result.is_error


async def test_list_changed_reaches_a_2026_07_28_listener(gw: Gateway) -> None:
    async with gw.client("both", mode="2026-07-28") as client, client.listen(tools_list_changed=True) as sub:
        await client.call_tool("web__add_tool", {"name": "fresh_modern"})
        with anyio.fail_after(10):
            async for event in sub:
                assert type(event).__name__ == "ToolsListChanged"
                break
        names = {
            t.name
            for t in (
                await client.list_tools(cache_mode="bypass") if _has_cache_mode() else await client.list_tools()
            ).tools
        }
        assert "web__fresh_modern" in names


def _has_cache_mode() -> bool:
    import inspect

    from mcp import Client

    return "cache_mode" in inspect.signature(Client.list_tools).parameters


async def test_resource_updates_reach_a_2026_07_28_listener(gw: Gateway) -> None:
    listen = {"resource_subscriptions": ["kitchen+web://counter"]}
    async with gw.client("both", mode="2026-07-28") as client, client.listen(**listen) as sub:
        await client.call_tool("web__bump", {})
        with anyio.fail_after(10):
            async for event in sub:
                assert type(event).__name__ == "ResourceUpdated"
                assert str(event.uri) == "kitchen+web://counter"
                break


async def test_resource_updates_reach_a_subscribed_client(gw: Gateway) -> None:
    updated: list[str] = []
    got = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            got.set()

    async with gw.client("both", message_handler=on_message) as client:
        await client.subscribe_resource("kitchen+web://counter")
        await client.call_tool("web__bump", {})
        with anyio.fail_after(10):
            await got.wait()
    assert updated == ["kitchen+web://counter"]

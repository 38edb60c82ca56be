"""A virtual server with a member whose stdio command is still starting (a slow `npx -y pkg`): its lists are
served at once without that member, its tools come once it is up, and a listening client is told so
(catalog/lists.py, upstream/pool.py `StillStarting`, `_announce_start`). Was (outside probe): every `tools/list`
of every server including it waited the member's connect_timeout, each time, for as long as it was starting
(up to 120 s), and the client never learned when its tools came."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from tests.e2e.harness import run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio

SLOW = str(Path(__file__).resolve().parents[1] / "upstreams" / "slow_start_stdio.py")
CONNECT_TIMEOUT = 3.0


async def test_lists_do_not_wait_again_for_a_member_still_starting_and_get_its_tools_once_it_is_up(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "fetched"
    upstreams = {
        "fast": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "fast"),
        "slow": stdio_upstream(SLOW, str(gate), connect_timeout=CONNECT_TIMEOUT),
    }
    servers = {"mix": {"members": [{"upstream": "fast"}, {"upstream": "slow"}]}}
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with run_gateway(upstreams, servers) as gw, gw.client("mix", message_handler=on_message) as client:
        # The first list waits the member's connect_timeout (a command that starts within it is listed), ...
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "fast__echo" in names and not any(name.startswith("slow__") for name in names), names
        # ... the next ones do not wait for it again, while it goes on starting.
        for _ in range(3):
            began = time.monotonic()
            names = {tool.name for tool in (await client.list_tools()).tools}
            took = time.monotonic() - began
            assert took < CONNECT_TIMEOUT / 2, f"tools/list took {took:.1f}s (connect_timeout {CONNECT_TIMEOUT:g}s)"
            assert "fast__echo" in names and not any(name.startswith("slow__") for name in names), names
        # A call to one of its tools says why it is not there.
        result = await client.call_tool("slow__echo", {"text": "hi"})
        assert result.is_error
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        assert "slow" in text and "still starting" in text, text
        assert not changed.is_set()
        said = "member 'slow' left out of tools: is still starting"
        await wait_for(lambda: said in gw.log(), what="the member's absence logged")

        gate.touch()  # its package fetched: it completes the handshake
        await within(changed.wait(), 30, what="tools/list_changed once the member is up")
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "slow__echo" in names and "fast__echo" in names, names
        result = await client.call_tool("slow__echo", {"text": "hi"})
        assert not result.is_error, result

"""@modelcontextprotocol/server-filesystem (other people's server, stdio) through the gateway: what its clients
rely on that a plain request and answer do not show."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from tests.e2e.harness import run_gateway
from tests.upstreams.launch import NODE, NODE_MODULES
from tests.waiting import POLL_INTERVAL, within

pytestmark = pytest.mark.anyio
FILESYSTEM = str(NODE_MODULES / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def allowed_directories(client: Client) -> str:
    result = await client.call_tool("list_allowed_directories", {})
    return result.content[0].text  # type: ignore[union-attr]


async def until_allowed(client: Client, folder: Path, timeout: float = 10.0) -> None:
    """The server applies roots it was given in the background: poll its answer until it names `folder`."""
    deadline = time.monotonic() + timeout
    while (seen := await allowed_directories(client)).splitlines()[1:] != [str(folder)]:
        assert time.monotonic() < deadline, f"the server still allows {seen!r}, not {folder}"
        await asyncio.sleep(POLL_INTERVAL)


async def test_a_per_user_session_asks_its_callers_client_for_roots_outside_any_call(tmp_path: Path) -> None:
    """Was (interop): server-filesystem asks the client for its roots right after its handshake and again after
    the client's roots/list_changed, each time outside any call. With `sessions: per_user` (the setting for
    servers that keep roots per client) the gateway answered -32601 "no client can answer roots/list now", and the
    server went on serving the folder it was started with, where directly it serves the client's roots."""
    started, mine, later = tmp_path / "started", tmp_path / "mine", tmp_path / "later"
    for folder in (started, mine, later):
        folder.mkdir()
    roots = [mine]
    asked = asyncio.Event()

    async def list_roots(context: object) -> types.ListRootsResult:
        asked.set()
        return types.ListRootsResult(roots=[types.Root(uri=folder.as_uri()) for folder in roots])

    upstreams = {
        "fs": {"transport": "stdio", "command": NODE, "args": [FILESYSTEM, str(started)], "sessions": "per_user"}
    }
    async with run_gateway(upstreams) as gw, gw.client("fs", list_roots_callback=list_roots) as client:
        await allowed_directories(client)  # opens the caller's session; the server asks at once
        await within(asked.wait(), what="the server's roots/list after its handshake reaching the client")
        await until_allowed(client, mine)
        asked.clear()
        roots[:] = [later]
        await client.send_roots_list_changed()
        await within(asked.wait(), what="the server's roots/list after roots/list_changed reaching the client")
        await until_allowed(client, later)


async def test_a_shared_session_keeps_the_servers_own_folders(tmp_path: Path) -> None:
    """A shared session is everybody's: no one caller's roots become the server's (the question is refused
    outside a call, as before), so it serves the folder it was started with."""
    started, mine = tmp_path / "started", tmp_path / "mine"
    started.mkdir()
    mine.mkdir()
    asked = asyncio.Event()

    async def list_roots(context: object) -> types.ListRootsResult:
        asked.set()
        return types.ListRootsResult(roots=[types.Root(uri=mine.as_uri())])

    upstreams = {"fs": {"transport": "stdio", "command": NODE, "args": [FILESYSTEM, str(started)]}}
    async with run_gateway(upstreams) as gw, gw.client("fs", list_roots_callback=list_roots) as client:
        assert (await allowed_directories(client)).splitlines()[1:] == [str(started)]
        assert (await allowed_directories(client)).splitlines()[1:] == [str(started)]
        assert not asked.is_set()


async def test_a_reply_past_the_line_limit_is_blamed_on_the_reply_not_on_an_old_stderr_line(tmp_path: Path) -> None:
    """Was (interop): reading a 17 MiB file (one reply line past the 32 MB bound: its text twice, as content and
    structuredContent) failed with "...the gateway stopped its process: Failed to request initial roots from
    client: ..." — the server's last stderr line, written just after its start, told as if it were why it
    stopped. The gateway stopped it for a reason of its own; the stderr lines stay in the log and /healthz."""
    (tmp_path / "big.txt").write_text("x" * (17 * 1024 * 1024))
    (tmp_path / "small.txt").write_text("fine")
    upstreams = {"fs": {"transport": "stdio", "command": NODE, "args": [FILESYSTEM, str(tmp_path)]}}
    async with run_gateway(upstreams) as gw, gw.client("fs") as client:
        failed = await client.call_tool("read_text_file", {"path": str(tmp_path / "big.txt")})
        assert failed.is_error
        assert failed.content[0].text == (  # type: ignore[union-attr]
            "Tool 'read_text_file' is unavailable: member 'fs': upstream 'fs' sent a message larger than 32 MB on"
            " stdout; the gateway stopped its process"
        )
        again = await client.call_tool("read_text_file", {"path": str(tmp_path / "small.txt")})
        assert again.content[0].text == "fine"  # type: ignore[union-attr]  # started again
        assert "its last stderr lines: Secure MCP Filesystem Server running on stdio" in gw.log()

"""Whose client an upstream's roots/list outside any call goes to (upstream/session.py `use_roots_client`,
upstream/pool.py `_owned`): only a session of one caller's own asks its caller's client; a `forwarded`
credential two callers share is not one (the session is theirs together, as a shared one is everybody's). And
what the relay's opening of such a session first, so it knows whom to ask, costs (handlers.Gateway.relay)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.e2e.test_server_filesystem import FILESYSTEM, allowed_directories, until_allowed
from tests.upstreams.launch import NODE, run_everything_http
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio
TEAM_KEY = {"X-Api-Key": "the-teams-key"}
REFUSED_BY = 2.0  # server-everything asks 350 ms after its handshake
SLOW = str(Path(__file__).resolve().parents[1] / "upstreams" / "slow_start_stdio.py")
LATE = 1.0  # connect_timeout: how long a question at the handshake waits for its caller's first call


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def key_for(gw: Gateway, user: str) -> str:
    done = await manifold_cli(gw, "keys", "create", "--user", user, "--name", user.split("@")[0], "--json")
    return json.loads(done.stdout)["token"]


def client(gw: Gateway, key: str, **callbacks: Any) -> Client:
    headers = {"Authorization": f"Bearer {key}", "x-mcp-headers": json.dumps(TEAM_KEY)}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return Client(streamable_http_client(gw.url("ev"), http_client=http), mode="legacy", **callbacks)


def roots_of(uri: str, asked: asyncio.Event | None = None) -> Any:
    async def list_roots(context: object) -> types.ListRootsResult:
        if asked is not None:
            asked.set()
        return types.ListRootsResult(roots=[types.Root(uri=uri)])  # type: ignore[arg-type]

    return list_roots


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_a_forwarded_credential_two_callers_share_does_not_put_one_callers_roots_to_the_server() -> None:
    """Was (review): a `forwarded` credential's session counted as one caller's own, so server-everything's
    roots/list after its handshake, outside any call, went to the client of whichever caller the gateway had
    relayed last: Alice's client was asked for the roots of a session Bob uses too, and a server that applies
    roots to everything it serves (server-filesystem) would serve Alice's folders to Bob. Now it is refused as on
    any shared session, and a call that asks for roots is answered by its own caller's client."""
    upstream = {"protocol": "2025-11-25", "auth": {"mode": "forwarded", "allow": ["X-Api-Key"]}}
    async with run_everything_http() as url, run_gateway({"ev": {"transport": "http", "url": url, **upstream}}) as gw:
        alice_key, bob_key = await key_for(gw, "alice@corp.com"), await key_for(gw, "bob@corp.com")
        alice_asked = asyncio.Event()
        alice_roots = roots_of("file:///home/alice/private", alice_asked)
        async with client(gw, alice_key, list_roots_callback=alice_roots) as alice:
            async with client(gw, bob_key, list_roots_callback=roots_of("file:///home/bob")) as bob:
                await alice.call_tool("echo", {"message": "hi"})  # opens the team's session; it asks 350 ms on
                # Refused, the question leaves no trace to wait for: given the time it took to reach Alice.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(alice_asked.wait(), REFUSED_BY)
                assert not alice_asked.is_set(), "Alice's client was asked the roots of the team's session"
                seen = text_of(await within(bob.call_tool("get-roots-list", {}), what="bob's roots"))
        assert "file:///home/bob" in seen and "alice" not in seen, seen


async def test_a_per_user_session_opened_by_a_list_gets_the_roots_when_the_first_call_comes_late(
    tmp_path: Path,
) -> None:
    """Was (review): a client lists tools when it starts, and its user's first call comes later. The list opened
    the caller's server-filesystem session, whose roots/list right after the handshake waited connect_timeout for
    a call of the caller's and was then refused: the server served the folder it was started with for good.
    Now the call that comes later tells the server the roots changed, and it asks again."""
    started, mine = tmp_path / "started", tmp_path / "mine"
    started.mkdir()
    mine.mkdir()
    asked = asyncio.Event()
    fs = {"transport": "stdio", "command": NODE, "args": [FILESYSTEM, str(started)], "sessions": "per_user"}
    async with (
        run_gateway({"fs": {**fs, "connect_timeout": LATE}}) as gw,
        gw.client("fs", list_roots_callback=roots_of(mine.as_uri(), asked)) as client,
    ):
        await client.list_tools()
        await asyncio.sleep(LATE * 1.5)  # the user's first call, after the question was given up
        assert not asked.is_set()
        await allowed_directories(client)
        await within(asked.wait(), what="the server's roots/list again, once the caller's client was known")
        await until_allowed(client, mine)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="watches the upstream process end through /proc")
async def test_a_call_reopening_a_per_user_stdio_session_still_starting_waits_connect_timeout_once(
    tmp_path: Path,
) -> None:
    """Was (review): a 2025-11-25 call whose caller's per_user session had ended (its process died; its tools
    still listed) opened it first, waiting connect_timeout for a command still starting, then sent the request,
    which waited connect_timeout again before saying "still starting": twice the wait, and a message saying 4s."""
    gate = tmp_path / "fetched"
    gate.touch()
    timeout = 2.0
    up = {"transport": "stdio", "command": sys.executable, "args": [SLOW, str(gate)], "sessions": "per_user"}
    async with run_gateway({"slow": {**up, "connect_timeout": timeout}}) as gw, gw.client("slow") as client:
        pid = (await client.call_tool("whoami", {})).structured_content["pid"]  # type: ignore[index]
        gate.unlink()  # its next start takes for ever
        os.kill(pid, signal.SIGKILL)  # (the upstream process of this test's own gateway)
        await wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the gateway reaping its upstream")
        began = time.monotonic()
        result = await client.call_tool("echo", {"text": "x"})
        took = time.monotonic() - began
    assert result.is_error and "is still starting" in text_of(result), text_of(result)
    assert took < timeout * 1.5, f"the call waited {took:.1f}s"

"""Calls through the load balancer land on every replica, every replica's audit rows are in the one
database, and an MCP client of the 2026-07-28 (sessionless) era works through the balancer, on SQLite and on
PostgreSQL.

Which replica served a call is seen from the replica's side: the upstream `kit` runs over stdio, so each
replica starts its own kitchen process, and the `whoami` tool answers with that process's pid, whose parent
is the replica that called it. haproxy's `X-Replica` header says the same from the balancer's side.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import manifold_cli, stdio_upstream
from tests.replicas.harness import Replicas, run_replicas
from tests.replicas.probes import mcp_request
from tests.upstreams.launch import KITCHEN
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

CALLS = 8  # round-robin over two replicas: four each
AUDIT_WAIT_S = 15.0
EXTRA = {"grants": [{"who": "user:dev", "what": ["server:*"]}]}


@pytest.fixture(scope="module")
async def replicas(database: str | None) -> AsyncIterator[Replicas]:
    upstreams = {"kit": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kit")}
    async with run_replicas(database, upstreams, extra=EXTRA) as world:
        yield world
        for gw in world.gateways:
            assert "Traceback" not in gw.log(), gw.log()[-4000:]


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_calls_through_the_balancer_land_on_every_replica_and_all_are_audited_in_one_database(
    replicas: Replicas,
) -> None:
    world = replicas
    replica_pids = {gw.process.pid: i for i, gw in enumerate(world.gateways)}
    served_by: dict[str, int] = {}  # request id -> replica index, from the upstream's parent process
    said_by_balancer: dict[str, str] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for n in range(CALLS):
            request_id = f"balanced-{n}"
            answer = await mcp_request(
                http,
                world.balancer,
                "kit",
                world.key,
                "tools/call",
                {"name": "whoami", "arguments": {}},
                request_id=request_id,
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()["result"]
            identity = result.get("structuredContent") or json.loads(result["content"][0]["text"])
            served_by[request_id] = replica_pids[parent_of(identity["pid"])]
            said_by_balancer[request_id] = answer.headers["x-replica"]
    assert sorted(set(served_by.values())) == [0, 1], served_by  # both replicas served calls
    assert {f"r{i}" for i in served_by.values()} == set(said_by_balancer.values())
    assert all(said_by_balancer[r] == f"r{i}" for r, i in served_by.items())

    # Every call's audit row, from both replicas, in the one database (written in batches: looked for until
    # all are there). Asked through replica A's config: the same database.
    audited: set[str] = set()

    async def all_audited() -> bool:
        done = await manifold_cli(world.gateways[0], "audit", "--server", "kit", "--since", "10m", "--json")
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        audited.update(str(r["request_id"]) for r in rows if r["method"] == "tools/call" and r["outcome"] == "ok")
        return set(served_by) <= audited

    await _until(all_audited, AUDIT_WAIT_S)
    assert set(served_by) <= audited


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """A bounded poll of an async condition (each look runs the CLI: a process, so not every 10 ms)."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.1)


async def test_a_sessionless_client_works_through_the_balancer(replicas: Replicas) -> None:
    world = replicas
    replicas_seen: list[str] = []

    async def note(response: httpx2.Response) -> None:
        if "x-replica" in response.headers:
            replicas_seen.append(response.headers["x-replica"])

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {world.key}"}, timeout=60, event_hooks={"response": [note]}
    )
    async with Client(streamable_http_client(world.url("kit"), http_client=http), mode="2026-07-28") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "whoami", "add"} <= names
        for n in range(4):
            result = await client.call_tool("echo", {"text": f"hello {n}"})
            assert not result.is_error and text_of(result) == f"hello {n}"
        added = await client.call_tool("add", {"a": 2, "b": 3})
        assert json.loads(text_of(added)) == {"sum": 5}
    await wait_for(lambda: len(replicas_seen) >= 6, what="answers through the balancer")
    assert set(replicas_seen) == {"r0", "r1"}, replicas_seen  # one client, both replicas, no session to lose

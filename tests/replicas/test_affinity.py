"""Behind the balancing docker/haproxy.cfg ships (each caller kept on one replica, `balance hdr(Authorization)`),
an upstream's question mid-call reaches the client and its answer the replica that asked, in both client eras.

With round-robin the client's answer (its very next request) always landed on the other replica, which had no
question waiting: a 2025-11-25 call waited out limits.client_reply_seconds and failed, a 2026-07-28 retry with
its answers was refused as another replica's (replica probe). On PostgreSQL, as a team runs replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.postgres import Cluster
from tests.replicas.harness import AFFINITY, Replicas, run_replicas
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def replicas(pg_cluster: Cluster) -> AsyncIterator[Replicas]:
    url = pg_cluster.new_database(migrated=True)
    async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
        # Pinned to 2025-11-25: its questions reach a 2026-07-28 client as input_required, the call parked on
        # the replica that asked until the client's retry comes back with the answers.
        upstreams = {"kitchen": {"transport": "http", "url": kitchen, "protocol": "2025-11-25"}}
        async with run_replicas(
            url, upstreams, gateway={"limits": {"client_reply_seconds": 10}}, balance=AFFINITY
        ) as world:
            yield world
            for gw in world.gateways:
                assert "Traceback" not in gw.log(), gw.log()[-3000:]
    pg_cluster.drop_database(url)


async def answer_teal(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"answer": "teal"})


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_an_upstreams_question_reaches_the_client_and_its_answer_the_replica_that_asked(
    replicas: Replicas, mode: str
) -> None:
    replicas_seen: set[str] = set()

    async def seen(response: httpx2.Response) -> None:
        if replica := response.headers.get("x-replica"):
            replicas_seen.add(replica)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {replicas.key}"}, timeout=60, event_hooks={"response": [seen]}
    )
    target = streamable_http_client(replicas.url("kitchen"), http_client=http)
    async with Client(target, mode=mode, elicitation_callback=answer_teal) as client:
        for _ in range(3):
            with anyio.fail_after(30):
                result = await client.call_tool("ask", {"question": "Favourite colour?"})
            assert not result.is_error, result.content
            assert "teal" in str(result.content)
    assert len(replicas_seen) == 1  # one caller, one replica

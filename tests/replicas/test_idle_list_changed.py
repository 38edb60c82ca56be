"""A catalog change made through one replica reaches the idle clients of another, with no request there.

Replica B applied catalog changes it heard of only at its next request, so a 2025-11-25 client idling on B
with its GET stream open heard nothing until some request, anyone's, reached B (replica probe). Now B applies
a catalog change once the catalog has been still for a moment (a redefinition made as delete + create still
lands as one change), and the client hears `notifications/tools/list_changed`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from tests.e2e.harness import manifold_cli
from tests.postgres import Cluster
from tests.replicas.harness import Replicas, run_replicas
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"
SERVER = {"id": "v1", "members": [{"upstream": "kitchen", "tools": ["echo"]}]}


@pytest.fixture
async def replicas(pg_cluster: Cluster) -> AsyncIterator[Replicas]:
    url = pg_cluster.new_database(migrated=True)
    async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
        async with run_replicas(url, {"kitchen": {"transport": "http", "url": kitchen}}) as world:
            yield world
    pg_cluster.drop_database(url)


def headers(key: str, session: str | None = None) -> dict[str, str]:
    found = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream",
             "Mcp-Protocol-Version": HANDSHAKE}  # fmt: skip
    return {**found, "Mcp-Session-Id": session} if session else found


async def test_an_idle_client_on_b_hears_of_a_server_changed_through_a(replicas: Replicas) -> None:
    a, b = replicas.gateways
    async with httpx2.AsyncClient(timeout=60) as http:
        made = await http.post(f"{a.base}/admin/api/virtual-servers", json=SERVER,
                               headers={"Authorization": f"Bearer {a.key}"})  # fmt: skip
        assert made.status_code == 201, made.text
        hello = {"name": "idle", "version": "1"}
        init = {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": hello},
        }  # fmt: skip
        answer = await http.post(f"{b.base}/mcp/v1", json=init, headers=headers(b.key))
        assert answer.status_code == 200, answer.text
        session = answer.headers["mcp-session-id"]
        done = await http.post(f"{b.base}/mcp/v1", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                               headers=headers(b.key, session))  # fmt: skip
        assert done.status_code == 202
        heard = anyio.Event()
        streaming = anyio.Event()

        async def listen() -> None:
            async with http.stream("GET", f"{b.base}/mcp/v1", headers=headers(b.key, session)) as stream:
                assert stream.status_code == 200
                streaming.set()
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and "notifications/tools/list_changed" in line:
                        heard.set()
                        return

        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            await streaming.wait()
            changed = json.dumps({**SERVER, "members": [{"upstream": "kitchen", "tools": ["echo", "add"]}]})
            await manifold_cli(a, "vservers", "update", "--id", "v1", input=changed.encode())
            with anyio.fail_after(5):  # no request reaches B meanwhile
                await heard.wait()
            group.cancel_scope.cancel()

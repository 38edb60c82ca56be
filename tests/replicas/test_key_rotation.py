"""`manifold secrets rotate-key` run with one replica's config re-encrypts the shared database with a new key that
only that replica's state dir holds: every other replica then fails to read the secrets. It used to say only
"could not apply changes from the database: DecryptError", once a second; now it says what happened and what to
do, once a minute (replica probe), its /readyz answers 503 (the balancer takes it out), and it goes on answering
requests with the secrets it has (review: every request failed with a 500 once the failed change was retried on
each). docs/replicas.md says how to rotate with replicas.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest

from tests.e2e.harness import manifold_cli
from tests.postgres import Cluster
from tests.replicas.harness import run_replicas
from tests.replicas.test_propagation import status_on
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio


HANDSHAKE = "2025-11-25"
PING = {"jsonrpc": "2.0", "id": 9, "method": "ping"}


async def opened_session(http: httpx2.AsyncClient, base: str, key: str) -> dict[str, str]:
    """A 2025-11-25 session opened on `base`: the headers its requests carry."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    hello = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
    opened = await http.post(f"{base}/mcp/kitchen", json=initialize, headers=headers)
    assert opened.status_code == 200, opened.text
    return {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}


async def test_a_replica_left_with_the_old_key_says_why_it_cannot_read_and_what_to_do(pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database(migrated=True)
    try:
        async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
            upstreams = {
                "kitchen": {"transport": "http", "url": kitchen, "auth": {"mode": "static", "bearer": "secret:tok"}}
            }
            async with run_replicas(url, upstreams) as world:
                a, b = world.gateways
                await manifold_cli(a, "secrets", "set", "tok", input=b"first-value\n")
                await manifold_cli(a, "secrets", "rotate-key")  # A's state dir gets the new key; B's does not
                await manifold_cli(a, "secrets", "set", "tok", input=b"second-value\n")
                await wait_for(lambda: "rotate-key" in b.log(), 10, what="B saying why it cannot read the secrets")
                said = [line for line in b.log().splitlines() if "rotate-key" in line]
                assert len(said) == 1 and "ERROR" in said[0] and "docs/replicas.md" in said[0]
                assert "first-value" not in b.log() and "second-value" not in b.log()
                async with httpx2.AsyncClient(timeout=30) as http:
                    for _ in range(3):  # requests go on, with the secrets B has
                        assert await status_on(http, b, "kitchen", b.key) == 200
                    ready = await http.get(f"{b.base}/readyz")
                    assert ready.status_code == 503 and "secret key" in ready.json()["database"]
                    assert (await http.get(f"{a.base}/readyz")).status_code == 200
                    # Other changes still apply on B: a session it holds, ended through A, is closed there too
                    # (the failing secrets held back every change after them in the same batch, for good).
                    session = await opened_session(http, b.base, b.key)
                    assert (await http.delete(f"{a.base}/mcp/kitchen", headers=session)).status_code == 200

                    async def b_refuses() -> bool:
                        return (await http.post(f"{b.base}/mcp/kitchen", json=PING, headers=session)).status_code == 404

                    with anyio.fail_after(10):
                        while not await b_refuses():
                            await anyio.sleep(0.05)
    finally:
        pg_cluster.drop_database(url)

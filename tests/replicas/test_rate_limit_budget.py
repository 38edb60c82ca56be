"""On PostgreSQL, gateway replicas share one rate-limit budget (policy/rate_limit_store.py `SharedBuckets`):
calls spread over two replicas draw from one bucket, and a rule changed through one replica's admin API is
in force on the other. (On SQLite, one process, the buckets are in memory: tests/e2e/test_rate_limits.py.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2
import pytest

from tests import postgres
from tests.replicas.harness import Replicas, run_replicas
from tests.replicas.probes import mcp_request
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

RULES = [{"id": "echo-hourly", "what": "tool:kitchen/echo", "rate": "3/hour"}]


@pytest.fixture(scope="module")
def pg_database(pg_cluster: postgres.Cluster) -> Iterator[str]:
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(scope="module")
async def replicas(pg_database: str) -> AsyncIterator[Replicas]:
    async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
        upstreams = {"kitchen": {"transport": "http", "url": kitchen}}
        async with run_replicas(pg_database, upstreams, extra={"rate_limits": RULES}) as running:
            yield running
            for gw in running.gateways:
                assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def echo(http: httpx2.AsyncClient, base: str, key: str) -> int:
    answer = await mcp_request(http, base, "kitchen", key, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
    return answer.status_code


async def test_two_replicas_draw_from_one_budget_and_see_rule_changes(replicas: Replicas) -> None:
    a, b = (gw.base for gw in replicas.gateways)
    key = replicas.key
    async with httpx2.AsyncClient(timeout=30) as http:
        assert [await echo(http, a, key), await echo(http, b, key), await echo(http, a, key)] == [200, 200, 200]
        assert await echo(http, b, key) == 429  # the fourth call of the hour, wherever it lands
        assert await echo(http, a, key) == 429
        changed = await http.put(
            f"{a}/admin/api/rate-limits/echo-hourly",
            json={"what": "tool:kitchen/echo", "rate": "100/s"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert changed.status_code == 409  # a rule of manifold.yaml: changed there, not through the API
        created = await http.post(
            f"{a}/admin/api/rate-limits",
            json={"id": "add-hourly", "what": "tool:kitchen/add", "rate": "1/hour"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert created.status_code == 201, created.text
        add = {"name": "add", "arguments": {"a": 1, "b": 2}}
        began = time.monotonic()
        while (await mcp_request(http, b, "kitchen", key, "tools/call", add)).status_code == 200:
            # before replica B has the new rule, its calls pass (a bounded poll; usually the first refuses)
            assert time.monotonic() - began < 5, "replica B never applied the rule made on replica A"
            await anyio.sleep(0.02)
        assert (await mcp_request(http, a, "kitchen", key, "tools/call", add)).status_code == 429

"""/readyz says when the database does not answer (PostgreSQL): a replica that lost its database stayed in the
balancer's rotation (/readyz 200) while the requests that needed the database failed with 503 (replica probe).
Now it answers 503 naming the database, and 200 again once the database answers.

The database is lost for real: it stops taking connections (`ALLOW_CONNECTIONS false`) and every connection
the gateway holds is terminated.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest

from tests.e2e.harness import run_gateway
from tests.postgres import Cluster
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio


async def test_readyz_is_503_while_the_database_does_not_answer_and_200_once_it_does(pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database(migrated=True)
    name = url.rsplit("/", 1)[1]
    try:
        async with run_http_upstream(KITCHEN, "--name", "web") as web:
            async with run_gateway({"web": {"transport": "http", "url": web}}, gateway={"database_url": url}) as gw:
                async with httpx2.AsyncClient(timeout=10) as http:
                    assert (await http.get(f"{gw.base}/readyz")).status_code == 200
                    pg_cluster.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                    try:
                        pg_cluster.psql(
                            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                        )
                        ready = await http.get(f"{gw.base}/readyz")
                        assert ready.status_code == 503
                        assert "database" in ready.json() and ready.json()["status"] == "unavailable"
                        assert (await http.get(f"{gw.base}/healthz")).status_code == 200  # alive all the same
                    finally:
                        pg_cluster.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

                    # Polled, as the balancer does: ready again once the pool's next connection works.
                    with anyio.fail_after(15):
                        while (await http.get(f"{gw.base}/readyz")).status_code != 200:
                            await anyio.sleep(0.05)
    finally:
        pg_cluster.drop_database(url)

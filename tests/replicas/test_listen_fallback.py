"""PostgreSQL only (a SQLite gateway holds no LISTEN connection): while a replica's LISTEN connection is down
it polls the revision counters every 25 ms, so a change made through replica A is in force on replica B
within the poll interval plus what the LISTEN path takes (a counter read more: bounded here at 200 ms, for a
loaded test machine); when the database takes connections again, B listens again (and says so in its log)
and the 100 ms holds again.

The connection is cut for real: the database stops taking new connections (`ALLOW_CONNECTIONS false`, which
binds superusers too) and the LISTEN backends are terminated, so they cannot come back; the pools keep the
connections they hold (warmed first), so requests are still served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.postgres import Cluster
from tests.replicas.harness import Replicas, run_replicas
from tests.replicas.probes import mcp_request, seconds_until
from tests.replicas.test_propagation import (
    EXTRA,
    ROUNDS,
    a_user_with_a_grant,
    admin,
    is_,
    measured,
    print_measured,
    status_on,
)
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

LISTENER = "manifold-changes"  # store/revisions.py LISTENER_APPLICATION_NAME
FALLBACK_LIMIT_S = 0.200


@pytest.fixture(scope="module")
async def replicas(pg_cluster: Cluster) -> AsyncIterator[Replicas]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        url = pg_cluster.new_database()
        async with run_replicas(url, {"web": {"transport": "http", "url": web}}, extra=EXTRA) as world:
            yield world
            for gw in world.gateways:
                assert "Traceback" not in gw.log(), gw.log()[-4000:]
        pg_cluster.drop_database(url)
    print_measured("postgresql", listen_down=True)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


async def warm_pools(http: httpx2.AsyncClient, world: Replicas) -> None:
    """Several requests at once on each replica, so each pool holds connections to carry on with."""
    for gw in world.gateways:
        answers = await asyncio.gather(
            *(mcp_request(http, gw.base, "web", gw.key, "tools/list", request_id=i) for i in range(6)),
            *(admin(http, gw, "GET", "/keys") for _ in range(4)),
        )
        assert all(a.status_code == 200 for a in answers)


async def test_polling_takes_over_while_the_listen_connection_is_down(
    replicas: Replicas, http: httpx2.AsyncClient, pg_cluster: Cluster
) -> None:
    world = replicas
    a, b = world.gateways
    database = world.database_url.rsplit("/", 1)[1]
    users = [await a_user_with_a_grant(http, world, f"fallback-{i}@example.com") for i in range(ROUNDS)]
    await warm_pools(http, world)

    async def grant_removed(i: int) -> float:
        key, grant = users[i]
        assert (await admin(http, a, "DELETE", f"/grants/{grant['id']}")).status_code == 200
        since = time.monotonic()
        refused = lambda: is_(status_on(http, b, "web", key["token"]), 403)  # noqa: E731
        return await seconds_until(since, refused, what="grant removed on replica B")

    async def key_revoked(i: int) -> float:
        key, _ = await a_user_with_a_grant(http, world, f"listening-again-{i}@example.com")
        assert (await admin(http, a, "DELETE", f"/keys/{key['id']}")).status_code == 200
        since = time.monotonic()
        refused = lambda: is_(status_on(http, b, "web", key["token"]), 401)  # noqa: E731
        return await seconds_until(since, refused, what="key revoked on replica B")

    pg_cluster.psql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        pg_cluster.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND application_name = '{LISTENER}'"
        )
        await wait_for(lambda: "no LISTEN connection" in b.log(), 10, what="B noticing its LISTEN connection is gone")
        assert (await status_on(http, b, "web", users[0][0]["token"])) == 200  # still served, from the pool
        await measured(world, "grant removed, LISTEN down", grant_removed, limit=FALLBACK_LIMIT_S)
    finally:
        pg_cluster.psql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    await wait_for(lambda: "listening for database changes again" in b.log(), 15, what="B listening again")
    await measured(world, "key revoked, LISTEN back", key_revoked)

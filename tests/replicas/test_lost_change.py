"""A change that fails to apply on a replica once is applied there later (PostgreSQL).

Replica B hears that keys or grants changed and reloads them; when that reload fails (here the `grants` table is
locked past the database's statement_timeout, as a failover or a busy moment may do), the change was counted
as seen and dropped: a key revoked through replica A stayed accepted by B for good (replica probe). Now B tries
again at its next tick or request, and refuses the key once the database answers again.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.postgres import SUPERUSER, Cluster
from tests.replicas.harness import Replicas, run_replicas
from tests.replicas.probes import seconds_until
from tests.replicas.test_propagation import a_user_with_a_grant, admin, is_, status_on
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

LOCKED_SECONDS = 2


@pytest.fixture
async def replicas(pg_cluster: Cluster) -> AsyncIterator[tuple[Replicas, Cluster, str]]:
    url = pg_cluster.new_database(migrated=True)
    name = url.rsplit("/", 1)[1]
    # A setting a DBA may well have: any statement waiting on a lock longer than this fails.
    pg_cluster.psql(f"ALTER DATABASE \"{name}\" SET statement_timeout = '300ms'")
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        async with run_replicas(url, {"web": {"transport": "http", "url": web}}) as world:
            yield world, pg_cluster, name
    pg_cluster.drop_database(url)


def grants_locked(cluster: Cluster, database: str) -> bool:
    held = cluster.psql(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
        "WHERE c.relname = 'grants' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        database,
    )
    return held.strip() == "1"


async def test_a_key_revoked_while_b_cannot_read_is_refused_by_b_once_it_can(
    replicas: tuple[Replicas, Cluster, str],
) -> None:
    world, cluster, database = replicas
    a, b = world.gateways
    async with httpx2.AsyncClient(timeout=30) as http:
        key, _ = await a_user_with_a_grant(http, world, "alice@example.com")
        holder = subprocess.Popen(
            [str(cluster.bindir / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", SUPERUSER,
             "-d", database, "-c", f"SET statement_timeout = 0; BEGIN; LOCK TABLE grants IN ACCESS EXCLUSIVE MODE; "
             f"SELECT pg_sleep({LOCKED_SECONDS}); COMMIT;"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_for(lambda: grants_locked(cluster, database), what="the grants table locked")
            # Revoking touches the keys, not the grants: A answers; B's reload of keys and grants fails.
            assert (await admin(http, a, "DELETE", f"/keys/{key['id']}")).status_code == 200
            await wait_for(lambda: "could not apply changes from the database" in b.log(), what="B's reload failing")
        finally:
            holder.wait(timeout=30)
        since = time.monotonic()
        refused = lambda: is_(status_on(http, b, "web", key["token"]), 401)  # noqa: E731
        await seconds_until(since, refused, what="the revoked key refused on replica B once the lock went")

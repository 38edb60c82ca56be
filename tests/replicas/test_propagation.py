"""A change made through replica A is in force on replica B within 100 ms (issue 14), on SQLite and on
PostgreSQL: a key revoked, a grant removed, a virtual server changed.

Two replicas (their own `manifold serve` processes) on one database with one secret key, haproxy in front
(tests/replicas/harness.py). Each change goes through A's admin API; the clock starts when A's answer
arrives, and B is asked directly (not through the balancer) until it shows the change; the time of that
answer is the propagation time, asserted ≤ 100 ms. B has used the old state just before (its caches are warm),
so a stale B would answer from them. SQLite: B notices on its next request (`PRAGMA data_version`).
PostgreSQL: B's LISTEN connection hears the NOTIFY sent with the change (test_listen_fallback.py: polling
every 50 ms while it is down).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest

from tests.e2e.harness import Gateway
from tests.replicas.harness import Replicas, run_replicas
from tests.replicas.probes import PROPAGATION_LIMIT_S, mcp_request, seconds_until, tool_names
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

API = "/admin/api"
EXTRA = {"grants": [{"who": "user:dev", "what": ["server:*", "vserver:*"], "description": "the dev key uses all"}]}
ROUNDS = 3  # each change is made and measured this many times; the median is held to the limit
MEASURED: list[tuple[str, str, list[float]]] = []  # (backend, change, seconds): printed at the end of the module


@pytest.fixture(scope="module")
async def replicas(database: str | None) -> AsyncIterator[Replicas]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        async with run_replicas(database, {"web": {"transport": "http", "url": web}}, extra=EXTRA) as world:
            yield world
            for gw in world.gateways:
                assert "Traceback" not in gw.log(), gw.log()[-4000:]
    backend = "sqlite" if database is None else "postgresql"
    print_measured(backend)


def print_measured(backend: str, *, listen_down: bool = False) -> None:
    """`listen_down`: the fallback module's measurements (test_listen_fallback.py), else this module's."""
    for name, change, times in MEASURED:
        if name == backend and ("LISTEN" in change) == listen_down:
            shown = " / ".join(f"{t * 1000:.1f}" for t in times)
            print(f"\npropagation [{backend}] {change}: {shown} ms (median {statistics.median(times) * 1000:.1f})")


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


def backend_of(world: Replicas) -> str:
    return "postgresql" if world.database_url.startswith("postgresql") else "sqlite"


async def admin(http: httpx2.AsyncClient, gw: Gateway, method: str, path: str, body: Any = None) -> httpx2.Response:
    return await http.request(method, f"{gw.base}{API}{path}", json=body, headers={"Authorization": f"Bearer {gw.key}"})


async def created(http: httpx2.AsyncClient, gw: Gateway, path: str, body: Any) -> dict[str, Any]:
    answer = await admin(http, gw, "POST", path, body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def status_on(http: httpx2.AsyncClient, gw: Gateway, server: str, token: str) -> int:
    return (await mcp_request(http, gw.base, server, token, "tools/list")).status_code


async def measured(
    world: Replicas,
    change: str,
    one_round: Callable[[int], Awaitable[float]],
    *,
    limit: float = PROPAGATION_LIMIT_S,
) -> list[float]:
    """Make the change ROUNDS times (`one_round(i)`: the seconds from A's answer to B showing it) and hold
    the median to `limit`: one scheduling hiccup on a shared machine does not decide, a slow path does."""
    times = [await one_round(i) for i in range(ROUNDS)]
    MEASURED.append((backend_of(world), change, times))
    shown = " / ".join(f"{t * 1000:.0f}" for t in times)
    assert statistics.median(times) <= limit, f"{change}: in force on replica B after {shown} ms"
    return times


async def a_user_with_a_grant(http: httpx2.AsyncClient, world: Replicas, user: str) -> tuple[dict, dict]:
    """A key and a grant for `user` made on A, and B already deciding with them (warm caches)."""
    a, b = world.gateways
    key = await created(http, a, "/keys", {"user": user, "name": "laptop"})
    grant = await created(http, a, "/grants", {"who": f"user:{user}", "what": ["server:web"]})
    since = time.monotonic()
    await seconds_until(since, lambda: is_(status_on(http, b, "web", key["token"]), 200), what="new key on B")
    return key, grant


async def is_(answer: Any, expected: Any) -> bool:
    return (await answer) == expected


async def test_a_key_revoked_on_a_is_refused_by_b_within_100ms(replicas: Replicas, http: httpx2.AsyncClient) -> None:
    world = replicas
    a, b = world.gateways

    async def one_round(i: int) -> float:
        key, _ = await a_user_with_a_grant(http, world, f"revoked-{i}@example.com")
        assert (await admin(http, a, "DELETE", f"/keys/{key['id']}")).status_code == 200
        since = time.monotonic()
        refused = lambda: is_(status_on(http, b, "web", key["token"]), 401)  # noqa: E731
        return await seconds_until(since, refused, what="key revoked on replica B")

    await measured(world, "key revoked", one_round)


async def test_a_grant_removed_on_a_is_refused_by_b_within_100ms(replicas: Replicas, http: httpx2.AsyncClient) -> None:
    world = replicas
    a, b = world.gateways

    async def one_round(i: int) -> float:
        key, grant = await a_user_with_a_grant(http, world, f"ungranted-{i}@example.com")
        assert (await admin(http, a, "DELETE", f"/grants/{grant['id']}")).status_code == 200
        since = time.monotonic()
        refused = lambda: is_(status_on(http, b, "web", key["token"]), 403)  # noqa: E731
        return await seconds_until(since, refused, what="grant removed on replica B")

    await measured(world, "grant removed", one_round)


async def test_a_virtual_server_changed_on_a_is_served_by_b_within_100ms(
    replicas: Replicas,
    http: httpx2.AsyncClient,
) -> None:
    world = replicas
    a, b = world.gateways
    await created(http, a, "/virtual-servers", {"id": "picked", "members": [{"upstream": "web", "tools": ["echo"]}]})
    since = time.monotonic()
    await seconds_until(since, lambda: is_(tool_names(http, b.base, "picked", b.key), ["web__echo"]), what="on B")

    async def one_round(i: int) -> float:
        tools = ["echo", "add"] if i % 2 == 0 else ["echo"]  # one tool more, then one less, ...
        changed = {"members": [{"upstream": "web", "tools": tools}]}
        assert (await admin(http, a, "PUT", "/virtual-servers/picked", changed)).status_code == 200
        since = time.monotonic()
        served = lambda: is_(tool_names(http, b.base, "picked", b.key), sorted(f"web__{t}" for t in tools))  # noqa: E731
        return await seconds_until(since, served, what="virtual server changed on replica B")

    await measured(world, "virtual server changed", one_round)

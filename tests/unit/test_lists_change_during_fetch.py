"""A list fetch that began before an upstream's change must not be the answer to a client that lists because
of that change: the list_changed it heard is announced once, so a client served the list from before kept it
until the next change (a known gap, carried from session 13's notes). The cache fetches once more, from after
the change. The upstream is a fake pool (catalog/lists.py's `Requester`): what it answers is the table as it
stood when a request began, and one request can be held until released."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.upstream.credential import SHARED, Outbound
from tests.unit.test_view import FakeSession, tools

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]


class HeldPool:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.requests = 0
        self.hold: asyncio.Event | None = None  # the next request waits for it, answering what it saw at first
        self.holding = asyncio.Event()  # set while a request is held

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> FakeSession:
        return FakeSession({"tools": {}})

    async def request(
        self,
        upstream_id: str,
        method: str,
        params: JSON | None = None,
        *,
        sink: Any = None,  # noqa: ANN401
        timeout: float | None = None,
        outbound: Outbound = SHARED,
    ) -> JSON:
        self.requests += 1
        seen = list(self.names)  # the upstream's list as this request found it
        hold, self.hold = self.hold, None
        if hold is not None:
            self.holding.set()
            await hold.wait()
        return {"result": {"tools": tools(*seen)}}


def names(items: list[JSON]) -> list[str]:
    return [item["name"] for item in items]


@pytest.mark.parametrize("patient", [False, True])
async def test_a_list_asked_after_a_change_is_fetched_after_it(patient: bool) -> None:
    pool = HeldPool(["a"])
    lists = UpstreamLists(pool, ttl_seconds=300)
    assert names((await lists.get("up", "tools")).items) == ["a"]

    # A refresh begins (its TTL ran out, say) and is slow; meanwhile the upstream adds a tool and says so.
    pool.hold = release = asyncio.Event()
    lists.invalidate("up", "tools")
    refresh = asyncio.ensure_future(lists.get("up", "tools", patient=True))
    await pool.holding.wait()
    pool.names = ["a", "b"]
    lists.invalidate("up", "tools")  # the upstream's list_changed; clients are told and list again

    relisted = asyncio.ensure_future(lists.get("up", "tools", patient=patient))
    await asyncio.sleep(0)  # it has joined the refresh in flight
    release.set()
    assert names((await relisted).items) == ["a", "b"]
    await refresh
    assert pool.requests == 3  # the first list, the slow refresh, and one more after the change

"""The list cache's patience with an upstream that does not answer its lists (catalog/lists.py REFRESH_WAIT,
TIMED_OUT_HOLD): what a list serves while a refresh is slow, after it timed out, and after it failed otherwise."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from manifold.catalog import lists as lists_module
from manifold.catalog.lists import ListError, UpstreamLists
from manifold.upstream.base import ErrorKind, UpstreamError
from manifold.upstream.credential import SHARED, Outbound, in_handshake_era

pytestmark = pytest.mark.anyio
JSON = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Session:
    capabilities: JSON = field(default_factory=lambda: {"tools": {}})
    instructions: str | None = None


@dataclass
class Upstream:
    """tools/list answers as the test says: `tools` (after `gate` opens, if set), a timeout, or an error."""

    tools: list[str] = field(default_factory=lambda: ["a"])
    outcome: str = "ok"  # ok | timeout | error
    gate: asyncio.Event | None = None
    asked: int = 0

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> Session:
        return Session()

    async def request(self, upstream_id: str, method: str, params: JSON | None = None, **_: Any) -> JSON:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.outcome == "timeout":
            raise UpstreamError(upstream_id, "did not answer within 60s", kind=ErrorKind.TIMEOUT)
        if self.outcome == "error":
            return {"error": {"code": -32603, "message": "broken"}}
        return {"result": {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in self.tools]}}


def names(entry: Any) -> list[str]:
    return [t["name"] for t in entry.items]


async def test_after_a_timeout_and_its_hold_a_fast_failure_is_said_not_hidden_behind_the_earlier_list() -> None:
    up = Upstream()
    cache = UpstreamLists(up, 60)
    assert names(await cache.get("u", "tools")) == ["a"]
    cache.invalidate("u")
    up.outcome = "timeout"
    assert names(await cache.get("u", "tools")) == ["a"]  # timed out: the earlier list
    cache.entry("u", "tools").hold_until = 0  # the hold is over
    up.outcome = "error"
    with pytest.raises(ListError):  # was: the earlier list, silently, for good
        await cache.get("u", "tools")


async def test_a_member_that_never_listed_is_not_waited_for_again_once_it_timed_out() -> None:
    up = Upstream(outcome="timeout")
    cache = UpstreamLists(up, 60)
    with pytest.raises(UpstreamError):
        await cache.get("u", "tools")
    first = up.asked
    errors = []
    for _ in range(2):  # within the hold: said at once, nothing asked
        with pytest.raises(UpstreamError) as caught:
            await cache.get("u", "tools")
        errors.append(caught.value)
    assert up.asked == first and errors[0] is not errors[1]  # a copy each time
    cache.entry("u", "tools").hold_until = 0  # the hold is over: tried again in the background ...
    up.outcome, up.gate = "ok", asyncio.Event()
    async with asyncio.timeout(1):
        with pytest.raises(UpstreamError):  # ... and said at once meanwhile, not waited for
            await cache.get("u", "tools")
    up.gate.set()
    async with asyncio.timeout(1):
        while cache.entry("u", "tools").fetching is not None:
            await asyncio.sleep(0.01)
    assert names(await cache.get("u", "tools")) == ["a"]  # it answered: served


async def test_a_slow_refresh_serves_the_earlier_list_but_a_patient_caller_gets_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lists_module, "REFRESH_WAIT", 0.05)
    up = Upstream()
    cache = UpstreamLists(up, 60)
    await cache.get("u", "tools")
    cache.invalidate("u")  # list_changed: a new tool
    up.tools, up.gate = ["a", "b"], asyncio.Event()
    assert names(await cache.get("u", "tools")) == ["a"]  # the earlier list after REFRESH_WAIT
    patient = asyncio.ensure_future(cache.get("u", "tools", patient=True))
    await asyncio.sleep(0.1)  # longer than REFRESH_WAIT: the patient caller is still waiting
    assert not patient.done()
    up.gate.set()
    assert names(await asyncio.wait_for(patient, 1)) == ["a", "b"]


@dataclass
class PerCaller:
    """An upstream whose tools/list refuses one caller's credential in that caller's words (their account)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> Session:
        return Session()

    async def request(self, upstream_id: str, method: str, params: JSON | None = None, *,
                      outbound: Outbound = SHARED, **_: Any) -> JSON:  # fmt: skip
        await self.gate.wait()
        if outbound.identity == "alice":
            return {"error": {"code": -32000, "message": "account alice@corp.com (workspace apollo) is suspended"}}
        return {"result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}}


async def test_a_caller_waiting_on_another_callers_fetch_never_hears_that_callers_failure() -> None:
    """Bob asks while Alice's fetch (with her credential) is in flight; hers fails in words about her account.
    Bob gets his own answer, fetched with his credential, never her words."""
    up = PerCaller()
    cache = UpstreamLists(up, 60)
    # Steps run in the order scheduled: Alice starts the fetch, Bob joins it, then the upstream answers.
    alice = asyncio.ensure_future(cache.get("u", "tools", outbound=Outbound({"X-Tok": "a"}, identity="alice")))
    bob = asyncio.ensure_future(cache.get("u", "tools", outbound=Outbound({"X-Tok": "b"}, identity="bob")))
    asyncio.get_running_loop().call_soon(up.gate.set)
    with pytest.raises(ListError) as hers:
        await alice
    assert "alice@corp.com" in str(hers.value.reason)  # hers to hear
    assert names(await bob) == ["echo"]


async def test_callers_of_either_era_share_one_fetch_of_a_shared_list_and_hear_its_failure() -> None:
    """Callers whose credentials name their own 2025-11-25 sessions still list through the one shared session:
    one fetch, and its failure said to all of them as it is (review: each was taken for another caller's
    credential, fetched again, and told "could not be listed just now")."""
    up = Upstream(outcome="error", gate=asyncio.Event())
    cache = UpstreamLists(up, 60)
    callers = [in_handshake_era(SHARED, f"caller|caller:u{i}") for i in range(5)] + [SHARED]
    waiting = [asyncio.ensure_future(cache.get("u", "tools", outbound=o)) for o in callers]
    asyncio.get_running_loop().call_soon(up.gate.set)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert up.asked == 1
    assert {str(r) for r in results} == {"tools/list failed: broken"}

"""The list cache and a member whose stdio command is still starting (catalog/lists.py, upstream/pool.py
`StillStarting`): the first list of it waits its connect_timeout, later ones of any kind do not wait again
while it starts; once it is up its lists are said to have changed and the next list has its tools (not held
for TIMED_OUT_HOLD after it came up)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.pool import UpstreamPool
from tests.waiting import NotificationLog

pytestmark = pytest.mark.anyio

SLOW = str(Path(__file__).resolve().parents[1] / "upstreams" / "slow_start_stdio.py")
CONNECT_TIMEOUT = 1.0


async def test_lists_of_a_member_still_starting_answer_at_once_until_it_is_up(tmp_path: Path) -> None:
    gate = tmp_path / "fetched"
    config = UpstreamConfig(
        transport="stdio", command=sys.executable, args=[SLOW, str(gate)], connect_timeout=CONNECT_TIMEOUT
    )
    notes = NotificationLog()
    pool = UpstreamPool({"slow": config}, notes)
    lists = UpstreamLists(pool, ttl_seconds=300)
    try:
        began = time.monotonic()
        with pytest.raises(UpstreamError) as first:
            await lists.get("slow", "tools")
        assert time.monotonic() - began >= CONNECT_TIMEOUT * 0.9  # the first waits connect_timeout
        assert first.value.reason.startswith("is still starting"), first.value
        for kind in ("tools", "tools", "prompts", "resources"):
            began = time.monotonic()
            with pytest.raises(UpstreamError) as again:
                await lists.get("slow", kind)
            took = time.monotonic() - began
            assert took < CONNECT_TIMEOUT / 2, f"{kind} waited {took:.2f}s"
            assert again.value.reason.startswith("is still starting"), again.value
        assert pool.health()["slow"]["state"] == "connecting"  # the start goes on

        gate.touch()
        await notes.until("notifications/tools/list_changed", 30)
        assert "notifications/prompts/list_changed" in notes.methods
        entry = await lists.get("slow", "tools")
        assert "echo" in {tool["name"] for tool in entry.items}
        assert pool.health()["slow"]["state"] == "connected"
    finally:
        await pool.aclose()

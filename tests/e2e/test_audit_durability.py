"""An answered call always has its audit row, even when the gateway is killed (SIGKILL) right after
answering: a burst of calls against a real gateway and a real upstream, the gateway killed while the burst
runs (or the moment it is over), started again on the same state directory; every call that got its answer
has exactly one row, and no row is there twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

BURST = 300
WORKERS = 12
KILL_AFTER = 150  # answers seen before the kill, when killing mid-burst
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "burst", "version": "0"}},
}


async def burst(gw: Gateway, *, kill_after: int | None) -> set[str]:
    """`BURST` echo calls from `WORKERS` concurrent callers on one session, each with its own request id;
    returns the ids that were answered with a result. With `kill_after`, the gateway is SIGKILLed as soon as
    that many answers are in (the others are in flight or not sent yet); without, once all are answered."""
    answered: set[str] = set()
    todo = [f"burst-{i}" for i in range(BURST)]
    async with gw.http() as http:
        init = await http.post(gw.url("alpha"), json=INIT, headers=HEADERS)
        assert init.status_code == 200, init.text
        headers = {**HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}

        async def caller() -> None:
            while todo and gw.process.poll() is None:
                request_id = todo.pop()
                call = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": request_id}},
                }
                try:
                    reply = await http.post(gw.url("alpha"), json=call, headers=headers)
                except httpx2.TransportError:
                    return  # the gateway is gone
                assert reply.status_code == 200, reply.text
                assert reply.json()["result"]["content"][0]["text"] == request_id
                answered.add(request_id)
                if kill_after is not None and len(answered) >= kill_after and gw.process.poll() is None:
                    gw.process.kill()

        async with anyio.create_task_group() as group:
            for _ in range(WORKERS):
                group.start_soon(caller)
    if kill_after is None:
        assert len(answered) == BURST
        gw.process.kill()
    await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGKILL")
    assert gw.process.returncode == -9
    return answered


async def audited_request_ids(gw: Gateway) -> Counter[str]:
    done = await manifold_cli(gw, "audit", "--json", "--server", "alpha", "--limit", str(10 * BURST))
    rows = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return Counter(row["request_id"] for row in rows if row["method"] == "tools/call")


@pytest.mark.parametrize("kill_after", [KILL_AFTER, None], ids=["mid-burst", "right-after-burst"])
async def test_every_answered_call_has_its_row_after_sigkill(tmp_path: Path, kill_after: int | None) -> None:
    directory = tmp_path / "gateway"
    extra = {"audit": {"jsonl_path": "audit.jsonl"}}
    async with run_http_upstream(KITCHEN, "--name", "alpha") as url:
        upstreams = {"alpha": {"transport": "http", "url": url}}
        async with run_gateway(upstreams, extra=extra, directory=directory) as gw:
            answered = await burst(gw, kill_after=kill_after)
        assert len(answered) >= (KILL_AFTER if kill_after else BURST)

        async with run_gateway(upstreams, extra=extra, directory=directory) as gw:
            rows = await audited_request_ids(gw)
            missing = sorted(answered - set(rows))
            assert not missing, f"{len(missing)} of {len(answered)} answered calls have no audit row: {missing[:5]}"
            twice = sorted(request_id for request_id, n in rows.items() if n > 1)
            assert not twice, f"{len(twice)} rows are there more than once: {twice[:5]}"
            assert set(rows) <= {f"burst-{i}" for i in range(BURST)}

            # A clean stop (SIGTERM) writes everything and leaves no journal behind.
            gw.process.terminate()
            await wait_for(lambda: gw.process.poll() is not None, 10, what="the gateway's exit after SIGTERM")
        journal = directory / "state" / "audit-journal"
        assert not [p.name for p in journal.glob("*") if p.is_file()]
        mirror = (directory / "state" / "audit.jsonl").read_text().splitlines()
        assert answered <= {json.loads(line)["request_id"] for line in mirror}  # the mirror has every answered call

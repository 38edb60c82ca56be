"""The legacy HTTP+SSE transport keeps a call's messages in order: its progress notifications reach the client
before its result (relay/sse.py). Was (real-clients probe): the result overtook progress queued before it in
3 to 5 of 10 calls, and a client's progress callback, which drops progress for a request already answered,
got none of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.e2e.harness import run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

CALLS = 20
STEPS = 5


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def test_progress_arrives_before_the_result_on_the_legacy_sse_transport() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "kit") as url,
        run_gateway({"kit": {"transport": "http", "url": url}}) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with http.stream("GET", gw.sse_url("kit"), headers={"Accept": "text/event-stream"}) as stream:
                events = _events(stream.aiter_lines())
                endpoint = httpx2.URL(gw.sse_url("kit")).join(await anext(events))

                async def send(message: dict) -> None:
                    assert (await http.post(endpoint, json=message)).status_code == 202

                client = {"name": "raw", "version": "1"}
                init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client}
                await send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
                assert json.loads(await anext(events))["id"] == 0
                await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                for call in range(1, CALLS + 1):
                    params = {"name": "progress", "arguments": {"steps": STEPS}, "_meta": {"progressToken": call}}
                    await send({"jsonrpc": "2.0", "id": call, "method": "tools/call", "params": params})
                    progressed = []
                    while True:
                        message = json.loads(await anext(events))
                        if message.get("method") == "notifications/progress":
                            assert message["params"]["progressToken"] == call
                            progressed.append(message["params"]["progress"])
                        elif message.get("id") == call:
                            break
                    assert len(progressed) == STEPS, f"call {call}: {len(progressed)} of {STEPS} before its result"

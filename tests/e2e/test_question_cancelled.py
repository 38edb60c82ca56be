"""A question the gateway put to a client for a call (elicitation, sampling) is withdrawn when that call ends
without it: the client is sent `notifications/cancelled` for it (relay/response_channel.py). Was (real-clients
probe): a client that cancelled its call while its elicitation dialog was open was never told; the dialog
stayed open for a dead call, and its answer went nowhere."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest

from tests.e2e.harness import run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio


async def test_cancelling_a_call_withdraws_its_open_elicitation_at_the_client() -> None:
    asked, withdrawn = anyio.Event(), anyio.Event()

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.set()
        try:
            await anyio.sleep_forever()  # a person who has not answered yet
        finally:
            withdrawn.set()
        raise AssertionError("unreachable")

    async with run_http_upstream(KITCHEN, "--name", "kit") as url:
        async with run_gateway({"kit": {"transport": "http", "url": url, "protocol": "2025-11-25"}}) as gw:
            async with gw.client("kit", elicitation_callback=elicit) as client:
                await client.list_tools()
                with anyio.fail_after(30):
                    async with anyio.create_task_group() as group:
                        group.start_soon(client.call_tool, "ask", {"question": "your name?"})
                        await asked.wait()
                        group.cancel_scope.cancel()  # the client gives the call up
                    await withdrawn.wait()  # told by the gateway: its handler is cancelled
                # and the session goes on
                assert not (await client.call_tool("echo", {"text": "still here"})).is_error

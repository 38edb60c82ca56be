"""A stdio command that dies while a helper it forked still holds its stdout: the call in flight fails at once,
naming the upstream and its exit, and the next call starts it again (upstream/stdio.py `_watch`). Was (outside
probe): the death was seen only at stdout's end, which the helper held off, so the call waited out call_timeout
("did not answer within 10s") and no "process exited" warning was logged."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mcp_types as types
import pytest

from tests.e2e.harness import run_gateway, stdio_upstream
from tests.e2e.test_stdio_descendants import alive
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

CRASHING = str(Path(__file__).resolve().parents[1] / "upstreams" / "crashing_stdio.py")


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
async def test_a_crash_is_seen_at_once_while_a_forked_helper_holds_stdout(tmp_path: Path) -> None:
    pid_file = tmp_path / "helper.pid"
    upstream = stdio_upstream(CRASHING, str(pid_file), call_timeout=30)
    async with run_gateway({"crashy": upstream}) as gw:
        async with gw.client("crashy") as client:
            assert text_of(await client.call_tool("echo", {})) == "fine"
            helper = int(pid_file.read_text())
            assert alive(helper)
            began = time.monotonic()
            result = await client.call_tool("crash", {})
            took = time.monotonic() - began
            assert result.is_error, result
            text = text_of(result)
            assert "upstream 'crashy'" in text and "exited (code 3)" in text, text
            assert "segfault in the frobnicator" in text, text  # its last stderr line
            assert took < 3, f"the call failed after {took:.1f}s (call_timeout is 30s)"
            await wait_for(lambda: not alive(helper), 5, what="the helper ending with its command")
            # started again on the next call
            assert text_of(await client.call_tool("echo", {})) == "fine"
        await wait_for(lambda: "upstream crashy: process exited (code 3)" in gw.log(), what="the exit's warning")

"""A stdio upstream's command and everything it started end together (upstream/stdio.py `_end_descendants`).
Was (ops probe): a helper the command forked outlived it at every stop, crash and restart, adopted by init."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import run_gateway, stdio_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

FORKING = str(Path(__file__).resolve().parents[1] / "upstreams" / "forking_stdio.py")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
async def test_a_helper_the_command_forked_ends_when_the_gateway_stops(tmp_path: Path) -> None:
    pid_file = tmp_path / "helper.pid"
    async with run_gateway({"forking": stdio_upstream(FORKING, str(pid_file))}) as gw:
        async with gw.client("forking") as client:
            assert (await client.call_tool("echo", {"text": "hi"})).is_error is False
        helper = int(pid_file.read_text())
        assert alive(helper)
    await wait_for(lambda: not alive(helper), 10, what="the helper ending with its command")

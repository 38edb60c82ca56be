"""/healthz and /readyz of a real gateway whose stdio upstream crashes and is then fixed: the client, the
log and /healthz say what the process printed (never its secrets); /readyz is 503 naming the required
upstream while it is down and 200 once it is back; the failure is forgotten on recovery."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).parents[1] / "upstreams" / "upstream_min.py"
SECRET = "s3cr3t-Value-4-the-child"
LAST_LINE = "None of the specified directories are accessible"
CRASH = f"""
import os, sys
print("using token " + os.environ["API_KEY"], file=sys.stderr)
print("Error: {LAST_LINE}", file=sys.stderr)
sys.exit(1)
"""
GOOD = f"import runpy, sys\nsys.argv = [{str(SERVER)!r}]\nrunpy.run_path({str(SERVER)!r}, run_name='__main__')\n"


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def ready(gw: Gateway) -> tuple[int, dict]:
    async with gw.http() as http:
        answer = await http.get(f"{gw.base}/readyz")
    return answer.status_code, answer.json()


async def test_a_crashed_upstream_explains_itself_and_readiness_follows_it(tmp_path: Path) -> None:
    files, optional = tmp_path / "files.py", tmp_path / "optional.py"
    files.write_text(CRASH)
    optional.write_text(CRASH)
    upstreams = {
        "files": stdio_upstream(str(files), env={"API_KEY": SECRET}, protocol="2025-11-25"),
        "optional": stdio_upstream(str(optional), env={"API_KEY": SECRET}, required=False),
        "live": stdio_upstream(str(SERVER)),
    }
    servers = {"eng": {"members": [{"upstream": "files"}, {"upstream": "live"}]}}
    async with run_gateway(upstreams, servers) as gw:
        async with gw.client("eng") as client:
            for _ in range(3):
                names = {t.name for t in (await client.list_tools()).tools}
                assert "live__echo" in names and not any(n.startswith("files__") for n in names)
            result = await client.call_tool("files__read", {})
            assert result.is_error
            assert "member 'files'" in text_of(result) and LAST_LINE in text_of(result), text_of(result)
            assert SECRET not in text_of(result)
        async with gw.client("optional") as client:
            assert (await client.call_tool("anything", {})).is_error

        status, body = await ready(gw)
        assert status == 503, body
        assert body["status"] != "ok" and body["down_upstreams"] == ["files"]

        async with gw.http() as http:
            live = await http.get(f"{gw.base}/healthz")
        assert live.status_code == 200
        health = live.json()["upstreams"]
        assert health["files"]["state"] != "connected" and health["files"]["down"] is True
        assert health["files"]["stderr"][-1] == f"Error: {LAST_LINE}"
        assert health["optional"]["down"] is True and health["optional"]["required"] is False
        assert health["live"]["state"] == "connected"
        since = health["files"]["since"]
        assert isinstance(since, str) and abs(datetime.fromisoformat(since).timestamp() - time.time()) < 300
        assert SECRET not in live.text and SECRET not in gw.log()

        log = gw.log()
        assert LAST_LINE in log
        assert log.count("member 'files' left out of tools") == 1, log

        files.write_text(GOOD)  # the operator fixes it; readiness comes back without a client's call
        deadline = time.monotonic() + 20
        while (answer := await ready(gw))[0] != 200:
            assert time.monotonic() < deadline, answer
            await anyio.sleep(0.2)  # a bounded poll of /readyz, which itself retries the upstream
        assert answer[1]["status"] == "ok" and "down_upstreams" not in answer[1]

        async with gw.http() as http:
            health = (await http.get(f"{gw.base}/healthz")).json()["upstreams"]
        assert health["files"]["state"] == "connected"
        assert health["files"]["last_error"] is None and health["files"]["stderr"] == []
        assert health["optional"]["down"] is True  # still broken, but not required: ready all the same


async def test_a_database_file_removed_while_the_gateway_runs_is_said_and_makes_it_unready(tmp_path: Path) -> None:
    """Was (resilience review): deleting the SQLite file under a running gateway was silent: it went on
    answering (and writing audit rows, keys, sessions into the unlinked file, all lost at the next start) with
    /readyz at 200. Now it logs an error within a second or so, and /readyz answers 503 naming the file."""
    database = tmp_path / "manifold.db"  # SQLite in both runs of the e2e suite: a file is what can be removed
    async with run_gateway({}, gateway={"database_url": f"sqlite+aiosqlite:///{database}"}) as gw, gw.http() as http:
        assert (await http.get(f"{gw.base}/readyz")).status_code == 200
        database.unlink()
        await wait_for(lambda: "was removed while the gateway runs" in gw.log(), 10, what="the error logged")
        ready = await http.get(f"{gw.base}/readyz")
        assert ready.status_code == 503 and ready.json()["database"].endswith("was removed while the gateway runs")
        assert (await http.get(f"{gw.base}/healthz")).status_code == 200  # alive: not restarted in a loop

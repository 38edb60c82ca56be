"""The 0.2.0-alpha.12 suite's tasks-* scenarios (SEP-2663) through the gateway (issue 10, item 4), and two
real callers' tasks kept apart.

The upstream is tests/upstreams/tasks_fixture.py, a stdio server with the scenarios' tools (`greet`,
`slow_compute`, `failing_job`, ...), in two modes:

- handshake-era, with no task support of its own (its tools only say `execution.taskSupport`): the gateway
  runs the calls as tasks itself (relay/tasks.py), so every check is the gateway's own behaviour;
- `--native`, a 2026-07-28 server that runs its own tasks: the gateway relays them under its own task ids.

The suite sends no credentials, so for it the gateway runs with `allow_unauthenticated` on loopback, behind
a virtual server that keeps the names. Extension scenarios are not on the spec timeline, so the suite runs
them only with `--force`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from manifold.naming import wrap_uri
from tests.conformance.support import CONFORMANCE_NEXT_CLI, NODE, NODE_DIR, toolchain_problem
from tests.e2e.harness import KEY, manifold_cli, run_gateway
from tests.waiting import POLL_INTERVAL

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]
JSON = dict[str, Any]

FIXTURE = Path(__file__).resolve().parents[1] / "upstreams" / "tasks_fixture.py"

# Every tasks-* scenario of 0.2.0-alpha.12 that must pass through the gateway.
PASSING = (
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-required-task-error",
)
# Not here: tasks-status-notifications (the suite skips it: "pending subscriptions/listen rewrite"), and
# tasks-mrtr-composition, whose tool decides *after* a round of questions to become a task: only a tool that
# knows about tasks can do that, and the gateway relays no upstream's own tasks (docs/design.md, "Tasks").


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_extension_scenario(url: str, scenario: str, out_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """One extension scenario at 2026-07-28 (`--force`: extension scenarios are not on the spec timeline,
    so the suite skips them otherwise); its checks and the runner's output."""
    results = Path(tempfile.mkdtemp(prefix=f"{scenario}-", dir=out_dir))
    command = [str(NODE), str(CONFORMANCE_NEXT_CLI), "server", "--url", url, "-o", str(results)]
    command += ["--scenario", scenario, "--spec-version", "2026-07-28", "--force"]
    done = subprocess.run(
        command,
        cwd=NODE_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    checks: list[dict[str, Any]] = []
    for path in results.glob("*/checks.json"):
        checks += json.loads(path.read_text())
    return checks, done.stdout + done.stderr


async def run_scenarios(upstream: dict[str, Any], scenarios: tuple[str, ...], tmp_path: Path) -> None:
    assert toolchain_problem() is None, toolchain_problem()
    servers = {"conformance": {"namespace": False, "members": [{"upstream": "up"}]}}
    async with run_gateway({"up": upstream}, servers, gateway={"allow_unauthenticated": True}) as gw:
        failed: dict[str, str] = {}
        for scenario in scenarios:
            checks, output = await anyio.to_thread.run_sync(
                run_extension_scenario, gw.url("conformance"), scenario, tmp_path
            )
            bad = [c for c in checks if c.get("status") not in ("SUCCESS", "INFO")]
            if not checks or bad:
                failed[scenario] = f"{scenario}: {json.dumps(bad, indent=1)[:3000] if checks else output[-2000:]}"
        assert not failed, "\n".join(failed.values()) + "\n--- gateway log ---\n" + gw.log()[-4000:]


async def test_the_gateway_runs_tasks_for_an_upstream_without_tasks(tmp_path: Path) -> None:
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE)], "protocol": "2025-11-25"}
    await run_scenarios(upstream, PASSING, tmp_path)


async def test_tasks_of_an_upstream_that_runs_them_itself_are_relayed(tmp_path: Path) -> None:
    # The native fixture runs its own tasks: the gateway relays the call, adopts the upstream's task under a
    # gateway task id, and relays tasks/get, tasks/update and tasks/cancel to it. A tool that asks first and
    # only then becomes a task (tasks-mrtr-composition) works through the gateway only this way.
    native = [str(FIXTURE), "--native"]
    upstream = {"transport": "stdio", "command": sys.executable, "args": native, "protocol": "2026-07-28"}
    await run_scenarios(upstream, (*PASSING, "tasks-mrtr-composition"), tmp_path)


# ---- two callers ------------------------------------------------------------------------------------------

TWO_USERS = {
    "users": {"alice@corp.com": {"teams": ["eng"]}, "bob@corp.com": {"teams": ["eng"]}},
    "teams": {"eng": "engineering"},
    "grants": [{"who": "team:eng", "what": ["server:up"]}],
}


async def rpc(gw: Any, key: str, method: str, params: JSON, name: str | None = None, server: str = "up") -> JSON:
    """One 2026-07-28 request as the holder of `key`, declaring the tasks extension; its JSON-RPC answer."""
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    }
    headers = {"Authorization": f"Bearer {key}", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    headers |= {"Accept": "application/json, text/event-stream"} | ({"Mcp-Name": name} if name else {})
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": envelope}}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(gw.url(server), json=body, headers=headers)
    return response.json()


async def test_one_callers_task_is_unknown_to_another_and_the_bound_is_per_caller() -> None:
    upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE)], "protocol": "2025-11-25"}
    limits = {"limits": {"tasks_per_principal": 1}}
    async with run_gateway({"up": upstream}, gateway=limits, extra=TWO_USERS) as gw:
        alice, bob = [
            json.loads((await manifold_cli(gw, "keys", "create", "--user", who, "--name", "laptop", "--json")).stdout)[
                "token"
            ]
            for who in ("alice@corp.com", "bob@corp.com")
        ]
        slow = {"name": "slow_compute", "arguments": {"seconds": 60, "label": "alice's"}}
        created = (await rpc(gw, alice, "tools/call", slow, "slow_compute"))["result"]
        task_id = created["taskId"]
        assert created["resultType"] == "task"

        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            answer = await rpc(gw, bob, method, {"taskId": task_id, "inputResponses": {}}, task_id)
            assert answer["error"]["code"] == -32602, answer  # exactly as for a task that does not exist
        assert (await rpc(gw, alice, "tasks/get", {"taskId": task_id}, task_id))["result"]["status"] == "working"

        full = await rpc(gw, alice, "tools/call", slow, "slow_compute")
        assert full["error"]["code"] == -32004, full  # alice's one task
        bobs = (await rpc(gw, bob, "tools/call", slow, "slow_compute"))["result"]
        assert bobs["resultType"] == "task"  # alice's bound is not bob's

        assert (await rpc(gw, alice, "tasks/cancel", {"taskId": task_id}, task_id))["result"] == {
            "resultType": "complete"
        }
        assert (await rpc(gw, alice, "tasks/get", {"taskId": task_id}, task_id))["result"]["status"] == "cancelled"
        assert "Traceback" not in gw.log()


@pytest.mark.parametrize("native", [True, False], ids=["upstream-runs-the-task", "gateway-runs-the-task"])
async def test_a_tasks_result_links_name_uris_the_namespaced_server_can_read(native: bool) -> None:
    """Was: a task the upstream ran itself came back from tasks/get with the upstream's own `resource_link` URI,
    which a namespaced server does not serve (-32002 on resources/read); ordinary calls had theirs wrapped."""
    args, protocol = ([str(FIXTURE), "--native"], "2026-07-28") if native else ([str(FIXTURE)], "2025-11-25")
    upstream = {"transport": "stdio", "command": sys.executable, "args": args, "protocol": protocol}
    servers = {"mixed": {"namespace": True, "members": [{"upstream": "up"}]}}
    async with run_gateway({"up": upstream}, servers) as gw:
        report = {"name": "up__report_job", "arguments": {"label": "q3"}}
        task_id = (await rpc(gw, KEY, "tools/call", report, "up__report_job", server="mixed"))["result"]["taskId"]
        async with asyncio.timeout(10):  # the task's state is seen from outside: polled
            while (task := (await rpc(gw, KEY, "tasks/get", {"taskId": task_id}, task_id, server="mixed"))["result"])[
                "status"
            ] != "completed":
                await asyncio.sleep(POLL_INTERVAL)
        [link] = task["result"]["content"]
        assert link == {"type": "resource_link", "uri": wrap_uri("up", "file:///reports/q3.txt"), "name": "report"}


async def test_a_2025_11_25_task_augmented_call_runs_as_an_ordinary_call_not_as_an_orphaned_upstream_task() -> None:
    """Was (interop, server-everything): a 2025-11-25 client's experimental `task` went upstream as it came; the
    client got the upstream's own task id, which nothing here could follow (tasks/get, tasks/result: -32601),
    and the work ran orphaned. The gateway offers tasks to 2026-07-28 clients only: here the call is ordinary."""
    from tests.upstreams.launch import EVERYTHING

    upstreams = {"ev": {"transport": "stdio", "command": str(NODE), "args": [str(EVERYTHING), "stdio"]}}
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    async with run_gateway(upstreams) as gw, gw.http() as http:

        async def post(message: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
            return (await http.post(gw.url("ev"), json={"jsonrpc": "2.0", **message}, headers=headers)).json()

        opened = await http.post(
            gw.url("ev"), json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}, headers=accept
        )
        headers = {**accept, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        assert "tasks" not in opened.json()["result"]["capabilities"]
        params = {"name": "echo", "arguments": {"message": "hi"}, "task": {"ttl": 60000}}
        result = (await post({"id": 2, "method": "tools/call", "params": params}, headers))["result"]
        assert "task" not in result and result["content"][0]["text"] == "Echo: hi"
        params = {"name": "simulate-research-query", "arguments": {"topic": "x"}, "task": {"ttl": 60000}}
        result = (await post({"id": 3, "method": "tools/call", "params": params}, headers))["result"]
        assert (
            "task" not in result and result["isError"] and "requires task augmentation" in result["content"][0]["text"]
        )

"""Tasks run by the gateway (relay/tasks.py), in process: a real `Gateway`, `VirtualServerView` and `Tasks`,
the stand-in pool of test_relay_handlers (it answers from a table and records what reached it). What a
client sees: a CreateTaskResult, tasks/get's statuses and inlined outcome, isolation between callers, the
bounds, cancellation reaching the upstream call, questions answered with tasks/update."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manifold.catalog.view import VirtualServerView
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.protocol import (
    INVALID_PARAMS,
    LIMIT_REACHED,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    TASKS_CANCEL,
    TASKS_EXTENSION,
    TASKS_GET,
    TASKS_UPDATE,
    TOOLS_CALL,
    TOOLS_LIST,
    Era,
)
from manifold.relay.call import Call
from manifold.relay.handlers import Gateway
from manifold.relay.jsonrpc import RpcError
from manifold.relay.tasks import Tasks
from tests.unit.test_relay_handlers import FakeSession, StandInPool, gateway_for, replying
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio
JSON = dict[str, Any]
WITH_TASKS: JSON = {"elicitation": {}, "extensions": {TASKS_EXTENSION: {}}}


def person(name: str) -> Principal:
    return Principal(PrincipalKind.USER, name, Credential(CredentialKind.API_KEY))


ALICE, BOB = person("alice@corp.com"), person("bob@corp.com")


def task_tools() -> list[JSON]:
    return [
        {"name": "greet", "inputSchema": {"type": "object"}},
        {"name": "job", "inputSchema": {"type": "object"}, "execution": {"taskSupport": "optional"}},
        {"name": "must", "inputSchema": {"type": "object"}, "execution": {"taskSupport": "required"}},
    ]


def call_as(view: VirtualServerView, who: Principal = ALICE, caps: JSON | None = None, era: Era = Era.MODERN) -> Call:
    return Call(view=view, era=era, client_capabilities=WITH_TASKS if caps is None else caps, principal=who)


class Gate:
    """An upstream answer that waits until the test opens it, and records being cancelled."""

    def __init__(self, result: JSON) -> None:
        self.result = result
        self.open = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, params: JSON) -> JSON:
        self.started.set()
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {"result": self.result}


async def ready(gateway: Gateway, view: VirtualServerView) -> None:
    await gateway.handle(call_as(view), TOOLS_LIST, {})  # the list a tools/call resolves against


async def setup(answer: Any, *, tasks: Tasks | None = None) -> tuple[Gateway, VirtualServerView, StandInPool]:
    pool = StandInPool({"alpha": {"tools": task_tools()}})
    pool.answers[("alpha", TOOLS_CALL)] = answer
    gateway, view = gateway_for(pool, {"upstream": "alpha"})
    if tasks is not None:
        gateway.tasks = tasks
    await ready(gateway, view)
    return gateway, view, pool


async def start(gateway: Gateway, view: VirtualServerView, who: Principal = ALICE, tool: str = "alpha__job") -> str:
    created = (await gateway.handle(call_as(view, who), TOOLS_CALL, {"name": tool, "arguments": {}}))["result"]
    assert created["resultType"] == "task" and created["status"] == "working"
    return created["taskId"]


async def status(gateway: Gateway, view: VirtualServerView, task_id: str, who: Principal = ALICE) -> JSON:
    return (await gateway.handle(call_as(view, who), TASKS_GET, {"taskId": task_id}))["result"]


async def refused(gateway: Gateway, call: Call, method: str, params: JSON) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await gateway.handle(call, method, params)
    return caught.value


# ---- lifecycle --------------------------------------------------------------------------------------------


async def test_a_task_supporting_tool_becomes_a_task_whose_result_tasks_get_inlines() -> None:
    gate = Gate({"content": [{"type": "text", "text": "done"}]})
    gateway, view, pool = await setup(gate)

    task_id = await start(gateway, view)
    await within(gate.started.wait())
    working = await status(gateway, view, task_id)
    assert (working["status"], working["resultType"]) == ("working", "complete")
    assert "result" not in working and working["ttlMs"] > 0 and len(task_id) >= 32

    gate.open.set()
    await wait_for(lambda: len(pool.sent) == 1)
    assert pool.sent[0][2]["name"] == "job"  # the upstream's own name
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "completed", what="task completes")
    done = await status(gateway, view, task_id)
    assert done["result"] == {"content": [{"type": "text", "text": "done"}]}
    assert "requestState" not in done and "error" not in done


async def test_a_sync_tool_and_a_client_without_the_extension_get_a_plain_result() -> None:
    gateway, view, _ = await setup(replying({"content": [{"type": "text", "text": "now"}]}))
    sync = (await gateway.handle(call_as(view), TOOLS_CALL, {"name": "alpha__greet"}))["result"]
    undeclared = (await gateway.handle(call_as(view, caps={}), TOOLS_CALL, {"name": "alpha__job"}))["result"]
    handshake = await gateway.handle(call_as(view, era=Era.HANDSHAKE), TOOLS_CALL, {"name": "alpha__job"})
    for result in (sync, undeclared, handshake["result"]):
        assert "taskId" not in result and result["content"][0]["text"] == "now"
    assert len(gateway.tasks) == 0


async def test_a_tool_that_requires_a_task_refuses_a_client_without_the_extension() -> None:
    gateway, view, pool = await setup(replying({"content": []}))
    error = await refused(gateway, call_as(view, caps={}), TOOLS_CALL, {"name": "alpha__must"})
    assert error.code == MISSING_CLIENT_CAPABILITY
    assert error.data == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
    assert pool.sent == []  # never reached the upstream


async def test_tasks_methods_need_the_extension_and_the_2026_07_28_era() -> None:
    gateway, view, _ = await setup(replying({"content": []}))
    for method in (TASKS_GET, TASKS_UPDATE, TASKS_CANCEL):
        without = await refused(gateway, call_as(view, caps={}), method, {"taskId": "x", "inputResponses": {}})
        assert without.code == MISSING_CLIENT_CAPABILITY
        old = await refused(gateway, call_as(view, era=Era.HANDSHAKE), method, {"taskId": "x"})
        assert old.code == METHOD_NOT_FOUND
    for removed in ("tasks/list", "tasks/result"):
        assert (await refused(gateway, call_as(view), removed, {})).code == METHOD_NOT_FOUND


async def test_an_error_reply_fails_the_task_with_the_error_and_no_result() -> None:
    async def broken(params: JSON) -> JSON:
        return {"error": {"code": -32603, "message": "boom"}}

    gateway, view, _ = await setup(broken)
    task_id = await start(gateway, view)
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "failed")
    failed = await status(gateway, view, task_id)
    assert failed["error"] == {"code": -32603, "message": "boom"} and "result" not in failed


# ---- isolation --------------------------------------------------------------------------------------------


async def test_nobody_else_can_get_update_or_cancel_a_task_and_it_looks_unknown_to_them() -> None:
    gate = Gate({"content": [{"type": "text", "text": "alice's"}]})
    gateway, view, _ = await setup(gate)
    task_id = await start(gateway, view, ALICE)

    other_server = VirtualServerView("other", view.config, view._lists, "__")  # same members, another server
    unknown = await refused(gateway, call_as(view, BOB), TASKS_GET, {"taskId": "no-such-task"})
    for call in (call_as(view, BOB), call_as(other_server, ALICE)):
        for method in (TASKS_GET, TASKS_UPDATE, TASKS_CANCEL):
            error = await refused(gateway, call, method, {"taskId": task_id, "inputResponses": {}})
            assert (error.code, error.message) == (INVALID_PARAMS, unknown.message.replace("no-such-task", task_id))

    gate.open.set()  # Bob's cancel did nothing: Alice's task runs to the end
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "completed")
    assert not gate.cancelled
    assert (await status(gateway, view, task_id, ALICE))["result"]["content"][0]["text"] == "alice's"


# ---- bounds -----------------------------------------------------------------------------------------------


async def test_tasks_per_principal_are_bounded_without_touching_anyone_else_and_freed_after_retention() -> None:
    gate = Gate({"content": []})
    gateway, view, _ = await setup(gate, tasks=Tasks(per_principal=2, retention_seconds=0.05))
    first = await start(gateway, view, ALICE)
    await start(gateway, view, ALICE)

    full = await refused(gateway, call_as(view, ALICE), TOOLS_CALL, {"name": "alpha__job"})
    assert full.code == LIMIT_REACHED and "at most 2" in full.message
    await start(gateway, view, BOB)  # one user's limit never affects another

    gate.open.set()  # they finish; kept for retention_seconds, then dropped, and the slots are free again
    await wait_for(lambda: len(gateway.tasks) == 0, what="finished tasks dropped after retention")
    assert (await refused(gateway, call_as(view, ALICE), TASKS_GET, {"taskId": first})).code == INVALID_PARAMS
    await start(gateway, view, ALICE)


# ---- cancellation -----------------------------------------------------------------------------------------


async def test_cancel_cancels_the_upstream_call_and_is_idempotent() -> None:
    gate = Gate({"content": []})
    gateway, view, _ = await setup(gate)
    task_id = await start(gateway, view)
    await within(gate.started.wait())

    ack = (await gateway.handle(call_as(view), TASKS_CANCEL, {"taskId": task_id}))["result"]
    assert ack == {"resultType": "complete"}
    await wait_for(lambda: gate.cancelled, what="the upstream call cancelled")
    assert (await status(gateway, view, task_id))["status"] == "cancelled"
    again = (await gateway.handle(call_as(view), TASKS_CANCEL, {"taskId": task_id}))["result"]
    assert again == {"resultType": "complete"}


async def test_closing_the_gateway_cancels_running_tasks() -> None:
    gate = Gate({"content": []})
    gateway, view, _ = await setup(gate)
    await start(gateway, view)
    await within(gate.started.wait())
    gateway.tasks.close()
    await wait_for(lambda: gate.cancelled)


# ---- questions (input_required) ---------------------------------------------------------------------------


async def test_questions_show_on_tasks_get_and_tasks_update_answers_them_in_parts() -> None:
    rounds: list[JSON] = []

    async def asks_twice_then_answers(params: JSON) -> JSON:
        rounds.append(params)
        if "inputResponses" not in params:
            questions = {
                "a": {"method": "elicitation/create", "params": {"message": "name?"}},
                "b": {"method": "elicitation/create", "params": {"message": "sure?"}},
            }
            return {"result": {"resultType": "input_required", "inputRequests": questions, "requestState": "s1"}}
        return {"result": {"content": [{"type": "text", "text": repr(sorted(params["inputResponses"]))}]}}

    gateway, view, _ = await setup(asks_twice_then_answers)
    task_id = await start(gateway, view)
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "input_required")
    asked = await status(gateway, view, task_id)
    assert set(asked["inputRequests"]) == {"a", "b"} and "requestState" not in asked

    ack = await gateway.handle(call_as(view), TASKS_UPDATE, {"taskId": task_id, "inputResponses": {"a": {"x": 1}}})
    assert ack["result"] == {"resultType": "complete"}
    partial = await status(gateway, view, task_id)
    assert partial["status"] == "input_required" and set(partial["inputRequests"]) == {"b"}

    await gateway.handle(call_as(view), TASKS_UPDATE, {"taskId": task_id, "inputResponses": {"b": {"y": 2}}})
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "completed")
    assert (await status(gateway, view, task_id))["result"]["content"][0]["text"] == "['a', 'b']"
    assert rounds[1]["requestState"] == "s1" and rounds[1]["inputResponses"] == {"a": {"x": 1}, "b": {"y": 2}}


# ---- an upstream that runs tasks itself -------------------------------------------------------------------


class NativeTasksPool(StandInPool):
    """A 2026-07-28 upstream declaring the tasks extension: it makes its own tasks."""

    async def session(self, upstream_id: str, outbound: Any = None) -> FakeSession:
        return FakeSession({"tools": {}, "extensions": {TASKS_EXTENSION: {}}})


async def test_an_upstreams_own_task_is_relayed_under_a_gateway_id_that_only_its_caller_can_use() -> None:
    pool = NativeTasksPool({"alpha": {"tools": task_tools()}})
    upstream_task = {"taskId": "up-1", "status": "working", "createdAt": "2026-07-28T00:00:00Z", "ttlMs": 1000}
    pool.answers[("alpha", TOOLS_CALL)] = replying({"resultType": "task", **upstream_task})
    pool.answers[("alpha", TASKS_GET)] = replying({"taskId": "up-1", "status": "completed", "result": {"content": []}})
    pool.answers[("alpha", TASKS_CANCEL)] = replying({"resultType": "complete"})
    gateway, view = gateway_for(pool, {"upstream": "alpha"})
    await ready(gateway, view)

    created = (await gateway.handle(call_as(view), TOOLS_CALL, {"name": "alpha__job", "arguments": {}}))["result"]
    assert created["resultType"] == "task" and created["taskId"] != "up-1"  # the upstream's id never shows
    assert len(gateway.tasks) == 1

    for method in (TASKS_GET, TASKS_CANCEL):
        error = await refused(gateway, call_as(view, BOB), method, {"taskId": created["taskId"]})
        assert error.code == INVALID_PARAMS
    assert [m for _, m, _ in pool.sent] == [TOOLS_CALL]  # Bob's attempts never reached the upstream

    got = await status(gateway, view, created["taskId"])
    assert (got["taskId"], got["status"]) == (created["taskId"], "completed")
    assert pool.sent[-1][1:] == (TASKS_GET, {"taskId": "up-1"})


async def test_an_upstream_that_answers_at_once_or_asks_first_gets_no_task_of_the_gateways() -> None:
    pool = NativeTasksPool({"alpha": {"tools": task_tools()}})
    asks = {"resultType": "input_required", "inputRequests": {"n": {"method": "elicitation/create"}}}
    pool.answers[("alpha", TOOLS_CALL)] = replying(asks)
    gateway, view = gateway_for(pool, {"upstream": "alpha"})
    await ready(gateway, view)

    reply = await gateway.handle(call_as(view), TOOLS_CALL, {"name": "alpha__must", "arguments": {}})
    assert reply["result"] == asks and len(gateway.tasks) == 0


async def test_a_task_whose_questions_nobody_answers_fails_after_the_reply_timeout() -> None:
    async def asks(params: JSON) -> JSON:
        questions = {"a": {"method": "elicitation/create", "params": {"message": "name?"}}}
        return {"result": {"resultType": "input_required", "inputRequests": questions}}

    gateway, view, _ = await setup(asks, tasks=Tasks(reply_timeout=0.05, retention_seconds=60))
    task_id = await start(gateway, view)
    await wait_for(lambda: gateway.tasks._tasks[task_id].status == "failed", what="unanswered task fails")
    failed = await status(gateway, view, task_id)
    assert failed["error"]["code"] == -32001 and "did not answer" in failed["error"]["message"]

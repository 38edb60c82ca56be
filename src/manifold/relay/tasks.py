"""Tasks (SEP-2663, the `io.modelcontextprotocol/tasks` extension of 2026-07-28): relayed, or run by the gateway.

A 2026-07-28 client that declares the extension (its request's `clientCapabilities.extensions`) and calls a
tool whose upstream entry says `execution.taskSupport: optional|required` gets a task (docs/design.md, "Tasks"):

- **relayed** when the member's upstream runs tasks itself (a 2026-07-28 upstream declaring the extension):
  the call goes up as the client made it; a CreateTaskResult is adopted under a gateway task id, and
  tasks/get, tasks/update, tasks/cancel go to that upstream under its own id, as the caller. Whatever else
  it answers (a result at once, or `input_required` before it makes the task) passes as it came;
- **run by the gateway** for any other upstream: a CreateTaskResult at once, the upstream call in the
  background as that client (its capabilities without the extension, so the upstream never makes a task of
  its own), its outcome kept for `limits.task_retention_seconds`. tasks/get shows the status, then the
  inlined `result` (`isError` included) or, for a JSON-RPC error, `error`. When the call answers
  `input_required` (a 2026-07-28 upstream, or a handshake-era upstream's server→client request turned into
  one by relay/input_exchange.py) the task shows `input_required` with those `inputRequests`;
  `tasks/update` answers them, in parts if the client likes, and once all are answered the call is retried
  with `inputResponses` and the `requestState`. `tasks/cancel` cancels the background call (the upstream
  hears `notifications/cancelled`; a call parked for input is cancelled through its exchange); idempotent.

Either way a task id is 24 random bytes (URL-safe), bound to the principal and the virtual server that
created it: for anyone else it does not exist (-32602, exactly as an unknown id), and nothing of theirs
reaches the upstream. There is no `tasks/list` (SEP-2663 removed it). Bounded: at most
`limits.tasks_per_principal` tasks per principal, running or kept; a finished task is dropped
`task_retention_seconds` after it finished (its `ttlMs`), and one whose questions the client leaves
unanswered for `limits.client_reply_seconds` fails; a relayed one after the upstream's `ttlMs` (at
least the retention, at most a day) or once it was seen finished. A running call is bounded by the
upstream's `call_timeout` and, while it waits for the client, by `limits.client_reply_seconds`.

The normal tools/call path pays one dict lookup (`Tasks.wanted`, 2026-07-28 clients only).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value

from manifold.catalog.view import Built, Target, VirtualServerView
from manifold.protocol import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LIMIT_REACHED,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    REQUEST_TIMEOUT,
    RESULT_COMPLETE,
    RESULT_INPUT_REQUIRED,
    RESULT_TASK,
    TASK_SUPPORT_OPTIONAL,
    TASK_SUPPORT_REQUIRED,
    TASKS_CANCEL,
    TASKS_EXTENSION,
    TASKS_GET,
    TASKS_UPDATE,
)
from manifold.relay.call import Call
from manifold.relay.input_exchange import InputExchanges
from manifold.relay.jsonrpc import RpcError

log = logging.getLogger(__name__)
JSON = dict[str, Any]
# Runs the tool call for a task: the handler's own tools/call path, given the task's Call and params.
Runner = Callable[[Call, JSON], Awaitable[JSON]]
# Sends one request to a member's upstream as the caller (handlers.Gateway._forward).
Forward = Callable[[Call, Target, str, JSON], Awaitable[JSON]]
# Whether the member's upstream runs tasks itself.
Native = Callable[[], Awaitable[bool]]

WORKING = "working"
INPUT_REQUIRED = "input_required"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_TASK_SUPPORT = "task_support"  # Built.derived: exposed tool name -> taskSupport ("optional" / "required")
MAX_INPUT_ROUNDS = 16  # rounds of questions one task may ask before it fails
MAX_RELAYED_SECONDS = 86400.0  # an upstream's task is forgotten a day after it was created, whatever its ttlMs


class TaskRun(str):
    """The request id of the call a task runs (the task's id): it marks that call as a task's own, so it is
    never turned into another task, and names the task in its audit row."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class GatewayTask:
    id: str
    principal_id: str
    server_id: str
    target: Target
    created: float  # epoch seconds
    updated: float
    status: str = WORKING
    result: JSON | None = None
    error: JSON | None = None
    questions: JSON = field(default_factory=dict)  # inputRequests not answered yet
    answers: JSON = field(default_factory=dict)  # answers gathered for the current round
    request_state: Any = None  # the current round's requestState
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    upstream_task: str | None = None  # the upstream's own task id, when the upstream runs the task

    @property
    def upstream_id(self) -> str:
        return self.target.upstream_id

    def set_status(self, status: str) -> None:
        self.status = status
        self.updated = time.time()


class Tasks:
    """The gateway's tasks, by id. Built once by the composition root with the limits from config."""

    def __init__(
        self,
        *,
        per_principal: int = 64,
        retention_seconds: float = 600.0,
        poll_interval_ms: int = 500,
        reply_timeout: float = 300.0,
        inputs: InputExchanges | None = None,
    ) -> None:
        self.per_principal = per_principal
        self.retention_seconds = retention_seconds
        self.poll_interval_ms = poll_interval_ms
        self.reply_timeout = reply_timeout  # how long a task waits for the client's answers (client_reply_seconds)
        self.inputs = inputs  # to cancel a call parked for input when its task is cancelled
        self._tasks: dict[str, GatewayTask] = {}
        self._count: Counter[str] = Counter()
        self._drops: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    # ---- tools/call -----------------------------------------------------------------------------

    def support(self, view: VirtualServerView, name: str, built: Built | None = None) -> str | None:
        """The exposed tool's taskSupport ("optional" / "required"), or None: from `built`, the caller's list
        (the one the call resolved in), or else the view's last built list."""
        built = built if built is not None else view.last_built("tools")
        if built is None:
            return None
        support: dict[str, str] | None = built.derived.get(_TASK_SUPPORT)
        if support is None:
            support = {}
            for item in built.items:
                execution = item.get("execution")
                value = execution.get("taskSupport") if isinstance(execution, dict) else None
                if value in (TASK_SUPPORT_OPTIONAL, TASK_SUPPORT_REQUIRED) and isinstance(item.get("name"), str):
                    support[item["name"]] = value
            built.derived[_TASK_SUPPORT] = support
        return support.get(name)

    def wanted(self, call: Call, name: str, built: Built | None = None) -> bool:
        """Whether this 2026-07-28 tools/call runs as a task. A tool that requires a task, called by a client
        that did not declare the extension, is refused with -32021 naming it. `built`: the caller's tool list."""
        support = self.support(call.view, name, built)
        if support is None or isinstance(call.request_id, TaskRun):
            return False
        if declares_tasks(call.client_capabilities):
            return True
        if support == TASK_SUPPORT_REQUIRED:
            raise missing_tasks_extension(f"Tool '{name}' runs only as a task")
        return False

    async def start(
        self, call: Call, params: JSON, target: Target, runner: Runner, native: Native | None = None
    ) -> JSON:
        """A tools/call that runs as a task. An upstream that runs tasks itself gets the call as the client
        made it; whatever it answers comes back as it is, except that its own task (a CreateTaskResult) is
        adopted under a gateway task id. Any other upstream's call the gateway runs itself (`create`)."""
        self._room(call.principal.id)
        if native is None or not await native():
            return self.create(call, params, target, runner)
        reply = await runner(replace(call, request_id=TaskRun(str(call.request_id))), params)
        result = reply.get("result")
        upstream_task = result.get("taskId") if isinstance(result, dict) else None
        if (
            not isinstance(result, dict)
            or result.get("resultType") != RESULT_TASK
            or not isinstance(upstream_task, str)
        ):
            return reply  # answered at once, or asks first (input_required, SEP-2322): as it came
        # Adopted even if the caller's other calls filled the last slots meanwhile: refusing now would leave
        # the upstream's task running with nobody able to reach it.
        task = self._add(call, target)
        task.upstream_task = upstream_task
        task.status = str(result.get("status") or WORKING)
        ttl = result.get("ttlMs")
        keep = max(self.retention_seconds, ttl / 1000 if isinstance(ttl, int) and ttl > 0 else 0)
        self._drop_after(task, min(keep, MAX_RELAYED_SECONDS))
        return {"result": {**result, "taskId": task.id}}

    def create(self, call: Call, params: JSON, target: Target, runner: Runner) -> JSON:
        """Run the call as a task of the gateway's: the CreateTaskResult, once `tasks/get` finds the task.
        The upstream hears the client's capabilities without the tasks extension, so it answers the call
        itself (or asks its questions) and never makes a task of its own for it."""
        self._room(call.principal.id)
        task = self._add(call, target)
        caps = without_tasks(call.client_capabilities)
        own = replace(
            call,
            client_capabilities=caps,
            sink=_TaskSink(caps, call.principal.id),
            listener=None,
            session=None,
            request_id=TaskRun(task.id),
        )
        task.runner = asyncio.ensure_future(self._run(task, own, params, runner))
        return {"result": self._envelope(task, RESULT_TASK)}

    def _room(self, principal_id: str) -> None:
        if self._count[principal_id] >= self.per_principal:
            raise RpcError(
                LIMIT_REACHED,
                f"Too many tasks: at most {self.per_principal} per user are kept "
                f"(finished ones for {self.retention_seconds:g} s)",
            )

    def _add(self, call: Call, target: Target) -> GatewayTask:
        now = time.time()
        task = GatewayTask(secrets.token_urlsafe(24), call.principal.id, call.view.id, target, now, now)
        self._tasks[task.id] = task
        self._count[task.principal_id] += 1
        return task

    # ---- tasks/get, tasks/update, tasks/cancel ----------------------------------------------------

    async def get(self, call: Call, params: JSON, forward: Forward) -> JSON:
        task = self._find(call, params)
        if task.upstream_task is not None:
            return await self._relay(task, call, TASKS_GET, params, forward)
        detailed = self._envelope(task, RESULT_COMPLETE)
        if task.status == INPUT_REQUIRED:
            detailed["inputRequests"] = dict(task.questions)
        elif task.status == COMPLETED and task.result is not None:
            detailed["result"] = task.result
        elif task.status == FAILED and task.error is not None:
            detailed["error"] = task.error
        return {"result": detailed}

    async def update(self, call: Call, params: JSON, forward: Forward) -> JSON:
        task = self._find(call, params)
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise RpcError(INVALID_PARAMS, "tasks/update needs an 'inputResponses' object")
        if task.upstream_task is not None:
            return await self._relay(task, call, TASKS_UPDATE, params, forward)
        if task.status == INPUT_REQUIRED:
            for key, response in responses.items():
                if key in task.questions:  # an unknown or already answered key is ignored
                    del task.questions[key]
                    task.answers[key] = response
            task.updated = time.time()
            if not task.questions:
                task.set_status(WORKING)
                task.answered.set()
        return {"result": {"resultType": RESULT_COMPLETE}}

    async def cancel(self, call: Call, params: JSON, forward: Forward) -> JSON:
        task = self._find(call, params)
        if task.upstream_task is not None:
            return await self._relay(task, call, TASKS_CANCEL, params, forward)
        if task.status not in TERMINAL:
            task.set_status(CANCELLED)
            self._release_parked(task)
            if task.runner is not None:
                task.runner.cancel()
            self._finished(task)
        return {"result": {"resultType": RESULT_COMPLETE}}

    def close(self) -> None:
        """Cancel every running task (the gateway is stopping)."""
        for task in list(self._tasks.values()):
            if task.runner is not None and not task.runner.done():
                task.runner.cancel()
        for handle in self._drops.values():
            handle.cancel()
        self._drops.clear()

    # ---- inside ---------------------------------------------------------------------------------

    def _find(self, call: Call, params: JSON) -> GatewayTask:
        if not declares_tasks(call.client_capabilities):
            raise missing_tasks_extension("Tasks need the client to declare the extension")
        task_id = params.get("taskId")
        if not isinstance(task_id, str):
            raise RpcError(INVALID_PARAMS, "a string 'taskId' is required")
        task = self._tasks.get(task_id)
        if task is None or task.principal_id != call.principal.id or task.server_id != call.view.id:
            raise RpcError(INVALID_PARAMS, f"Unknown task: {task_id[:64]}")  # someone else's: the same answer
        return task

    async def _relay(self, task: GatewayTask, call: Call, method: str, params: JSON, forward: Forward) -> JSON:
        """A tasks method about a task the upstream runs: sent there under its own id, as the caller; the
        answer names the gateway's id. A terminal status starts the retention clock."""
        reply = await forward(call, task.target, method, {**params, "taskId": task.upstream_task})
        result = reply.get("result")
        if not isinstance(result, dict):
            return reply
        if "taskId" in result:
            result = {**result, "taskId": task.id}
        inner = result.get("result")  # a finished task's tools/call result: its links as this server names them
        if call.view.namespace and isinstance(inner, dict) and isinstance(inner.get("content"), list):
            content = call.view.expose_links(task.target.member_id, inner["content"])
            result = {**result, "result": {**inner, "content": content}}
        status = result.get("status")
        if isinstance(status, str) and status != task.status:
            task.set_status(status)
            if status in TERMINAL:
                self._finished(task)
        return {"result": result}

    def _envelope(self, task: GatewayTask, result_type: str) -> JSON:
        return {
            "resultType": result_type,
            "taskId": task.id,
            "status": task.status,
            "createdAt": _iso(task.created),
            "lastUpdatedAt": _iso(task.updated),
            "ttlMs": int(self.retention_seconds * 1000),
            "pollIntervalMs": self.poll_interval_ms,
        }

    async def _run(self, task: GatewayTask, call: Call, params: JSON, runner: Runner) -> None:
        try:
            for _ in range(MAX_INPUT_ROUNDS):
                reply = await runner(call, params)
                result = reply.get("result")
                if "error" in reply or not isinstance(result, dict):
                    error = reply.get("error")
                    task.error = error if isinstance(error, dict) else {"code": INTERNAL_ERROR, "message": "no result"}
                    task.set_status(FAILED)
                    return
                if result.get("resultType") != RESULT_INPUT_REQUIRED:
                    task.result = result
                    task.set_status(COMPLETED)
                    return
                requests = result.get("inputRequests")
                task.questions = dict(requests) if isinstance(requests, dict) else {}
                task.answers = {}
                task.request_state = result.get("requestState")
                task.answered.clear()
                task.set_status(INPUT_REQUIRED)
                try:
                    async with asyncio.timeout(self.reply_timeout):
                        await task.answered.wait()
                except TimeoutError:
                    self._release_parked(task)
                    task.error = {
                        "code": REQUEST_TIMEOUT,
                        "message": "the client did not answer the task's questions in time",
                    }
                    task.set_status(FAILED)
                    return
                params = {**params, "inputResponses": task.answers}
                if task.request_state is not None:
                    params["requestState"] = task.request_state
                else:
                    params.pop("requestState", None)
                task.request_state = None
            task.error = {
                "code": INTERNAL_ERROR,
                "message": f"the call asked for input more than {MAX_INPUT_ROUNDS} times",
            }
            task.set_status(FAILED)
        except asyncio.CancelledError:
            if task.status not in TERMINAL:
                task.set_status(CANCELLED)
            raise
        except RpcError as exc:
            task.error = exc.to_reply()["error"]
            task.set_status(FAILED)
        except Exception as exc:  # the client polls for it: never lost, never a traceback in its answer
            log.warning("task %s on %s failed: %s", task.id[:8], task.upstream_id, type(exc).__name__)
            task.error = {"code": INTERNAL_ERROR, "message": f"the call failed on the gateway ({type(exc).__name__})"}
            task.set_status(FAILED)
        finally:
            self._finished(task)

    def _release_parked(self, task: GatewayTask) -> None:
        """A task cancelled while it waits for input: the upstream call parked for it is cancelled too."""
        state = task.request_state
        if self.inputs is None or not self.inputs.is_ours(state):
            return
        try:
            exchange = self.inputs.resume(state, task.principal_id, task.upstream_id, {}, None)
        except RpcError:
            return  # expired meanwhile: already released
        exchange.abandon("the task was cancelled")
        if exchange.task is not None:
            exchange.task.cancel()

    def _finished(self, task: GatewayTask) -> None:
        if task.upstream_task is None and task.id in self._drops:
            return
        self._drop_after(task, self.retention_seconds)

    def _drop_after(self, task: GatewayTask, seconds: float) -> None:
        if task.id not in self._tasks:
            return
        old = self._drops.pop(task.id, None)
        if old is not None:
            old.cancel()
        self._drops[task.id] = asyncio.get_running_loop().call_later(seconds, self._drop, task.id)

    def _drop(self, task_id: str) -> None:
        self._drops.pop(task_id, None)
        task = self._tasks.pop(task_id, None)
        if task is None:
            return
        self._count[task.principal_id] -= 1
        if self._count[task.principal_id] <= 0:
            del self._count[task.principal_id]


# The methods whose `Mcp-Name` routing header carries `params.taskId` (SEP-2663, "Routing Headers").
NAMED_BY_TASK_ID = frozenset({TASKS_GET, TASKS_UPDATE, TASKS_CANCEL})


def check_routing_name(params: JSON, headers: dict[str, str]) -> RpcError | None:
    """A tasks method's `Mcp-Name` header against its `taskId`: a mismatch is -32020 (HTTP 400). An absent
    header is let through, as for the methods the SDK's ladder checks."""
    value = headers.get(MCP_NAME_HEADER)
    if value is None or decode_header_value(value) == params.get("taskId"):
        return None
    return RpcError(HEADER_MISMATCH, f"{MCP_NAME_HEADER} header does not match the request body's 'taskId' parameter")


class _TaskSink:
    """The side channel of a call the gateway runs as a task: the client is not connected while it runs, so
    notifications are dropped, and the upstream hears the client's capabilities (without the tasks
    extension). Its questions come as input_required (relay/input_exchange.py for handshake-era upstreams)."""

    def __init__(self, capabilities: JSON, principal_id: str) -> None:
        self._capabilities = capabilities
        self.principal_id = principal_id
        self.client_session: object | None = None  # the client is not connected while a task runs

    @property
    def client_capabilities(self) -> JSON:
        return self._capabilities

    async def notify(self, message: JSON) -> None:
        return None

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        return {"error": {"code": METHOD_NOT_FOUND, "message": f"{method} cannot reach a client while a task runs"}}


def without_tasks(capabilities: JSON) -> JSON:
    extensions = capabilities.get("extensions")
    if not isinstance(extensions, dict) or TASKS_EXTENSION not in extensions:
        return capabilities
    rest = {k: v for k, v in extensions.items() if k != TASKS_EXTENSION}
    return {**{k: v for k, v in capabilities.items() if k != "extensions"}, **({"extensions": rest} if rest else {})}


def declares_tasks(capabilities: JSON) -> bool:
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def missing_tasks_extension(message: str) -> RpcError:
    return RpcError(
        MISSING_CLIENT_CAPABILITY,
        f"Missing required client capability: extensions.{TASKS_EXTENSION}. {message}",
        {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
    )

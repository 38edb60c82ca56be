"""A handshake-era (2025-11-25) stdio MCP server with the tools the conformance suite's tasks-* scenarios name.

It knows nothing of tasks itself: its tools only say, in `execution.taskSupport` (2025-11-25), whether they
may run as a task. The gateway runs them as tasks for a 2026-07-28 client that declared the
`io.modelcontextprotocol/tasks` extension (docs/design.md, "Tasks"), so this server behind a gateway is what
the tasks scenarios run against.

    python tests/upstreams/tasks_fixture.py            # JSON-RPC lines on stdin/stdout
    python tests/upstreams/tasks_fixture.py --native   # a 2026-07-28 server that runs tasks itself

With `--native` it speaks 2026-07-28 (`server/discover`, the per-request envelope), declares the
`io.modelcontextprotocol/tasks` extension and runs its task-supporting tools as its own tasks (SEP-2663:
CreateTaskResult, tasks/get, tasks/update, tasks/cancel) for a request whose client capabilities declare
the extension; questions asked inside a task show as `input_required` on tasks/get. `test_tool_with_task`
first asks for the user name with an `input_required` result (SEP-2322) and only then creates a task.
That is the upstream the gateway relays tasks to (docs/design.md, "Tasks").

| tool                | taskSupport | does                                                              |
|---------------------|-------------|-------------------------------------------------------------------|
| greet               | —           | `Hello, {name}!`                                                  |
| slow_compute        | optional    | sleeps `seconds`, then `computed {label}`; cancellable             |
| failing_job         | required    | after ~1 s a tool error (`isError: true`)                          |
| protocol_error_job  | optional    | after 0.3 s a JSON-RPC error (-32603)                              |
| confirm_delete      | optional    | asks one `elicitation/create` (confirm), then answers              |
| multi_input         | optional    | asks two `elicitation/create` at once, then answers both           |
| report_job          | optional    | a `resource_link` to `file:///reports/{label}.txt`                 |
| test_tool_with_task | required    | asks `user_name` by elicitation, then `Hello, {name}!`             |

Standard library only (it must import nothing of the gateway); requests run concurrently, and
`notifications/cancelled` cancels the named one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]
VERSION = "2025-11-25"
MODERN = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Task:
    """One of the native server's own tasks."""

    def __init__(self) -> None:
        self.id = "up-" + secrets.token_hex(8)
        self.created = self.updated = _now()
        self.status = "working"
        self.result: JSON | None = None
        self.error: JSON | None = None
        self.questions: dict[str, JSON] = {}
        self.answers: dict[str, asyncio.Future[JSON]] = {}
        self.runner: asyncio.Task[None] | None = None

    def set(self, status: str) -> None:
        self.status, self.updated = status, _now()

    def view(self, result_type: str = "complete") -> JSON:
        out: JSON = {"resultType": result_type, "taskId": self.id, "status": self.status}
        out |= {"createdAt": self.created, "lastUpdatedAt": self.updated, "ttlMs": 600_000, "pollIntervalMs": 200}
        if result_type == "task":
            return out
        if self.status == "input_required":
            out["inputRequests"] = dict(self.questions)
        elif self.status == "completed":
            out["result"] = self.result
        elif self.status == "failed":
            out["error"] = self.error
        return out

    async def ask(self, request: JSON) -> JSON:
        key = f"q{len(self.answers) + 1}"
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self.answers[key] = future
        self.questions[key] = request
        self.set("input_required")
        try:
            return await future
        finally:
            self.questions.pop(key, None)
            if not self.questions and self.status == "input_required":
                self.set("working")


def _schema(**properties: str) -> JSON:
    return {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()}}


def _tool(tool_name: str, description: str, support: str | None = None, **properties: str) -> JSON:
    tool: JSON = {"name": tool_name, "description": description, "inputSchema": _schema(**properties)}
    if support is not None:
        tool["execution"] = {"taskSupport": support}
    return tool


TOOLS = [
    _tool("greet", "Say hello (sync only)", name="string"),
    _tool("slow_compute", "Sleep `seconds`, then answer", "optional", seconds="number", label="string"),
    _tool("failing_job", "Fails with a tool error after about a second", "required"),
    _tool("protocol_error_job", "Fails with a protocol error", "optional"),
    _tool("confirm_delete", "Asks for confirmation, then deletes", "optional", filename="string"),
    _tool("multi_input", "Asks two questions at once", "optional"),
    _tool("report_job", "Answers with a link to a report", "optional", label="string"),
    _tool("test_tool_with_task", "Asks for a user name, then greets", "required"),
]


def _text(text: str, *, error: bool = False) -> JSON:
    result: JSON = {"content": [{"type": "text", "text": text}]}
    if error:
        result["isError"] = True
    return result


class ToolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Server:
    def __init__(self, native: bool = False) -> None:
        self.native = native
        self.tasks: dict[str, Task] = {}
        self.running: dict[Any, asyncio.Task[None]] = {}
        self.waiting: dict[str, asyncio.Future[JSON]] = {}
        self.ids = itertools.count(1)

    def send(self, message: JSON) -> None:
        sys.stdout.buffer.write(json.dumps(message).encode() + b"\n")
        sys.stdout.buffer.flush()

    async def ask(self, method: str, params: JSON) -> JSON:
        request_id = f"srv-{next(self.ids)}"
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            reply = await future
        finally:
            self.waiting.pop(request_id, None)
        if "error" in reply:
            raise ToolError(-32603, f"{method} failed: {reply['error'].get('message')}")
        return reply.get("result") or {}

    async def elicit(self, message: str, task: Task | None = None, **properties: str) -> JSON:
        params = {"mode": "form", "message": message, "requestedSchema": _schema(**properties)}
        if task is not None:
            answer = await task.ask({"method": "elicitation/create", "params": params})
        elif self.native:
            raise ToolError(-32603, "this tool asks questions only inside a task")
        else:
            answer = await self.ask("elicitation/create", params)
        return answer.get("content") or {}

    async def call_tool(self, name: str, args: JSON, task: Task | None = None) -> JSON:
        if name == "greet":
            return _text(f"Hello, {args.get('name', 'World')}!")
        if name == "slow_compute":
            await asyncio.sleep(float(args.get("seconds", 0)))
            return _text(f"computed {args.get('label', '')}".strip())
        if name == "failing_job":
            await asyncio.sleep(1.0)
            return _text("failing_job failed as it always does", error=True)
        if name == "protocol_error_job":
            await asyncio.sleep(0.3)
            raise ToolError(-32603, "protocol_error_job: internal failure")
        if name == "confirm_delete":
            content = await self.elicit(f"Delete {args.get('filename', 'the file')}?", task, confirm="boolean")
            deleted = bool(content.get("confirm"))
            return _text(f"{'deleted' if deleted else 'kept'} {args.get('filename', '')}".strip())
        if name == "multi_input":
            first, second = await asyncio.gather(
                self.elicit("Your name?", task, name="string"), self.elicit("Confirm?", task, confirm="boolean")
            )
            return _text(f"got {first.get('name', '')} and {second.get('confirm')}")
        if name == "report_job":
            link = {"type": "resource_link", "uri": f"file:///reports/{args.get('label', 'r')}.txt", "name": "report"}
            return {"content": [link]}
        if name == "test_tool_with_task":
            content = await self.elicit("What is your user name?", task, name="string")
            return _text(f"Hello, {content.get('name', '')}!")
        raise ToolError(-32602, f"Unknown tool: {name}")

    async def handle(self, message: JSON) -> None:
        request_id, method, params = message.get("id"), message.get("method"), message.get("params") or {}
        try:
            if self.native and method in ("server/discover", "tools/call", "tasks/get", "tasks/update", "tasks/cancel"):
                result = await self.modern(str(method), params)
            elif method == "initialize":
                result: JSON = {
                    "protocolVersion": VERSION,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "tasks-fixture", "version": "1.0.0"},
                }
            elif method == "ping":
                result = {}
            elif method == "tools/list":
                result = {"tools": TOOLS}
            elif method == "tools/call":
                result = await self.call_tool(str(params.get("name")), params.get("arguments") or {})
            else:
                raise ToolError(-32601, f"Method not found: {method}")
            self.send({"jsonrpc": "2.0", "id": request_id, "result": result})
        except ToolError as exc:
            self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": str(exc)}})
        except asyncio.CancelledError:
            pass  # cancelled by the client: no answer is due
        finally:
            self.running.pop(request_id, None)

    async def modern(self, method: str, params: JSON) -> JSON:
        """The native (2026-07-28) server's own methods."""
        if method == "server/discover":
            return {
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {}, "extensions": {TASKS: {}}},
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "tasks-fixture-native", "version": "1.0.0"}},
            }
        if method == "tools/call":
            return await self.modern_call(params)
        task = self.tasks.get(str(params.get("taskId")))
        if task is None:
            raise ToolError(-32602, f"Unknown task: {params.get('taskId')}")
        if method == "tasks/update":
            for key, answer in (params.get("inputResponses") or {}).items():
                future = task.answers.get(key)
                if future is not None and not future.done():
                    future.set_result(answer if isinstance(answer, dict) else {})
            return {"resultType": "complete"}
        if method == "tasks/cancel":
            if task.status not in TERMINAL:
                task.set("cancelled")
                if task.runner is not None:
                    task.runner.cancel()
            return {"resultType": "complete"}
        return task.view()

    async def modern_call(self, params: JSON) -> JSON:
        name, args = str(params.get("name")), params.get("arguments") or {}
        meta = params.get("_meta") or {}
        caps = meta.get("io.modelcontextprotocol/clientCapabilities") or {}
        declared = TASKS in (caps.get("extensions") or {})
        support = next((t.get("execution", {}).get("taskSupport") for t in TOOLS if t["name"] == name), None)
        if support == "required" and not declared:
            raise ToolError(-32021, f"{name} runs only as a task")
        if name == "test_tool_with_task":
            responses = params.get("inputResponses") or {}
            if "user_name" not in responses:  # SEP-2322 first: ask, then make the task
                ask = {"mode": "form", "message": "Your user name?", "requestedSchema": _schema(name="string")}
                return {
                    "resultType": "input_required",
                    "inputRequests": {"user_name": {"method": "elicitation/create", "params": ask}},
                    "requestState": "asked-for-user-name",
                }
            user = (responses["user_name"].get("content") or {}).get("name", "")
            return self.start(lambda task: self.greet_later(user))
        if support is None or not declared:
            return await self.call_tool(name, args)
        return self.start(lambda task: self.call_tool(name, args, task))

    async def greet_later(self, user: str) -> JSON:
        await asyncio.sleep(0.2)
        return _text(f"Hello, {user}!")

    def start(self, work: Any) -> JSON:
        task = Task()
        self.tasks[task.id] = task

        async def run() -> None:
            try:
                task.result = await work(task)
                task.set("completed")
            except ToolError as exc:
                task.error = {"code": exc.code, "message": str(exc)}
                task.set("failed")
            except asyncio.CancelledError:
                task.set("cancelled")

        task.runner = asyncio.ensure_future(run())
        return task.view("task")

    def receive(self, message: JSON) -> None:
        method = message.get("method")
        if method is None:  # a reply to one of our requests
            future = self.waiting.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(message)
            return
        if "id" not in message:  # a notification
            if method == "notifications/cancelled":
                task = self.running.get((message.get("params") or {}).get("requestId"))
                if task is not None:
                    task.cancel()
            return
        self.running[message["id"]] = asyncio.ensure_future(self.handle(message))


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    server = Server(native="--native" in sys.argv)
    while line := await reader.readline():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            server.receive(message)


if __name__ == "__main__":
    asyncio.run(main())

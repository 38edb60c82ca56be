"""Kitchen: a configurable, real MCP upstream for Manifold's tests (mcp 2.3.0 `MCPServer`).

It serves both protocol eras: 2026-07-28 (`server/discover`, sessionless) and the
handshake era (`initialize`, 2025-11-25 and older), over every transport:

    python tests/upstreams/kitchen.py --transport stdio
    python tests/upstreams/kitchen.py --transport http --port 8123   # http://127.0.0.1:8123/mcp
    python tests/upstreams/kitchen.py --transport sse  --port 8124   # GET /sse + POST /messages/

Options:
    --name NAME           serverInfo.name, also returned by `whoami` (default "kitchen")
    --uri-scheme S        scheme of every resource URI (default "kitchen"), so two kitchens
                          can be made to collide on URIs on purpose
    --tool-prefix P       prefix every tool name with P (collision tests)
    --extra-tools a,b,c   add trivial tools with these names (each returns its own name)
    --hang-lists-after N  answer the first N tools/list, then never answer one again (alive otherwise)
    --record FILE         append one JSON line per inbound JSON-RPC request/notification:
                          {"method", "id", "name" (tools/call, prompts/get), "protocol_version",
                          "pid", "headers" (HTTP only, lower-cased)}, so tests can count what
                          reached the upstream (requests, handshakes, sessions via the
                          mcp-session-id header); a request cancelled while it ran gets a
                          second line with "cancelled": true.
                          Test-only: header values are written as received.

From a test, start it with `tests/upstreams/launch.py`:

    async with run_http_upstream(KITCHEN, "--name", "a") as url:
        async with mcp.Client(url) as client: ...

Tools: echo(text), add(a, b) (structured + text), noop(), slow(seconds), fail(message)
(isError), image(), audio(), embedded(), mixed(), progress(steps), log(message, level),
sample(prompt), ask(question), ask_then_progress(question, steps), whoami(), headers(), add_tool(name),
bump(), link(id) (a resource_link to S://items/{id}).
Resources: S://readme (text), S://logo (blob), template S://items/{id}, S://counter
(subscribable; `bump()` increments it). Prompts: greet(name) (with completion for `name`),
review(code), readme() (the readme as an embedded resource).

Change notifications, per era:
- handshake era: `notifications/tools/list_changed` and `notifications/resources/updated`
  go to every live connection (for `updated`: those that sent `resources/subscribe` for the
  URI), over stdio's pipe or the HTTP session's standalone GET stream.
- 2026-07-28: they are published on the SDK's `SubscriptionBus`, which delivers them to
  `subscriptions/listen` streams that opted in (`toolsListChanged`, `resourceSubscriptions`).
"""

# No `from __future__ import annotations`: the SDK evaluates tool signatures, and the
# resolvers they name are locals of build_server().
import argparse
import base64
import functools
import io
import json
import os
import sys
import warnings
import wave
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Audio, Context, Elicit, Image, MCPServer, Resolve, Sample
from mcp.server.session import ServerSession
from mcp_types import (
    CallToolResult,
    Completion,
    CreateMessageResult,
    EmbeddedResource,
    EmptyResult,
    PromptReference,
    ResourceLink,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel

# Logging and sampling are deprecated at 2026-07-28 but still part of the handshake era,
# which this upstream must exercise; the warnings would only clutter test output.
warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")

# A valid 1x1 transparent PNG: small, and a real image for content-type checks.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _tiny_wav() -> bytes:
    """Ten milliseconds of 8 kHz mono silence, as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80" * 80)
    return buffer.getvalue()


TINY_WAV = _tiny_wav()
GREET_NAMES = ["Ada", "Alan", "Alice", "Bob", "Grace"]


@dataclass(frozen=True)
class Options:
    name: str = "kitchen"
    uri_scheme: str = "kitchen"
    tool_prefix: str = ""
    extra_tools: tuple[str, ...] = ()
    record: str | None = None
    hang_lists_after: int | None = None


class Sum(BaseModel):
    sum: int


class Identity(BaseModel):
    name: str
    pid: int


class Answer(BaseModel):
    answer: str


class HandshakeConnections:
    """The handshake-era connections this process serves, for change notifications.

    The SDK's `ServerSession` is a per-request proxy over one connection; notifications sent
    through it without a related request go to that connection's standalone channel. Holding
    one session per connection (weakly, keyed by the connection) lets a tool called on one
    connection notify all the others, as a real server shared by many clients would.
    """

    def __init__(self) -> None:
        # Keyed by the SDK's private `ServerSession._connection`: the only per-connection
        # identity a handler can reach. Weak, so closed connections drop out by themselves.
        self._sessions: weakref.WeakKeyDictionary[Any, ServerSession] = weakref.WeakKeyDictionary()
        self._subscribed: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    def remember(self, session: ServerSession) -> None:
        if session.protocol_version.startswith("2026"):
            return
        self._sessions[session._connection] = session  # noqa: SLF001 - see __init__

    def subscribe(self, session: ServerSession, uri: str) -> None:
        self.remember(session)
        self._subscribed.setdefault(session._connection, set()).add(uri)  # noqa: SLF001

    def unsubscribe(self, session: ServerSession, uri: str) -> None:
        self._subscribed.get(session._connection, set()).discard(uri)  # noqa: SLF001

    async def tools_changed(self) -> None:
        for session in list(self._sessions.values()):
            await _quietly(session.send_tool_list_changed)

    async def resource_updated(self, uri: str) -> None:
        for connection, uris in list(self._subscribed.items()):
            session = self._sessions.get(connection)
            if session is not None and uri in uris:
                await _quietly(functools.partial(session.send_resource_updated, uri))


async def _quietly(send: Callable[[], Any]) -> None:
    # A connection that went away between the call and the notification is not an error
    # of the tool that changed something.
    try:
        await send()
    except Exception as exc:  # noqa: BLE001
        print(f"kitchen: notification dropped: {type(exc).__name__}", file=sys.stderr)


class RequestRecorder:
    """Server middleware appending one JSON line per inbound message to a file."""

    def __init__(self, path: str) -> None:
        self._path = path

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        entry: dict[str, Any] = {
            "method": ctx.method,
            "id": ctx.request_id,
            "protocol_version": ctx.protocol_version,
            "pid": os.getpid(),
        }
        if isinstance(ctx.params, Mapping) and isinstance(ctx.params.get("name"), str):
            entry["name"] = ctx.params["name"]  # the tool or prompt, for per-tool counts
        headers = getattr(ctx.request, "headers", None)
        if headers is not None:
            entry["headers"] = {key.lower(): value for key, value in headers.items()}
        self._write(entry)
        try:
            return await call_next(ctx)
        except anyio.get_cancelled_exc_class():
            self._write({**entry, "cancelled": True})  # the request was cancelled while it ran
            raise

    def _write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode()
        # One O_APPEND write per line, so lines from concurrent requests never interleave.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def build_server(options: Options) -> MCPServer:
    mcp = MCPServer(
        options.name, version="1.0.0", instructions="A test upstream with one of everything.", log_level="WARNING"
    )
    connections = HandshakeConnections()
    state = {"counter": 0}
    scheme = options.uri_scheme
    counter_uri = f"{scheme}://counter"

    async def remember_connections(ctx: Any, call_next: Any) -> Any:
        connections.remember(ctx.session)
        return await call_next(ctx)

    mcp.middleware.append(remember_connections)
    if options.hang_lists_after is not None:
        listed = {"tools/list": 0}

        async def hang_later_lists(ctx: Any, call_next: Any) -> Any:
            if ctx.method == "tools/list":
                listed["tools/list"] += 1
                if listed["tools/list"] > (options.hang_lists_after or 0):
                    await anyio.sleep_forever()  # alive, answering everything else
            return await call_next(ctx)

        mcp.middleware.insert(0, hang_later_lists)
    if options.record:
        mcp.middleware.insert(0, RequestRecorder(options.record))

    # The SDK advertises handshake-era listChanged only when asked to; this server does send
    # tools/list_changed, so say so in InitializeResult.
    lowlevel = mcp._lowlevel_server  # noqa: SLF001 - no public way to pass NotificationOptions
    default_options = lowlevel.create_initialization_options
    lowlevel.create_initialization_options = lambda *a, **k: default_options(  # type: ignore[method-assign]
        NotificationOptions(tools_changed=True, resources_changed=True)
    )

    def tool(fn: Callable[..., Any], name: str | None = None) -> None:
        mcp.add_tool(fn, name=options.tool_prefix + (name or fn.__name__))

    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    def add(a: int, b: int) -> Sum:
        """Add two integers; the result is structured ({"sum": n}) and text."""
        return Sum(sum=a + b)

    def noop() -> str:
        """Do nothing, return an empty text (for latency measurements)."""
        return ""

    async def slow(seconds: float) -> str:
        """Sleep, then answer (for timeout tests)."""
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    def fail(message: str) -> CallToolResult:
        """Fail with an isError result whose only text is the message (no SDK prefix)."""
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    def image() -> Image:
        """Return a 1x1 PNG."""
        return Image(data=TINY_PNG, format="png")

    def audio() -> Audio:
        """Return 10 ms of WAV silence."""
        return Audio(data=TINY_WAV, format="wav")

    def _readme_resource() -> EmbeddedResource:
        return EmbeddedResource(
            type="resource",
            resource=TextResourceContents(uri=f"{scheme}://readme", mime_type="text/plain", text=README),
        )

    def embedded() -> EmbeddedResource:
        """Return the readme as an embedded text resource."""
        return _readme_resource()

    def mixed() -> CallToolResult:
        """Return text, an image and an embedded resource."""
        picture = Image(data=TINY_PNG, format="png").to_image_content()
        return CallToolResult(content=[TextContent(type="text", text="mixed"), picture, _readme_resource()])

    async def progress(steps: int, ctx: Context) -> str:
        """Send `steps` progress notifications for the request's progressToken."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return f"done {steps}"

    async def log(
        message: str,
        ctx: Context,
        level: Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"] = "info",
    ) -> str:
        """Send the message as a logging notification, then return it."""
        await ctx.log(level, message, logger_name=options.name)
        return message

    # Resolvers: the SDK asks the client mid-call in the handshake era and returns an
    # InputRequiredResult (retried by the client with the answers) at 2026-07-28.
    def _ask_model(prompt: str) -> Sample:
        return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=100)

    def _ask_user(question: str) -> Elicit[Answer]:
        return Elicit(question, Answer)

    def sample(prompt: str, reply: Annotated[CreateMessageResult, Resolve(_ask_model)]) -> str:
        """Ask the client's model (sampling/createMessage); return the model's text."""
        content = reply.content
        return content.text if isinstance(content, TextContent) else str(content)

    def ask(question: str, answer: Annotated[Answer, Resolve(_ask_user)]) -> str:
        """Ask the user (form elicitation with one string field, `answer`); return the answer."""
        return answer.answer

    async def ask_then_progress(question: str, steps: int, ctx: Context) -> str:
        """Ask the user (as `ask`), then send `steps` progress notifications; return the answer (handshake era:
        the answer comes back on the same request, so its progress follows)."""
        asked = await ctx.elicit(question, Answer)
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return asked.data.answer if asked.action == "accept" and asked.data is not None else asked.action

    async def visit(url: str, ctx: Context) -> str:
        """URL-mode elicitation (handshake era: a server→client request); returns the client's action."""
        result = await ctx.elicit_url(message="Open this page to continue", url=url, elicitation_id="visit-1")
        return result.action

    def whoami() -> Identity:
        """Return this server's --name and process id."""
        return Identity(name=options.name, pid=os.getpid())

    def headers(ctx: Context) -> dict[str, str]:
        """Return the HTTP request headers this call arrived with (lower-cased); {} on stdio."""
        received = ctx.headers or {}
        return {key.lower(): value for key, value in received.items()}

    async def add_tool(name: str, ctx: Context) -> str:
        """Register a new tool `name` (prefixed like the others) and announce list_changed."""
        full_name = options.tool_prefix + name
        mcp.add_tool(_trivial(full_name), name=full_name)
        await connections.tools_changed()
        await ctx.notify_tools_changed()
        return full_name

    async def bump(ctx: Context) -> int:
        """Increment the counter resource and announce resources/updated for it."""
        state["counter"] += 1
        await connections.resource_updated(counter_uri)
        await ctx.notify_resource_updated(counter_uri)
        return state["counter"]

    def link(id: str) -> ResourceLink:
        """A resource_link to the item resource `id`."""
        return ResourceLink(type="resource_link", uri=f"{scheme}://items/{id}", name=f"item {id}")

    for fn in (
        echo,
        add,
        noop,
        slow,
        fail,
        image,
        audio,
        embedded,
        mixed,
        progress,
        log,
        sample,
        ask,
        ask_then_progress,
        visit,
        whoami,
    ):
        tool(fn)
    tool(link)
    tool(headers)
    tool(add_tool)
    tool(bump)
    for extra in options.extra_tools:
        tool(_trivial(options.tool_prefix + extra), extra)

    @mcp.resource(f"{scheme}://readme", mime_type="text/plain")
    def readme() -> str:
        return README

    @mcp.resource(f"{scheme}://logo", mime_type="image/png")
    def logo() -> bytes:
        return TINY_PNG

    @mcp.resource(f"{scheme}://items/{{id}}", mime_type="application/json")
    def item(id: str) -> str:
        return json.dumps({"id": id, "name": f"item {id}"})

    @mcp.resource(counter_uri, mime_type="text/plain")
    def counter() -> str:
        return str(state["counter"])

    @mcp.prompt()
    def greet(name: str) -> str:
        """Greet someone by name."""
        return f"Say hello to {name}."

    @mcp.prompt(name="readme")
    def readme_prompt() -> list[Any]:
        """The readme, embedded."""
        return [{"role": "user", "content": _readme_resource().model_dump(by_alias=True, exclude_none=True)}]

    @mcp.prompt()
    def review(code: str) -> str:
        """Ask for a code review."""
        return f"Please review this code:\n\n{code}"

    @mcp.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
        if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
            matches = [n for n in GREET_NAMES if n.lower().startswith(argument.value.lower())]
            return Completion(values=matches, total=len(matches), has_more=False)
        return None

    # Handshake-era resources/subscribe (2026-07-28 clients use subscriptions/listen).
    async def on_subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        connections.subscribe(ctx.session, params.uri)
        return EmptyResult()

    async def on_unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        connections.unsubscribe(ctx.session, params.uri)
        return EmptyResult()

    # Handshake-era logging/setLevel: accepted (so `logging` is advertised), not enforced.
    async def on_set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, on_set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, on_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, on_unsubscribe)
    return mcp


def _trivial(name: str) -> Callable[[], str]:
    def trivial() -> str:
        return name

    trivial.__doc__ = f"A trivial tool named {name}; returns its own name."
    return trivial


README = "Kitchen is a test MCP server with one of everything."


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="kitchen")
    parser.add_argument("--uri-scheme", default="kitchen")
    parser.add_argument("--tool-prefix", default="")
    parser.add_argument("--extra-tools", default="")
    parser.add_argument("--record")
    parser.add_argument("--hang-lists-after", type=int, default=None)
    args = parser.parse_args(argv)
    options = Options(
        name=args.name,
        uri_scheme=args.uri_scheme,
        tool_prefix=args.tool_prefix,
        extra_tools=tuple(t for t in args.extra_tools.split(",") if t),
        record=args.record,
        hang_lists_after=args.hang_lists_after,
    )
    return args, options


def serve(mcp: MCPServer, transport: str, port: int) -> None:
    """Run on stdio, or on 127.0.0.1:port (loopback only)."""
    if transport == "stdio":
        anyio.run(mcp.run_stdio_async)
        return
    app = mcp.streamable_http_app() if transport == "http" else mcp.sse_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    args, options = parse_args(argv)
    serve(build_server(options), args.transport, args.port)


if __name__ == "__main__":
    main()

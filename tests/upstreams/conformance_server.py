"""A real MCP upstream exposing every fixture of the official conformance suite (0.1.16).

`@modelcontextprotocol/conformance server --url ...` looks for fixtures by name (tools,
prompts, resources) and checks their answers. This server answers exactly what the suite's
scenario code and its reference TypeScript server expect, so the suite passes against it
directly; the same server placed behind the gateway then shows what the gateway breaks.

    python tests/upstreams/conformance_server.py --port 8123              # http://127.0.0.1:8123/mcp
    python tests/upstreams/conformance_server.py --transport stdio

Readiness: over HTTP the port accepts TCP connections only once the app is serving (poll it,
as tests/upstreams/launch.py does); a line "conformance server ready: URL" is also written
to stderr for people.

Built on mcp 2.3.0's `MCPServer`; the handlers MCPServer has no decorator for
(resources/subscribe, resources/unsubscribe, logging/setLevel) are registered on its
low-level server. The fixture is stateful over HTTP (sessions), keeps an in-memory event
store so SSE streams are resumable (server-sse-polling), and has DNS-rebinding protection on.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import warnings
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import (
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

# The logging helpers are deprecated for the 2026-07-28 era (SEP-2577), but the suite
# (2025-11-25) still tests them; keep the warnings out of test output.
warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")

HOST = "127.0.0.1"
MCP_PATH = "/mcp"
# How long a client waits before reconnecting to a closed SSE stream (server-sse-polling).
SSE_RETRY_INTERVAL_MS = 500

# A 1x1 red PNG and a minimal WAV, the same bytes the reference server sends.
TEST_IMAGE_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# SEP-1613: listed verbatim, so a gateway that rewrites schemas ($schema, $defs,
# additionalProperties) is caught by json-schema-2020-12.
JSON_SCHEMA_2020_12_INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

# SEP-1034: one field per primitive type, each with a default.
SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

# SEP-1330: the five enum variants.
SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}

# Candidates offered by completion/complete for test_prompt_with_arguments' arguments.
COMPLETION_CANDIDATES = ["paris", "park", "party", "test", "testValue1", "testValue2", "testing"]

# URIs subscribed to through resources/subscribe. Kept for inspection only: the fixture
# never changes a resource, so it sends no notifications/resources/updated.
subscribed_uris: set[str] = set()


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client reconnecting with Last-Event-ID gets what it missed.

    Without an event store the SDK neither sends priming events nor lets a tool close its
    stream mid-call (`ctx.close_sse_stream()` is then a no-op), which server-sse-polling tests.
    Event ids are "<stream id>::<sequence>"; the store is unbounded, fine for a test fixture.
    Caveat: the SDK hands one store to every session and names a POST stream after its
    JSON-RPC request id, so two sessions' streams can share a stream id; a replay could then
    include the other session's later events on that id. Clients only replay after a dropped
    stream (test_reconnection), so the suite never meets this.
    """

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []
        self._sequence = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"{stream_id}::{next(self._sequence):012d}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        position = next((i for i, event in enumerate(self._events) if event[0] == last_event_id), None)
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, event_stream, message in self._events[position + 1 :]:
            # Priming events carry no message: nothing to replay for them.
            if event_stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_server() -> MCPServer:
    # A prebuilt Tool can only be handed over at construction (add_tool takes a function).
    mcp = MCPServer(
        "mcp-conformance-fixture", version="1.0.0", tools=[_json_schema_2020_12_tool()], log_level="WARNING"
    )
    _add_content_tools(mcp)
    _add_notifying_tools(mcp)
    _add_client_request_tools(mcp)
    _add_resources(mcp)
    _add_prompts(mcp)
    _add_low_level_handlers(mcp)
    return mcp


def _add_content_tools(mcp: MCPServer) -> None:
    """Tools whose answer is fixed content, one per content type (tools-call-*)."""

    @mcp.tool(description="Tests simple text content response")
    def test_simple_text() -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="This is a simple text response for testing.")])

    @mcp.tool(description="Tests image content response")
    def test_image_content() -> CallToolResult:
        return CallToolResult(content=[ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")])

    @mcp.tool(description="Tests audio content response")
    def test_audio_content() -> CallToolResult:
        return CallToolResult(content=[AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")])

    @mcp.tool(description="Tests embedded resource content response")
    def test_embedded_resource() -> CallToolResult:
        resource = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])

    @mcp.tool(description="Tests response with multiple content types (text, image, resource)")
    def test_multiple_content_types() -> CallToolResult:
        resource = TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
        )
        return CallToolResult(
            content=[
                TextContent(type="text", text="Multiple content types test:"),
                ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
                EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @mcp.tool(description="Tests error response handling")
    def test_error_handling() -> CallToolResult:
        # Returned rather than raised: a raised ToolError's text gets the SDK prefix
        # "Error executing tool test_error_handling: ", and the suite documents the bare text.
        text = "This tool intentionally returns an error for testing"
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _add_notifying_tools(mcp: MCPServer) -> None:
    """Tools that send notifications while running (logging, progress) or drop their stream."""

    @mcp.tool(description="Tests tool that emits log messages during execution")
    async def test_tool_with_logging(ctx: Context) -> CallToolResult:
        # The ~50 ms gaps are part of the fixture's contract (the suite describes them), not
        # a synchronisation: the client just has to see three separate notifications.
        await ctx.log("info", "Tool execution started", logger_name="conformance-fixture")
        await anyio.sleep(0.05)
        await ctx.log("info", "Tool processing data", logger_name="conformance-fixture")
        await anyio.sleep(0.05)
        await ctx.log("info", "Tool execution completed", logger_name="conformance-fixture")
        return CallToolResult(content=[TextContent(type="text", text="Tool with logging executed successfully")])

    @mcp.tool(description="Tests tool that reports progress notifications")
    async def test_tool_with_progress(ctx: Context) -> CallToolResult:
        # report_progress is a no-op when the request carries no progress token.
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            if step < 100:
                await anyio.sleep(0.05)
        token = (ctx.request_context.meta or {}).get("progress_token")
        return CallToolResult(content=[TextContent(type="text", text=str(token if token is not None else 0))])

    @mcp.tool(
        description=(
            "Tests SSE stream disconnection and client reconnection (SEP-1699). The server closes the "
            "stream mid-call and sends the result after the client reconnects."
        )
    )
    async def test_reconnection(ctx: Context) -> CallToolResult:
        await ctx.close_sse_stream()
        # Give the client time to notice the closed stream and reconnect with Last-Event-ID;
        # the result is stored in the event store either way and replayed on reconnection.
        await anyio.sleep(0.1)
        return CallToolResult(
            content=[
                TextContent(
                    type="text",
                    text=(
                        "Reconnection test completed successfully. If you received this, the client "
                        "properly reconnected after stream closure."
                    ),
                )
            ]
        )


def _add_client_request_tools(mcp: MCPServer) -> None:
    """Tools that ask the client something (sampling, elicitation) and report its answer."""

    @mcp.tool(description="Tests server-initiated sampling (LLM completion request)")
    async def test_sampling(prompt: str, ctx: Context) -> CallToolResult:
        try:
            result = await ctx.session.create_message(
                [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
        except MCPError as error:
            return _client_request_failed("Sampling", error)
        content = result.content
        text = getattr(content, "text", None) or "No response"
        return CallToolResult(content=[TextContent(type="text", text=f"LLM response: {text}")])

    @mcp.tool(description="Tests server-initiated elicitation (user input request)")
    async def test_elicitation(message: str, ctx: Context) -> CallToolResult:
        schema = {
            "type": "object",
            "properties": {"response": {"type": "string", "description": "User's response"}},
            "required": ["response"],
        }
        return await _elicit(ctx, message, schema, prefix="User response")

    @mcp.tool(description="Tests elicitation with default values per SEP-1034")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> CallToolResult:
        message = "Please review and update the form fields with defaults"
        return await _elicit(ctx, message, SEP1034_SCHEMA, prefix="Elicitation completed")

    @mcp.tool(description="Tests elicitation with enum schema improvements per SEP-1330")
    async def test_elicitation_sep1330_enums(ctx: Context) -> CallToolResult:
        message = "Please select options from the enum fields"
        return await _elicit(ctx, message, SEP1330_SCHEMA, prefix="Elicitation completed")


async def _elicit(ctx: Context, message: str, schema: dict[str, Any], *, prefix: str) -> CallToolResult:
    # The raw schema goes out as written: ctx.elicit() would derive it from a pydantic
    # model and could not express enumNames, oneOf/anyOf titles or exact defaults.
    try:
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    except MCPError as error:
        return _client_request_failed("Elicitation", error)
    content = json.dumps(result.content or {}, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=f"{prefix}: action={result.action}, content={content}")]
    )


def _client_request_failed(what: str, error: MCPError) -> CallToolResult:
    """The tool's answer when the client refused or could not be asked.

    A 2026-07-28 (sessionless) request has no back-channel for server-initiated requests
    (NoBackChannelError); the reference server answers with text too. isError makes the
    difference visible to a test.
    """
    text = f"{what} not supported or error: {error.error.message}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _json_schema_2020_12_tool() -> Tool:
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> CallToolResult:
        arguments = {key: value for key, value in (("name", name), ("address", address)) if value is not None}
        text = f"JSON Schema 2020-12 tool called with: {json.dumps(arguments, separators=(',', ':'))}"
        return CallToolResult(content=[TextContent(type="text", text=text)])

    tool = Tool.from_function(
        json_schema_2020_12_tool,
        description="Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
    )
    # Listed verbatim instead of the schema MCPServer derives from the signature.
    tool.parameters = JSON_SCHEMA_2020_12_INPUT_SCHEMA
    return tool


def _add_resources(mcp: MCPServer) -> None:
    @mcp.resource(
        "test://static-text",
        name="static-text",
        title="Static Text Resource",
        description="A static text resource for testing",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary",
        name="static-binary",
        title="Static Binary Resource",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        import base64

        return base64.b64decode(TEST_IMAGE_BASE64)

    @mcp.resource(
        "test://template/{id}/data",
        name="template",
        title="Resource Template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))

    @mcp.resource(
        "test://watched-resource",
        name="watched-resource",
        title="Watched Resource",
        description="A resource clients can subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content"


def _add_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(title="Simple Test Prompt", description="A simple prompt without arguments")
    def test_simple_prompt() -> list[dict[str, Any]]:
        return [{"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}]

    @mcp.prompt(title="Prompt With Arguments", description="A prompt with required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[dict[str, Any]]:
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [{"role": "user", "content": {"type": "text", "text": text}}]

    @mcp.prompt(title="Prompt With Embedded Resource", description="A prompt that includes an embedded resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[dict[str, Any]]:  # noqa: N803 (wire name)
        resource = {"uri": resourceUri, "mimeType": "text/plain", "text": "Embedded resource content for testing."}
        return [
            {"role": "user", "content": {"type": "resource", "resource": resource}},
            {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}},
        ]

    @mcp.prompt(title="Prompt With Image", description="A prompt that includes image content")
    def test_prompt_with_image() -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": {"type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
        ]

    @mcp.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: Any
    ) -> Completion:
        if isinstance(ref, PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [value for value in COMPLETION_CANDIDATES if value.startswith(argument.value)]
            return Completion(values=values, total=len(values), has_more=False)
        return Completion(values=[], total=0, has_more=False)


def _add_low_level_handlers(mcp: MCPServer) -> None:
    """Methods MCPServer has no decorator for: registered on its low-level server."""
    lowlevel = mcp._lowlevel_server  # MCPServer exposes no public hook for these methods.

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscribed_uris.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribed_uris.discard(str(params.uri))
        return EmptyResult()

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)


def loopback_transport_security() -> TransportSecuritySettings:
    """DNS-rebinding protection: only loopback Host and Origin values are accepted."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


async def serve_http(mcp: MCPServer, port: int) -> None:
    app = mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        event_store=InMemoryEventStore(),
        retry_interval=SSE_RETRY_INTERVAL_MS,
        transport_security=loopback_transport_security(),
        host=HOST,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on"))
    serving = asyncio.ensure_future(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        print(f"conformance server ready: http://{HOST}:{bound_port}{MCP_PATH}", file=sys.stderr, flush=True)
    await serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["http", "streamable-http", "stdio"], default="http")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    mcp = build_server()
    if args.transport == "stdio":
        mcp.run("stdio")
    else:
        asyncio.run(serve_http(mcp, args.port))


if __name__ == "__main__":
    main()

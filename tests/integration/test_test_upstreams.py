"""The test upstreams and demo upstreams start over each transport and answer, in both eras.

Every server here is a real process; the client is mcp 2.3.0's `Client`.
"""

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged

from tests.upstreams.launch import KITCHEN, LEGACY_PYTHON, LEGACY_SERVER, REPO, run_http_upstream

# Handshake-era features (logging, sampling, resources/subscribe) are deprecated at 2026-07-28,
# and exercising them is the point here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*deprecated as of 2026-07-28"),
    pytest.mark.filterwarnings("ignore:.*removed as of 2026-07-28"),
]

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ERA_OF_MODE = {"auto": MODERN, "legacy": HANDSHAKE}
EVENT_DEADLINE_S = 10


@pytest.fixture(scope="session")
def legacy_python() -> str:
    """The mcp 1.x interpreter; builds .venv-legacy on first use (idempotent)."""
    subprocess.run([str(REPO / "scripts" / "setup-legacy-venv.sh")], check=True, cwd=REPO)
    return LEGACY_PYTHON


async def _model_says_hi(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"model read: {prompt}"), model="test"
    )


async def _user_answers(ctx: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"answer": f"yes to {params.message}"})


@asynccontextmanager
async def kitchen_client(
    transport: str, mode: str, *args: str, python: str = sys.executable, script: str = KITCHEN, **client_kw: Any
) -> AsyncIterator[Client]:
    """A connected client to a fresh server process over `transport`."""
    if transport == "stdio":
        target: Any = StdioServerParameters(command=python, args=[script, *args], cwd=str(REPO))
        async with Client(target, mode=mode, **client_kw) as client:
            yield client
        return
    async with run_http_upstream(script, "--transport", transport, *args, python=python) as url:
        async with Client(sse_client(url) if transport == "sse" else url, mode=mode, **client_kw) as client:
            yield client


def _text(result: types.CallToolResult) -> str:
    assert result.content, result
    first = result.content[0]
    assert isinstance(first, types.TextContent), first
    return first.text


# --- kitchen: every transport, both eras -------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["stdio", "http", "sse"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_kitchen_answers_on_every_transport_in_both_eras(transport: str, mode: str) -> None:
    async with kitchen_client(transport, mode, "--name", "k-one") as client:
        assert client.protocol_version == ERA_OF_MODE[mode]
        assert client.server_info is not None and client.server_info.name == "k-one"

        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "add", "noop", "slow", "fail", "whoami", "headers", "add_tool", "bump"} <= names

        assert _text(await client.call_tool("echo", {"text": "hello"})) == "hello"
        added = await client.call_tool("add", {"a": 2, "b": 40})
        assert added.structured_content == {"sum": 42}
        assert json.loads(_text(added)) == {"sum": 42}
        failed = await client.call_tool("fail", {"message": "boom"})
        assert failed.is_error and _text(failed) == "boom"
        me = (await client.call_tool("whoami", {})).structured_content
        assert me is not None and me["name"] == "k-one" and me["pid"] > 0

        readme = await client.read_resource("kitchen://readme")
        assert "test MCP server" in readme.contents[0].text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_kitchen_content_kinds(mode: str) -> None:
    async with kitchen_client("stdio", mode) as client:
        image = (await client.call_tool("image", {})).content[0]
        assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
        audio = (await client.call_tool("audio", {})).content[0]
        assert isinstance(audio, types.AudioContent) and audio.mime_type == "audio/wav"
        embedded = (await client.call_tool("embedded", {})).content[0]
        assert isinstance(embedded, types.EmbeddedResource) and embedded.resource.uri == "kitchen://readme"
        kinds = [block.type for block in (await client.call_tool("mixed", {})).content]
        assert kinds == ["text", "image", "resource"]
        assert (await client.call_tool("noop", {})).is_error is False

        logo = (await client.read_resource("kitchen://logo")).contents[0]
        assert isinstance(logo, types.BlobResourceContents) and logo.mime_type == "image/png"
        item = (await client.read_resource("kitchen://items/7")).contents[0]
        assert json.loads(item.text)["id"] == "7"
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["kitchen://items/{id}"]

        greeting = await client.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in greeting.messages[0].content.text
        assert {p.name for p in (await client.list_prompts()).prompts} == {"greet", "review", "readme"}
        completion = await client.complete(
            types.PromptReference(type="ref/prompt", name="greet"), {"name": "name", "value": "Al"}
        )
        assert completion.completion.values == ["Alan", "Alice"]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_kitchen_asks_the_client_and_streams_notifications(transport: str, mode: str) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with kitchen_client(
        transport,
        mode,
        sampling_callback=_model_says_hi,
        elicitation_callback=_user_answers,
        logging_callback=on_log,
        log_level="debug",  # the 2026-07-28 per-request opt-in; ignored by the handshake era
    ) as client:
        assert _text(await client.call_tool("sample", {"prompt": "hi"})) == "model read: hi"
        assert _text(await client.call_tool("ask", {"question": "ok?"})) == "yes to ok?"
        assert _text(await client.call_tool("log", {"message": "careful", "level": "warning"})) == "careful"
        await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)

    assert [(entry.level, entry.data) for entry in logs] == [("warning", "careful")]
    assert progress == [(1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]


@pytest.mark.anyio
async def test_slow_tool_lets_a_client_time_out() -> None:
    async with kitchen_client("http", "auto") as client:
        with pytest.raises(Exception, match="(?i)time"):
            await client.call_tool("slow", {"seconds": 5}, read_timeout_seconds=0.3)
        assert _text(await client.call_tool("slow", {"seconds": 0})) == "slept 0.0"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_headers_tool_returns_what_the_upstream_received(mode: str) -> None:
    async with run_http_upstream(KITCHEN) as url:
        http = httpx2.AsyncClient(headers={"X-Tenant": "acme"})
        async with http, Client(_http_transport(url, http), mode=mode) as client:
            seen = (await client.call_tool("headers", {})).structured_content
    assert seen is not None
    assert seen["x-tenant"] == "acme"
    assert seen["mcp-protocol-version"] == ERA_OF_MODE[mode]


def _http_transport(url: str, http: httpx2.AsyncClient) -> Any:
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(url, http_client=http)


@pytest.mark.anyio
async def test_prefix_extra_tools_and_uri_scheme() -> None:
    async with kitchen_client(
        "stdio", "auto", "--tool-prefix", "p_", "--extra-tools", "alpha,beta", "--uri-scheme", "other"
    ) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"p_echo", "p_alpha", "p_beta"} <= names and "echo" not in names
        assert _text(await client.call_tool("p_alpha", {})) == "p_alpha"
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert uris == {"other://readme", "other://logo", "other://counter"}


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_handshake_era_change_notifications_reach_other_sessions(transport: str) -> None:
    received: list[Any] = []
    arrived = {kind: anyio.Event() for kind in ("tools", "resource")}

    async def on_message(message: Any) -> None:
        received.append(message)
        if isinstance(message, types.ToolListChangedNotification):
            arrived["tools"].set()
        if isinstance(message, types.ResourceUpdatedNotification):
            arrived["resource"].set()

    async with run_http_upstream(KITCHEN, "--transport", transport) as url:
        target: Callable[[], Any] = (lambda: sse_client(url)) if transport == "sse" else (lambda: url)
        async with (
            Client(target(), mode="legacy", message_handler=on_message) as watcher,
            Client(target(), mode="legacy") as actor,
        ):
            assert watcher.server_capabilities.tools.list_changed is True
            await watcher.subscribe_resource("kitchen://counter")
            with anyio.fail_after(EVENT_DEADLINE_S):
                assert _text(await actor.call_tool("add_tool", {"name": "fresh"})) == "fresh"
                await arrived["tools"].wait()
                assert _text(await actor.call_tool("bump", {})) == "1"
                await arrived["resource"].wait()
            assert "fresh" in {tool.name for tool in (await watcher.list_tools()).tools}
            assert _text(await watcher.call_tool("fresh", {})) == "fresh"
            assert (await watcher.read_resource("kitchen://counter")).contents[0].text == "1"


@pytest.mark.anyio
async def test_modern_era_change_notifications_ride_subscriptions_listen() -> None:
    async with run_http_upstream(KITCHEN) as url:
        async with Client(url) as watcher, Client(url) as actor:
            assert watcher.protocol_version == MODERN
            async with watcher.listen(tools_list_changed=True, resource_subscriptions=["kitchen://counter"]) as events:
                with anyio.fail_after(EVENT_DEADLINE_S):
                    await actor.call_tool("add_tool", {"name": "fresh"})
                    assert isinstance(await events.__anext__(), ToolsListChanged)
                    await actor.call_tool("bump", {})
                    updated = await events.__anext__()
            assert isinstance(updated, ResourceUpdated) and updated.uri == "kitchen://counter"


@pytest.mark.anyio
async def test_record_file_counts_requests_and_sessions(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        async with Client(url, mode="legacy") as client:
            await client.call_tool("echo", {"text": "one"})
            await client.call_tool("echo", {"text": "two"})
        async with Client(url, mode="auto") as client:
            await client.call_tool("echo", {"text": "three"})

    entries = [json.loads(line) for line in record.read_text().splitlines()]
    methods = [entry["method"] for entry in entries]
    assert methods.count("initialize") == 1
    assert methods.count("server/discover") == 1
    calls = [entry for entry in entries if entry["method"] == "tools/call"]
    assert [entry["name"] for entry in calls] == ["echo", "echo", "echo"]
    sessions = {entry["headers"].get("mcp-session-id") for entry in calls}
    assert len(sessions - {None}) == 1  # two handshake-era calls on one session, one sessionless call
    assert all("user-agent" in entry["headers"] for entry in entries)


# --- the handshake-era-only upstream (mcp 1.x) -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["stdio", "http", "sse"])
async def test_legacy_upstream_only_speaks_the_handshake_era(transport: str, legacy_python: str) -> None:
    async with kitchen_client(
        transport, "auto", "--name", "old-one", python=legacy_python, script=LEGACY_SERVER
    ) as client:
        assert client.protocol_version == HANDSHAKE  # auto probed server/discover, then fell back
        assert client.server_info.name == "old-one"
        assert _text(await client.call_tool("echo", {"text": "hi"})) == "hi"
        assert _text(await client.call_tool("add", {"a": 2, "b": 40})) == "42"
        assert (await client.call_tool("whoami", {})).structured_content["name"] == "old-one"
        assert "handshake" in (await client.read_resource("legacy://readme")).contents[0].text
        assert "Ada" in (await client.get_prompt("greet", {"name": "Ada"})).messages[0].content.text


@pytest.mark.anyio
async def test_legacy_upstream_rejects_server_discover(legacy_python: str) -> None:
    discover = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}},
    }
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN}
    async with run_http_upstream(LEGACY_SERVER, python=legacy_python) as url:
        async with httpx2.AsyncClient() as http:
            response = await http.post(url, json=discover, headers=headers)
    # mcp 1.x wants a session before anything but initialize.
    assert response.status_code == 400
    assert "session" in response.json()["error"]["message"].lower()


# --- the demo upstreams that `make run` starts -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_demo_notes_over_stdio(mode: str) -> None:
    target = StdioServerParameters(command=sys.executable, args=["-m", "manifold.demo.notes"], cwd=str(REPO))
    async with Client(target, mode=mode) as client:
        assert client.protocol_version == ERA_OF_MODE[mode]
        added = (await client.call_tool("add_note", {"title": "Groceries", "body": "milk, eggs"})).structured_content
        assert added == {"id": 2, "title": "Groceries", "body": "milk, eggs"}
        listed = (await client.call_tool("list_notes", {})).structured_content["result"]
        assert [note["title"] for note in listed] == ["Welcome", "Groceries"]
        found = (await client.call_tool("search_notes", {"query": "MILK"})).structured_content["result"]
        assert [note["id"] for note in found] == [2]
        assert (await client.read_resource("notes://2")).contents[0].text.startswith("# Groceries")
        prompt = await client.get_prompt("summarize_notes")
        assert "Groceries: milk, eggs" in prompt.messages[0].content.text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_demo_toolbox_over_http(mode: str) -> None:
    async with run_http_upstream("manifold.demo.toolbox") as url:
        async with Client(url, mode=mode) as client:
            assert client.protocol_version == ERA_OF_MODE[mode]
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == ["now", "add", "uuid", "echo", "word_count"]
            assert (await client.call_tool("add", {"a": 1.5, "b": 2})).structured_content == {"sum": 3.5}
            assert _text(await client.call_tool("echo", {"text": "x"})) == "x"
            counted = (await client.call_tool("word_count", {"text": "one two  three"})).structured_content
            assert counted == {"words": 3, "characters": 14}
            assert len(_text(await client.call_tool("uuid", {}))) == 36
            assert _text(await client.call_tool("now", {})).endswith("+00:00")


# --- the launcher itself -----------------------------------------------------------------


@pytest.mark.anyio
async def test_launcher_reports_a_server_that_dies_before_listening() -> None:
    with pytest.raises(RuntimeError, match="exited"):
        async with run_http_upstream(KITCHEN, "--transport", "carrier-pigeon"):
            pass  # pragma: no cover


@pytest.mark.anyio
async def test_launcher_stops_the_server_afterwards() -> None:
    async with run_http_upstream(KITCHEN) as url:
        async with Client(url) as client:
            assert (await client.call_tool("whoami", {})).structured_content["pid"] > 0
    async with httpx2.AsyncClient() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(url)

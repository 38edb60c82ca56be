"""One gateway in front of real upstreams over every transport and both eras: what a client sees.

Upstreams: kitchen over streamable HTTP (alpha), stdio (beta) and SSE (gamma); a handshake-only mcp 1.x
server (old). Clients: mcp 2.3.0 in both eras, and over the gateway's own SSE endpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN, LEGACY_PYTHON, LEGACY_SERVER, run_http_upstream

pytestmark = pytest.mark.anyio
ERAS = ["legacy", "2026-07-28"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with (
        run_http_upstream(KITCHEN, "--name", "alpha") as alpha,
        run_http_upstream(KITCHEN, "--name", "gamma", "--transport", "sse") as gamma,
        run_http_upstream(LEGACY_SERVER, python=LEGACY_PYTHON) as old,
    ):
        upstreams = {
            "alpha": {"transport": "http", "url": alpha},
            "beta": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "beta"),
            "gamma": {"transport": "sse", "url": gamma},
            "old": {"transport": "http", "url": old},
        }
        servers = {
            "mix": {
                "description": "a mixed virtual server",
                "members": [
                    {
                        "upstream": "alpha",
                        "hide": ["slow", "add_tool"],
                        "aliases": {"add": "plus"},
                        "descriptions": {"echo": "Echo back, via the gateway"},
                    },
                    {"upstream": "beta", "id": "b", "tools": ["echo", "who*", "sample", "ask", "link"]},
                    {"upstream": "gamma", "tools": ["echo", "whoami"]},
                    {"upstream": "old", "tools": ["*"]},
                ],
            },
            "flat": {
                "namespace": False,
                "members": [{"upstream": "alpha", "tools": ["echo"]}, {"upstream": "beta", "tools": ["whoami"]}],
            },
        }
        async with run_gateway(upstreams, servers) as gateway:
            yield gateway


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", ERAS)
async def test_tool_list_is_namespaced_selected_aliased_and_hidden(gw: Gateway, mode: str) -> None:
    async with gw.client("mix", mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    names = set(tools)
    assert {"alpha__echo", "alpha__plus", "alpha__image", "b__echo", "b__whoami", "gamma__echo", "old__echo"} <= names
    assert "alpha__add" not in names  # aliased
    assert "alpha__slow" not in names and "alpha__add_tool" not in names  # hidden
    assert "b__add" not in names and "gamma__add" not in names  # not selected
    assert tools["alpha__echo"].description == "Echo back, via the gateway"
    assert all(len(n) <= 64 for n in names)
    # deterministic order: members in config order
    order = [n.split("__")[0] for n in tools]
    assert order == sorted(order, key=["alpha", "b", "gamma", "old"].index)


@pytest.mark.parametrize("mode", ERAS)
async def test_calls_reach_every_transport_and_era(gw: Gateway, mode: str) -> None:
    async with gw.client("mix", mode=mode) as client:
        for name, expected in [
            ("alpha__echo", "alpha"),
            ("b__echo", "beta"),
            ("gamma__echo", "gamma"),
            ("old__echo", "old"),
        ]:
            result = await client.call_tool(name, {"text": f"hello {expected}"})
            assert not result.is_error, text_of(result)
            assert text_of(result) == f"hello {expected}"
        who = json.loads(text_of(await client.call_tool("b__whoami", {})))
        assert who["name"] == "beta"
        added = await client.call_tool("alpha__plus", {"a": 2, "b": 40})
        assert added.structured_content == {"result": 42} or "42" in text_of(added)


async def test_gateway_sse_endpoint_serves_the_same_server(gw: Gateway) -> None:
    async with gw.client("mix", transport="sse") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "gamma__echo" in names
        assert text_of(await client.call_tool("gamma__echo", {"text": "over sse"})) == "over sse"


@pytest.mark.parametrize("mode", ERAS)
async def test_results_pass_through_unchanged(gw: Gateway, mode: str) -> None:
    async with gw.client("alpha", mode=mode) as through, Client(_direct_url(gw, "alpha"), mode=mode) as direct:
        for tool, args in [
            ("image", {}),
            ("audio", {}),
            ("embedded", {}),
            ("mixed", {}),
            ("add", {"a": 1, "b": 2}),
            ("fail", {"message": "boom"}),
        ]:
            a = await through.call_tool(tool, args)
            b = await direct.call_tool(tool, args)
            assert a.model_dump(exclude={"meta"}) == b.model_dump(exclude={"meta"}), tool
        failed = await through.call_tool("fail", {"message": "boom"})
        assert failed.is_error and "boom" in text_of(failed)


def _direct_url(gw: Gateway, upstream: str) -> str:
    import yaml

    config = yaml.safe_load((gw.config_dir / "manifold.yaml").read_text())
    return config["upstreams"][upstream]["url"]


async def test_one_member_server_per_upstream_keeps_original_names(gw: Gateway) -> None:
    async with gw.client("alpha") as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"echo", "add", "slow", "add_tool"} <= names


async def test_namespace_off_keeps_names(gw: Gateway) -> None:
    async with gw.client("flat") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["echo", "whoami"]
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "beta"


@pytest.mark.parametrize("mode", ERAS)
async def test_unknown_tool_is_an_invalid_params_error(gw: Gateway, mode: str) -> None:
    """A name that is not in the server's list is a protocol error (-32602), not a tool result."""
    async with gw.client("mix", mode=mode) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("alpha__nope", {})
    assert info.value.code == types.INVALID_PARAMS
    assert info.value.message == "Unknown tool: alpha__nope"


@pytest.mark.parametrize("mode", ERAS)
async def test_resources_from_two_upstreams_with_the_same_uris(gw: Gateway, mode: str) -> None:
    async with gw.client("mix", mode=mode) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"kitchen+alpha://readme", "kitchen+b://readme"} <= uris
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert {"kitchen+alpha://items/{id}", "kitchen+b://items/{id}"} <= templates
        for member in ("alpha", "b"):
            read = await client.read_resource(f"kitchen+{member}://items/7")
            content = read.contents[0]
            assert json.loads(content.text)["id"] == "7"
            assert str(content.uri) == f"kitchen+{member}://items/7"
        logo = await client.read_resource("kitchen+alpha://logo")
        assert base64.b64decode(logo.contents[0].blob).startswith(b"\x89PNG")


@pytest.mark.parametrize("mode", ERAS)
async def test_links_and_embedded_resources_in_a_namespaced_server_name_uris_the_client_can_read(
    gw: Gateway, mode: str
) -> None:
    """Was (found with server-everything): tool results and prompt messages kept the upstream's URIs
    (`kitchen://items/7`) where the server's lists and reads use `kitchen+alpha://...`: following a link a tool
    had just returned failed with -32002, and with two members of one scheme nobody could tell whose it was."""
    async with gw.client("mix", mode=mode) as client:
        for member in ("alpha", "b"):
            (link,) = (await client.call_tool(f"{member}__link", {"id": "7"})).content
            assert isinstance(link, types.ResourceLink) and str(link.uri) == f"kitchen+{member}://items/7"
            read = await client.read_resource(str(link.uri))
            assert json.loads(read.contents[0].text)["id"] == "7"
        (embedded,) = (await client.call_tool("alpha__embedded", {})).content
        assert isinstance(embedded, types.EmbeddedResource)
        assert str(embedded.resource.uri) == "kitchen+alpha://readme"
        prompt = await client.get_prompt("alpha__readme", {})
        content = prompt.messages[0].content
        assert isinstance(content, types.EmbeddedResource) and str(content.resource.uri) == "kitchen+alpha://readme"
        assert (await client.read_resource(str(content.resource.uri))).contents[0].text.startswith("Kitchen")


@pytest.mark.parametrize("mode", ERAS)
async def test_prompts_and_completion_from_two_upstreams(gw: Gateway, mode: str) -> None:
    async with gw.client("mix", mode=mode) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"alpha__greet", "b__greet", "alpha__review"} <= names
        got = await client.get_prompt("b__greet", {"name": "Ada"})
        assert "Ada" in got.messages[0].content.text
        done = await client.complete(
            types.PromptReference(type="ref/prompt", name="alpha__greet"), {"name": "name", "value": "A"}
        )
        assert done.completion.values, "completion values relayed"


async def test_progress_and_logging_are_relayed(gw: Gateway) -> None:
    progress: list[float] = []
    logs: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async with gw.client("mix", logging_callback=on_log) as client:
        result = await client.call_tool("alpha__progress", {"steps": 3}, progress_callback=on_progress)
        assert not result.is_error
        assert progress == [1, 2, 3]
        await client.call_tool("alpha__log", {"message": "from upstream", "level": "warning"})
        assert any("from upstream" in line for line in logs)


async def test_sampling_and_elicitation_reach_the_client(gw: Gateway) -> None:
    async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled!"), model="test-model"
        )

    async def elicitation(context, params) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    async with gw.client("mix", sampling_callback=sampling, elicitation_callback=elicitation) as client:
        assert "sampled!" in text_of(await client.call_tool("b__sample", {"prompt": "hi"}))
        assert "forty-two" in text_of(await client.call_tool("b__ask", {"question": "?"}))


async def test_an_upstream_served_alone_passes_on_its_instructions(gw: Gateway) -> None:
    """Was (interop, server-everything): the upstream's instructions (guidance for the model) were dropped even
    on /mcp/<upstream>. A server with a description says that; one of several members says neither's. (mcp
    2.3.0's client shows no instructions at 2026-07-28, so that era's server/discover is read as it comes.)"""
    async with gw.client("alpha") as client:
        await client.list_tools()  # the gateway's session to alpha is up
    async with gw.client("alpha") as client:
        assert client.instructions == "A test upstream with one of everything."
    async with gw.client("mix") as client:
        assert client.instructions == "a mixed virtual server"
    async with gw.client("flat") as client:
        assert client.instructions is None
    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2026-07-28",
               "Mcp-Method": "server/discover"}  # fmt: skip
    async with gw.http() as http:
        found = (await http.post(gw.url("alpha"), json=discover, headers=headers)).json()
    assert found["result"]["instructions"] == "A test upstream with one of everything."

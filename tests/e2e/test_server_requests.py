"""Server→client requests through the gateway, with real upstreams and real clients of both eras.

- A handshake-era upstream (the TypeScript SDK's server-everything over streamable HTTP, and the Python
  kitchen pinned to 2025-11-25) asks for sampling and elicitation while a tools/call runs: a 2025-11-25
  client is asked on its POST's SSE stream, a 2026-07-28 client through `input_required` and its retry.
- A request the client cannot answer is refused upstream at once, never left to hang.
- A 2026-07-28 upstream request declares exactly the calling client's capabilities.
- An upstream that closes a POST's event stream before the reply (SEP-1699 polling, the TypeScript fixture's
  test_reconnection) is resumed with GET + Last-Event-ID.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from manifold.protocol import MISSING_CLIENT_CAPABILITY
from tests.e2e.harness import Gateway, run_gateway
from tests.e2e.test_connect_flow import CONNECT_TEXT, Site, site, world  # noqa: F401 (fixtures of the connect flow)
from tests.e2e.test_connect_flow import SERVER as CONNECT_SERVER
from tests.upstreams.launch import KITCHEN, run_everything_http, run_http_upstream, run_ts_fixture

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
CAPS_ECHO = str(REPO / "tests" / "upstreams" / "caps_echo.py")
ERAS = ["legacy", "2026-07-28"]


@pytest.fixture(scope="module")  # module scope: the connect flow's `world` fixture is module-scoped
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Answers:
    """The client's callbacks: what it was asked, and what it answers."""

    def __init__(self) -> None:
        self.sampled: list[types.CreateMessageRequestParams] = []
        self.elicited: list[Any] = []

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampled.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="the model says 42"), model="test-model"
        )

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(params)
        properties = getattr(params, "requested_schema", {}).get("properties", {})
        content: dict[str, str | int | float | bool | list[str] | None] = {}
        for name, schema in properties.items():
            content[name] = {"boolean": True, "integer": 7, "number": 7}.get(schema.get("type"), "teal")
        return types.ElicitResult(action="accept", content=content)


@asynccontextmanager
async def gateway_over(url: str, **upstream: Any) -> AsyncIterator[Gateway]:
    servers = {"s": {"namespace": False, "members": [{"upstream": "up"}]}}
    async with run_gateway({"up": {"transport": "http", "url": url, **upstream}}, servers) as gw:
        yield gw


@pytest.mark.parametrize("mode", ERAS)
async def test_a_typescript_upstreams_sampling_and_elicitation_reach_the_client(mode: str) -> None:
    """server-everything asks while the call runs; the client of either era is asked and its answers
    are what the tool reports."""
    answers = Answers()
    async with run_everything_http() as url, gateway_over(url) as gw:
        async with gw.client(
            "s", mode=mode, sampling_callback=answers.sampling, elicitation_callback=answers.elicitation
        ) as client:
            with anyio.fail_after(30):
                sampled = await client.call_tool("trigger-sampling-request", {"prompt": "meaning of life?"})
            assert not sampled.is_error, text_of(sampled)
            assert "the model says 42" in text_of(sampled)
            assert [m.content.text for m in answers.sampled[0].messages] == [  # type: ignore[union-attr]
                "Resource trigger-sampling-request context: meaning of life?"
            ]
            with anyio.fail_after(30):
                elicited = await client.call_tool("trigger-elicitation-request", {})
            assert not elicited.is_error, text_of(elicited)
            assert "teal" in text_of(elicited)
            assert len(answers.elicited) == 1
        assert "Traceback" not in gw.log()


@pytest.mark.parametrize("mode", ERAS)
async def test_a_python_handshake_upstreams_questions_reach_the_client(mode: str) -> None:
    """kitchen pinned to 2025-11-25: sampling and form elicitation as server→client requests."""
    answers = Answers()
    async with run_http_upstream(KITCHEN) as url, gateway_over(url, protocol="2025-11-25") as gw:
        async with gw.client(
            "s", mode=mode, sampling_callback=answers.sampling, elicitation_callback=answers.elicitation
        ) as client:
            with anyio.fail_after(30):
                sampled = await client.call_tool("sample", {"prompt": "hi"})
                asked = await client.call_tool("ask", {"question": "favourite colour?"})
            assert "the model says 42" in text_of(sampled), text_of(sampled)
            assert "teal" in text_of(asked), text_of(asked)
            assert answers.sampled[0].messages[0].content.text == "hi"  # type: ignore[union-attr]
            assert answers.elicited[0].message == "favourite colour?"


@pytest.mark.parametrize("mode", ERAS)
async def test_progress_after_a_question_reaches_the_client_under_its_own_token(mode: str) -> None:
    """Was (fastmcp interop): a 2026-07-28 client answers a question with a retry, a new request with a
    progressToken of its own, and the upstream's progress after the answer still named the first request's
    token, so the client's progress callback never heard it."""
    answers = Answers()
    progress: list[tuple[float, float | None, str | None]] = []

    async def heard(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with run_http_upstream(KITCHEN) as url, gateway_over(url, protocol="2025-11-25") as gw:
        async with gw.client("s", mode=mode, elicitation_callback=answers.elicitation) as client:
            with anyio.fail_after(30):
                result = await client.call_tool(
                    "ask_then_progress", {"question": "colour?", "steps": 3}, progress_callback=heard
                )
            assert text_of(result) == "teal", text_of(result)
            assert progress == [(1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]


async def test_a_stdio_upstreams_own_roots_request_at_its_start_fails_no_call_of_a_client_without_roots() -> None:
    """Was (fastmcp interop): server-everything over stdio asks roots/list right after its handshake; stdio cannot
    say which call a request is about, so it went to the one call in flight, and a 2026-07-28 client that had
    not declared roots had that call fail with -32021 (the next one worked). Only guessed to be the call's, the
    roots/list is answered for it with an error to the upstream (roots belong to a session), and the call goes on."""
    from tests.upstreams.launch import EVERYTHING, NODE

    upstreams = {"ev": {"transport": "stdio", "command": NODE, "args": [EVERYTHING, "stdio"]}}
    async with run_gateway(upstreams) as gw, gw.client("ev", mode="2026-07-28") as client:
        with anyio.fail_after(60):
            # the call that starts the upstream, in flight when its roots/list comes
            result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 2})
        assert not result.is_error, text_of(result)
        assert "Traceback" not in gw.log()


async def test_a_fastmcp_upstreams_questions_reach_a_2025_client_as_they_do_directly() -> None:
    """Was (fastmcp interop): with `protocol: auto` the gateway spoke 2026-07-28 to a FastMCP 4 upstream, which
    asks elicitation, sampling and roots only on 2025-11-25 connections: those tools failed for every client
    ("unavailable on 2026-07-28 connections"), where a 2025-11-25 client reaching the upstream directly is asked.
    A client of that era now goes through a session of its era to an upstream that speaks both."""
    answers = Answers()

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project")])

    callbacks = {
        "sampling_callback": answers.sampling,
        "elicitation_callback": answers.elicitation,
        "list_roots_callback": roots,
    }
    script = str(Path(__file__).resolve().parents[1] / "upstreams" / "fastmcp_asks.py")
    async with run_http_upstream(script) as url, gateway_over(url) as gw:
        direct_client = Client(
            streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=60)), mode="legacy", **callbacks
        )
        seen: dict[str, list[str]] = {}
        for name, opened in (("direct", direct_client), ("gateway", gw.client("s", mode="legacy", **callbacks))):
            async with opened as client:
                await client.list_tools()
                with anyio.fail_after(30):
                    results = [
                        await client.call_tool("ask_name", {}),
                        await client.call_tool("sample", {"prompt": "hi"}),
                        await client.call_tool("roots", {}),
                    ]
            seen[name] = [("error: " if r.is_error else "") + text_of(r) for r in results]
        assert seen["direct"] == ["hello teal", "the model says 42", "file:///work/project"], seen
        assert seen["gateway"] == seen["direct"]
        assert "Traceback" not in gw.log()


@pytest.mark.parametrize("refusal", ["refuse", "fail"])
async def test_a_2025_client_of_an_upstream_that_speaks_2026_only_shares_its_one_session(refusal: str) -> None:
    """The other side of relaying 2025-11-25 clients through a session of their era: an upstream that refuses
    `initialize` is tried once, and its clients of that era are served through its 2026-07-28 session; one that
    fails it otherwise (an HTTP 500) serves them through that session too, never fails them (review)."""
    script = str(Path(__file__).resolve().parents[1] / "upstreams" / "plaintext_errors.py")
    async with run_http_upstream(script, "--modern-only", refusal) as url:
        async with run_gateway({"up": {"transport": "http", "url": url}}) as gw:
            async with gw.client("up", mode="2026-07-28") as modern:
                assert text_of(await modern.call_tool("echo", {"text": "Ada"})) == "Ada"
            for _ in range(2):
                async with gw.client("up", mode="legacy") as legacy:
                    assert text_of(await legacy.call_tool("echo", {"text": "Bob"})) == "Bob"
            if refusal == "refuse":
                assert gw.log().count("refused a 2025-11-25 session") == 1  # tried once
            assert "Traceback" not in gw.log()


async def test_a_handshake_client_without_sampling_is_refused_at_once_not_left_hanging() -> None:
    """The client declared no sampling: the upstream hears "not supported" at once and says so."""
    async with run_everything_http() as url, gateway_over(url) as gw:
        async with gw.client("s", mode="legacy") as client:
            started = time.monotonic()
            with anyio.fail_after(20):
                result = await client.call_tool("trigger-sampling-request", {"prompt": "hi"})
            assert time.monotonic() - started < 10
            assert result.is_error
            assert "sampling" in text_of(result)


async def test_a_2026_client_without_sampling_is_told_the_call_needs_it() -> None:
    """A 2026-07-28 client that did not declare sampling calls a handshake-era tool that samples: it gets
    MissingRequiredClientCapability naming sampling at once, as from a 2026-07-28 server."""
    async with run_ts_fixture() as url, gateway_over(url) as gw:
        async with gw.client("s", mode="2026-07-28") as client:
            with anyio.fail_after(20), pytest.raises(MCPError) as refused:
                await client.call_tool("test_sampling", {"prompt": "hi"})
    assert refused.value.error.code == MISSING_CLIENT_CAPABILITY
    assert refused.value.error.data == {"requiredCapabilities": {"sampling": {}}}


async def test_a_2026_upstream_is_told_exactly_the_calling_clients_capabilities() -> None:
    """SEP-2322: an upstream may ask in input_required only for what this client can answer, so each
    2026-07-28 request declares the calling client's capabilities, not the gateway's."""
    answers = Answers()
    async with run_http_upstream(CAPS_ECHO) as url, gateway_over(url, protocol="2026-07-28") as gw:
        async with gw.client("s", mode="2026-07-28") as bare:
            seen = json.loads(text_of(await bare.call_tool("capabilities", {})))
        assert not (seen or {}).keys() & {"sampling", "elicitation", "roots"}, seen
        async with gw.client("s", mode="2026-07-28", elicitation_callback=answers.elicitation) as eliciting:
            seen = json.loads(text_of(await eliciting.call_tool("capabilities", {})))
        assert "elicitation" in seen and "sampling" not in seen and "roots" not in seen, seen


@pytest.mark.parametrize("mode", ERAS)
async def test_a_typescript_fixtures_questions_and_a_closed_stream_reach_the_client(mode: str) -> None:
    """The TypeScript-SDK conformance fixture: elicitation with the suite's schema, and test_reconnection,
    which closes the POST's event stream before its reply and sends the rest after the client resumes."""
    answers = Answers()
    async with run_ts_fixture() as url, gateway_over(url) as gw:
        async with gw.client(
            "s", mode=mode, sampling_callback=answers.sampling, elicitation_callback=answers.elicitation
        ) as client:
            with anyio.fail_after(30):
                elicited = await client.call_tool("test_elicitation", {"message": "Who are you?"})
                sampled = await client.call_tool("test_sampling", {"prompt": "2+2?"})
                resumed = await client.call_tool("test_reconnection", {})
            assert "teal" in text_of(elicited), text_of(elicited)
            assert answers.elicited[0].message == "Who are you?"
            assert "the model says 42" in text_of(sampled), text_of(sampled)
            assert not resumed.is_error and "Reconnection test completed successfully" in text_of(resumed), text_of(
                resumed
            )
        assert "Traceback" not in gw.log() and "without a reply" not in gw.log()


async def test_a_2026_client_without_url_elicitation_is_told_the_connect_url_in_text(site: Site) -> None:  # noqa: F811
    """Connect-your-account for a 2026-07-28 client that cannot show a URL elicitation: the tool result's text
    carries the absolute connect URL (not an input_required it could not answer)."""
    async with site.gw.client(CONNECT_SERVER, key=site.keys["alice@corp.com"], mode="2026-07-28") as client:
        with anyio.fail_after(30):
            result = await client.call_tool("whoami", {})
    assert result.is_error, text_of(result)
    found = CONNECT_TEXT.search(text_of(result))
    assert found, text_of(result)
    assert found.group(1).startswith(f"{site.gw.base}/connect/{CONNECT_SERVER}?t=")

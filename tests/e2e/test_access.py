"""What a caller may use: grants applied by the real gateway to lists, calls, reads and whole servers.

Two kitchen upstreams (alpha, beta) behind one virtual server `shared`. Engineers (alice) get all of alpha,
sales (bob) two of beta's tools, the service account ci-bot one tool of alpha. Keys are made with the CLI
against the running gateway's database, as an operator would. A denied item must be indistinguishable from
one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

SHARED = "shared"
KITCHEN_TOOLS = {
    "echo", "add", "noop", "slow", "fail", "image", "audio", "embedded", "mixed", "progress", "log", "sample", "ask",
    "ask_then_progress",
    "visit", "whoami", "headers", "add_tool", "bump", "link",
}  # fmt: skip
EXTRA = {
    "users": {"alice@corp.com": {"teams": ["eng"]}, "bob@corp.com": {"teams": ["sales"]}},
    "teams": {"eng": "engineering", "sales": None},
    "service_accounts": {"ci-bot": {"description": "the CI pipeline"}},
    "grants": [
        {"who": "team:eng", "what": ["server:alpha"], "description": "engineers use alpha"},
        {"who": "team:sales", "what": ["tool:beta/echo", "tool:beta/add"]},
        {"who": "sa:ci-bot", "what": ["tool:alpha/echo"]},
    ],
}


@dataclass
class Keys:
    alice: str
    bob: str
    ci_bot: str
    alice_shared_only: str


@dataclass
class World:
    gw: Gateway
    keys: Keys


async def create_key(gw: Gateway, *args: str) -> str:
    done = await manifold_cli(gw, "keys", "create", *args, "--json")
    return json.loads(done.stdout)["token"]


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    upstreams = {
        "alpha": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "alpha"),
        "beta": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "beta"),
    }
    servers = {SHARED: {"members": [{"upstream": "alpha"}, {"upstream": "beta"}]}}
    async with run_gateway(upstreams, servers, extra=EXTRA) as gw:
        alice, bob, ci_bot, restricted = await _all(
            create_key(gw, "--user", "alice@corp.com", "--name", "laptop"),
            create_key(gw, "--user", "bob@corp.com", "--name", "laptop"),
            create_key(gw, "--sa", "ci-bot", "--name", "pipeline"),
            create_key(gw, "--user", "alice@corp.com", "--name", "agent", "--servers", SHARED),
        )
        yield World(gw, Keys(alice=alice, bob=bob, ci_bot=ci_bot, alice_shared_only=restricted))


async def _all(*coroutines: Any) -> list[Any]:
    results: list[Any] = [None] * len(coroutines)

    async def run(index: int, coroutine: Any) -> None:
        results[index] = await coroutine

    async with anyio.create_task_group() as group:
        for index, coroutine in enumerate(coroutines):
            group.start_soon(run, index, coroutine)
    return results


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def rpc_error(call: Any) -> dict[str, Any]:
    """The JSON-RPC error object a request was answered with (it must not succeed)."""
    with pytest.raises(MCPError) as caught:
        await call
    return caught.value.error.model_dump(exclude_none=True)


def renamed(error: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The error object with one name replaced: errors name what the client asked for, and nothing else."""
    return json.loads(json.dumps(error).replace(old, new))


# ---- two users at once --------------------------------------------------------------------------------------


@dataclass
class Seen:
    tools: list[str]
    own_call: str
    other_call: dict[str, Any]  # calling the other user's tool
    missing_call: dict[str, Any]  # calling a tool that does not exist (same member, same shape of name)


@pytest.mark.parametrize(("transport", "mode"), [("http", "legacy"), ("http", "2026-07-28"), ("sse", "legacy")])
async def test_two_users_at_once_see_and_call_only_their_own_tools(world: World, transport: str, mode: str) -> None:
    gw = world.gw
    both_connected = anyio.Event()
    connected: list[str] = []
    seen: dict[str, Seen] = {}

    async def use(who: str, key: str, own: str, other: str, missing: str) -> None:
        async with gw.client(SHARED, key=key, transport=transport, mode=mode) as client:
            connected.append(who)
            if len(connected) == 2:
                both_connected.set()
            await both_connected.wait()  # both sessions are open: the lists below are fetched concurrently
            tools = [t.name for t in (await client.list_tools()).tools]
            own_result = await client.call_tool(own, {"text": f"{who} was here"})
            assert not own_result.is_error, text_of(own_result)
            seen[who] = Seen(
                tools=tools,
                own_call=text_of(own_result),
                other_call=await rpc_error(client.call_tool(other, {"text": "x"})),
                missing_call=await rpc_error(client.call_tool(missing, {"text": "x"})),
            )

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(use, "alice", world.keys.alice, "alpha__echo", "beta__echo", "beta__nope")
            group.start_soon(use, "bob", world.keys.bob, "beta__echo", "alpha__echo", "alpha__nope")

    alice, bob = seen["alice"], seen["bob"]
    assert sorted(alice.tools) == sorted(f"alpha__{name}" for name in KITCHEN_TOOLS)
    assert sorted(bob.tools) == ["beta__add", "beta__echo"]
    assert (alice.own_call, bob.own_call) == ("alice was here", "bob was here")
    # Another's tool answers exactly like a tool that does not exist (only the name asked for differs).
    assert alice.other_call == renamed(alice.missing_call, "beta__nope", "beta__echo")
    assert bob.other_call == renamed(bob.missing_call, "alpha__nope", "alpha__echo")
    assert "beta__echo" in alice.other_call["message"]


async def test_resources_and_prompts_are_filtered_too(world: World) -> None:
    gw = world.gw
    async with gw.client(SHARED, key=world.keys.alice) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        readme = await client.read_resource("kitchen+alpha://readme")
        greeting = await client.get_prompt("alpha__greet", {"name": "Ada"})
    assert uris and all(uri.startswith("kitchen+alpha://") for uri in uris)
    assert "kitchen+alpha://readme" in uris
    assert templates == {"kitchen+alpha://items/{id}"}
    assert prompts == {"alpha__greet", "alpha__review", "alpha__readme"}
    assert "Kitchen" in readme.contents[0].text
    assert "Ada" in greeting.messages[0].content.text

    async with gw.client(SHARED, key=world.keys.bob) as client:
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        denied_read = await rpc_error(client.read_resource("kitchen+alpha://readme"))
        missing_read = await rpc_error(client.read_resource("kitchen+nosuchmember://readme"))
        denied_prompt = await rpc_error(client.get_prompt("alpha__greet", {"name": "Ada"}))
        missing_prompt = await rpc_error(client.get_prompt("alpha__nope", {"name": "Ada"}))
    assert denied_read == renamed(missing_read, "kitchen+nosuchmember://readme", "kitchen+alpha://readme")
    assert denied_prompt == renamed(missing_prompt, "alpha__nope", "alpha__greet")


async def test_service_account_limited_to_one_tool(world: World) -> None:
    gw = world.gw
    for server, echo, add in [(SHARED, "alpha__echo", "alpha__add"), ("alpha", "echo", "add")]:
        async with gw.client(server, key=world.keys.ci_bot) as client:
            assert [t.name for t in (await client.list_tools()).tools] == [echo]
            assert text_of(await client.call_tool(echo, {"text": "built"})) == "built"
            denied = await rpc_error(client.call_tool(add, {"a": 1, "b": 2}))
            missing = await rpc_error(client.call_tool(f"{add}_nope", {"a": 1, "b": 2}))
            assert denied == renamed(missing, f"{add}_nope", add)
            assert (await client.list_prompts()).prompts == []
            assert (await client.list_resources()).resources == []


# ---- whole servers ----------------------------------------------------------------------------------------


async def post_initialize(gw: Gateway, server: str, key: str) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
    }
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(gw.url(server), headers=headers, json=body)


async def test_server_without_a_grant_is_forbidden(world: World) -> None:
    gw = world.gw
    for key, server in [(world.keys.bob, "alpha"), (world.keys.alice, "beta"), (world.keys.ci_bot, "beta")]:
        response = await post_initialize(gw, server, key)
        assert response.status_code == 403, (server, response.text)
        assert response.headers["content-type"].startswith("application/json")
        why = f"you may not use server '{server}'"
        assert response.json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": why, "data": {"error": "forbidden", "error_description": why}},
        }
        assert "www-authenticate" not in response.headers  # the credential is fine; it is not enough
    # An SDK client says why (was "Server returned an error response": the body was no JSON-RPC error).
    with pytest.raises(BaseExceptionGroup) as refused:  # raised while the client opens (its task group)
        async with gw.client("alpha", key=world.keys.bob, mode="2026-07-28") as client:
            await client.list_tools()
    assert refused.group_contains(MCPError, match="you may not use server 'alpha'", depth=None)
    # ...and where they do have grants, the same keys get in.
    for key, server in [(world.keys.bob, "beta"), (world.keys.alice, "alpha"), (world.keys.ci_bot, "alpha")]:
        assert (await post_initialize(gw, server, key)).status_code == 200, server


async def test_key_restricted_to_servers_is_forbidden_elsewhere(world: World) -> None:
    gw = world.gw
    key = world.keys.alice_shared_only
    async with gw.client(SHARED, key=key) as client:  # the one server it may use: alice's grants apply there
        assert text_of(await client.call_tool("alpha__echo", {"text": "ok"})) == "ok"
    # alice's grants cover alpha, but this key is restricted to `shared`.
    response = await post_initialize(gw, "alpha", key)
    assert response.status_code == 403
    assert response.json()["error"]["data"]["error"] == "forbidden"
    assert (await post_initialize(gw, "alpha", world.keys.alice)).status_code == 200  # her unrestricted key


# ---- changes while the gateway runs -------------------------------------------------------------------------


async def test_grant_added_and_removed_with_the_cli_applies_at_once(world: World) -> None:
    gw = world.gw
    async with gw.client(SHARED, key=world.keys.bob) as client:
        assert "alpha__whoami" not in {t.name for t in (await client.list_tools()).tools}
        added = await manifold_cli(
            gw, "grants", "add", "--who", "user:bob@corp.com", "--what", "tool:alpha/whoami", "--json"
        )
        grant_id = json.loads(added.stdout)["id"]
        try:
            # Same session, next request: the new grant is in force.
            assert "alpha__whoami" in {t.name for t in (await client.list_tools()).tools}
            assert json.loads(text_of(await client.call_tool("alpha__whoami", {})))["name"] == "alpha"
        finally:
            await manifold_cli(gw, "grants", "remove", str(grant_id))
        assert "alpha__whoami" not in {t.name for t in (await client.list_tools()).tools}
        await rpc_error(client.call_tool("alpha__whoami", {}))


async def test_team_change_applies_to_an_open_session(world: World) -> None:
    gw = world.gw
    await manifold_cli(gw, "users", "create", "dave@corp.com", "--team", "sales")
    key = await create_key(gw, "--user", "dave@corp.com", "--name", "laptop")
    async with gw.client(SHARED, key=key) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["beta__add", "beta__echo"]
        await manifold_cli(gw, "users", "set-teams", "dave@corp.com", "--team", "eng")
        # The session was opened as a salesman; the next request is decided with dave's teams as they are now.
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "alpha__whoami" in tools and "beta__echo" not in tools
        assert json.loads(text_of(await client.call_tool("alpha__whoami", {})))["name"] == "alpha"
        await rpc_error(client.call_tool("beta__echo", {"text": "x"}))
    deleted = json.loads((await manifold_cli(gw, "users", "delete", "dave@corp.com", "--json")).stdout)
    assert deleted["keys_revoked"] == 1
    assert (await post_initialize(gw, SHARED, key)).status_code == 401


async def test_deleted_service_account_token_refused(world: World) -> None:
    gw = world.gw
    await manifold_cli(gw, "sa", "create", "nightly", "--team", "eng")
    token = await create_key(gw, "--sa", "nightly", "--name", "cron")
    assert token.startswith("mfs_")
    async with gw.client("alpha", key=token) as client:  # team eng → all of alpha
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "alpha"
    await manifold_cli(gw, "sa", "delete", "nightly")
    response = await post_initialize(gw, "alpha", token)
    assert response.status_code == 401
    assert token not in response.text


async def test_a_session_belongs_to_the_principal_that_opened_it(world: World) -> None:
    gw = world.gw
    opened = await post_initialize(gw, SHARED, world.keys.alice)
    assert opened.status_code == 200
    session_id = opened.headers["mcp-session-id"]
    list_tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}

    async def send(key: str, method: str = "POST") -> httpx2.Response:
        headers = {
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
        }
        async with httpx2.AsyncClient(timeout=30) as http:
            if method == "DELETE":
                return await http.delete(gw.url(SHARED), headers=headers)
            return await http.post(gw.url(SHARED), headers=headers, json=list_tools)

    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with httpx2.AsyncClient(timeout=30) as http:
        headers = {"Authorization": f"Bearer {world.keys.alice}", "Mcp-Session-Id": session_id,
                   "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}  # fmt: skip
        assert (await http.post(gw.url(SHARED), headers=headers, json=initialized)).status_code == 202
    # bob holds alice's session id (leaked, guessed): to him it does not exist, and he cannot end it.
    stolen = await send(world.keys.bob)
    assert stolen.status_code == 404 and "alpha__" not in stolen.text
    assert (await send(world.keys.bob, "DELETE")).status_code == 404
    mine = await send(world.keys.alice)
    assert mine.status_code == 200
    assert "alpha__echo" in mine.text and "beta__" not in mine.text


async def test_an_sse_session_belongs_to_the_principal_that_opened_it(world: World) -> None:
    gw = world.gw
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}
    async with httpx2.AsyncClient(timeout=30) as http:
        alice = {"Authorization": f"Bearer {world.keys.alice}"}
        async with http.stream("GET", gw.sse_url(SHARED), headers=alice) as stream:
            assert stream.status_code == 200
            # Read with anext, not `async for ... break`: a dropped line iterator is finalised by the garbage
            # collector, which closes the response, i.e. hangs up the stream (and so ends the session).
            lines = stream.aiter_lines()
            while not (line := await anext(lines)).startswith("data: "):
                pass
            endpoint = line.removeprefix("data: ")
            assert "session_id=" in endpoint
            bob = {"Authorization": f"Bearer {world.keys.bob}"}
            stolen = await http.post(gw.base + endpoint, headers=bob, json={**call, "id": 666})
            assert stolen.status_code == 404
            assert (await http.post(gw.base + endpoint, headers=alice, json=call)).status_code == 202
            # The first message on alice's stream answers her own request; bob's never ran.
            while not (line := await anext(lines)).startswith("data: "):
                pass
            answer = json.loads(line.removeprefix("data: "))
            assert answer["id"] == 7
            assert "alpha__echo" in {t["name"] for t in answer["result"]["tools"]}


# ---- explain ------------------------------------------------------------------------------------------------


async def test_explain_names_the_deciding_grant(world: World) -> None:
    def explain(who: str, server: str, tool: str) -> Any:
        return manifold_cli(world.gw, "explain", "--as", who, "--server", server, "--tool", tool, check=False)

    allowed, denied, sa_denied, sa_allowed = await _all(
        explain("alice@corp.com", SHARED, "alpha__echo"),
        explain("alice@corp.com", SHARED, "beta__echo"),
        explain("sa:ci-bot", "alpha", "add"),
        explain("sa:ci-bot", "alpha", "echo"),
    )
    out = allowed.stdout.decode()
    assert allowed.returncode == 0 and out.startswith("ALLOW"), out
    assert "user:alice@corp.com" in out and "team:eng" in out and "server:alpha" in out
    assert "engineers use alpha" in out  # the grant's description

    out = denied.stdout.decode()
    assert denied.returncode == 1 and out.startswith("DENY"), out
    # What would allow it: the sales grant, and why it does not select alice.
    assert "team:sales" in out and "not in team sales" in out

    assert sa_denied.returncode == 1 and sa_denied.stdout.decode().startswith("DENY")
    out = sa_allowed.stdout.decode()
    assert sa_allowed.returncode == 0 and out.startswith("ALLOW") and "sa:ci-bot" in out, out


async def test_explain_refuses_a_tool_name_the_server_cannot_have(world: World) -> None:
    done = await manifold_cli(
        world.gw, "explain", "--as", "alice@corp.com", "--server", SHARED, "--tool", "gamma__echo", check=False
    )
    assert done.returncode == 2
    assert b"gamma__echo" in done.stderr and b"shared" in done.stderr


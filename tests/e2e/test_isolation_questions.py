"""One user's upstream questions never reach another user (rule 5: no effect of one user on another).

An upstream may ask the client something (sampling, roots) outside any call's response stream: FastMCP sends
those on its GET stream, naming no call, and stdio/SSE upstreams name none either. The gateway then guesses
the one call in flight. On a session shared by several users that guess could be another user's call:

- A 2025-11-25 client of a FastMCP upstream (`protocol: auto`, speaking both eras) goes through a
  handshake-era session that is the caller's own, so its questions are guessed among the caller's own calls
  only, and other users' calls in flight do not make them fail.
- On a shared 2025-11-25 session, a request the gateway gave up (its client cancelled) may still be running
  upstream: until it ends, a question naming no call is not given to another user's call.
- A caller's credential that makes the upstream refuse the handshake-era session turns it off for that
  caller only.

Real FastMCP upstream (tests/upstreams/fastmcp_asks.py), real gateway, mcp SDK clients.
"""

from __future__ import annotations

import json
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

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.upstreams.launch import run_http_upstream

pytestmark = pytest.mark.anyio

ASKS = str(Path(__file__).resolve().parents[1] / "upstreams" / "fastmcp_asks.py")
ALICE_PROMPT = "ALICE-PRIVATE: summarise my medical record #4711"


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def key_for(gw: Gateway, user: str) -> str:
    done = await manifold_cli(gw, "keys", "create", "--user", user, "--name", user.split("@")[0], "--json")
    return json.loads(done.stdout)["token"]


def client(gw: Gateway, key: str, *, headers: dict[str, str] | None = None, **callbacks: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=60)
    return Client(streamable_http_client(gw.url("up"), http_client=http), mode="legacy", **callbacks)


class Model:
    """A client's sampling callback: what it was asked."""

    def __init__(self, says: str) -> None:
        self.says = says
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        self.asked.append(content.text if isinstance(content, types.TextContent) else str(content))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=self.says), model="test"
        )


@asynccontextmanager
async def gateway(protocol: str) -> AsyncIterator[tuple[Gateway, str, str]]:
    async with run_http_upstream(ASKS) as url:
        async with run_gateway({"up": {"transport": "http", "url": url, "protocol": protocol}}) as gw:
            yield gw, await key_for(gw, "alice@corp.com"), await key_for(gw, "bob@corp.com")


@pytest.mark.parametrize("protocol", ["auto", "2025-11-25"])
async def test_a_question_of_a_call_given_up_is_never_put_to_another_user(protocol: str) -> None:
    """Alice gives up her call; the tool goes on (it ignores cancellation) and asks sampling on the GET stream
    while Bob's call is the only one in flight. Bob is not asked Alice's prompt, and his model's answer never
    reaches her tool. (`auto`: through each caller's own handshake-era session; `2025-11-25`: one session
    shared by both, where the given-up request holds the guess off.)"""
    async with gateway(protocol) as (gw, alice_key, bob_key):
        alice_model, bob_model = Model("alice's model"), Model("bob's model")
        async with (
            client(gw, alice_key, sampling_callback=alice_model) as alice,
            client(gw, bob_key, sampling_callback=bob_model) as bob,
        ):
            await alice.list_tools()
            await bob.list_tools()
            with anyio.fail_after(30):
                with anyio.move_on_after(0.5):  # her client cancels; the tool asks a second later
                    await alice.call_tool("late_sample", {"prompt": ALICE_PROMPT, "delay": 1.5})
                # Bob's call is then the only one in flight, for the next 2.5 s.
                bob_results = [text_of(await bob.call_tool("slow", {"seconds": 2.5}))]
        assert bob_results == ["slept"]
        assert ALICE_PROMPT not in bob_model.asked
        assert bob_model.asked == []


async def test_another_users_call_in_flight_does_not_fail_a_users_questions() -> None:
    """Bob's sampling tool works while Alice has a call in flight on the same upstream (through one shared
    session, the gateway could not tell whose call the upstream's GET-stream question was, and refused it)."""
    async with gateway("auto") as (gw, alice_key, bob_key):
        bob_model = Model("the model says 42")
        async with client(gw, alice_key) as alice, client(gw, bob_key, sampling_callback=bob_model) as bob:
            await alice.list_tools()
            await bob.list_tools()
            alice_calling = anyio.Event()

            async def alice_waits() -> None:
                alice_calling.set()
                await alice.call_tool("slow", {"seconds": 3})

            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    group.start_soon(alice_waits)
                    await alice_calling.wait()
                    result = await bob.call_tool("sample", {"prompt": "hi"})
                    group.cancel_scope.cancel()
        assert not result.is_error and text_of(result) == "the model says 42"
        assert bob_model.asked == ["hi"]


async def asked_during_a_slow_call(
    asker: Client, other: Client, *, delay: float, seconds: float, sent: anyio.Event | None = None
) -> tuple[str, str]:
    """`late_sample` on `asker` (it asks `delay` s in, naming no call) while `slow` runs on `other`, started once
    `sent` is set if given: (what the sampling tool returned, what `slow` returned)."""
    answers: list[str] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:

            async def asks() -> None:
                answers.append(text_of(await asker.call_tool("late_sample", {"prompt": "hi", "delay": delay})))

            group.start_soon(asks)
            if sent is not None:
                await sent.wait()
            slept = text_of(await other.call_tool("slow", {"seconds": seconds}))
    return answers[0], slept


async def test_one_clients_parallel_calls_still_get_their_questions_on_a_shared_session() -> None:
    """Was (real-clients probe): an agent's parallel tool calls through the gateway's one session to an upstream
    that asks without naming the call (FastMCP on its GET stream; stdio, SSE) failed every question: "2 calls
    are in flight". All the calls in flight are one client session's, so the question is put to that client."""
    async with gateway("2025-11-25") as (gw, alice_key, _):
        model = Model("the model says 42")
        async with client(gw, alice_key, sampling_callback=model) as alice:
            await alice.list_tools()
            assert await asked_during_a_slow_call(alice, alice, delay=1, seconds=2) == ("the model says 42", "slept")
        assert model.asked == ["hi"]


async def test_a_question_put_on_another_call_of_the_session_outlives_that_call() -> None:
    """Review: the question of the older call, put on the newest call's stream (the upstream said not which asked),
    was withdrawn when that newest call ended, and the tool still waiting for it failed ("cancelled: the call has
    ended"). It belongs to the client session: it is answered, whichever call carried it."""
    sent = anyio.Event()

    async def on_request(request: httpx2.Request) -> None:
        if b"late_sample" in request.content:
            sent.set()  # the asking call goes out first: the other call is the newest

    async def thinks(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        await anyio.sleep(1.5)  # a model that takes a while (the other call ends meanwhile)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="t")

    async with gateway("2025-11-25") as (gw, alice_key, _):
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {alice_key}"}, timeout=60, event_hooks={"request": [on_request]}
        )
        async with Client(
            streamable_http_client(gw.url("up"), http_client=http), mode="legacy", sampling_callback=thinks
        ) as alice:
            await alice.list_tools()
            assert await asked_during_a_slow_call(alice, alice, delay=0.6, seconds=1.0, sent=sent) == ("42", "slept")


async def test_two_users_calls_in_flight_on_a_shared_session_still_keep_questions_apart() -> None:
    """The other side of the tests above: with Alice's call in flight too, a question naming no call is not
    guessed to be Bob's (nor hers): refused, and neither model is asked."""
    async with gateway("2025-11-25") as (gw, alice_key, bob_key):
        alice_model, bob_model = Model("alice's model"), Model("bob's model")
        async with (
            client(gw, alice_key, sampling_callback=alice_model) as alice,
            client(gw, bob_key, sampling_callback=bob_model) as bob,
        ):
            await alice.list_tools()
            await bob.list_tools()
            sampled, _ = await asked_during_a_slow_call(bob, alice, delay=1, seconds=2)
        assert sampled.startswith("sampling failed") and "per_user" in sampled
        assert alice_model.asked == [] and bob_model.asked == []


async def test_one_users_refused_credential_turns_the_handshake_era_session_off_for_that_user_only() -> None:
    """A `forwarded` upstream answers a handshake-era `initialize` carrying Alice's header value with HTTP 400:
    her 2025-11-25 clients are served through the upstream's 2026-07-28 session; Bob's still get theirs, where
    FastMCP's elicitation works."""
    async with run_http_upstream(ASKS, "--refuse-initialize", "X-Tenant=bad") as url:
        upstream = {"transport": "http", "url": url, "auth": {"mode": "forwarded", "allow": ["X-Tenant"]}}
        async with run_gateway({"up": upstream}) as gw:
            alice_key, bob_key = await key_for(gw, "alice@corp.com"), await key_for(gw, "bob@corp.com")

            async def named(context: Any, params: Any) -> types.ElicitResult:
                return types.ElicitResult(action="accept", content={"value": "bob"})

            def tenant(value: str) -> dict[str, str]:
                return {"X-MCP-Headers": json.dumps({"X-Tenant": value})}

            with anyio.fail_after(60):
                async with client(gw, alice_key, headers=tenant("bad"), elicitation_callback=named) as alice:
                    result = await alice.call_tool("ask_name", {})
                    assert result.is_error or "hello" not in text_of(result)  # FastMCP asks only on 2025-11-25
                async with client(gw, bob_key, headers=tenant("good"), elicitation_callback=named) as bob:
                    result = await bob.call_tool("ask_name", {})
                    assert not result.is_error and text_of(result) == "hello bob"


async def test_one_users_failing_list_is_not_shown_to_everyone_on_healthz() -> None:
    """The upstream refuses Alice's own credential (a `forwarded` header): her list fails, and she is told why;
    /healthz does not show her failure as the server's, not even to an admin, who sees the upstreams' words there
    (it showed one user's account and workspace, in the words of the upstream that refused them)."""
    async with run_http_upstream(ASKS, "--refuse-initialize", "X-Tenant=apollo-merger") as url:
        upstream = {
            "transport": "http", "url": url, "protocol": "2025-11-25",
            "auth": {"mode": "forwarded", "allow": ["X-Tenant"]},
        }  # fmt: skip
        async with run_gateway({"up": upstream}) as gw:
            alice_key = await key_for(gw, "alice@corp.com")
            with anyio.fail_after(60):
                headers = {"X-MCP-Headers": json.dumps({"X-Tenant": "apollo-merger"})}
                async with client(gw, alice_key, headers=headers) as alice:
                    result = await alice.call_tool("ask_name", {})
                    assert result.is_error and "HTTP 400" in text_of(result)  # hers to see
            async with gw.http() as http:  # the admin's key: anyone else gets no upstream's words at all
                health = await http.get(f"{gw.base}/healthz")
            assert health.status_code == 200
            assert "degraded_servers" not in health.json() and "400" not in health.text

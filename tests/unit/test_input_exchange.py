"""The MRTR bridge (relay/input_exchange.py): a handshake-era upstream's questions for a 2026-07-28 client,
and the connect-your-account form (relay/auth_required.py) for clients without URL elicitation.

The upstream call is a real coroutine that asks through the exchange (its RequestSink) as the upstream
session would; what is checked is what the client gets back and what the upstream is answered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manifold.outbound.resolver import AuthRequired
from manifold.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, MISSING_CLIENT_CAPABILITY, REQUEST_TIMEOUT, Era
from manifold.relay import auth_required
from manifold.relay.input_exchange import InputExchanges
from manifold.relay.jsonrpc import RpcError

pytestmark = pytest.mark.anyio
JSON = dict[str, Any]
ELICIT = {"mode": "form", "message": "Your name?", "requestedSchema": {"type": "object", "properties": {}}}
FORM_CLIENT: JSON = {"elicitation": {"form": {}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start(inputs: InputExchanges, caps: JSON, heard: list[JSON], principal: str = "alice") -> Any:
    """An upstream tool that elicits once and reports what it heard."""
    exchange = inputs.begin(None, caps, principal, "up")

    async def upstream_call() -> JSON:
        answer = await exchange.request("elicitation/create", ELICIT)
        heard.append(answer)
        return {"result": {"content": [{"type": "text", "text": f"heard {answer}"}]}}

    exchange.start(asyncio.ensure_future(upstream_call()))
    return exchange


async def test_the_client_is_asked_with_input_required_and_its_retry_answers_the_upstream() -> None:
    inputs = InputExchanges(reply_timeout=5)
    heard: list[JSON] = []
    first = await inputs.run(start(inputs, FORM_CLIENT, heard))
    result = first["result"]
    assert result["resultType"] == "input_required"
    [(key, request)] = result["inputRequests"].items()
    assert request == {"method": "elicitation/create", "params": ELICIT}
    assert len(inputs) == 1 and heard == []
    answer = {"action": "accept", "content": {"name": "Ada"}}
    exchange = inputs.resume(result["requestState"], "alice", "up", {key: answer}, None)
    final = await inputs.run(exchange)
    assert heard == [{"result": answer}]
    assert "Ada" in final["result"]["content"][0]["text"]
    assert len(inputs) == 0


async def test_a_client_without_the_capability_is_never_asked_and_both_sides_hear_so_at_once() -> None:
    inputs = InputExchanges(reply_timeout=5)
    heard: list[JSON] = []
    exchange = start(inputs, {}, heard)
    reply = await asyncio.wait_for(inputs.run(exchange), 2)
    assert reply["error"]["code"] == MISSING_CLIENT_CAPABILITY
    assert reply["error"]["data"] == {"requiredCapabilities": {"elicitation": {}}}
    await asyncio.wait_for(exchange.task, 2)
    assert heard[0]["error"]["code"] == METHOD_NOT_FOUND
    assert "does not support elicitation" in heard[0]["error"]["message"]
    assert len(inputs) == 0


@pytest.mark.parametrize("who", ["bob", "tampered"])
async def test_a_state_is_good_only_for_its_own_caller_and_unaltered(who: str) -> None:
    inputs = InputExchanges(reply_timeout=5)
    first = await inputs.run(start(inputs, FORM_CLIENT, []))
    state: str = first["result"]["requestState"]
    if who == "tampered":
        state = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
    with pytest.raises(RpcError) as refused:
        inputs.resume(state, "alice" if who == "tampered" else "bob", "up", {}, None)
    assert refused.value.code == INVALID_PARAMS
    inputs.close()


async def test_a_state_is_used_once_and_only_for_its_upstream() -> None:
    inputs = InputExchanges(reply_timeout=5)
    first = await inputs.run(start(inputs, FORM_CLIENT, []))
    state = first["result"]["requestState"]
    with pytest.raises(RpcError):
        inputs.resume(state, "alice", "other-upstream", {}, None)
    exchange = inputs.resume(state, "alice", "up", {}, None)
    await inputs.run(exchange)
    with pytest.raises(RpcError):
        inputs.resume(state, "alice", "up", {}, None)


async def test_a_client_that_does_not_come_back_releases_the_upstream_with_an_error() -> None:
    inputs = InputExchanges(reply_timeout=0.2)
    heard: list[JSON] = []
    exchange = start(inputs, FORM_CLIENT, heard)
    await inputs.run(exchange)
    assert exchange.task is not None
    final = await asyncio.wait_for(exchange.task, 3)
    assert heard[0]["error"]["code"] == REQUEST_TIMEOUT
    assert "error" in final["result"]["content"][0]["text"]
    assert len(inputs) == 0


async def test_past_the_per_user_bound_a_question_is_refused_not_parked() -> None:
    inputs = InputExchanges(reply_timeout=5, per_principal=1)
    await inputs.run(start(inputs, FORM_CLIENT, []))
    heard: list[JSON] = []
    final = await asyncio.wait_for(inputs.run(start(inputs, FORM_CLIENT, heard)), 2)
    assert heard[0]["error"]["code"] == REQUEST_TIMEOUT and "too many" in heard[0]["error"]["message"]
    assert "resultType" not in final["result"]
    other = await inputs.run(start(inputs, FORM_CLIENT, [], principal="bob"))  # another user is unaffected
    assert other["result"]["resultType"] == "input_required"
    inputs.close()


# ---- connect your account ---------------------------------------------------------------------------------

NEEDS = AuthRequired("gh", "https://gw.example/connect/eng?t=abc", "no GitHub account connected")
STATES = auth_required.RequestStates()


@pytest.mark.parametrize("era", [Era.MODERN, Era.HANDSHAKE])
@pytest.mark.parametrize("caps", [{}, {"elicitation": {}}, {"elicitation": {"form": {}}}])
def test_a_client_without_url_elicitation_is_told_the_absolute_url_in_text(era: Era, caps: JSON) -> None:
    reply = auth_required.render(
        NEEDS, member_id="gh", principal_id="alice", era=era, client_capabilities=caps, states=STATES
    )
    result = reply["result"]
    assert result["isError"] is True and "resultType" not in result
    assert "Open https://gw.example/connect/eng?t=abc in your browser" in result["content"][0]["text"]


def test_a_2026_client_with_url_elicitation_gets_input_required() -> None:
    reply = auth_required.render(
        NEEDS,
        member_id="gh",
        principal_id="alice",
        era=Era.MODERN,
        client_capabilities={"elicitation": {"url": {}}},
        states=STATES,
    )
    [request] = reply["result"]["inputRequests"].values()
    assert request["params"]["url"] == "https://gw.example/connect/eng?t=abc"
    STATES.check(reply["result"]["requestState"], "alice")


async def test_each_round_has_its_own_state_and_an_earlier_one_cannot_answer_a_later_question() -> None:
    inputs = InputExchanges(reply_timeout=5)
    exchange = inputs.begin(None, FORM_CLIENT, "alice", "up")

    async def asks_twice() -> JSON:
        first = await exchange.request("elicitation/create", ELICIT)
        second = await exchange.request("elicitation/create", {**ELICIT, "message": "Your age?"})
        return {"result": {"content": [{"type": "text", "text": f"{first} {second}"}]}}

    exchange.start(asyncio.ensure_future(asks_twice()))
    round_one = (await inputs.run(exchange))["result"]
    [key_one] = round_one["inputRequests"]
    resumed = inputs.resume(round_one["requestState"], "alice", "up", {key_one: {"action": "accept"}}, None)
    round_two = (await inputs.run(resumed))["result"]
    assert [r["params"]["message"] for r in round_two["inputRequests"].values()] == ["Your age?"]
    with pytest.raises(RpcError):
        inputs.resume(round_one["requestState"], "alice", "up", {}, None)  # replaying round one
    [key_two] = round_two["inputRequests"]
    resumed = inputs.resume(round_two["requestState"], "alice", "up", {key_two: {"action": "decline"}}, None)
    final = await inputs.run(resumed)
    assert "accept" in final["result"]["content"][0]["text"] and "decline" in final["result"]["content"][0]["text"]


async def test_questions_an_upstream_asks_together_are_shown_together() -> None:
    """Two `elicitation/create` side by side reach the gateway as two messages, a little apart; the client
    must see both in one input_required, or it answers the first without knowing of the second."""
    inputs = InputExchanges(reply_timeout=5)
    exchange = inputs.begin(None, FORM_CLIENT, "alice", "up")

    async def ask_later(delay: float) -> JSON:
        await asyncio.sleep(delay)  # the upstream's second message, a few milliseconds behind the first
        return await exchange.request("elicitation/create", ELICIT)

    async def upstream_call() -> JSON:
        first, second = await asyncio.gather(ask_later(0), ask_later(0.01))
        return {"result": {"content": [{"type": "text", "text": f"{first} {second}"}]}}

    exchange.start(asyncio.ensure_future(upstream_call()))
    result = (await inputs.run(exchange))["result"]
    assert result["resultType"] == "input_required"
    assert len(result["inputRequests"]) == 2
    answer = {"action": "accept", "content": {}}
    again = inputs.resume(result["requestState"], "alice", "up", dict.fromkeys(result["inputRequests"], answer), None)
    final = await inputs.run(again)
    assert final["result"]["content"][0]["text"].count("accept") == 2

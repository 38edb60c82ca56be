"""The relay's handlers (relay/handlers.py), in process: a real `Gateway`, `Hub`, `UpstreamLists` and
`VirtualServerView`, the relay's own seams (`AllowAll`, `NoAudit`, and an Access that denies some names), a
real `CredentialResolver`, and a stand-in pool that answers from a table and records what reached it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import Built, Target, VirtualServerView
from manifold.config.models import MemberConfig, UpstreamConfig, VirtualServerConfig
from manifold.outbound.resolver import CredentialResolver
from manifold.principal import Principal
from manifold.protocol import (
    INVALID_PARAMS,
    META_LOG_LEVEL,
    RESOURCE_NOT_FOUND,
    RESOURCES_READ,
    TOOLS_CALL,
    TOOLS_LIST,
    Era,
)
from manifold.relay.access import AllowAll, NoAudit
from manifold.relay.call import Call
from manifold.relay.handlers import Gateway
from manifold.relay.hub import Hub
from manifold.relay.jsonrpc import RpcError
from manifold.upstream.base import UpstreamError
from manifold.upstream.credential import SHARED, Outbound

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
LIST_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
Answer = Callable[[JSON], Awaitable[JSON]]


@dataclass
class FakeSession:
    capabilities: JSON
    era: Era = Era.MODERN


@dataclass
class StandInPool:
    """What the gateway and the list cache need of the pool: `session`, `live`, `request` and `config`. Lists are
    answered from `lists`; any other request from `answers[(upstream, method)]`, and recorded in `sent`."""

    lists: dict[str, dict[str, list[JSON]]] = field(default_factory=dict)
    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    sent: list[tuple[str, str, JSON]] = field(default_factory=list)

    def config(self, upstream_id: str) -> UpstreamConfig:
        return UpstreamConfig.model_validate({"transport": "http", "url": f"http://{upstream_id}.test/mcp"})

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> FakeSession:
        return FakeSession({"tools": {}, "prompts": {}, "resources": {}})

    def era(self, upstream_id: str, outbound: Outbound = SHARED) -> Era | None:
        return Era.MODERN

    def live(self, upstream_id: str, outbound: Outbound = SHARED) -> None:
        return None  # no live session: no upstream instructions to pass on

    def speaks_both(self, upstream_id: str) -> bool:
        return False  # one era: every client through the one session

    async def request(
        self,
        upstream_id: str,
        method: str,
        params: JSON | None = None,
        *,
        sink: Any = None,
        outbound: Outbound = SHARED,
    ) -> JSON:
        if method in LIST_KEYS:
            key = LIST_KEYS[method]
            return {"result": {key: self.lists.get(upstream_id, {}).get(key, [])}}
        self.sent.append((upstream_id, method, params or {}))
        return await self.answers[(upstream_id, method)](params or {})


class DenyNames(AllowAll):
    """Grants that give everything except some upstream names (tools, or resource URIs)."""

    def __init__(self, *denied: str) -> None:
        self.denied = set(denied)

    def visible(self, principal: Principal, view: VirtualServerView, kind: str, built: Built) -> list[JSON]:
        return [item for item, t in zip(built.items, built.item_targets, strict=True) if t.name not in self.denied]

    def allows(self, principal: Principal, view: VirtualServerView, kind: str, target: Target) -> bool:
        return target.name not in self.denied


@dataclass
class AskingSink:
    """A 2025-11-25 client's side of server→client requests: answers each from a table, records them."""

    replies: dict[str, JSON]
    asked: list[tuple[str, JSON | None]] = field(default_factory=list)
    client_capabilities: JSON = field(default_factory=lambda: {"sampling": {}, "elicitation": {}})
    client_session: object | None = None

    async def notify(self, message: JSON) -> None:
        return None

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        self.asked.append((method, params))
        return self.replies[method]


def tools(*names: str) -> list[JSON]:
    return [{"name": n, "inputSchema": {"type": "object"}} for n in names]


def gateway_for(pool: StandInPool, *members: JSON, access: AllowAll | None = None) -> tuple[Gateway, VirtualServerView]:
    lists = UpstreamLists(pool, ttl_seconds=3600)
    config = VirtualServerConfig(members=[MemberConfig.model_validate(m) for m in members])
    view = VirtualServerView("vs", config, lists, "__")
    seam = access or AllowAll()
    gateway = Gateway(pool, Hub(lists, seam), seam, NoAudit(), CredentialResolver())
    return gateway, view


def call_on(view: VirtualServerView, era: Era = Era.HANDSHAKE, sink: AskingSink | None = None) -> Call:
    return Call(view=view, era=era, client_capabilities={"elicitation": {}}, sink=sink)


def replying(result: JSON) -> Answer:
    async def answer(params: JSON) -> JSON:
        return {"result": result}

    return answer


# ---- tools/list -------------------------------------------------------------------------------------------


async def test_tools_list_names_every_tool_after_its_member() -> None:
    pool = StandInPool({"alpha": {"tools": tools("echo", "add")}, "beta": {"tools": tools("echo")}})
    gateway, view = gateway_for(pool, {"upstream": "alpha"}, {"upstream": "beta", "id": "b"})
    reply = await gateway.handle(call_on(view), TOOLS_LIST, {})
    assert [t["name"] for t in reply["result"]["tools"]] == ["alpha__echo", "alpha__add", "b__echo"]
    assert "resultType" not in reply["result"]  # 2025-11-25 results have none


async def test_a_2026_07_28_tools_list_is_complete_and_private_to_the_caller() -> None:
    pool = StandInPool({"alpha": {"tools": tools("echo")}})
    gateway, view = gateway_for(pool, {"upstream": "alpha"})
    result = (await gateway.handle(call_on(view, Era.MODERN), TOOLS_LIST, {}))["result"]
    assert (result["resultType"], result["cacheScope"], result["ttlMs"]) == ("complete", "private", 0)


async def test_tools_list_leaves_out_what_the_caller_is_not_granted() -> None:
    pool = StandInPool({"alpha": {"tools": tools("echo", "drop_table")}})
    gateway, view = gateway_for(pool, {"upstream": "alpha"}, access=DenyNames("drop_table"))
    reply = await gateway.handle(call_on(view), TOOLS_LIST, {})
    assert [t["name"] for t in reply["result"]["tools"]] == ["alpha__echo"]


# ---- tools/call -------------------------------------------------------------------------------------------


async def test_tools_call_reaches_the_member_under_its_own_name_and_the_result_passes_through() -> None:
    result = {
        "content": [{"type": "text", "text": "hi"}],
        "structuredContent": {"$defs": {"x": {}}, "echo": "hi"},
        "_meta": {"vendor/trace": "t1"},
    }
    pool = StandInPool(
        {"alpha": {"tools": tools("echo")}, "beta": {"tools": tools("echo")}},
        answers={("beta", TOOLS_CALL): replying(result)},
    )
    gateway, view = gateway_for(pool, {"upstream": "alpha"}, {"upstream": "beta"})
    reply = await gateway.handle(call_on(view), TOOLS_CALL, {"name": "beta__echo", "arguments": {"text": "hi"}})
    assert reply == {"result": result}
    [(upstream, method, params)] = pool.sent
    assert (upstream, method, params["name"], params["arguments"]) == ("beta", TOOLS_CALL, "echo", {"text": "hi"})


async def test_a_handshake_client_gets_the_upstreams_log_messages_at_its_level() -> None:
    pool = StandInPool({"alpha": {"tools": tools("echo")}}, answers={("alpha", TOOLS_CALL): replying({"content": []})})
    gateway, view = gateway_for(pool, {"upstream": "alpha"})
    await gateway.handle(call_on(view), TOOLS_CALL, {"name": "alpha__echo"})
    await gateway.handle(call_on(view, Era.MODERN), TOOLS_CALL, {"name": "alpha__echo"})
    handshake, modern = (params for _, _, params in pool.sent)
    assert handshake["_meta"] == {META_LOG_LEVEL: "debug"}  # no logging/setLevel yet: whatever is sent
    assert "_meta" not in modern  # a 2026-07-28 client opts in on its own requests


async def test_a_denied_tool_answers_exactly_like_one_that_does_not_exist() -> None:
    pool = StandInPool({"alpha": {"tools": tools("echo", "drop_table")}})
    gateway, view = gateway_for(pool, {"upstream": "alpha"}, access=DenyNames("drop_table"))
    refusals = []
    for name in ("alpha__drop_table", "alpha__no_such_tool"):
        with pytest.raises(RpcError) as caught:
            await gateway.handle(call_on(view), TOOLS_CALL, {"name": name})
        refusals.append((caught.value.code, caught.value.message.replace(name, "<name>"), caught.value.data))
    assert refusals[0] == refusals[1] == (INVALID_PARAMS, "Unknown tool: <name>", None)
    assert pool.sent == []  # the denied call never went upstream


async def test_an_upstream_failure_is_a_tool_error_naming_the_member() -> None:
    async def refused(params: JSON) -> JSON:
        raise UpstreamError("alpha", "refused the connection")

    pool = StandInPool({"alpha": {"tools": tools("echo")}}, answers={("alpha", TOOLS_CALL): refused})
    gateway, view = gateway_for(pool, {"upstream": "alpha", "id": "a"})
    reply = await gateway.handle(call_on(view), TOOLS_CALL, {"name": "a__echo"})
    assert reply["result"]["isError"] is True
    [text] = [c["text"] for c in reply["result"]["content"]]
    assert "member 'a'" in text and "upstream 'alpha' refused the connection" in text


# ---- resources/read ---------------------------------------------------------------------------------------


async def test_resources_read_unwraps_the_uri_for_the_upstream_and_wraps_what_comes_back() -> None:
    async def read(params: JSON) -> JSON:
        uri = params["uri"]
        return {"result": {"contents": [{"uri": uri, "text": "body"}, {"uri": f"{uri}/child", "text": "more"}]}}

    pool = StandInPool({"files": {"resources": []}}, answers={("files", RESOURCES_READ): read})
    gateway, view = gateway_for(pool, {"upstream": "files", "id": "docs"})
    reply = await gateway.handle(call_on(view), RESOURCES_READ, {"uri": "test+docs://notes/a"})
    assert pool.sent[0][2]["uri"] == "test://notes/a"  # the upstream's own URI
    assert [c["uri"] for c in reply["result"]["contents"]] == ["test+docs://notes/a", "test+docs://notes/a/child"]


async def test_resources_read_of_a_denied_or_unknown_uri_is_not_found() -> None:
    pool = StandInPool({"files": {"resources": []}})
    gateway, view = gateway_for(pool, {"upstream": "files", "id": "docs"}, access=DenyNames("test://secret"))
    for uri in ("test+docs://secret", "test+nobody://x"):
        with pytest.raises(RpcError) as caught:
            await gateway.handle(call_on(view), RESOURCES_READ, {"uri": uri})
        assert (caught.value.code, caught.value.data) == (RESOURCE_NOT_FOUND, {"uri": uri})
    assert pool.sent == []


# ---- a 2026-07-28 upstream's input_required ---------------------------------------------------------------

ASK = {"method": "elicitation/create", "params": {"mode": "form", "message": "Which repo?", "requestedSchema": {}}}
INPUT_REQUIRED = {"resultType": "input_required", "inputRequests": {"repo": ASK}, "requestState": "upstream-state-1"}
ANSWER = {"action": "accept", "content": {"repo": "manifold"}}


def asks_once(done: JSON) -> Answer:
    """An upstream that answers input_required until the call carries inputResponses."""

    async def answer(params: JSON) -> JSON:
        return {"result": done if "inputResponses" in params else INPUT_REQUIRED}

    return answer


async def test_a_handshake_client_is_asked_through_its_sink_and_the_gateway_retries() -> None:
    done = {"content": [{"type": "text", "text": "opened an issue in manifold"}]}
    pool = StandInPool({"gh": {"tools": tools("open_issue")}}, answers={("gh", TOOLS_CALL): asks_once(done)})
    gateway, view = gateway_for(pool, {"upstream": "gh"})
    sink = AskingSink({"elicitation/create": {"result": ANSWER}})
    reply = await gateway.handle(call_on(view, Era.HANDSHAKE, sink), TOOLS_CALL, {"name": "gh__open_issue"})
    assert reply == {"result": done}
    assert sink.asked == [(ASK["method"], ASK["params"])]
    first, retry = (params for _, _, params in pool.sent)
    assert "inputResponses" not in first
    assert (retry["name"], retry["inputResponses"], retry["requestState"]) == (
        "open_issue",
        {"repo": ANSWER},
        "upstream-state-1",
    )


async def test_a_handshake_client_that_declines_gets_its_answer_and_nothing_is_retried() -> None:
    pool = StandInPool({"gh": {"tools": tools("open_issue")}}, answers={("gh", TOOLS_CALL): asks_once({})})
    gateway, view = gateway_for(pool, {"upstream": "gh"})
    declined = {"error": {"code": -32601, "message": "the client did not declare the 'elicitation' capability"}}
    sink = AskingSink({"elicitation/create": declined})
    reply = await gateway.handle(call_on(view, Era.HANDSHAKE, sink), TOOLS_CALL, {"name": "gh__open_issue"})
    assert reply == declined
    assert len(pool.sent) == 1


async def test_a_2026_07_28_client_gets_input_required_as_it_is_and_retries_itself() -> None:
    pool = StandInPool({"gh": {"tools": tools("open_issue")}}, answers={("gh", TOOLS_CALL): asks_once({})})
    gateway, view = gateway_for(pool, {"upstream": "gh"})
    sink = AskingSink({})
    reply = await gateway.handle(call_on(view, Era.MODERN, sink), TOOLS_CALL, {"name": "gh__open_issue"})
    assert reply == {"result": INPUT_REQUIRED}
    assert sink.asked == [] and len(pool.sent) == 1

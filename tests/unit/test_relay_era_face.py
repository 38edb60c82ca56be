"""The gateway's own face in each era, as a client sees it over streamable HTTP (in process: the real
StreamableHttp over a Gateway and the stand-in pool of test_relay_handlers):

- 2026-07-28 requests for methods that era removed are unknown methods (HTTP 404, -32601);
- an unsupported version is answered with the versions `server/discover` lists, echoing the one asked for;
- an upstream's -32021 (a client capability the client did not declare) reaches a 2026-07-28 client as a
  400 with its data;
- no 2026-07-28 result field on a 2025-11-25 answer, and `resultType` on every 2026-07-28 one.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from manifold.asgi import header_map
from manifold.protocol import (
    HEADER_MISMATCH,
    INITIALIZE,
    LOGGING_SET_LEVEL,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    MODERN_VERSION,
    PING,
    RESOURCES_SUBSCRIBE,
    RESOURCES_UNSUBSCRIBE,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from manifold.relay.jsonrpc import missing_capability
from tests.unit.test_relay_inbound import ENVELOPE, Relay, body

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]


def modern(request_id: int, method: str, params: JSON | None = None, version: str = MODERN_VERSION) -> bytes:
    meta = {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": version}
    return body({"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}})


def modern_headers(method: str, name: str | None = None, version: str = MODERN_VERSION) -> dict[str, str]:
    headers = {"mcp-protocol-version": version, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


@pytest.mark.parametrize(
    ("method", "params"),
    [
        (INITIALIZE, {"protocolVersion": MODERN_VERSION, "capabilities": {}}),
        (PING, {}),
        (LOGGING_SET_LEVEL, {"level": "info"}),
        (RESOURCES_SUBSCRIBE, {"uri": "test://x"}),
        (RESOURCES_UNSUBSCRIBE, {"uri": "test://x"}),
    ],
)
async def test_a_method_2026_07_28_removed_is_an_unknown_method_there(method: str, params: JSON) -> None:
    relay = Relay()
    wire = await relay.post(modern(9, method, params), **modern_headers(method))
    assert wire.status == 404
    reply = wire.json()
    assert (reply["id"], reply["error"]["code"]) == (9, METHOD_NOT_FOUND)
    assert method in reply["error"]["message"]


async def test_the_removed_methods_still_work_for_a_2025_11_25_client() -> None:
    relay = Relay()
    sid = await relay.session()
    wire = await relay.post(
        body({"jsonrpc": "2.0", "id": 2, "method": PING}),
        **{"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"},
    )
    assert wire.status == 200 and wire.json()["result"] == {}


async def test_an_unsupported_version_lists_what_discover_lists_and_echoes_the_version_asked_for() -> None:
    relay = Relay()
    discover = await relay.post(modern(1, "server/discover"), **modern_headers("server/discover"))
    listed = discover.json()["result"]["supportedVersions"]
    wire = await relay.post(
        modern(2, "server/discover", version="v999.0.0"), **modern_headers("server/discover", version="v999.0.0")
    )
    assert wire.status == 400
    error = wire.json()["error"]
    assert error["code"] == UNSUPPORTED_PROTOCOL_VERSION
    assert error["data"]["requested"] == "v999.0.0"
    assert error["data"]["supported"] and set(error["data"]["supported"]) <= set(listed)


async def test_an_upstreams_missing_capability_error_reaches_a_2026_07_28_client_as_a_400_with_its_data() -> None:
    relay = Relay()

    async def needs_sampling(params: JSON) -> JSON:
        return {
            "error": {
                "code": MISSING_CLIENT_CAPABILITY,
                "message": "Missing required client capability: sampling",
                "data": {"requiredCapabilities": {"sampling": {}}},
            }
        }

    relay.gateway.pool.answers[("alpha", "tools/call")] = needs_sampling  # type: ignore[attr-defined]
    wire = await relay.post(
        modern(3, "tools/call", {"name": "alpha__echo", "arguments": {}}), **modern_headers("tools/call", "alpha__echo")
    )
    assert wire.status == 400
    error = wire.json()["error"]
    assert error["code"] == MISSING_CLIENT_CAPABILITY
    assert error["data"] == {"requiredCapabilities": {"sampling": {}}}


async def test_a_2025_11_25_answer_never_carries_2026_07_28_result_fields_and_a_2026_07_28_one_has_result_type() -> (
    None
):
    relay = Relay()

    async def dual_era_answer(params: JSON) -> JSON:
        # what a 2026-07-28 upstream (or a dual-era SDK) answers
        return {
            "result": {
                "content": [{"type": "text", "text": "hi"}],
                "resultType": "complete",
                "ttlMs": 0,
                "cacheScope": "private",
            }
        }

    relay.gateway.pool.answers[("alpha", "tools/call")] = dual_era_answer  # type: ignore[attr-defined]
    sid = await relay.session()
    headers = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {}}}
    old = (await relay.post(body(call), **headers)).json()["result"]
    assert old == {"content": [{"type": "text", "text": "hi"}]}
    for method in ("tools/list", "prompts/list", "resources/list"):
        listed = (await relay.post(body({"jsonrpc": "2.0", "id": 5, "method": method}), **headers)).json()["result"]
        assert not {"resultType", "ttlMs", "cacheScope"} & set(listed), method

    async def old_answer(params: JSON) -> JSON:
        return {"result": {"content": [{"type": "text", "text": "hi"}]}}

    relay.gateway.pool.answers[("alpha", "tools/call")] = old_answer  # type: ignore[attr-defined]
    new = await relay.post(
        modern(6, "tools/call", {"name": "alpha__echo", "arguments": {}}), **modern_headers("tools/call", "alpha__echo")
    )
    assert new.status == 200 and new.json()["result"]["resultType"] == "complete"


# ---- Mcp-Param-* headers (SEP-2243) and the routing headers ----------------------------------------------

REGION_TOOL: JSON = {
    "name": "locate",
    "inputSchema": {
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "note": {"type": "string"}},
        "required": ["region"],
    },
}
HELLO_B64 = "SGVsbG8="  # base64 of "Hello"
B64_ECHO = "=?base64?" + base64.b64encode("alpha__écho".encode()).decode() + "?="


def param_relay(*hidden: str) -> Relay:
    from tests.unit.test_relay_handlers import DenyNames, StandInPool, gateway_for, replying, tools

    relay = Relay()
    pool = StandInPool({"alpha": {"tools": [REGION_TOOL, *tools("echo", "secret")]}})
    pool.lists["alpha"]["tools"].append({**REGION_TOOL, "name": "hidden_locate"})
    pool.answers[("alpha", "tools/call")] = replying({"content": [{"type": "text", "text": "ok"}]})
    relay.gateway, relay.view = gateway_for(pool, {"upstream": "alpha"}, access=DenyNames(*hidden))
    relay.http.gw = relay.gateway
    relay.pool = pool  # type: ignore[attr-defined]
    return relay


async def call_locate(relay: Relay, request_id: int, region: Any, header: str | None, tool: str = "locate") -> Any:
    tool = "alpha__" + tool  # the member's prefix
    headers = modern_headers("tools/call", tool)
    if header is not None:
        headers["mcp-param-region"] = header
    arguments = {} if region is None else {"region": region}
    return await relay.post(modern(request_id, "tools/call", {"name": tool, "arguments": arguments}), **headers)


@pytest.mark.parametrize(
    ("region", "header"),
    [
        ("Hello", f"=?base64?{HELLO_B64}?="),  # Base64 sentinel, decoded
        (HELLO_B64, HELLO_B64),  # no sentinel: taken literally
        (f"=?base64?{HELLO_B64}", f"=?base64?{HELLO_B64}"),  # no closing ?=: literal
        ("eu-west", "eu-west"),
    ],
)
async def test_a_param_header_that_matches_its_argument_lets_the_call_through(region: str, header: str) -> None:
    relay = param_relay()
    wire = await call_locate(relay, 1, region, header)
    assert wire.status == 200 and wire.json()["result"]["content"][0]["text"] == "ok"
    assert [m for _, m, _ in relay.pool.sent] == ["tools/call"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("region", "header"),
    [
        ("Hello", "=?base64?SGVsbG8?="),  # bad padding
        ("Hello", "=?base64?SGVs!!!bG8=?="),  # not the Base64 alphabet
        ("Hello", "Goodbye"),  # another value
        ("Hello", None),  # the argument is there, its header is not
        (None, "eu-west"),  # the header is there, its argument is not
    ],
)
async def test_a_param_header_that_disagrees_with_its_argument_is_a_header_mismatch_and_goes_nowhere(
    region: str | None, header: str | None
) -> None:
    relay = param_relay()
    wire = await call_locate(relay, 2, region, header)
    assert wire.status == 400
    reply = wire.json()
    assert (reply["id"], reply["error"]["code"]) == (2, HEADER_MISMATCH)
    assert "Mcp-Param-Region" in reply["error"]["message"]
    assert relay.pool.sent == []  # type: ignore[attr-defined]


async def test_param_headers_are_checked_on_the_first_call_before_any_list_and_after_one() -> None:
    relay = param_relay()
    assert relay.view.last_built("tools") is None
    first = await call_locate(relay, 3, "Hello", None)
    assert (first.status, first.json()["error"]["code"]) == (400, HEADER_MISMATCH)
    listed = await relay.post(modern(4, "tools/list"), **modern_headers("tools/list"))
    schema = next(t for t in listed.json()["result"]["tools"] if t["name"] == "alpha__locate")["inputSchema"]
    assert schema["properties"]["region"]["x-mcp-header"] == "Region"  # shown to the client as the upstream has it
    again = await call_locate(relay, 5, "Hello", "Goodbye")
    assert (again.status, again.json()["error"]["code"]) == (400, HEADER_MISMATCH)


async def test_a_tool_the_caller_may_not_call_answers_as_unknown_whatever_its_headers() -> None:
    relay = param_relay("hidden_locate")
    hidden = await call_locate(relay, 6, "Hello", "Goodbye", tool="hidden_locate")
    unknown = await call_locate(relay, 7, "Hello", "Goodbye", tool="no_such_tool")
    assert hidden.json()["error"] == {**unknown.json()["error"], "message": "Unknown tool: alpha__hidden_locate"}
    assert hidden.json()["error"]["code"] != HEADER_MISMATCH


async def test_a_tool_without_annotations_ignores_param_headers() -> None:
    relay = param_relay()
    headers = {**modern_headers("tools/call", "alpha__echo"), "mcp-param-region": "anything"}
    wire = await relay.post(modern(8, "tools/call", {"name": "alpha__echo", "arguments": {"region": "x"}}), **headers)
    assert wire.status == 200


@pytest.mark.parametrize(
    ("method", "name", "headers", "ok"),
    [
        ("tools/call", "alpha__echo", {"mcp-method": "tools/call", "mcp-name": "alpha__echo"}, True),
        ("tools/call", "alpha__echo", {"mcp-method": "tools/list", "mcp-name": "alpha__echo"}, False),
        ("tools/call", "alpha__echo", {"mcp-method": "tools/call", "mcp-name": "alpha__locate"}, False),
        ("tools/call", "alpha__echo", {"mcp-method": "tools/call"}, False),
        ("tools/list", None, {}, False),  # no Mcp-Method
        ("tools/call", "alpha__écho", {"mcp-method": "tools/call", "mcp-name": B64_ECHO}, True),
    ],
)
async def test_mcp_method_and_mcp_name_must_match_the_body(
    method: str, name: str | None, headers: dict[str, str], ok: bool
) -> None:
    relay = param_relay()
    params = {"name": name, "arguments": {}} if name is not None else {}
    wire = await relay.post(modern(9, method, params), **{"mcp-protocol-version": MODERN_VERSION, **headers})
    if ok:  # past the header check (the é-name is no tool: the handler answers it)
        assert wire.json().get("error", {}).get("code") != HEADER_MISMATCH, wire.json()
    else:
        assert (wire.status, wire.json()["error"]["code"]) == (400, HEADER_MISMATCH)


async def test_routing_headers_are_compared_without_the_whitespace_around_them() -> None:
    relay = param_relay()
    raw = [(b"mcp-protocol-version", f" {MODERN_VERSION}".encode()), (b"mcp-method", b"tools/call\t")]
    raw.append((b"mcp-name", b"  alpha__echo  "))
    headers = header_map({"headers": raw})
    wire = await relay.post(modern(10, "tools/call", {"name": "alpha__echo", "arguments": {}}), **headers)
    assert wire.status == 200 and wire.json()["result"]["content"][0]["text"] == "ok"


@pytest.mark.parametrize(
    "upstream_hints",
    [{}, {"ttlMs": 5000, "cacheScope": "public"}, {"ttlMs": 5000, "cacheScope": "private"}],
)
async def test_a_2026_07_28_resources_read_carries_private_caching_hints_and_a_2025_11_25_one_none(
    upstream_hints: JSON,
) -> None:
    from tests.unit.test_relay_handlers import StandInPool, gateway_for

    async def read(params: JSON) -> JSON:
        return {"result": {"contents": [{"uri": params["uri"], "text": "body"}], **upstream_hints}}

    relay = Relay()
    pool = StandInPool({"files": {"resources": []}}, answers={("files", "resources/read"): read})
    relay.gateway, relay.view = gateway_for(pool, {"upstream": "files", "id": "docs"})
    relay.http.gw = relay.gateway
    uri = "test+docs://notes/a"
    wire = await relay.post(modern(11, "resources/read", {"uri": uri}), **modern_headers("resources/read", uri))
    result = wire.json()["result"]
    assert result["resultType"] == "complete" and result["cacheScope"] == "private"
    assert result["ttlMs"] == upstream_hints.get("ttlMs", 0)
    sid = await relay.session()
    read_old = {"jsonrpc": "2.0", "id": 12, "method": "resources/read", "params": {"uri": uri}}
    old = (await relay.post(body(read_old), **{"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})).json()
    assert set(old["result"]) == {"contents"}


async def test_a_missing_capability_the_gateway_decides_is_a_400_naming_the_capability_as_an_object() -> None:
    relay = Relay()

    async def gateway_refuses(params: JSON) -> JSON:
        raise missing_capability("sampling")  # as a handler does when the client cannot be asked

    relay.gateway.pool.answers[("alpha", "tools/call")] = gateway_refuses  # type: ignore[attr-defined]
    wire = await relay.post(
        modern(13, "tools/call", {"name": "alpha__echo", "arguments": {}}),
        **modern_headers("tools/call", "alpha__echo"),
    )
    assert wire.status == 400
    error = wire.json()["error"]
    assert error["code"] == MISSING_CLIENT_CAPABILITY and "sampling" in error["message"]
    assert error["data"] == {"requiredCapabilities": {"sampling": {}}}


# ---- log messages: a 2026-07-28 client hears them only when its request asks --------------------------------


def logging_relay() -> Relay:
    from tests.unit.test_relay_handlers import StandInPool, gateway_for, replying, tools

    class LoggingPool(StandInPool):
        async def request(self, upstream_id: str, method: str, params: JSON | None = None, **kw: Any) -> JSON:
            sink = kw.get("sink")
            if method == "tools/call" and sink is not None:  # an upstream that logs whatever it was asked
                note = {"level": "info", "data": "working"}
                await sink.notify({"jsonrpc": "2.0", "method": "notifications/message", "params": note})
            return await super().request(upstream_id, method, params, **kw)

    relay = Relay()
    pool = LoggingPool({"alpha": {"tools": tools("echo")}})
    pool.answers[("alpha", "tools/call")] = replying({"content": [{"type": "text", "text": "ok"}]})
    relay.gateway, relay.view = gateway_for(pool, {"upstream": "alpha"})
    relay.http.gw = relay.gateway
    return relay


def events(wire: Any) -> list[JSON]:
    raw = b"".join(m.get("body", b"") for m in wire.messages[1:]).decode()
    return [json.loads(line[len("data: ") :]) for line in raw.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(("level", "heard"), [(None, False), ("info", True), ("debug", True), ("error", False)])
async def test_a_2026_07_28_client_hears_log_messages_only_at_the_level_its_request_asked_for(
    level: str | None, heard: bool
) -> None:
    relay = logging_relay()
    params: JSON = {"name": "alpha__echo", "arguments": {}}
    raw = json.loads(modern(14, "tools/call", params))
    if level is not None:
        raw["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = level
    wire = await relay.post(body(raw), **modern_headers("tools/call", "alpha__echo"))
    assert wire.status == 200
    if heard:
        sent = events(wire)
        assert [m.get("method") for m in sent] == ["notifications/message", None]
        assert sent[-1]["result"]["content"][0]["text"] == "ok"
    else:
        assert wire.header(b"content-type") == b"application/json"
        assert wire.json()["result"]["content"][0]["text"] == "ok"


@pytest.mark.parametrize("era", ["2025-11-25", MODERN_VERSION])
async def test_a_resource_not_found_from_the_upstream_names_the_uri_the_client_asked_for(era: str) -> None:
    from tests.unit.test_relay_handlers import StandInPool, gateway_for

    async def not_found(params: JSON) -> JSON:  # an upstream that says so without data (the TS SDK's -32602)
        return {"error": {"code": -32602, "message": f"Resource {params['uri']} not found"}}

    relay = Relay()
    pool = StandInPool({"files": {"resources": []}}, answers={("files", "resources/read"): not_found})
    relay.gateway, relay.view = gateway_for(pool, {"upstream": "files", "id": "docs"})
    relay.http.gw = relay.gateway
    uri = "test+docs://nothing/here"
    if era == MODERN_VERSION:
        wire = await relay.post(modern(15, "resources/read", {"uri": uri}), **modern_headers("resources/read", uri))
    else:
        sid = await relay.session()
        read = {"jsonrpc": "2.0", "id": 15, "method": "resources/read", "params": {"uri": uri}}
        wire = await relay.post(body(read), **{"mcp-session-id": sid, "mcp-protocol-version": era})
    assert wire.json()["error"]["data"] == {"uri": uri}


async def test_param_headers_are_checked_for_a_tool_the_callers_list_gains_after_it_was_built() -> None:
    """A tool the caller's built list lacks (a list_changed just brought it) is resolved by the handler after a
    refresh: the Mcp-Param check read the list from before, found no such tool, and let the call through
    unchecked, its headers disagreeing with its arguments."""
    relay = param_relay()
    pool = relay.pool  # type: ignore[attr-defined]
    pool.lists["alpha"]["tools"] = [t for t in pool.lists["alpha"]["tools"] if t["name"] != "locate"]
    listed = await relay.post(modern(6, "tools/list"), **modern_headers("tools/list"))
    assert "alpha__locate" not in {t["name"] for t in listed.json()["result"]["tools"]}
    pool.lists["alpha"]["tools"].append(REGION_TOOL)  # the upstream's new tool, and its list_changed
    relay.view._lists.invalidate("alpha", "tools")
    wire = await call_locate(relay, 7, "Hello", "Goodbye")
    assert (wire.status, wire.json()["error"]["code"]) == (400, HEADER_MISMATCH)
    assert pool.sent == []
    ok = await call_locate(relay, 8, "Hello", "Hello")
    assert ok.status == 200 and ok.json()["result"]["content"][0]["text"] == "ok"

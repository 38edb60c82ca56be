"""What a client sends, checked in one place (relay/inbound.py), and the transports' answers to what it refuses
(relay/streamable_http.py, in process: a real Gateway over the stand-in pool of test_relay_handlers); and the
upstream session's answer to a reply whose id it never sent (upstream/session.py, a scripted upstream)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from manifold.principal import ANONYMOUS
from manifold.protocol import (
    HANDSHAKE_VERSIONS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MODERN_VERSION,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    Era,
)
from manifold.relay import inbound as inbound_module
from manifold.relay.inbound import InboundCheck, Refusal
from manifold.relay.sessions import PendingReplies, SessionStore
from manifold.relay.streamable_http import StreamableHttp
from manifold.upstream.base import ErrorKind, UpstreamError
from tests.unit.test_relay_handlers import StandInPool, gateway_for, replying, tools
from tests.unit.test_upstream_session import ScriptedUpstream, connected, echo

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
CHECK = InboundCheck(id_length=16, json_depth=10)
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}
BAD_IDS: list[Any] = [[1], {"a": 1}, True, False, None, 1.0, 2**53 + 1, -(2**53) - 1, 2**64, "x" * 17]
GOOD_IDS: list[Any] = [0, 1, -1, 2**53, -(2**53), "", "x" * 16, "mf-abc"]


def body(message: Any) -> bytes:
    return json.dumps(message).encode()


def refused(raw: bytes, check: InboundCheck = CHECK) -> Refusal:
    with pytest.raises(Refusal) as caught:
        check.parse(raw)
    assert caught.value.status == 400
    return caught.value


def nested_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def call_nesting(request_id: int, depth: int) -> bytes:
    """A tools/call whose arguments nest `depth` objects deep: message (1) > params (2) > arguments (3)..."""
    head = '{"jsonrpc":"2.0","id":' + str(request_id) + ',"method":"tools/call","params":{"name":"echo","arguments":'
    return (head + nested_text(depth) + "}}").encode()


# ---- the id rule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_an_id_that_is_not_a_short_string_or_a_safe_integer_is_an_invalid_request_with_id_null(bad_id: Any) -> None:
    refusal = refused(body({"jsonrpc": "2.0", "id": bad_id, "method": "ping"}))
    assert (refusal.code, refusal.request_id) == (INVALID_REQUEST, None)
    assert "at most 16 characters" in refusal.message
    assert orjson.loads(refusal.body()) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": INVALID_REQUEST, "message": refusal.message},
    }


@pytest.mark.parametrize("good_id", GOOD_IDS, ids=repr)
def test_an_id_within_the_rule_is_kept_as_sent(good_id: Any) -> None:
    accepted = CHECK.parse(body({"jsonrpc": "2.0", "id": good_id, "method": "ping"}))
    assert accepted.is_request and accepted.request_id == good_id and type(accepted.request_id) is type(good_id)


def test_an_integer_beyond_64_bits_is_refused_rather_than_matched_as_a_float() -> None:
    refusal = refused(b'{"jsonrpc":"2.0","id":18446744073709551617,"method":"ping"}')
    assert refusal.code == INVALID_REQUEST


def test_the_same_rule_holds_for_the_request_a_client_cancels() -> None:
    refusal = refused(body({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}}))
    assert refusal.code == INVALID_PARAMS and "requestId" in refusal.message
    fine = CHECK.parse(body({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}))
    assert not fine.is_request and fine.request_id is None and fine.params == {"requestId": 3}


def test_a_client_reply_to_a_server_request_is_accepted_and_a_message_that_is_nothing_is_not() -> None:
    reply = CHECK.parse(body({"jsonrpc": "2.0", "id": "mf-x", "result": {}}))
    assert reply.method is None and reply.request_id == "mf-x"
    assert refused(body({"jsonrpc": "2.0", "id": 1})).code == INVALID_REQUEST
    assert refused(body({"jsonrpc": "2.0", "result": {}})).code == INVALID_REQUEST


# ---- the envelope, params and nesting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", PARSE_ERROR),
        (b"", PARSE_ERROR),
        (b"[]", INVALID_REQUEST),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
        (b'"ping"', INVALID_REQUEST),
        (b'{"id":1,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":7}', INVALID_REQUEST),
    ],
)
def test_what_is_not_a_json_rpc_message_is_refused_saying_why(raw: bytes, code: int) -> None:
    assert refused(raw).code == code


@pytest.mark.parametrize("params", [[1], [], "x", 3, True])
def test_params_that_are_not_an_object_are_invalid_params_on_any_method(params: Any) -> None:
    for method in ("ping", "initialize", "tools/call", "no/such/method"):
        refusal = refused(body({"jsonrpc": "2.0", "id": 4, "method": method, "params": params}))
        assert (refusal.code, refusal.request_id) == (INVALID_PARAMS, 4)
        assert "params must be an object" in refusal.message


def test_missing_or_null_params_are_an_empty_object() -> None:
    assert CHECK.parse(body({"jsonrpc": "2.0", "id": 1, "method": "ping"})).params == {}
    assert CHECK.parse(body({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": None})).params == {}


@pytest.mark.parametrize("depth", [9, 10, 300, 1023, 5000])
def test_a_request_nested_deeper_than_the_limit_is_invalid_params_saying_so(depth: int) -> None:
    refusal = refused(call_nesting(5, depth))
    assert (refusal.code, refusal.request_id) == (INVALID_PARAMS, 5 if depth < 1000 else None)
    assert "nests deeper than 10 levels" in refusal.message and "limits.json_depth" in refusal.message


def test_nesting_up_to_the_limit_and_wide_shallow_bodies_pass() -> None:
    assert CHECK.parse(call_nesting(5, 7)).params["arguments"]["a"]
    wide = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"arguments": {"rows": [[1]] * 500}}}
    assert len(CHECK.parse(body(wide)).params["arguments"]["rows"]) == 500


def test_an_ordinary_call_never_pays_for_the_nesting_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(value: Any, limit: int) -> bool:
        raise AssertionError("the nesting walk ran for a body that cannot be that deep")

    monkeypatch.setattr(inbound_module, "_deeper_than", walked)
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x" * 10_000}, "_meta": {"progressToken": 1}},
    }
    assert InboundCheck(id_length=256, json_depth=64).parse(body(call)).method == "tools/call"


# ---- headers: content type and protocol version -----------------------------------------------------------


@pytest.mark.parametrize("value", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json"])
def test_a_body_said_to_be_something_other_than_json_is_refused(value: str) -> None:
    with pytest.raises(Refusal) as caught:
        CHECK.content_type({"content-type": value})
    assert caught.value.code == INVALID_REQUEST and "Content-Type" in caught.value.message


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "application/json; charset=utf-8"}, {"content-type": "Application/JSON"}]
)
def test_json_with_or_without_a_charset_or_no_content_type_is_accepted(headers: dict[str, str]) -> None:
    CHECK.content_type(headers)


def test_the_era_comes_from_the_version_header_or_the_envelope_and_an_unknown_header_is_refused() -> None:
    plain = CHECK.parse(body({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
    modern = CHECK.parse(body({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": ENVELOPE}}))
    assert CHECK.era({}, plain) is Era.HANDSHAKE  # no header: the spec's 2025-03-26
    assert CHECK.era({}, modern) is Era.MODERN
    assert CHECK.era({"mcp-protocol-version": MODERN_VERSION}, plain) is Era.MODERN
    for version in HANDSHAKE_VERSIONS:
        assert CHECK.era({"mcp-protocol-version": version}, plain) is Era.HANDSHAKE
    for message in (plain, modern):
        with pytest.raises(Refusal) as caught:
            CHECK.era({"mcp-protocol-version": "2099-01-01"}, message)
        refusal = caught.value
        assert (refusal.code, refusal.request_id, refusal.status) == (
            UNSUPPORTED_PROTOCOL_VERSION,
            message.request_id,
            400,
        )
        assert refusal.data["requested"] == "2099-01-01"
        assert MODERN_VERSION in refusal.data["supported"]
    # A handshake-era client is told every version served; a 2026-07-28 request what server/discover lists.
    assert "2025-11-25" in caught_data(plain) and caught_data(modern) == [MODERN_VERSION]


def caught_data(message: Any) -> list[str]:
    with pytest.raises(Refusal) as caught:
        CHECK.era({"mcp-protocol-version": "2099-01-01"}, message)
    return caught.value.data["supported"]


# ---- the streamable HTTP transport, in process ------------------------------------------------------------


class Wire:
    def __init__(self) -> None:
        self.messages: list[JSON] = []

    async def send(self, message: JSON) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    def header(self, name: bytes) -> bytes | None:
        return dict(self.messages[0]["headers"]).get(name)

    def json(self) -> JSON:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


async def disconnected() -> JSON:
    return {"type": "http.disconnect"}


class Relay:
    def __init__(self) -> None:
        pool = StandInPool({"alpha": {"tools": tools("echo")}})
        pool.answers[("alpha", "tools/call")] = replying({"content": [{"type": "text", "text": "hi"}]})
        self.gateway, self.view = gateway_for(pool, {"upstream": "alpha"})
        self.http = StreamableHttp(
            self.gateway,
            SessionStore(self.gateway.hub),
            PendingReplies(),
            stateless=False,
            inbound=InboundCheck(id_length=16, json_depth=10),
        )
        self.principal = ANONYMOUS

    async def post(self, raw: bytes, **headers: str) -> Wire:
        wire = Wire()
        sent = {"accept": "application/json, text/event-stream", "content-type": "application/json", **headers}
        scope = {"method": "POST", "_headers": sent}
        await self.http(scope, disconnected, wire.send, self.view, self.principal, raw)
        return wire

    async def session(self) -> str:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        wire = await self.post(body(init))
        assert wire.status == 200
        sid = wire.header(b"mcp-session-id")
        assert sid is not None
        return sid.decode()


async def test_an_array_id_in_a_handshake_session_is_a_400_not_a_500() -> None:
    relay = Relay()
    sid = await relay.session()
    headers = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    for message in (
        {"jsonrpc": "2.0", "id": [1], "method": "ping"},
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/call", "params": {"name": "vs__echo"}},
    ):
        wire = await relay.post(body(message), **headers)
        assert (wire.status, wire.json()["error"]["code"], wire.json()["id"]) == (400, INVALID_REQUEST, None)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}}
    wire = await relay.post(body(cancel), **headers)
    assert (wire.status, wire.json()["error"]["code"]) == (400, INVALID_PARAMS)
    ok = await relay.post(body({"jsonrpc": "2.0", "id": 2, "method": "ping"}), **headers)
    assert ok.status == 200 and ok.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


async def test_nesting_params_version_and_content_type_are_refused_before_anything_runs() -> None:
    relay = Relay()
    sid = await relay.session()
    headers = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    wire = await relay.post(call_nesting(3, 50), **headers)
    assert (wire.status, wire.json()["error"]["code"], wire.json()["id"]) == (400, INVALID_PARAMS, 3)
    wire = await relay.post(body({"jsonrpc": "2.0", "id": 4, "method": "ping", "params": []}), **headers)
    assert (wire.status, wire.json()["error"]["code"]) == (400, INVALID_PARAMS)
    wire = await relay.post(
        body({"jsonrpc": "2.0", "id": 5, "method": "ping"}), **{**headers, "content-type": "text/plain"}
    )
    assert (wire.status, wire.json()["error"]["code"]) == (400, INVALID_REQUEST)
    wire = await relay.post(
        body({"jsonrpc": "2.0", "id": 6, "method": "ping"}), **{**headers, "mcp-protocol-version": "1999-01-01"}
    )
    assert (wire.status, wire.json()["error"]["code"]) == (400, UNSUPPORTED_PROTOCOL_VERSION)
    modern = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": {**ENVELOPE}}}
    modern["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
    wire = await relay.post(body(modern), **{"mcp-protocol-version": "2099-01-01", "mcp-method": "tools/list"})
    assert (wire.status, wire.json()["error"]["code"], wire.json()["id"]) == (400, UNSUPPORTED_PROTOCOL_VERSION, 7)
    assert MODERN_VERSION in wire.json()["error"]["data"]["supported"]


# ---- an upstream reply with an id the gateway never sent --------------------------------------------------


@pytest.mark.parametrize("kind", ["stdio", "http"])
@pytest.mark.parametrize("wrong_id", [[1], {"id": 1}, "1"], ids=repr)
async def test_an_upstream_reply_with_an_id_never_sent_fails_the_call_naming_the_upstream(
    kind: str, wrong_id: Any
) -> None:
    async def answer_with_wrong_id(upstream: ScriptedUpstream, message: JSON) -> None:
        await upstream.emit({"jsonrpc": "2.0", "id": wrong_id, "result": {}}, message)

    session, _ = await connected({"tools/call": answer_with_wrong_id, "tools/list": echo}, kind=kind)
    try:
        with pytest.raises(UpstreamError, match="^upstream 'up' answered with a JSON-RPC id") as caught:
            await session.request("tools/call", {"name": "x"})
        assert caught.value.kind is ErrorKind.PROTOCOL
        assert "result" in await session.request("tools/list", {})  # the session lives on
    finally:
        await session.aclose()


async def test_a_late_reply_to_a_request_given_up_is_dropped_without_failing_the_one_in_flight() -> None:
    async def late_then_real(upstream: ScriptedUpstream, message: JSON) -> JSON:
        await upstream.emit({"jsonrpc": "2.0", "id": 999_999, "result": {"stale": True}})
        return {"result": {"fresh": True}}

    session, _ = await connected({"tools/call": late_then_real})
    try:
        assert await session.request("tools/call", {"name": "x"}) == {"result": {"fresh": True}}
    finally:
        await session.aclose()


def test_each_callers_tool_list_keeps_its_own_mcp_param_schemas_when_callers_alternate() -> None:
    """Per-caller lists (catalog/lists.py): two callers of one view see a tool of the same name, annotated for
    `Mcp-Param-*` headers in one list only. Each call is checked against its caller's own list, and what is worked
    out of a list is kept with it (not rebuilt on every call when the callers alternate)."""
    from manifold.catalog.view import Built, Target
    from manifold.relay.inbound import ParamHeaders

    annotated = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
    plain = {"type": "object", "properties": {"region": {"type": "string"}}}

    def built(schema: JSON) -> Built:
        target = Target("m", "up", "deploy")
        return Built([{"name": "deploy", "inputSchema": schema}], {"deploy": target}, [target], (1,))

    alice, bob = built(annotated), built(plain)
    for _ in range(2):
        assert ParamHeaders.schema("deploy", alice) == annotated
        assert ParamHeaders.schema("deploy", bob) is None
        assert ParamHeaders.schema("other", alice) is None
    kept = alice.derived["param_schemas"]
    ParamHeaders.schema("deploy", bob)
    assert ParamHeaders.schema("deploy", alice) == annotated and alice.derived["param_schemas"] is kept
    assert ParamHeaders.schema("deploy", None) is None

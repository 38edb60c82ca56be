"""The gateway's own face in each era, as a client sees it over streamable HTTP (in process: the real
StreamableHttp over a Gateway and the stand-in pool of test_relay_handlers):

- 2026-07-28 requests for methods that era removed are unknown methods (HTTP 404, -32601);
- an unsupported version is answered with the versions `server/discover` lists, echoing the one asked for;
- an upstream's -32021 (a client capability the client did not declare) reaches a 2026-07-28 client as a
  400 with its data;
- no 2026-07-28 result field on a 2025-11-25 answer, and `resultType` on every 2026-07-28 one.
"""

from __future__ import annotations

from typing import Any

import pytest

from manifold.protocol import (
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

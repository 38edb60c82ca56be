"""Fuzzing `/mcp/{server}` (streamable HTTP) in both eras with a valid key: JSON-RPC structure (ids of every
JSON type and size, methods, params of the wrong type, deep nesting, big strings, unicode, batches, bodies
that are not JSON), content types and Accept headers. Every answer holds the properties of `Probe.send`, and a
result comes back under the id it was asked with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.inbound import NAME_BEARING_METHODS, encode_header_value

from manifold import protocol
from tests.fuzz import strategies as fs
from tests.fuzz.mcp import ACCEPT_BOTH, Sessions, assert_result_keeps_its_id, end_new_session, sent_message
from tests.fuzz.probe import Probe

pytestmark = pytest.mark.anyio

HANDSHAKE = "mcp 2025-11-25"
MODERN = "mcp 2026-07-28"
SERVER_NAMES = st.one_of(
    st.sampled_from(fs.SERVERS), st.sampled_from(fs.SERVERS), st.sampled_from(["nope", "%2e%2e", "a" * 300, "k%00"])
)
# How a 2026-07-28 request's routing headers (Mcp-Method, Mcp-Name) relate to its body.
ROUTING = st.sampled_from(["derived", "derived", "derived", "derived", "missing", "fuzzed"])


@pytest.fixture(scope="module")
def sessions() -> Sessions:
    return Sessions()


async def handshake_message(
    probe: Probe,
    sessions: Sessions,
    server: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    version: str | None,
) -> None:
    sid = await sessions.get(probe, server)
    headers = {"Content-Type": content_type, "Accept": accept, "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
    reply = await probe.send(HANDSHAKE, "POST", f"/mcp/{server}", headers=headers, data=body)
    if reply.status == 404:
        sessions.forget(server)
    await end_new_session(probe, HANDSHAKE, server, reply, sid)
    assert_result_keeps_its_id(body, reply)


def routing_headers(body: bytes, routing: str, fuzzed: str) -> dict[str, str | None]:
    """Mcp-Method and Mcp-Name as a 2026-07-28 client derives them from the body, left out, or made up."""
    if routing == "missing":
        return {}
    if routing == "fuzzed":
        return {"Mcp-Method": fuzzed, "Mcp-Name": fuzzed}
    message = sent_message(body)
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return {}
    method = message["method"]
    headers: dict[str, str | None] = {"Mcp-Method": encode_header_value(method)}
    params = message.get("params")
    key = NAME_BEARING_METHODS.get(method)
    if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
        headers["Mcp-Name"] = encode_header_value(params[key])
    return headers


async def modern_message(
    probe: Probe,
    server: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    version: str | None,
    routing: str,
    fuzzed: str,
) -> None:
    headers = {"Content-Type": content_type, "Accept": accept, "MCP-Protocol-Version": version}
    headers.update(routing_headers(body, routing, fuzzed))
    reply = await probe.send(MODERN, "POST", f"/mcp/{server}", headers=headers, data=body)
    await end_new_session(probe, MODERN, server, reply, None)
    assert_result_keeps_its_id(body, reply)


@given(
    server=st.sampled_from(fs.SERVERS),
    body=fs.bodies(),
    content_type=fs.mostly("application/json", fs.CONTENT_TYPES),
    accept=fs.mostly(ACCEPT_BOTH, fs.ACCEPTS),
    version=fs.mostly(None, st.one_of(st.sampled_from(protocol.HANDSHAKE_VERSIONS), fs.PROTOCOL_VERSION_HEADERS)),
)
async def test_handshake_era_messages(
    probe: Probe,
    sessions: Sessions,
    server: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    version: str | None,
) -> None:
    """Inside an open 2025-11-25 session: any body, content type, Accept and version header."""
    await handshake_message(probe, sessions, server, body, content_type, accept, version)


@given(
    server=SERVER_NAMES,
    body=fs.bodies(),
    content_type=fs.mostly("application/json", fs.CONTENT_TYPES),
    accept=fs.mostly(ACCEPT_BOTH, fs.ACCEPTS),
)
async def test_handshake_era_without_a_session(
    probe: Probe, server: str, body: bytes, content_type: str | None, accept: str | None
) -> None:
    """No Mcp-Session-Id: `initialize` with fuzzed params opens one, anything else is refused."""
    headers = {"Content-Type": content_type, "Accept": accept}
    reply = await probe.send(HANDSHAKE, "POST", f"/mcp/{server}", headers=headers, data=body)
    await end_new_session(probe, HANDSHAKE, server, reply, None)
    assert_result_keeps_its_id(body, reply)


@given(
    server=SERVER_NAMES,
    body=fs.bodies(modern=True),
    content_type=fs.mostly("application/json", fs.CONTENT_TYPES),
    accept=fs.mostly(ACCEPT_BOTH, fs.ACCEPTS),
    version=fs.mostly(protocol.MODERN_VERSION, fs.PROTOCOL_VERSION_HEADERS),
    routing=ROUTING,
    fuzzed=fs.HEADER_VALUES,
)
async def test_modern_era_messages(
    probe: Probe,
    server: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    version: str | None,
    routing: str,
    fuzzed: str,
) -> None:
    """2026-07-28: sessionless requests with the MCP-Protocol-Version header, the routing headers and a `_meta`
    envelope (any of them fuzzed)."""
    await modern_message(probe, server, body, content_type, accept, version, routing, fuzzed)


# The cases issue 9 names, each tried in every run: an id that is an array or an object, a cancellation naming
# one, an id beyond 2^64, arguments nested deeper than the JSON depth limit, a text/plain body, an unknown
# version header; and for 2026-07-28 an unsupported MCP-Protocol-Version.
def _rpc(message: dict[str, object]) -> bytes:
    return fs.encode({"jsonrpc": "2.0", **message}).encode()


HANDSHAKE_CASES = [
    ("kitchen", _rpc({"id": [1], "method": "ping"}), "application/json", None),
    ("kitchen", _rpc({"id": {"a": 1}, "method": "tools/list"}), "application/json", None),
    ("kitchen", _rpc({"method": "notifications/cancelled", "params": {"requestId": [1]}}), "application/json", None),
    ("kitchen", _rpc({"id": 2**64 + 1, "method": "ping"}), "application/json", None),
    (
        "web",
        _rpc(
            {"id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": fs.Deep(500, "dict")}}}
        ),
        "application/json",
        None,
    ),
    ("kitchen", _rpc({"id": 4, "method": "ping"}), "text/plain", None),
    ("kitchen", _rpc({"id": 5, "method": "ping"}), "application/json", "2099-01-01"),
]


@given(case=st.sampled_from(HANDSHAKE_CASES))
async def test_handshake_era_issue_cases(
    probe: Probe, sessions: Sessions, case: tuple[str, bytes, str, str | None]
) -> None:
    server, body, content_type, version = case
    await handshake_message(probe, sessions, server, body, content_type, ACCEPT_BOTH, version)


MODERN_CASES = [
    ("kitchen", _rpc({"id": 1, "method": "tools/list", "params": {"_meta": fs.modern_meta()}}), "2099-01-01"),
    (
        "kitchen",
        _rpc({"id": [1], "method": "tools/list", "params": {"_meta": fs.modern_meta()}}),
        protocol.MODERN_VERSION,
    ),
    (
        "kitchen",
        _rpc({"id": 2**64 + 1, "method": "tools/list", "params": {"_meta": fs.modern_meta()}}),
        protocol.MODERN_VERSION,
    ),
]


@given(case=st.sampled_from(MODERN_CASES))
async def test_modern_era_issue_cases(probe: Probe, case: tuple[str, bytes, str]) -> None:
    server, body, version = case
    await modern_message(probe, server, body, "application/json", ACCEPT_BOTH, version, "derived", "")


@given(
    server=st.sampled_from(fs.SERVERS),
    request_id=fs.IDS,
    notifications=st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "toolsListChanged": fs.JSON_VALUES,
                "promptsListChanged": fs.JSON_VALUES,
                "resourcesListChanged": fs.JSON_VALUES,
                "resourceSubscriptions": st.one_of(st.lists(fs.URIS, max_size=3), fs.JSON_VALUES),
            },
        ),
        fs.HOSTILE_VALUES,
    ),
)
async def test_modern_era_subscriptions_listen(
    probe: Probe, server: str, request_id: object, notifications: object
) -> None:
    """`subscriptions/listen` opens a stream: its start is read, then the stream is closed."""
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": protocol.SUBSCRIPTIONS_LISTEN,
        "params": {"notifications": notifications, "_meta": fs.modern_meta()},
    }
    headers: dict[str, str | None] = {
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "MCP-Protocol-Version": protocol.MODERN_VERSION,
        "Mcp-Method": protocol.SUBSCRIPTIONS_LISTEN,
    }
    await probe.send(MODERN, "POST", f"/mcp/{server}", headers=headers, data=fs.encode(message).encode(), stream=True)

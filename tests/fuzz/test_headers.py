"""Fuzzing the headers the MCP endpoints read: `Authorization` (no key, wrong schemes, API-key-shaped
guesses, JWT-shaped garbage, and tokens that carry the configured IdP's genuine signature over hostile claims),
`Mcp-Session-Id`, `MCP-Protocol-Version`, `x-mcp-headers` and `Accept`, on POST, GET and DELETE."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given
from hypothesis import strategies as st

from manifold import protocol
from tests.fuzz import strategies as fs
from tests.fuzz.mcp import ACCEPT_BOTH, JSON_POST, Sessions, end_new_session, initialize_body
from tests.fuzz.probe import Probe
from tests.fuzz.world import AUDIENCE, World

pytestmark = pytest.mark.anyio

AUTH = "auth"
FAR_FUTURE = 4_102_444_800  # 2100-01-01
HEADERS = "headers"
CALL_ECHO = fs.encode(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": protocol.TOOLS_CALL,
        "params": {"name": "fwd__echo", "arguments": {"text": "hi"}},
    }
).encode()
# Where a credential is checked: the MCP endpoint (both transports), the admin API, a page that needs none.
AUTH_PATHS = st.sampled_from(
    [
        ("POST", "/mcp/kitchen"),
        ("POST", "/mcp/pair"),
        ("GET", "/mcp/kitchen"),
        ("DELETE", "/mcp/kitchen"),
        ("GET", "/sse/kitchen"),
        ("POST", "/sse/kitchen/messages?session_id=x"),
        ("GET", "/admin/api/keys"),
        ("POST", "/admin/api/users"),
        ("GET", "/.well-known/oauth-protected-resource/mcp/kitchen"),
    ]
)


@pytest.fixture(scope="module")
def sessions() -> Sessions:
    return Sessions()


DEEP_JWT = ("Bearer ", fs.JwtShaped({"alg": "RS256", "typ": "JWT"}, fs.Deep(5000, "list"), b"x"))


async def with_authorization(probe: Probe, world: World, auth: tuple[str, Any] | None, where: tuple[str, str]) -> None:
    authorization = fs.authorization(auth, {"issuer": world.idp.issuer, "key": probe.gw.key})
    method, path = where
    headers = {"Authorization": authorization, **JSON_POST}
    body = initialize_body() if path.startswith("/mcp/") else b"{}"
    reply = await probe.send(AUTH, method, path, headers=headers, data=body if method == "POST" else None, stream=True)
    if path.startswith("/mcp/"):
        await end_new_session(probe, AUTH, path.split("/")[2], reply, None)


@given(auth=fs.AUTHORIZATIONS, where=AUTH_PATHS)
async def test_authorization_header(
    probe: Probe, world: World, auth: tuple[str, Any] | None, where: tuple[str, str]
) -> None:
    """Wrong credentials of every shape: 401 (or 403), never a 5xx. `auth` markers: the IdP's issuer and the
    gateway's own dev key."""
    await with_authorization(probe, world, auth, where)


@given(where=st.sampled_from([("POST", "/mcp/kitchen"), ("GET", "/admin/api/keys"), ("GET", "/sse/kitchen")]))
async def test_authorization_issue_cases(probe: Probe, world: World, where: tuple[str, str]) -> None:
    """The case issue 9 names: a bearer shaped like a JWT whose payload nests 5,000 levels deep."""
    await with_authorization(probe, world, DEEP_JWT, where)


@st.composite
def hostile_claims(draw: st.DrawFn) -> dict[str, Any]:
    """Claims a genuinely signed token could carry: the right issuer and audience (usually), odd types and
    values for the registered claims, and anything at all in the others, sometimes nested very deep."""
    claims: dict[str, Any] = {
        "iss": draw(st.one_of(st.just("⟦issuer⟧"), st.just("⟦issuer⟧"), fs.JSON_VALUES)),
        "aud": draw(st.one_of(st.just(AUDIENCE), st.just([AUDIENCE, "x"]), fs.JSON_VALUES)),
        "exp": draw(st.one_of(st.just(FAR_FUTURE), fs.INTEGERS, fs.FLOATS, fs.STRINGS)),
    }
    claims.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "sub": st.one_of(st.just("dev"), fs.STRINGS, fs.JSON_VALUES, fs.BIG),
                    "iat": fs.INTEGERS,
                    "nbf": st.one_of(fs.INTEGERS, fs.FLOATS),
                    "email": st.one_of(fs.STRINGS, fs.JSON_VALUES),
                    "groups": fs.HOSTILE_VALUES,
                    "scope": fs.HOSTILE_VALUES,
                    "act": fs.HOSTILE_VALUES,
                    "tenant": fs.HOSTILE_VALUES,
                },
            )
        )
    )
    return claims


@given(claims=hostile_claims(), where=AUTH_PATHS)
async def test_signed_tokens_with_hostile_claims(
    probe: Probe, world: World, claims: dict[str, Any], where: tuple[str, str]
) -> None:
    """A token the configured IdP's key really signed reaches the claim checks: whatever the claims are, the
    answer is an answer (200, 401 or 403), never a 5xx."""
    header = {"alg": "RS256", "typ": "JWT", "kid": world.idp.kid}
    payload = fs.fill(fs.encode(claims), {"issuer": world.idp.issuer})
    signing_input = f"{fs.b64url(fs.encode(header).encode())}.{fs.b64url(payload.encode())}"
    signature = world.idp.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{fs.b64url(signature)}"
    method, path = where
    headers = {"Authorization": f"Bearer {token}", **JSON_POST}
    body = initialize_body() if path.startswith("/mcp/") else b"{}"
    reply = await probe.send(AUTH, method, path, headers=headers, data=body if method == "POST" else None, stream=True)
    if path.startswith("/mcp/"):
        await end_new_session(probe, AUTH, path.split("/")[2], reply, None)


@given(
    server=st.sampled_from(fs.SERVERS),
    forwarded=st.one_of(st.none(), fs.forwarded_headers()),
    version=st.one_of(st.none(), fs.PROTOCOL_VERSION_HEADERS),
    session=st.sampled_from(["own", "own", "none", "made-up", "other-server"]),
    made_up=fs.HEADER_VALUES,
    accept=fs.mostly(ACCEPT_BOTH, fs.ACCEPTS),
)
async def test_session_version_and_forwarded_headers_on_post(
    probe: Probe,
    sessions: Sessions,
    server: str,
    forwarded: str | None,
    version: str | None,
    session: str,
    made_up: str,
    accept: str | None,
) -> None:
    sid: str | None = None
    if session == "own":
        sid = await sessions.get(probe, server)
    elif session == "other-server":
        sid = await sessions.get(probe, "kitchen" if server != "kitchen" else "web")
    elif session == "made-up":
        sid = made_up
    headers = {
        "Content-Type": "application/json",
        "Accept": accept,
        "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": version,
        "x-mcp-headers": forwarded,
    }
    reply = await probe.send(HEADERS, "POST", f"/mcp/{server}", headers=headers, data=CALL_ECHO)
    if reply.status == 404 and session == "own":
        sessions.forget(server)


@given(
    method=st.sampled_from(["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
    server=st.sampled_from(fs.SERVERS),
    version=st.one_of(st.none(), fs.PROTOCOL_VERSION_HEADERS),
    session=st.one_of(st.none(), fs.HEADER_VALUES),
    accept=fs.ACCEPTS,
)
async def test_other_methods_on_the_mcp_endpoint(
    probe: Probe, method: str, server: str, version: str | None, session: str | None, accept: str | None
) -> None:
    """GET (the notification stream), DELETE (end a session) and methods the endpoint does not take, with
    made-up session ids and version headers."""
    headers = {"Accept": accept, "Mcp-Session-Id": session, "MCP-Protocol-Version": version}
    await probe.send(HEADERS, method, f"/mcp/{server}", headers=headers, stream=True)


@given(accept=fs.ACCEPTS, version=st.one_of(st.none(), fs.PROTOCOL_VERSION_HEADERS))
async def test_own_session_stream(probe: Probe, accept: str | None, version: str | None) -> None:
    """GET on a session that exists (a fresh one each time, ended afterwards), with fuzzed Accept/version."""
    reply = await probe.send(HEADERS, "POST", "/mcp/kitchen", headers=JSON_POST, data=initialize_body())
    sid = reply.headers["mcp-session-id"]
    headers = {"Accept": accept, "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
    try:
        await probe.send(HEADERS, "GET", "/mcp/kitchen", headers=headers, stream=True)
    finally:
        await probe.send(HEADERS, "DELETE", "/mcp/kitchen", headers={"Mcp-Session-Id": sid, "Accept": ACCEPT_BOTH})

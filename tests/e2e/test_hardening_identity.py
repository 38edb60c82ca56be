"""Inbound identity under attack, through the real gateway process with a real OpenID Provider configured.

Hostile bearers (nested 5,000 deep, oversize, binary, the wrong number of segments, claims of the wrong
type signed with the provider's own key) get the one 401 of every protected endpoint — on `/mcp/{server}`
and on `/admin/api/...` — with no traceback in the gateway's log. And an IdP's subject `dev` is that IdP's
user, not the development key's owner: a grant for `user:dev` gives it nothing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2
import pytest

from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

AUDIENCE = "https://manifold.e2e.test/mcp"
SERVER = "kitchen"
PRM = "/.well-known/oauth-protected-resource"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "hardening", "version": "1"},
    },
}


@dataclass
class World:
    gw: Gateway
    corp: Idp


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with run_idp([IdpClient("alice", claims={"email": "alice@corp.com"})]) as corp:
        extra = {
            "identity": {"idps": {"corp": {"issuer": corp.issuer, "audience": [AUDIENCE]}}},
            # What the development key uses: everything. Only the dev key's owner is `user:dev`.
            "grants": [
                {"who": "user:dev", "what": ["server:*"]},
                {"who": "user:alice@corp.com", "what": ["server:*"]},
            ],
        }
        upstreams = {SERVER: stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
        async with run_gateway(upstreams, extra=extra) as gw:
            yield World(gw, corp)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_bearers(corp: Idp) -> dict[str, bytes]:
    header = b64(json.dumps({"alg": "RS256", "kid": corp.kid}).encode())
    payload = b64(json.dumps(corp.claims(audience=AUDIENCE)).encode())
    iss_over_deep = '{"iss":"' + corp.issuer + '","x":' + nested(5000) + "}"
    signed = {  # the provider's genuine signature over claims of the wrong type
        "exp a string": {"exp": "tomorrow"},
        "sub an object": {"sub": {"id": "alice"}},
        "groups an object": {"groups": {"eng": True}},
        "groups a 600-name list": {"groups": [f"g{i}" for i in range(600)]},
        "aud an object": {"aud": {"a": AUDIENCE}},
    }
    bearers = {
        "payload nested 5,000 deep": f"{header}.{b64(nested(5000).encode())}.sig",
        "payload naming the issuer over a 5,000-deep value": f"{header}.{b64(iss_over_deep.encode())}.sig",
        "header nested 5,000 deep": f"{b64(nested(5000).encode())}.{payload}.sig",
        "oversize": f"{header}.{payload}.{'A' * 20_000}",
        "two segments": f"{header}.{payload}",
        "four segments": f"{header}.{payload}.sig.more",
        "payload not JSON": f"{header}.{b64(b'not json')}.sig",
        "kid an object": f"{b64(json.dumps({'alg': 'RS256', 'kid': {'a': 1}}).encode())}.{payload}.sig",
        "an oversize key": "mfk_0123456789ab_" + "x" * 20_000,
        **{name: corp.sign({**corp.claims(audience=AUDIENCE), **claims}) for name, claims in signed.items()},
    }
    encoded = {name: bearer.encode() for name, bearer in bearers.items()}
    encoded["binary garbage"] = bytes(range(128, 256))
    encoded["non-ASCII in a JWT"] = f"{header}.{payload}.".encode() + "sïg".encode("latin-1")
    return encoded


def challenge_params(header: str) -> dict[str, str]:
    return {k: v.replace('\\"', '"') for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header)}


async def test_hostile_bearers_get_the_one_401_and_no_traceback(world: World) -> None:
    gw = world.gw
    targets = {
        "mcp": ("POST", gw.url(SERVER), f"{gw.base}{PRM}/mcp/{SERVER}"),
        "admin": ("GET", f"{gw.base}/admin/api/keys", None),
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        for name, bearer in hostile_bearers(world.corp).items():
            for target, (method, url, metadata) in targets.items():
                headers = {
                    b"Authorization": b"Bearer " + bearer,
                    b"Accept": b"application/json, text/event-stream",
                    b"Content-Type": b"application/json",
                }
                response = await http.request(
                    method, url, headers=headers, json=INITIALIZE if method == "POST" else None
                )
                where = f"{name} on {target}"
                assert response.status_code == 401, (where, response.status_code, response.text[:200])
                body = response.json()
                assert body["error"] == "invalid_token", where
                params = challenge_params(response.headers["www-authenticate"])
                assert params["realm"] == "manifold" and params["error"] == "invalid_token", where
                if metadata is not None:
                    assert params["resource_metadata"] == metadata, where
                assert "Traceback" not in response.text, where
    log = gw.log()
    assert "Traceback" not in log
    assert "RecursionError" not in log


async def test_an_idp_subject_named_dev_is_not_the_development_user(world: World) -> None:
    gw = world.gw
    corp = world.corp
    dev_by_idp = corp.sign(corp.claims(audience=AUDIENCE, subject="dev"))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(timeout=30) as http:
        # The IdP's `dev` is `user:corp:dev`: the grant written for the development key's owner is not its.
        refused = await http.post(
            gw.url(SERVER), headers={**headers, "Authorization": f"Bearer {dev_by_idp}"}, json=INITIALIZE
        )
        assert refused.status_code == 403, refused.text
        # The development key itself, and an IdP user the config names by email, are served.
        dev_key = await http.post(
            gw.url(SERVER), headers={**headers, "Authorization": f"Bearer {gw.key}"}, json=INITIALIZE
        )
        assert dev_key.status_code == 200, dev_key.text
    alice = await corp.token("alice", resource=AUDIENCE)
    async with gw.client(SERVER, key=alice) as client:
        assert "echo" in {t.name for t in (await client.list_tools()).tools}
    assert "Traceback" not in gw.log()

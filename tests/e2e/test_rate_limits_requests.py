"""Rate limits on the requests other than tools/call (docs/rate-limits.md, "What is limited"), against a real
gateway process and a real upstream with resources and prompts: a principal limited on a server is refused the
request after its burst — resources/read, prompts/get, completion/complete, resources/subscribe and tools/call
drawing from one bucket — with HTTP 429, Retry-After and the JSON-RPC error, and audited; another principal is
not affected; a rule scoped to a tool counts only that tool; once a token is back the requests pass again.

One gateway for the module; each test limits its own principal, so the tests do not share buckets.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.replicas.probes import META
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

RATE_LIMITED = -32029
ANN, BOB, CAROL = "ann@example.com", "bob@example.com", "carol@example.com"
RULES = [
    # One token every 10 s, 3 at once: the 4th request in a row is refused however slow the machine is.
    {"id": "ann-on-kitchen", "who": f"user:{ANN}", "what": "server:kitchen", "rate": "6/min", "burst": 3},
    {"id": "carol-on-both", "who": f"user:{CAROL}", "what": "vserver:both", "rate": "1/hour"},
    {"id": "echo-hourly", "what": "tool:kitchen/echo", "rate": "1/hour"},  # a tool's rule: that tool only
]
READ = ("resources/read", {"uri": "kitchen://readme"})
GET = ("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})
COMPLETE = (
    "completion/complete",
    {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "name", "value": "A"}},
)
ADD = ("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
        upstreams = {"kitchen": {"transport": "http", "url": kitchen}}
        servers = {"both": {"members": [{"upstream": "kitchen"}]}}
        async with run_gateway(upstreams, servers, extra={"rate_limits": RULES}) as gateway:
            yield gateway
            assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


async def key_of(gw: Gateway, user: str) -> str:
    async with gw.http() as http:
        made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "laptop"})
    assert made.status_code == 201, made.text
    return made.json()["token"]


async def ask(gw: Gateway, key: str, request: tuple[str, dict[str, Any]], server: str = "kitchen") -> httpx2.Response:
    """One sessionless 2026-07-28 request, with the routing headers its method wants."""
    method, params = request
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
    }
    if "name" in params or "uri" in params:
        headers["Mcp-Name"] = str(params.get("name", params.get("uri")))
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(f"{gw.base}/mcp/{server}", json=body, headers=headers)


def refused_by(answer: httpx2.Response, rule: str) -> int:
    """Assert `answer` is the limit's refusal by `rule`; its retry hint."""
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == RATE_LIMITED and error["data"]["limit"] == rule, error
    assert answer.headers["retry-after"] == str(error["data"]["retryAfter"])
    assert f"'{rule}'" in error["message"]
    return error["data"]["retryAfter"]


async def audited(gw: Gateway, method: str, target: str, user: str) -> dict[str, Any]:
    """The rate_limited audit row of `user`'s `method` on `target` (written in batches: a bounded poll)."""
    deadline = time.monotonic() + 10
    while True:
        done = await manifold_cli(gw, "audit", "--json", "--outcome", "rate_limited", "--limit", "100")
        rows = [
            r
            for r in map(json.loads, done.stdout.splitlines())
            if (r["method"], r["target"]) == (method, target) and user in r["principal"]
        ]
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no rate_limited audit row for {method} {target}"
        await anyio.sleep(0.1)


async def test_a_principal_limited_on_a_server_is_refused_every_relayed_request_past_its_burst(gw: Gateway) -> None:
    ann, bob = await key_of(gw, ANN), await key_of(gw, BOB)
    for request in (READ, GET, COMPLETE):  # the burst: three requests of any kind
        ok = await ask(gw, ann, request)
        assert ok.status_code == 200 and "result" in ok.json(), ok.text
    for request in (READ, GET, COMPLETE, ADD):  # one bucket: every request to the server is refused now
        assert 1 <= refused_by(await ask(gw, ann, request), "ann-on-kitchen") <= 10
    # Someone else is served meanwhile, as often as they like: the rule selects Ann only.
    for _ in range(5):
        for request in (READ, GET, COMPLETE):
            assert (await ask(gw, bob, request)).status_code == 200
    row = await audited(gw, "resources/read", "kitchen://readme", ANN)
    assert row["upstream"] == "kitchen" and "ann-on-kitchen" in row["detail"]
    assert "ann-on-kitchen" in (await audited(gw, "prompts/get", "greet", ANN))["detail"]
    # A token is back within 10 s (a refused request takes none): one request passes, the next is refused.
    deadline = time.monotonic() + 20
    while (answer := await ask(gw, ann, READ)).status_code != 200:
        refused_by(answer, "ann-on-kitchen")
        assert time.monotonic() < deadline, "still refused after 20 s"
        await anyio.sleep(0.2)
    assert "readme" in answer.text.lower()
    refused_by(await ask(gw, ann, GET), "ann-on-kitchen")


async def test_a_rule_scoped_to_a_tool_counts_only_calls_of_that_tool(gw: Gateway) -> None:
    dan = await key_of(gw, "dan@example.com")
    assert (await ask(gw, dan, ("tools/call", {"name": "echo", "arguments": {"text": "hi"}}))).status_code == 200
    refused_by(await ask(gw, dan, ("tools/call", {"name": "echo", "arguments": {"text": "hi"}})), "echo-hourly")
    for _ in range(3):  # other tools, prompts and resources are not that rule's
        for request in (READ, GET, COMPLETE, ADD):
            assert (await ask(gw, dan, request)).status_code == 200


async def test_a_handshake_client_is_refused_resources_and_prompts_on_the_limited_virtual_server(gw: Gateway) -> None:
    carol = await key_of(gw, CAROL)
    async with gw.client("both", key=carol) as client:
        uri = next(str(r.uri) for r in (await client.list_resources()).resources if str(r.uri).endswith("readme"))
        prompt = next(p.name for p in (await client.list_prompts()).prompts if p.name.endswith("greet"))
        assert (await client.read_resource(uri)).contents  # the one token an hour
        for refused in (
            lambda: client.read_resource(uri),
            lambda: client.get_prompt(prompt, {"name": "Ada"}),
            lambda: client.subscribe_resource(uri),
        ):
            with pytest.raises(MCPError) as over:
                await refused()
            assert over.value.error.code == RATE_LIMITED
            assert over.value.error.data is not None and over.value.error.data["limit"] == "carol-on-both"
            assert over.value.error.data["retryAfter"] > 3500
    # Lists are served from the gateway's cache: never refused.
    async with gw.client("both", key=carol) as client:
        assert (await client.list_resources()).resources and (await client.list_prompts()).prompts
    # The rule counts requests through `both` only: the upstream's own server serves her.
    for request in (READ, GET):
        assert (await ask(gw, carol, request)).status_code == 200
    assert "carol-on-both" in (await audited(gw, "resources/subscribe", uri, CAROL))["detail"]

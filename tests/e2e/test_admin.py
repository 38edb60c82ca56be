"""The admin API and CLI change what a running gateway serves and who may use it, without a restart.

One gateway (its own process) with a file-declared upstream `alpha`, virtual server `filevs` and group
`filegroup`; real kitchen upstreams are added at run time over HTTP (through /admin/api) and over stdio
(through `manifold upstreams create`, writing the database the gateway runs on). Only the dev user holds a
grant in the file, so a key made for anyone else can do nothing until a grant made through the API lets it.
Every test uses its own object ids, so the tests do not depend on each other or on their order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
import yaml

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

API = "/admin/api"
EXTRA = {
    "groups": {"filegroup": ["alpha"]},
    "grants": [{"who": "user:dev", "what": ["server:*", "vserver:*"], "description": "the dev key uses all"}],
}
FILE_SERVERS = {"filevs": {"members": [{"upstream": "alpha", "tools": ["echo"]}]}}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "e2e-admin", "version": "1"},
    },
}


@dataclass
class World:
    gw: Gateway
    alpha_url: str
    beta_url: str  # a kitchen named "beta" that no config mentions: the API adds it


@pytest.fixture(scope="module")
async def upstream_urls() -> AsyncIterator[tuple[str, str]]:
    async with (
        run_http_upstream(KITCHEN, "--name", "alpha") as alpha,
        run_http_upstream(KITCHEN, "--name", "beta") as beta,
    ):
        yield alpha, beta


@pytest.fixture(scope="module")
async def world(upstream_urls: tuple[str, str]) -> AsyncIterator[World]:
    alpha, beta = upstream_urls
    upstreams = {"alpha": {"transport": "http", "url": alpha}}
    async with run_gateway(upstreams, FILE_SERVERS, extra=EXTRA) as gw:
        yield World(gw, alpha, beta)
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


# ---- helpers --------------------------------------------------------------------------------------------


async def admin(gw: Gateway, method: str, path: str, body: Any = None, *, key: str | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {key or gw.key}"}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.request(method, f"{gw.base}{API}{path}", json=body, headers=headers)


async def created(gw: Gateway, path: str, body: Any) -> dict[str, Any]:
    answer = await admin(gw, "POST", path, body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def initialize_status(gw: Gateway, server: str, key: str) -> int:
    """The HTTP status an MCP client gets when it starts a session with `server` using `key`."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=30) as http:
        return (await http.post(gw.url(server), json=INITIALIZE, headers=headers)).status_code


async def served(gw: Gateway) -> list[str]:
    async with httpx2.AsyncClient(timeout=30) as http:
        return (await http.get(f"{gw.base}/readyz")).json()["servers"]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def whoami(
    gw: Gateway, server: str, tool: str = "whoami", *, key: str | None = None, mode: str = "legacy"
) -> str:
    async with gw.client(server, key=key, mode=mode) as client:
        result = await client.call_tool(tool, {})
    assert not result.is_error, text_of(result)
    return json.loads(text_of(result))["name"]


# ---- catalog through the API ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_api_created_upstream_and_virtual_server_are_served_without_restart(world: World, mode: str) -> None:
    gw = world.gw
    up, vs = f"beta-{mode[:6]}", f"combo-{mode[:6]}"
    made = await created(gw, "/upstreams", {"id": up, "transport": "http", "url": world.beta_url})
    assert made["source"] == "api" and made["body"]["url"] == world.beta_url
    await created(
        gw,
        "/virtual-servers",
        {"id": vs, "members": [{"upstream": "alpha"}, {"upstream": up, "id": "b", "tools": ["echo", "whoami"]}]},
    )

    assert {up, vs} <= set(await served(gw))
    async with gw.client(vs, mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"alpha__echo", "alpha__whoami", "b__echo", "b__whoami"} <= names
        assert "b__add" not in names  # not selected
        assert text_of(await client.call_tool("b__echo", {"text": "through the new server"})) == (
            "through the new server"
        )
    assert await whoami(gw, vs, "b__whoami", mode=mode) == "beta"
    assert await whoami(gw, up, mode=mode) == "beta"  # every upstream is also served alone

    shown = (await admin(gw, "GET", f"/upstreams/{up}")).json()
    assert shown == {
        "id": up,
        "source": "api",
        "applied": True,
        "body": {"transport": "http", "url": world.beta_url},
    }
    listed = {e["id"]: e["source"] for e in (await admin(gw, "GET", "/upstreams")).json()}
    assert listed["alpha"] == "manifold.yaml" and listed[up] == "api"

    # An upstream in use cannot go; the answer names who uses it.
    refused = await admin(gw, "DELETE", f"/upstreams/{up}")
    assert refused.status_code == 409
    assert f"virtual server '{vs}'" in refused.json()["error"]

    assert (await admin(gw, "DELETE", f"/virtual-servers/{vs}")).status_code == 200
    assert await initialize_status(gw, vs, gw.key) == 404
    assert (await admin(gw, "DELETE", f"/upstreams/{up}")).status_code == 200
    assert await initialize_status(gw, up, gw.key) == 404
    async with httpx2.AsyncClient(timeout=30) as http:
        assert up not in (await http.get(f"{gw.base}/healthz")).json()["upstreams"]
    assert (await admin(gw, "GET", f"/upstreams/{up}")).status_code == 404


async def test_api_objects_survive_a_restart_and_files_win_a_clash(
    upstream_urls: tuple[str, str], tmp_path: Path
) -> None:
    alpha, beta = upstream_urls
    upstreams = {"alpha": {"transport": "http", "url": alpha}}
    async with run_gateway(upstreams, extra=EXTRA, directory=tmp_path) as gw:
        await created(gw, "/upstreams", {"id": "beta", "transport": "http", "url": beta})
        await created(gw, "/upstreams", {"id": "contested", "transport": "http", "url": beta})
        await created(gw, "/groups", {"id": "both", "upstreams": ["alpha", "beta"]})
        await created(gw, "/virtual-servers", {"id": "pair", "members": [{"upstream": "alpha"}, {"upstream": "beta"}]})
        assert await whoami(gw, "pair", "beta__whoami") == "beta"
        assert await whoami(gw, "contested") == "beta"

    # Same folder, same database; manifold.yaml now declares `contested` too (pointing at alpha).
    upstreams["contested"] = {"transport": "http", "url": alpha}
    async with run_gateway(upstreams, extra=EXTRA, directory=tmp_path) as again:
        assert {"alpha", "beta", "pair", "contested"} <= set(await served(again))
        assert await whoami(again, "pair", "beta__whoami") == "beta"
        assert await whoami(again, "beta") == "beta"
        group = (await admin(again, "GET", "/groups/both")).json()
        assert group == {"id": "both", "source": "api", "applied": True, "body": {"upstreams": ["alpha", "beta"]}}

        assert await whoami(again, "contested") == "alpha"  # the file wins
        both = [e for e in (await admin(again, "GET", "/upstreams")).json() if e["id"] == "contested"]
        assert [(e["source"], e["applied"]) for e in both] == [("manifold.yaml", True), ("api", False)]
        assert both[1]["problem"] == "manifold.yaml also declares upstream 'contested', and the file wins"
        assert "upstream 'contested' (created through the API) is left out" in again.log()
        # The database's copy can still be removed through the API; the file's stays.
        assert (await admin(again, "DELETE", "/upstreams/contested")).status_code == 200
        remaining = [e["source"] for e in (await admin(again, "GET", "/upstreams")).json() if e["id"] == "contested"]
        assert remaining == ["manifold.yaml"]
        assert (await admin(again, "DELETE", "/upstreams/contested")).status_code == 409


async def test_cli_changes_reach_the_running_gateway_on_its_next_request(world: World, tmp_path: Path) -> None:
    gw = world.gw
    definition = tmp_path / "gamma.yaml"
    definition.write_text(
        yaml.safe_dump({"id": "gamma", **stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "gamma")})
    )
    done = await manifold_cli(gw, "upstreams", "create", "--file", str(definition))
    assert b"Created upstream 'gamma'" in done.stdout
    assert await whoami(gw, "gamma") == "gamma"  # no restart, no wait: the very next request

    # JSON on stdin works as well as a file.
    body = {"id": "gamma-echo", "members": [{"upstream": "gamma", "tools": ["echo"]}]}
    await manifold_cli(gw, "vservers", "create", input=json.dumps(body).encode())
    async with gw.client("gamma-echo") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["gamma__echo"]
        assert text_of(await client.call_tool("gamma__echo", {"text": "hi"})) == "hi"

    listed = (await manifold_cli(gw, "upstreams", "list")).stdout.decode()
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[1:]}
    assert listed.splitlines()[0].split() == ["ID", "TRANSPORT", "TARGET", "SOURCE", "PROBLEM"]
    assert rows["gamma"][1] == "stdio" and rows["gamma"][-2:] == ["api", "-"]
    assert rows["alpha"][1] == "http" and rows["alpha"][-2:] == ["manifold.yaml", "-"]

    refused = await manifold_cli(gw, "upstreams", "delete", "gamma", check=False)
    assert refused.returncode == 1
    assert b"still used by virtual server 'gamma-echo'" in refused.stderr

    await manifold_cli(gw, "vservers", "delete", "gamma-echo")
    await manifold_cli(gw, "upstreams", "delete", "gamma")
    assert await initialize_status(gw, "gamma", gw.key) == 404
    async with httpx2.AsyncClient(timeout=30) as http:
        assert "gamma" not in (await http.get(f"{gw.base}/healthz")).json()["upstreams"]


async def test_cli_refuses_an_invalid_definition_naming_each_field(world: World) -> None:
    body = {"id": "broken", "transport": "http", "urll": "http://127.0.0.1:9/mcp"}
    done = await manifold_cli(world.gw, "upstreams", "create", input=yaml.safe_dump(body).encode(), check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "invalid upstream 'broken'" in err
    assert "urll: unknown key 'urll'; did you mean 'url'?" in err


# ---- clients already connected ----------------------------------------------------------------------------


async def test_a_connected_client_hears_that_its_server_was_redefined(world: World) -> None:
    gw = world.gw
    await created(gw, "/virtual-servers", {"id": "swap", "members": [{"upstream": "alpha", "tools": ["echo"]}]})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with gw.client("swap", message_handler=on_message) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
        # Another process redefines it: both changes land before the gateway's next request.
        await manifold_cli(gw, "vservers", "delete", "swap")
        body = {"id": "swap", "members": [{"upstream": "alpha", "tools": ["echo", "add"]}]}
        await manifold_cli(gw, "vservers", "create", input=json.dumps(body).encode())
        assert await initialize_status(gw, "alpha", gw.key) == 200  # any request applies the change
        with anyio.fail_after(10):
            await changed.wait()
        assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo", "alpha__add"]


async def test_an_upstream_redefined_by_the_cli_is_reconnected_to_its_new_address(world: World) -> None:
    gw = world.gw
    await created(gw, "/upstreams", {"id": "moving", "transport": "http", "url": world.alpha_url})
    async with gw.client("moving") as client:
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "alpha"
        # Same id, another server, both changes before the gateway's next request.
        await manifold_cli(gw, "upstreams", "delete", "moving")
        body = {"id": "moving", "transport": "http", "url": world.beta_url}
        await manifold_cli(gw, "upstreams", "create", input=json.dumps(body).encode())
        # The same client session goes on, now reaching the new server.
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "beta"
    assert (await admin(gw, "DELETE", "/upstreams/moving")).status_code == 200


async def test_deleting_a_server_ends_its_clients_notification_streams(world: World) -> None:
    gw = world.gw
    await created(gw, "/virtual-servers", {"id": "doomed", "members": [{"upstream": "alpha", "tools": ["echo"]}]})
    headers = {"Authorization": f"Bearer {gw.key}", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=30) as http:
        started = await http.post(gw.url("doomed"), json=INITIALIZE, headers=headers)
        session = {**headers, "Mcp-Session-Id": started.headers["mcp-session-id"], "Accept": "text/event-stream"}
        async with http.stream("GET", gw.url("doomed"), headers=session) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == ": stream open"
            assert (await admin(gw, "DELETE", "/virtual-servers/doomed")).status_code == 200
            with anyio.fail_after(10):
                rest = [line async for line in lines]  # the gateway ends the stream
        assert not [line for line in rest if line.startswith("data:")]
        gone = await http.post(gw.url("doomed"), json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=session)
        assert gone.status_code == 404


# ---- who may administer --------------------------------------------------------------------------------


async def test_admin_api_needs_an_admin_credential(world: World) -> None:
    gw = world.gw
    async with httpx2.AsyncClient(timeout=30) as http:
        anonymous = await http.get(f"{gw.base}{API}/upstreams")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    assert (await admin(gw, "GET", "/upstreams", key="mfk_000000000000_not-a-real-key-at-all")).status_code == 401

    key = await created(gw, "/keys", {"user": "erin@example.com", "name": "laptop"})
    for method, path, body in [
        ("GET", "/upstreams", None),
        ("POST", "/upstreams", {"id": "erins", "transport": "http", "url": world.beta_url}),
        ("DELETE", "/virtual-servers/filevs", None),
        ("POST", "/grants", {"who": "user:erin@example.com", "what": ["server:*"]}),
    ]:
        refused = await admin(gw, method, path, body, key=key["token"])
        assert refused.status_code == 403, (method, path)
        assert refused.json() == {"error": "admin principals only"}
    assert "erins" not in {e["id"] for e in (await admin(gw, "GET", "/upstreams")).json()}


# ---- file-declared objects, invalid bodies ---------------------------------------------------------------------


async def test_file_declared_objects_are_read_only(world: World) -> None:
    gw = world.gw
    for path, where in [
        ("/upstreams/alpha", "manifold.yaml"),
        ("/groups/filegroup", "manifold.yaml"),
        ("/virtual-servers/filevs", "virtual_servers/filevs.yaml"),
    ]:
        refused = await admin(gw, "DELETE", path)
        assert refused.status_code == 409
        assert refused.json()["error"].endswith(f"is declared in {where}; change it there")
    again = await admin(gw, "POST", "/upstreams", {"id": "alpha", "transport": "http", "url": world.beta_url})
    assert again.status_code == 409
    assert again.json()["error"] == "upstream 'alpha' already exists (declared in manifold.yaml)"
    assert (await admin(gw, "GET", "/virtual-servers/filevs")).json()["source"] == "virtual_servers/filevs.yaml"
    assert await whoami(gw, "alpha") == "alpha"  # still served, unchanged


# (path, body, field, words in its reason)
INVALID = [
    ("/upstreams", {"id": "no-transport", "url": "http://127.0.0.1:9/mcp"}, "transport", "field required"),
    ("/upstreams", {"id": "typo", "transport": "http", "urll": "http://x"}, "urll", "did you mean 'url'?"),
    ("/upstreams", {"id": "Not_A_Slug", "transport": "http", "url": "http://x"}, "id", "must match"),
    ("/upstreams", {"transport": "http", "url": "http://x"}, "id", "field required"),
    ("/upstreams", {"id": "filevs", "transport": "http", "url": "http://x"}, "id", "already a virtual server id"),
    ("/upstreams", {"id": "ftp", "transport": "http", "url": "ftp://x"}, "url", "'url' must start with http://"),
    (
        "/upstreams",
        {"id": "unset", "transport": "http", "url": "http://x", "headers": {"X-Token": "${MANIFOLD_E2E_UNSET}"}},
        "headers.X-Token",
        "environment variable MANIFOLD_E2E_UNSET is not set",
    ),
    ("/virtual-servers", {"id": "ghost", "members": [{"upstream": "nope"}]}, "members[0].upstream", "unknown"),
    ("/virtual-servers", {"id": "alpha", "members": [{"upstream": "alpha"}]}, "id", "also an upstream id"),
    ("/virtual-servers", {"id": "empty", "members": []}, "members", "at least one member"),
    (
        "/virtual-servers",
        {
            "id": "clash",
            "namespace": False,
            "members": [
                {"upstream": "alpha", "id": "one", "aliases": {"echo": "say"}},
                {"upstream": "alpha", "id": "two", "aliases": {"add": "say"}},
            ],
        },
        "members[1].aliases.add",
        "'say' from member 'two' tool 'add' collides with member 'one' tool 'echo'",
    ),
    ("/groups", {"id": "typos", "upstreams": ["alpha", "alpah"]}, "upstreams[1]", "did you mean 'alpha'?"),
    ("/groups", {"id": "twice", "upstreams": ["alpha", "alpha"]}, "upstreams[1]", "listed twice"),
    ("/groups", {"id": "nothing"}, "upstreams", "field required"),
]


@pytest.mark.parametrize(("path", "body", "field", "reason"), INVALID, ids=[str(b.get("id")) for _, b, _, _ in INVALID])
async def test_invalid_bodies_are_refused_naming_the_field(
    world: World, path: str, body: dict[str, Any], field: str, reason: str
) -> None:
    answer = await admin(world.gw, "POST", path, body)
    assert answer.status_code == 400, answer.text
    problems = answer.json()["problems"]
    assert any(p["field"] == field and reason in p["reason"] for p in problems), problems
    assert (f"{field}: " if field else "") in answer.json()["error"]
    assert body.get("id") not in {e["id"] for e in (await admin(world.gw, "GET", path)).json()}  # nothing stored


async def test_a_body_that_is_not_json_is_refused(world: World) -> None:
    async with world.gw.http() as http:
        answer = await http.post(f"{world.gw.base}{API}/upstreams", content=b"id: yaml-is-for-the-cli")
    assert answer.status_code == 400
    assert answer.json() == {"error": "the body must be JSON"}


# ---- keys and grants through the API --------------------------------------------------------------------


async def test_a_key_and_a_grant_made_through_the_api_work_at_once(world: World) -> None:
    gw = world.gw
    key = await created(gw, "/keys", {"user": "frank@example.com", "name": "laptop"})
    token = key["token"]
    assert await initialize_status(gw, "alpha", token) == 403  # known, but nothing granted yet

    grant = await created(gw, "/grants", {"who": "user:frank@example.com", "what": ["server:alpha"]})
    assert await whoami(gw, "alpha", key=token) == "alpha"
    assert await initialize_status(gw, "filevs", token) == 200  # filevs is made of alpha
    listed = await admin(gw, "GET", "/keys?owner=frank@example.com")
    assert [k["id"] for k in listed.json()] == [key["id"]]
    assert "token" not in listed.json()[0]

    assert (await admin(gw, "DELETE", f"/keys/{key['id']}")).status_code == 200
    assert await initialize_status(gw, "alpha", token) == 401
    assert (await admin(gw, "DELETE", f"/grants/{grant['id']}")).status_code == 200


async def test_grants_apply_to_groups_and_virtual_servers_created_at_run_time(world: World) -> None:
    gw = world.gw
    await created(gw, "/upstreams", {"id": "delta", "transport": "http", "url": world.beta_url})
    await created(gw, "/groups", {"id": "live-group", "upstreams": ["delta"]})
    await created(gw, "/virtual-servers", {"id": "live-vs", "members": [{"upstream": "alpha", "tools": ["echo"]}]})
    token = (await created(gw, "/keys", {"user": "gina@example.com", "name": "laptop"}))["token"]
    await created(gw, "/grants", {"who": "user:gina@example.com", "what": ["group:live-group", "vserver:live-vs"]})

    assert await whoami(gw, "delta", key=token) == "beta"  # through the API-created group
    async with gw.client("live-vs", key=token) as client:  # through the API-created virtual server
        assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
        assert text_of(await client.call_tool("alpha__echo", {"text": "granted"})) == "granted"
    assert await initialize_status(gw, "alpha", token) == 403  # the virtual server grant is not all of alpha

    # The group goes: so does what it gave.
    assert (await admin(gw, "DELETE", "/groups/live-group")).status_code == 200
    assert await initialize_status(gw, "delta", token) == 403


async def test_changes_through_the_api_are_audited_without_their_bodies(world: World) -> None:
    gw = world.gw
    team = await created(gw, "/teams", {"id": "audited-team", "description": "secret-ish description"})
    refused = await admin(gw, "POST", "/teams", {"id": "audited-team"})  # exists: refused, also audited
    assert refused.status_code == 409
    # The audit is written in batches a moment later: look until both rows are there (or give up).
    deadline = anyio.current_time() + 15
    while True:
        done = await manifold_cli(gw, "audit", "--user", "dev", "--since", "10m", "--json")
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        mine = [r for r in rows if r["method"] == "admin POST" and r["target"] == f"{API}/teams"]
        if len(mine) >= 2 or anyio.current_time() > deadline:
            break
    assert [r["outcome"] for r in mine][:2] == ["error", "ok"]  # newest first
    assert all("secret-ish" not in json.dumps(r) for r in rows)
    assert (await admin(gw, "DELETE", f"/teams/{team['id']}")).status_code == 200

"""Signing in from the IDE (issue 12), with the person's part done in headless Chromium.

Real processes: the gateway (`manifold serve`) over a stdio upstream (`alpha`) and an OAuth-protected HTTP
upstream (`prot`, tests/upstreams/protected.py, whose authorization server is the node oidc-provider of
tests/idp.py), both behind the virtual server `tools`; mcp-remote (npm) as the MCP client with no key. The
browser types into the gateway's sign-in page and presses the consent page's buttons; the test adds no
header and intercepts nothing. The consent page, the person's servers page and the connections page with an
allowed application are kept as screenshots (docs/screenshots/ by `make screenshots`) and checked with axe-core.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import KEY, Gateway, run_gateway, stdio_upstream
from tests.idp import run_idp
from tests.upstreams.launch import free_port, run_http_upstream
from tests.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = str(ROOT / "upstreams" / "upstream_min.py")
PROTECTED = str(ROOT / "upstreams" / "protected.py")
MCP_REMOTE = str(ROOT / "node" / "node_modules" / "mcp-remote" / "dist" / "proxy.js")
NODE = str(ROOT / "node" / "node_modules" / ".bin" / "node")
ALPHA, PROT, VSERVER = "alpha", "prot", "tools"
REDIRECT = "http://127.0.0.1:43219/callback"  # a native app's loopback redirect; nothing listens there


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="manifold-browser-oauth-") as tmp:
        async with run_idp([]) as idp:
            args = ("--issuer", idp.issuer, "--scopes", "mcp:tools", "--record", str(Path(tmp) / "seen.jsonl"))
            async with run_http_upstream(PROTECTED, *args) as protected_url:
                upstreams = {
                    ALPHA: stdio_upstream(UPSTREAM, "--transport", "stdio"),
                    PROT: {
                        "transport": "http",
                        "url": protected_url,
                        "auth": {"mode": "oauth", "allow_insecure_discovery": True},
                    },
                }
                servers = {VSERVER: {"description": "Everything", "members": [{"upstream": ALPHA}, {"upstream": PROT}]}}
                extra = {
                    "users": {"nora@corp.com": {}, "omar@corp.com": {}},
                    "grants": [
                        {"who": "user:dev", "what": ["server:*", "vserver:*"]},
                        {"who": "user:nora@corp.com", "what": [f"server:{ALPHA}"]},
                    ],
                    "identity": {"authorization_server": {"registrations_per_minute": 1000}},
                }
                async with run_gateway(upstreams, servers, extra=extra) as gateway:
                    yield gateway
                    assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


async def sign_in(page: Page, key: str = KEY) -> None:
    """On the gateway's sign-in page: type the key, press Sign in."""
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "pad", "version": "1"}},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


# ---- mcp-remote, the person's part in the browser ----------------------------------------------------------


async def test_mcp_remote_signs_in_through_the_browser_and_calls_a_tool(
    gw: Gateway, new_page: NewPage, tmp_path: Path
) -> None:
    """mcp-remote with no key: it registers, prints the authorization URL (its BROWSER is `true`); the person
    opens it, signs in, reads the consent page (the client's name, where it sends them back, the server) and
    allows; mcp-remote's callback server gets the code, and the tools are listed and called."""
    port = free_port()
    errlog = tmp_path / "mcp-remote.log"
    env = {**os.environ, "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "auth"), "BROWSER": "/bin/true"}
    params = StdioServerParameters(command=NODE, args=[MCP_REMOTE, gw.url(VSERVER), str(port)], env=env)
    page = await new_page()

    async def person() -> None:
        found: list[str] = []

        def printed() -> bool:
            text = errlog.read_text(errors="replace") if errlog.exists() else ""
            found[:] = re.findall(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)", text)
            return bool(found)

        await wait_for(printed, 60, what="mcp-remote printing the authorization URL")
        await page.goto(found[0])
        await sign_in(page)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Allow MCP CLI Proxy?")
        main = page.get_by_role("main")
        await expect(main).to_contain_text(f"localhost:{port}")  # where it sends the person back
        await expect(main).to_contain_text(gw.url(VSERVER))  # what it asks for
        await look(page, "gateway-consent")
        await page.get_by_role("button", name="Allow").click()
        await page.wait_for_url(f"http://localhost:{port}/**")  # mcp-remote's own callback page

    with errlog.open("w") as log_file:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(person)
            async with Client(stdio_client(params, errlog=log_file), mode="legacy") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert f"{ALPHA}__echo" in names
                result = await client.call_tool(f"{ALPHA}__echo", {"text": "via the browser"})
                assert not result.is_error and "via the browser" in str(result.content)
    # The application is now listed on the person's connections page.
    await page.goto(gw.base + "/connections")
    await expect(page.get_by_role("main")).to_contain_text("MCP CLI Proxy")


# ---- the person's servers page -----------------------------------------------------------------------------


async def test_the_servers_page_shows_each_server_with_key_less_snippets(gw: Gateway, new_page: NewPage) -> None:
    page = await new_page()
    await page.goto(gw.base + "/")  # the gateway's root, signed out: the sign-in, then the servers page
    await sign_in(page)
    await page.wait_for_url(gw.base + "/servers")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your servers")
    main = page.get_by_role("main")
    for server in (VSERVER, ALPHA, PROT):
        await expect(main.get_by_role("heading", level=2, name=server, exact=True)).to_be_visible()
    await expect(main).to_contain_text(f"claude mcp add --transport http {VSERVER} {gw.url(VSERVER)}")
    await expect(main).to_contain_text('"url": "' + gw.url(VSERVER) + '"')
    assert "Authorization" not in await main.inner_text()  # no snippet needs a key
    # The OAuth upstream behind `tools`: not connected yet, with the link that connects it.
    await expect(main).to_contain_text("Not connected")
    await look(page, "servers")
    # Its link connects it: the gateway's consent, then the upstream's authorization server (its own pages).
    await page.get_by_role("link", name=f"Connect {PROT}").first.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Connect {PROT}")
    await page.get_by_role("button", name=f"Connect {PROT}").click()
    await page.locator("input[name=login]").fill("dev")
    await page.locator("input[name=password]").fill("any password")
    await page.get_by_role("button", name="Sign-in").click()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    # Every page's header leads back to the servers page, which now says so.
    await page.get_by_role("link", name="Your servers").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your servers")
    await expect(main).to_contain_text(f"{PROT} Connected")
    await expect(main).not_to_contain_text("Not connected")


async def test_the_servers_page_lists_only_what_the_grants_allow(gw: Gateway, new_page: NewPage) -> None:
    """nora may use the upstream `alpha` (a grant in manifold.yaml), omar nothing: the relay's own decisions."""
    async with gw.http() as http:
        made = await http.post(f"{gw.base}/admin/api/keys", json={"user": "nora@corp.com", "name": "web"})
        nora = made.json()["token"]
        made = await http.post(f"{gw.base}/admin/api/keys", json={"user": "omar@corp.com", "name": "web"})
        omar = made.json()["token"]
    page = await new_page()
    await page.goto(gw.base + "/servers")
    await sign_in(page, nora)
    await page.wait_for_url(gw.base + "/servers")
    main = page.get_by_role("main")
    # `alpha` alone, and `tools` for its `alpha` tools: not `prot`, nor its account inside `tools`.
    await expect(main.get_by_role("heading", level=2)).to_have_text([ALPHA, VSERVER])
    await expect(main).not_to_contain_text(gw.url(PROT))
    await expect(main).not_to_contain_text("Not connected")
    async with httpx2.AsyncClient(timeout=30) as http:  # the relay decides alike
        for server, status in ((ALPHA, 200), (VSERVER, 200), (PROT, 403)):
            answer = await http.post(gw.url(server), json=INITIALIZE, headers=bearer(nora))
            assert answer.status_code == status, (server, answer.text)
    other = await new_page(phone=True)  # another person's browser… in a phone's size
    await other.goto(gw.base + "/servers")
    await sign_in(other, omar)
    await expect(other.get_by_role("main")).to_contain_text("You may not use any server")


# ---- allowed applications on /connections ------------------------------------------------------------------


async def test_revoking_an_application_on_the_connections_page_ends_its_token_at_once(
    gw: Gateway, new_page: NewPage
) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        registered = await http.post(
            f"{gw.base}/register",
            json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "Pad IDE"},
        )
        client_id = registered.json()["client_id"]
        verifier, challenge = pkce()
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": gw.url(ALPHA),
        }
        page = await new_page()
        await page.goto(gw.base + "/authorize?" + urlencode(query))
        await sign_in(page)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Allow Pad IDE?")
        async with page.expect_request(lambda r: r.url.startswith(REDIRECT)) as sent_back:
            await page.get_by_role("button", name="Allow").click()
        code = parse_qs(urlsplit((await sent_back.value).url).query)["code"][0]
        tokens = await http.post(
            f"{gw.base}/token",
            data={
                "client_id": client_id,
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": REDIRECT,
                "resource": gw.url(ALPHA),
            },
        )
        assert tokens.status_code == 200, tokens.text
        access, refresh = tokens.json()["access_token"], tokens.json()["refresh_token"]

        async def call() -> httpx2.Response:
            return await http.post(gw.url(ALPHA), json=INITIALIZE, headers=bearer(access))

        assert (await call()).status_code == 200
        page = await new_page()  # another tab of the same browser (the first one shows the failed redirect)
        await page.goto(gw.base + "/connections")
        main = page.get_by_role("main")
        await expect(main).to_contain_text("Pad IDE")
        await expect(main).to_contain_text(client_id)
        await look(page, "connections-apps")
        await page.get_by_role("button", name="Revoke Pad IDE").click()
        await expect(page.get_by_role("status")).to_contain_text("Revoked the application")
        await expect(main).not_to_contain_text("Pad IDE")
        refused = await call()  # right after: no wait, no retry
        assert refused.status_code == 401 and "revoked" in refused.json()["error_description"], refused.text
        again = await http.post(
            f"{gw.base}/token", data={"client_id": client_id, "grant_type": "refresh_token", "refresh_token": refresh}
        )
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

"""Connecting a user's account to an OAuth-protected upstream, end to end, with nothing faked.

Real processes: the OpenID provider (node oidc-provider, tests/idp.py) as the upstream's authorization server,
a FastMCP upstream that validates its JWTs and audience and records the token of every request
(tests/upstreams/protected.py), and the gateway (`manifold serve`). The "browser" is an HTTP client with a
cookie jar that reads the pages' forms the way a person would: open the link the MCP client was given, sign
in to the gateway with an API key, approve on the consent page, sign in and approve at the authorization
server, land on the gateway's callback. Then the very call that asked for the connection works.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import MCPError, UrlElicitationRequiredError
from mcp_types import URL_ELICITATION_REQUIRED

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import KITCHEN, free_port, run_http_upstream

pytestmark = pytest.mark.anyio

PROTECTED = str(Path(__file__).resolve().parents[1] / "upstreams" / "protected.py")
SERVER = "prot"
# Gateway user → the login they use at the authorization server (whose tokens carry it as `sub`).
USERS = {"alice@corp.com": "alice", "bob@corp.com": "bob"}
HTML_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
CONNECT_TEXT = re.compile(r"Open (\S+) in your browser")


# ---- the world: authorization server, protected upstream, gateway ------------------------------------------


@dataclass
class Upstream:
    url: str
    record: Path

    def seen(self) -> list[dict[str, Any]]:
        """What the upstream received, one entry per authenticated request: method, authorization, sub."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def tool_calls(self) -> list[dict[str, Any]]:
        return [entry for entry in self.seen() if entry["method"] == "tools/call"]


@dataclass
class World:
    idp: Idp
    upstream: Upstream


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    with tempfile.TemporaryDirectory(prefix="manifold-connect-") as tmp:
        record = Path(tmp) / "seen.jsonl"
        async with run_idp() as idp:
            args = ("--issuer", idp.issuer, "--scopes", "mcp:tools", "--record", str(record))
            async with run_http_upstream(PROTECTED, *args) as url:
                yield World(idp, Upstream(url, record))


@dataclass
class Site:
    gw: Gateway
    upstream: Upstream
    keys: dict[str, str] = field(default_factory=dict)  # gateway user → API key

    def browser(self) -> Browser:
        return Browser(self.gw)


@asynccontextmanager
async def run_site(world: World, directory: Path | None = None) -> AsyncIterator[Site]:
    """The gateway serving the protected upstream as server `prot`, with an API key for each user."""
    upstreams = {
        SERVER: {
            "transport": "http",
            "url": world.upstream.url,
            # The authorization server is discovered from the upstream's 401 (RFC 9728 → RFC 8414 / OIDC) and
            # the gateway registers itself (RFC 7591). http and loopback are allowed here only because both
            # servers are ours, on 127.0.0.1.
            "auth": {"mode": "oauth", "allow_insecure_discovery": True},
        }
    }
    extra = {"users": {user: {} for user in USERS}}
    async with run_gateway(upstreams, extra=extra, directory=directory) as gw:
        site = Site(gw, world.upstream)
        keys_file = gw.config_dir / "test-keys.json"
        if keys_file.exists():  # the same directory again: the keys are in its database already
            site.keys = json.loads(keys_file.read_text())
        else:
            for user in USERS:
                done = await manifold_cli(gw, "keys", "create", "--user", user, "--name", "laptop", "--json")
                site.keys[user] = json.loads(done.stdout)["token"]
            keys_file.write_text(json.dumps(site.keys))
        yield site


@pytest.fixture
async def site(world: World) -> AsyncIterator[Site]:
    async with run_site(world) as site:
        yield site


# ---- the browser ----------------------------------------------------------------------------------------------


def hidden_fields(page: str) -> dict[str, str]:
    return {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }


def forms(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each form on the page: (action, its hidden fields)."""
    found = re.findall(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    return [(html.unescape(action), hidden_fields(body)) for action, body in found]


def form(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the (first) form posting to `action`."""
    for posted_to, fields in forms(page):
        if posted_to == action:
            return fields
    raise AssertionError(f"no form posting to {action} on the page:\n{page}")


def alert(page: str) -> str:
    found = re.search(r'role="alert">(.*?)</p>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) if found else ""


class Browser:
    """A cookie jar and the habits of a browser: redirects followed one at a time (so each can be checked),
    `Origin` on every form post."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.http = httpx2.AsyncClient(timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    def absolute(self, url: str) -> str:
        return urljoin(self.gw.base + "/", url)

    async def get(self, url: str) -> httpx2.Response:
        return await self.http.get(self.absolute(url))

    async def post(self, url: str, form: dict[str, str], *, origin: str | None = None) -> httpx2.Response:
        url = self.absolute(url)
        parts = urlsplit(url)
        headers = {"Origin": origin or f"{parts.scheme}://{parts.netloc}"}
        return await self.http.post(url, data=form, headers=headers)

    async def sign_in(self, key: str, next_url: str = "/connections") -> httpx2.Response:
        """Fill in and send the gateway's sign-in form; the answer is the redirect to `next_url`."""
        page = await self.get("/login?" + urlencode({"next": next_url}))
        assert page.status_code == 200, page.text
        return await self.post("/login", {**form(page.text, "/login"), "key": key})

    async def consent_page(self, link: str, key: str) -> httpx2.Response:
        """Open a connect link; sign in first when the gateway asks for it. The answer is the page shown."""
        page = await self.get(link)
        if page.status_code == 303 and page.headers["location"].startswith("/login?"):
            next_url = parse_qs(urlsplit(page.headers["location"]).query)["next"][0]
            assert urlsplit(link).path in next_url  # back to the link after signing in
            signed_in = await self.sign_in(key, next_url)
            assert signed_in.status_code == 303, signed_in.text
            page = await self.get(signed_in.headers["location"])
        return page

    async def connect(self, link: str, key: str, login: str) -> httpx2.Response:
        """The whole flow a person goes through; the answer is the gateway's last page."""
        consent = await self.consent_page(link, key)
        assert consent.status_code == 200, consent.text
        assert "Connect <strong>prot</strong>" in consent.text
        approved = await self.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
        assert approved.status_code == 303, approved.text
        callback = await self.authorize_at_server(approved.headers["location"], login)
        return await self.get(callback)

    async def authorize_at_server(self, location: str, login: str) -> str:
        """Answer the authorization server's sign-in and consent pages until it sends us back to the gateway;
        the answer is the callback URL (not yet opened)."""
        url = location
        for _ in range(12):
            if url.startswith(self.gw.base):
                return url
            response = await self.http.get(url)
            if response.status_code in (302, 303):
                url = urljoin(url, response.headers["location"])
                continue
            assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:500]}"
            ((action, fields),) = forms(response.text)
            if fields.get("prompt") == "login":
                answer = {"prompt": "login", "login": login, "password": "any"}
            else:
                answer = {"prompt": "consent"}
            response = await self.post(urljoin(url, action), answer)
            assert response.status_code in (302, 303), response.text[:500]
            url = urljoin(url, response.headers["location"])
        raise AssertionError("the authorization server never sent the browser back to the gateway")


@asynccontextmanager
async def browser(site: Site) -> AsyncIterator[Browser]:
    b = site.browser()
    try:
        yield b
    finally:
        await b.aclose()


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def link_from_plain_client(site: Site, user: str) -> str:
    """The connect URL as a client without URL elicitation sees it: in the tool result's text."""
    async with site.gw.client(SERVER, key=site.keys[user]) as client:
        result = await client.call_tool("whoami", {})
    assert result.is_error, text_of(result)
    found = CONNECT_TEXT.search(text_of(result))
    assert found, text_of(result)
    return found.group(1)


async def whoami(site: Site, user: str) -> types.CallToolResult:
    async with site.gw.client(SERVER, key=site.keys[user]) as client:
        return await client.call_tool("whoami", {})


async def connect(site: Site, user: str) -> None:
    link = await link_from_plain_client(site, user)
    async with browser(site) as b:
        done = await b.connect(link, site.keys[user], USERS[user])
    assert done.status_code == 200, done.text
    assert "is connected" in done.text


# ---- the three ways a client learns it must connect -------------------------------------------------------------


async def test_handshake_client_with_url_elicitation_gets_32042_then_connects(site: Site) -> None:
    user = "alice@corp.com"
    async with site.gw.client(SERVER, key=site.keys[user], elicitation_callback=_never_called) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("whoami", {})
        assert raised.value.code == URL_ELICITATION_REQUIRED  # -32042
        (elicitation,) = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
        link = elicitation.url
        assert link.startswith(f"{site.gw.base}/connect/{SERVER}?t=")  # the gateway's page, not the server's
        assert user not in link  # no personal data in the URL

        async with browser(site) as b:
            done = await b.connect(link, site.keys[user], USERS[user])
        assert done.status_code == 200, alert(done.text)
        assert "You can close this window" in done.text.replace("\n", " ")

        result = await client.call_tool("whoami", {})  # the same session, the same call: now it works
    assert not result.is_error and text_of(result) == "alice"
    calls = site.upstream.tool_calls()
    assert calls and calls[-1]["sub"] == "alice"


async def _never_called(context: Any, params: Any) -> types.ElicitResult:
    raise AssertionError("a 2025-11-25 client is told with -32042, not asked with elicitation/create")


async def test_modern_client_gets_input_required_and_its_retry_succeeds(site: Site) -> None:
    user = "bob@corp.com"
    asked: list[types.ElicitRequestURLParams] = []

    async def open_in_browser(context: Any, params: types.ElicitRequestURLParams) -> types.ElicitResult:
        # What a 2026-07-28 client does with a URL-mode elicitation: show the URL; the user opens it.
        asked.append(params)
        async with browser(site) as b:
            done = await b.connect(params.url, site.keys[user], USERS[user])
        assert done.status_code == 200, done.text
        return types.ElicitResult(action="accept")

    async with site.gw.client(
        SERVER, key=site.keys[user], mode="2026-07-28", elicitation_callback=open_in_browser
    ) as client:
        # The client retries by itself with `inputResponses` and the gateway's signed `requestState`.
        result = await client.call_tool("whoami", {})
    assert [p.mode for p in asked] == ["url"]
    assert asked[0].url.startswith(f"{site.gw.base}/connect/{SERVER}?t=")
    assert not result.is_error and text_of(result) == "bob"


async def test_client_without_url_elicitation_gets_an_absolute_url_in_the_tool_error(site: Site) -> None:
    user = "alice@corp.com"
    link = await link_from_plain_client(site, user)
    assert link.startswith(f"{site.gw.base}/connect/{SERVER}?t=")
    async with browser(site) as b:
        done = await b.connect(link, site.keys[user], USERS[user])
        assert done.status_code == 200
        for name, value in HTML_SECURITY_HEADERS.items():
            assert done.headers[name] == value
        listed = await b.get("/connections")
    assert listed.status_code == 200 and ">prot<" in listed.text
    result = await whoami(site, user)
    assert not result.is_error and text_of(result) == "alice"


# ---- two users, one upstream --------------------------------------------------------------------------------------


async def test_each_users_calls_carry_that_users_own_token(site: Site) -> None:
    await connect(site, "alice@corp.com")
    await connect(site, "bob@corp.com")
    before = len(site.upstream.seen())
    results: dict[str, list[str]] = {"alice@corp.com": [], "bob@corp.com": []}

    async def calls(user: str) -> None:
        async with site.gw.client(SERVER, key=site.keys[user]) as client:
            for _ in range(5):
                results[user].append(text_of(await client.call_tool("whoami", {})))

    async with anyio.create_task_group() as tg:
        for user in USERS:
            tg.start_soon(calls, user)
    assert results == {"alice@corp.com": ["alice"] * 5, "bob@corp.com": ["bob"] * 5}
    calls_seen = [e for e in site.upstream.seen()[before:] if e["method"] == "tools/call"]
    assert len(calls_seen) == 10
    tokens = {e["sub"]: set() for e in calls_seen}
    for e in calls_seen:
        tokens[e["sub"]].add(e["authorization"])
    assert set(tokens) == {"alice", "bob"} and not (tokens["alice"] & tokens["bob"])
    for e in calls_seen:
        assert e["authorization"] not in (f"Bearer {k}" for k in site.keys.values())  # never the gateway key


async def test_someone_elses_link_connects_nothing(site: Site) -> None:
    alices_link = await link_from_plain_client(site, "alice@corp.com")
    async with browser(site) as mallory:  # bob, signed in as himself, opens the link alice was given
        page = await mallory.consent_page(alices_link, site.keys["bob@corp.com"])
        assert page.status_code == 403
        assert "made for a different user" in page.text and "Nothing was connected" in page.text
        assert [action for action, _ in forms(page.text)] == ["/logout"]  # no consent button to press
        # Posting a consent form anyway, with bob's own session and a form token of his, is refused too.
        his_token = form(page.text, "/logout")["csrf"]
        t = parse_qs(urlsplit(alices_link).query)["t"][0]
        forged = await mallory.post(f"/connect/{SERVER}", {"t": t, "csrf": his_token})
        assert forged.status_code == 403 and "location" not in forged.headers
    listed = await manifold_cli(site.gw, "connections", "list", "--json")
    assert json.loads(listed.stdout) == []
    assert (await whoami(site, "alice@corp.com")).is_error  # still not connected


# ---- revoking ---------------------------------------------------------------------------------------------------


async def test_revoke_in_the_browser_and_from_the_cli(site: Site) -> None:
    user = "alice@corp.com"
    await connect(site, user)
    assert text_of(await whoami(site, user)) == "alice"

    async with browser(site) as b:
        assert (await b.sign_in(site.keys[user])).status_code == 303
        page = await b.get("/connections")
        assert page.status_code == 200 and ">prot<" in page.text
        revoked = await b.post("/connections", form(page.text, "/connections"))
        assert revoked.status_code == 200 and "Revoked prot" in revoked.text
        assert "no connected accounts" in revoked.text
    again = await whoami(site, user)
    assert again.is_error and CONNECT_TEXT.search(text_of(again))

    await connect(site, user)
    listed = json.loads((await manifold_cli(site.gw, "connections", "list", "--user", user, "--json")).stdout)
    assert [(c["user"], c["upstream"], c["status"]) for c in listed] == [(f"user:{user}", SERVER, "ok")]
    assert "token" not in json.dumps(listed).replace("token_", "")  # a listing never shows a token
    assert text_of(await whoami(site, user)) == "alice"
    await manifold_cli(site.gw, "connections", "revoke", "--user", user, "--upstream", SERVER)
    again = await whoami(site, user)  # the running gateway forgot the token at once
    assert again.is_error and CONNECT_TEXT.search(text_of(again))


# ---- restarts -------------------------------------------------------------------------------------------------


async def test_connections_survive_a_gateway_restart(world: World, tmp_path: Path) -> None:
    async with run_site(world, tmp_path) as site:
        await connect(site, "bob@corp.com")
        assert text_of(await whoami(site, "bob@corp.com")) == "bob"
    async with run_site(world, tmp_path) as site:
        result = await whoami(site, "bob@corp.com")
        assert not result.is_error and text_of(result) == "bob"


# ---- the pages' own defences -------------------------------------------------------------------------------------


async def test_pages_refuse_forgery_and_explain_failures(site: Site) -> None:
    user = "alice@corp.com"
    link = await link_from_plain_client(site, user)
    async with browser(site) as b:
        login_page = await b.get("/login?next=/connections")
        for name, value in HTML_SECURITY_HEADERS.items():
            assert login_page.headers[name] == value
        cookie = login_page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie

        # Sign-in: a wrong key says so; a form from another site is refused; `next` cannot leave the gateway.
        wrong = await b.post("/login", {**form(login_page.text, "/login"), "key": "mfk_nope_nope"})
        assert wrong.status_code == 401 and "Sign-in failed" in alert(wrong.text)
        page = await b.get("/login")
        fields = {**form(page.text, "/login"), "key": site.keys[user]}
        cross = await b.post("/login", fields, origin="http://evil.example")
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        signed_in = await b.sign_in(site.keys[user], next_url="//evil.example/phish")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/servers"  # the default page

        # Consent: no token, or one from another page, gets nothing started.
        consent = await b.consent_page(link, site.keys[user])
        t = form(consent.text, f"/connect/{SERVER}")["t"]
        no_token = await b.post(f"/connect/{SERVER}", {"t": t})
        assert no_token.status_code == 403 and "location" not in no_token.headers
        logout_token = form(consent.text, "/logout")["csrf"]  # a real token of this session, for another form
        wrong_token = await b.post(f"/connect/{SERVER}", {"t": t, "csrf": logout_token})
        assert wrong_token.status_code == 403

        # A link that was altered, and a callback nobody started, are explained, not a traceback.
        altered = await b.get(link[:-4] + "AAAA")
        assert altered.status_code == 400 and "not valid" in alert(altered.text)
        stray = await b.get("/oauth/callback?code=abc&state=made-up")
        assert stray.status_code == 400 and "start again" in alert(stray.text)
        assert "Traceback" not in stray.text

        # Signing out ends the session: the link asks to sign in again.
        out = await b.post("/logout", {"csrf": logout_token})
        assert out.status_code == 200 and "Signed out" in out.text
        again = await b.get(link)
        assert again.status_code == 303 and again.headers["location"].startswith("/login?")


# ---- signing in to the gateway through the organisation's IdP --------------------------------------------------

MCP_AUDIENCE = "https://manifold.e2e.test/mcp"


async def test_sign_in_through_the_organisations_idp_then_connect(world: World) -> None:
    """Carol's MCP client uses her IdP token; in the browser she signs in to the gateway at the same IdP
    (OpenID Connect, `identity.web_login`) rather than with a key, and is recognised as the same principal."""
    web = IdpClient(
        "manifold-web",
        client_secret="web-secret",
        # A loopback redirect URI on any port (RFC 8252 §7.3): the gateway's port is chosen when it starts.
        metadata={
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/login/callback"],
            "grant_types": ["authorization_code"],
        },
    )
    accounts = {"carol": {"email": "carol@corp.com", "email_verified": True}}
    async with run_idp([web, IdpClient("ide")], accounts=accounts) as corp:
        upstreams = {
            SERVER: {
                "transport": "http",
                "url": world.upstream.url,
                "auth": {"mode": "oauth", "allow_insecure_discovery": True},
            }
        }
        extra = {
            "identity": {
                "idps": {"corp": {"issuer": corp.issuer, "audience": [MCP_AUDIENCE]}},
                "web_login": {"idp": "corp", "client_id": "manifold-web", "client_secret": "web-secret"},
            }
        }
        async with run_gateway(upstreams, extra=extra) as gw:
            token = await corp.user_token("carol", client_id="ide", resource=MCP_AUDIENCE)
            async with gw.client(SERVER, key=token) as client:
                first = await client.call_tool("whoami", {})
                link = CONNECT_TEXT.search(text_of(first)).group(1)

                b = Browser(gw)
                try:
                    to_login = await b.get(link)
                    assert to_login.status_code == 303
                    login_page = await b.get(to_login.headers["location"])
                    idp_link = re.search(r'href="(/login/oidc\?[^"]+)"', login_page.text)
                    assert idp_link, login_page.text
                    to_idp = await b.get(html.unescape(idp_link.group(1)))
                    assert to_idp.status_code == 303 and to_idp.headers["location"].startswith(corp.issuer)
                    callback = await b.authorize_at_server(to_idp.headers["location"], "carol")
                    assert urlsplit(callback).path == "/login/callback"
                    signed_in = await b.get(callback)
                    assert signed_in.status_code == 303, alert(signed_in.text)
                    consent = await b.get(signed_in.headers["location"])  # back to the link, now signed in
                    assert consent.status_code == 200, alert(consent.text)
                    assert "for <strong>user:carol@corp.com</strong>" in consent.text
                    approved = await b.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
                    done = await b.get(await b.authorize_at_server(approved.headers["location"], "carol"))
                    assert done.status_code == 200, alert(done.text)

                    # A callback replayed without the browser's own sign-in cookie signs nobody in.
                    other = Browser(gw)
                    try:
                        replay = await other.get(callback)
                        assert replay.status_code == 400 and "another browser" in alert(replay.text)
                    finally:
                        await other.aclose()
                finally:
                    await b.aclose()

                result = await client.call_tool("whoami", {})
            assert not result.is_error and text_of(result) == "carol"


# ---- refresh: one at a time per (user, upstream) ------------------------------------------------------------


def _modern_call(tool: str) -> tuple[dict[str, str], bytes]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}, "_meta": meta}}
    return headers, json.dumps(body).encode()


async def _expire_stored_token(gw: Gateway, principal_id: str) -> None:
    """What time does to a stored connection: its access token is past its expiry (the refresh token is fine).
    Written by another process, as the CLI or a replica would, so the running gateway must notice."""
    import time

    from manifold.outbound.oauth import Vault
    from manifold.outbound.oauth.tables import CONNECTIONS_SCOPE
    from manifold.security.crypto import Cipher
    from manifold.store import revisions
    from manifold.store.db import open_database

    state = gw.config_dir / "state"
    engine = await open_database(gw.database_url)
    try:
        vault = Vault(engine, Cipher.load(state))
        stored = await vault.get(principal_id, SERVER)
        assert stored is not None and stored.refresh_token
        await vault.put(stored.with_tokens(expires_at=time.time() - 5, updated_at=time.time()))
        async with engine.begin() as conn:
            await revisions.bump(conn, CONNECTIONS_SCOPE)
    finally:
        await engine.dispose()


async def test_a_hundred_concurrent_calls_with_an_expired_token_cause_one_refresh(site: Site, world: World) -> None:
    user = "alice@corp.com"
    await connect(site, user)
    first = await whoami(site, user)
    assert not first.is_error and text_of(first) == "alice"
    await _expire_stored_token(site.gw, f"user:{user}")

    headers, body = _modern_call("whoami")
    headers["Authorization"] = f"Bearer {site.keys[user]}"
    async with httpx2.AsyncClient(timeout=60) as http:
        # Any request makes the gateway look at what changed; server/discover needs no upstream credential
        # (2026-07-28 has no ping).
        discover = {**headers, "Mcp-Method": "server/discover"}
        discover.pop("Mcp-Name")
        content = body.replace(b'"tools/call"', b'"server/discover"')
        discovered = await http.post(site.gw.url(SERVER), headers=discover, content=content)
        assert discovered.status_code == 200, discovered.text
        before = await world.idp.counts()
        replies: list[httpx2.Response] = []

        async def call() -> None:
            replies.append(await http.post(site.gw.url(SERVER), headers=headers, content=body))

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(call)
        after = await world.idp.counts()

    assert [r.status_code for r in replies] == [200] * 100
    texts = {r.json()["result"]["content"][0]["text"] for r in replies}
    assert texts == {"alice"}, texts
    refreshes = after["grants"].get("refresh_token", 0) - before["grants"].get("refresh_token", 0)
    assert refreshes == 1
    tokens = {entry["authorization"] for entry in site.upstream.tool_calls()[-100:]}
    assert len(tokens) == 1  # every call carried the one refreshed token


async def test_a_connect_link_starts_one_connection_only(site: Site) -> None:
    user = "alice@corp.com"
    link = await link_from_plain_client(site, user)
    async with browser(site) as b:
        done = await b.connect(link, site.keys[user], USERS[user])
        assert done.status_code == 200, alert(done.text)
        again = await b.get(link)  # the same browser, still signed in
    assert again.status_code == 400
    assert "already used" in again.text
    assert all(again.headers[name] == value for name, value in HTML_SECURITY_HEADERS.items())


async def test_repeated_failed_sign_ins_are_slowed_down(site: Site) -> None:
    async with browser(site) as b:
        for _ in range(10):
            failed = await b.sign_in("mfk_000000000000_" + "x" * 43)
            assert failed.status_code == 401
        refused = await b.sign_in("mfk_000000000000_" + "y" * 43)
        # Only failures are limited: someone else behind the same address (one NAT) still signs in.
        signed_in = await b.sign_in(site.keys["alice@corp.com"])
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text
    assert signed_in.status_code == 303, signed_in.text


# ---- a connect flow a person can follow (issue 11) ----------------------------------------------------------------

CONNECT_TOOL = f"{SERVER}__connect_account"


def tool_names(listed: types.ListToolsResult) -> set[str]:
    return {t.name for t in listed.tools}


async def listed_by(site: Site, user: str, server: str = SERVER) -> types.ListToolsResult:
    async with site.gw.client(server, key=site.keys[user]) as client:
        return await client.list_tools()


async def link_from_connect_tool(site: Site, user: str, server: str = SERVER) -> str:
    """What a model does with the tool list of an upstream the user has not connected: call the connect tool,
    whose answer (to a client without URL elicitation) is the text with the user's own link."""
    async with site.gw.client(server, key=site.keys[user]) as client:
        result = await client.call_tool(CONNECT_TOOL, {})
    assert result.is_error, text_of(result)
    found = CONNECT_TEXT.search(text_of(result))
    assert found, text_of(result)
    return found.group(1)


async def test_an_unconnected_member_is_listed_as_a_connect_tool_per_user_and_grant(world: World) -> None:
    """One virtual server with the OAuth upstream and a plain one. Alice has connected: she sees its real tools.
    Bob has not: he sees one tool that says so, and calling it gives him his own link. Dave has no grant on the
    OAuth upstream: he sees nothing of it, not even the connect tool."""
    upstreams = {
        SERVER: {
            "transport": "http",
            "url": world.upstream.url,
            "auth": {"mode": "oauth", "allow_insecure_discovery": True},
        },
        "local": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "local"),
    }
    servers = {"work": {"members": [{"upstream": SERVER}, {"upstream": "local"}]}}
    users = {**USERS, "dave@corp.com": "dave"}
    extra = {
        "users": {user: {} for user in users},
        "grants": [
            {"who": "user:alice@corp.com", "what": ["server:*", "vserver:*"]},
            {"who": "user:bob@corp.com", "what": ["server:*", "vserver:*"]},
            {"who": "user:dave@corp.com", "what": ["server:local"]},
        ],
    }
    async with run_gateway(upstreams, servers, extra=extra) as gw:
        site = Site(gw, world.upstream)
        for user in users:
            done = await manifold_cli(gw, "keys", "create", "--user", user, "--name", "laptop", "--json")
            site.keys[user] = json.loads(done.stdout)["token"]

        before = await listed_by(site, "alice@corp.com", "work")
        local_tools = {n for n in tool_names(before) if n.startswith("local__")}
        assert local_tools and tool_names(before) == local_tools | {CONNECT_TOOL}
        (tool,) = [t for t in before.tools if t.name == CONNECT_TOOL]
        assert tool.description == (
            f"{SERVER} is not connected for you yet. Call this tool to get a link that connects your account; "
            "after you connect, its tools appear here."
        )

        alices_link = await link_from_connect_tool(site, "alice@corp.com", "work")
        assert alices_link.startswith(f"{gw.base}/connect/{SERVER}?t=")
        async with browser(site) as b:
            done = await b.connect(alices_link, site.keys["alice@corp.com"], "alice")
        assert done.status_code == 200, alert(done.text)

        alice = tool_names(await listed_by(site, "alice@corp.com", "work"))
        assert f"{SERVER}__whoami" in alice and CONNECT_TOOL not in alice and local_tools <= alice
        bob = tool_names(await listed_by(site, "bob@corp.com", "work"))
        assert bob == local_tools | {CONNECT_TOOL}
        dave = tool_names(await listed_by(site, "dave@corp.com", "work"))
        assert dave == local_tools
        async with gw.client("work", key=site.keys["dave@corp.com"]) as client:
            with pytest.raises(MCPError, match="Unknown tool"):
                await client.call_tool(CONNECT_TOOL, {})

        bobs_link = await link_from_connect_tool(site, "bob@corp.com", "work")
        assert bobs_link != alices_link
        async with browser(site) as b:
            done = await b.connect(bobs_link, site.keys["bob@corp.com"], "bob")
        assert done.status_code == 200, alert(done.text)
        async with gw.client("work", key=site.keys["bob@corp.com"]) as client:
            assert CONNECT_TOOL not in tool_names(await client.list_tools())
            assert text_of(await client.call_tool(f"{SERVER}__whoami", {})) == "bob"


async def test_connecting_and_revoking_tell_only_that_users_sessions(site: Site) -> None:
    """Alice on a 2025-11-25 session, bob on a 2026-07-28 listen stream. Alice connecting changes her list
    (list_changed on her GET stream) and nobody else's; bob connecting (asked by URL elicitation, retrying the
    connect tool after) tells his listen stream; alice revoking brings her connect tool back, with list_changed."""
    alice, bob = "alice@corp.com", "bob@corp.com"
    alice_heard: list[str] = []
    alice_changed = anyio.Event()
    bob_heard: list[str] = []
    bob_changed = anyio.Event()

    async def on_alice(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            alice_heard.append(message.method)
            alice_changed.set()

    async def bob_opens_the_link(context: Any, params: types.ElicitRequestURLParams) -> types.ElicitResult:
        async with browser(site) as b:
            done = await b.connect(params.url, site.keys[bob], USERS[bob])
        assert done.status_code == 200, alert(done.text)
        return types.ElicitResult(action="accept")

    async with (
        site.gw.client(SERVER, key=site.keys[alice], message_handler=on_alice) as alices,
        site.gw.client(SERVER, key=site.keys[bob], mode="2026-07-28", elicitation_callback=bob_opens_the_link) as bobs,
        bobs.listen(tools_list_changed=True) as bobs_stream,
        anyio.create_task_group() as tg,
    ):

        async def hear_bob() -> None:
            async for event in bobs_stream:
                bob_heard.append(type(event).__name__)
                bob_changed.set()

        tg.start_soon(hear_bob)
        assert tool_names(await alices.list_tools()) == {CONNECT_TOOL}
        assert tool_names(await bobs.list_tools()) == {CONNECT_TOOL}

        result = await alices.call_tool(CONNECT_TOOL, {})
        link = CONNECT_TEXT.search(text_of(result)).group(1)
        async with browser(site) as b:
            done = await b.connect(link, site.keys[alice], USERS[alice])
        assert done.status_code == 200, alert(done.text)
        with anyio.fail_after(10):
            await alice_changed.wait()
        assert alice_heard == ["notifications/tools/list_changed"]
        names = tool_names(await alices.list_tools())
        assert "whoami" in names and CONNECT_TOOL not in names
        assert tool_names(await bobs.list_tools()) == {CONNECT_TOOL}  # bob's list is his own
        assert bob_heard == []  # (it would have come at the same moment as alice's)

        # A 2026-07-28 client is asked to open the link, then retries the call: by then bob is connected.
        result = await bobs.call_tool(CONNECT_TOOL, {})
        assert not result.is_error and "is connected" in text_of(result)
        with anyio.fail_after(10):
            await bob_changed.wait()
        assert bob_heard == ["ToolsListChanged"]
        names = tool_names(await bobs.list_tools())
        assert "whoami" in names and CONNECT_TOOL not in names
        assert alice_heard == ["notifications/tools/list_changed"]  # bob's connection is nothing to alice

        alice_changed = anyio.Event()
        async with browser(site) as b:
            assert (await b.sign_in(site.keys[alice])).status_code == 303
            page = await b.get("/connections")
            revoked = await b.post("/connections", form(page.text, "/connections"))
            assert revoked.status_code == 200 and "Revoked prot" in revoked.text
        with anyio.fail_after(10):
            await alice_changed.wait()
        assert tool_names(await alices.list_tools()) == {CONNECT_TOOL}
        assert "whoami" in tool_names(await bobs.list_tools())
        assert bob_heard == ["ToolsListChanged"]
        tg.cancel_scope.cancel()


async def test_a_declined_authorization_leaves_the_link_usable(site: Site) -> None:
    """The authorization server sends the browser back with an error (the user said no there): nothing is
    connected, the link still works, and once it has connected it is spent."""
    user = "alice@corp.com"
    link = await link_from_connect_tool(site, user)
    async with browser(site) as b:
        consent = await b.consent_page(link, site.keys[user])
        approved = await b.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
        assert approved.status_code == 303
        sent = parse_qs(urlsplit(approved.headers["location"]).query)
        callback = urlsplit(sent["redirect_uri"][0]).path
        # What the authorization server does when the user declines: back to the callback, with an error.
        declined = await b.get(f"{callback}?" + urlencode({"error": "access_denied", "state": sent["state"][0]}))
        assert declined.status_code == 400 and "did not grant access" in alert(declined.text)

        again = await b.get(link)
        assert again.status_code == 200, alert(again.text)  # was: 400 "This link was already used"
        assert "Open the connect link again" in declined.text  # and the failure page says so
        approved = await b.post(f"/connect/{SERVER}", form(again.text, f"/connect/{SERVER}"))
        assert approved.status_code == 303, alert(approved.text)
        done = await b.get(await b.authorize_at_server(approved.headers["location"], USERS[user]))
        assert done.status_code == 200, alert(done.text)

        # The first attempt's state was single-use; the link that connected is spent.
        replay = await b.get(f"{callback}?" + urlencode({"code": "x", "state": sent["state"][0]}))
        assert replay.status_code == 400
        spent = await b.get(link)
        assert spent.status_code == 400 and "already used" in spent.text
    assert text_of(await whoami(site, user)) == "alice"


async def test_an_unreachable_authorization_server_leaves_the_link_usable(tmp_path: Path) -> None:
    """The first attempt cannot reach the authorization server (it is not running yet); the person reloads the
    same link once it is up, and it connects."""
    port = free_port()
    record = tmp_path / "seen.jsonl"
    args = ("--issuer", f"http://127.0.0.1:{port}", "--scopes", "mcp:tools", "--record", str(record))
    async with run_http_upstream(PROTECTED, *args) as url:
        upstreams = {
            SERVER: {"transport": "http", "url": url, "auth": {"mode": "oauth", "allow_insecure_discovery": True}}
        }
        async with run_gateway(upstreams, extra={"users": {"bob@corp.com": {}}}) as gw:
            done = await manifold_cli(gw, "keys", "create", "--user", "bob@corp.com", "--name", "laptop", "--json")
            site = Site(gw, Upstream(url, record), {"bob@corp.com": json.loads(done.stdout)["token"]})
            link = await link_from_connect_tool(site, "bob@corp.com")
            async with browser(site) as b:
                consent = await b.consent_page(link, site.keys["bob@corp.com"])
                failed = await b.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
                assert failed.status_code == 502 and "Could not reach" in failed.text

                async with run_idp(port=port):
                    done = await b.connect(link, site.keys["bob@corp.com"], "bob")  # the same link
                    assert done.status_code == 200, alert(done.text)
                    assert "Open the connect link again" in failed.text  # as the failure page said
                    assert text_of(await whoami(site, "bob@corp.com")) == "bob"


async def test_a_revoke_from_the_cli_changes_the_users_open_sessions_too(site: Site) -> None:
    user = "alice@corp.com"
    await connect(site, user)
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with site.gw.client(SERVER, key=site.keys[user], message_handler=on_message) as client:
        assert "whoami" in tool_names(await client.list_tools())
        await manifold_cli(site.gw, "connections", "revoke", "--user", user, "--upstream", SERVER)
        # Another process removed the connection; the gateway sees it on its next request (or its tick).
        assert tool_names(await client.list_tools()) == {CONNECT_TOOL}
        with anyio.fail_after(10):
            await changed.wait()


# ---- an OAuth mix-up (RFC 9700 §4.4) -------------------------------------------------------------------------


@asynccontextmanager
async def mixing_upstream(authorization_endpoint: str, client_id: dict[str, str]) -> AsyncIterator[tuple[str, list]]:
    """A hostile MCP upstream whose authorization server metadata names its own issuer and token endpoint but
    another server's authorization endpoint, and whose registration endpoint hands out the client id the
    gateway holds at that other server (a public client's id is no secret). Yields its MCP URL and the forms
    its token endpoint received."""
    from aiohttp import web

    received: list[dict[str, str]] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    async def mcp(_: web.Request) -> web.Response:
        challenge = f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def resource(_: web.Request) -> web.Response:
        return web.json_response({"resource": f"{base}/mcp", "authorization_servers": [base]})

    async def metadata(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": base,
                "authorization_endpoint": authorization_endpoint,  # the other server's
                "token_endpoint": f"{base}/token",
                "registration_endpoint": f"{base}/register",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
            }
        )

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {**body, "client_id": client_id["id"], "token_endpoint_auth_method": "none"}, status=201
        )

    async def token(request: web.Request) -> web.Response:
        received.append(dict(await request.post()))
        return web.json_response({"error": "invalid_grant"}, status=400)

    app = web.Application()
    app.add_routes(
        [
            web.route("*", "/mcp", mcp),
            web.get("/.well-known/oauth-protected-resource/mcp", resource),
            web.get("/.well-known/oauth-authorization-server", metadata),
            web.post("/register", register),
            web.post("/token", token),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"{base}/mcp", received
    finally:
        await runner.cleanup()


async def test_a_hostile_upstream_cannot_have_another_servers_code_sent_to_its_token_endpoint(world: World) -> None:
    """Was (attack probe): every authorization server was sent the same redirect URI, /oauth/callback. A
    hostile upstream naming the honest server's authorization endpoint (and the gateway's client id there) in
    its own metadata had the person sign in at the honest server, whose code came back to that one callback and
    was redeemed, with its PKCE verifier, at the hostile upstream's token endpoint. Now discovered metadata whose
    authorization endpoint is on neither the issuer's nor the token endpoint's origin is refused (review: a
    hostile upstream could also register a client of its own at the honest server); and a client registered
    dynamically gets a redirect URI of its server's own (tests/integration/test_oauth_flow.py)."""
    user = "alice@corp.com"
    async with httpx2.AsyncClient() as http:
        honest = (await http.get(world.idp.discovery_url)).json()["authorization_endpoint"]
    known: dict[str, str] = {}
    async with mixing_upstream(honest, known) as (evil_url, evil_received):
        upstreams = {
            SERVER: {
                "transport": "http",
                "url": world.upstream.url,
                "auth": {"mode": "oauth", "allow_insecure_discovery": True},
            },
            "evil": {"transport": "http", "url": evil_url, "auth": {"mode": "oauth", "allow_insecure_discovery": True}},
        }
        async with run_gateway(upstreams, extra={"users": {user: {}}}) as gw:
            made = await manifold_cli(gw, "keys", "create", "--user", user, "--name", "laptop", "--json")
            site = Site(gw, world.upstream, {user: json.loads(made.stdout)["token"]})
            async with browser(site) as b:
                # Alice connects the honest upstream: the gateway registers itself at the honest server.
                consent = await b.consent_page(await link_from_connect_tool(site, user), site.keys[user])
                approved = await b.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
                known["id"] = parse_qs(urlsplit(approved.headers["location"]).query)["client_id"][0]
                done = await b.get(await b.authorize_at_server(approved.headers["location"], USERS[user]))
                assert done.status_code == 200, alert(done.text)

                # Then the hostile one's connect link: its metadata sends people to sign in on another origin than
                # its issuer's and its token endpoint's. Refused before anyone is sent anywhere.
                consent = await b.consent_page(await link_from_connect_tool(site, user, "evil"), site.keys[user])
                refused = await b.post("/connect/evil", form(consent.text, "/connect/evil"))
                assert refused.status_code == 502 and "location" not in refused.headers
                assert "mix-up" in alert(refused.text), alert(refused.text)
            assert evil_received == []

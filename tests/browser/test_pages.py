"""Every page and form of the gateway, used in headless Chromium the way a person uses it.

Real processes, shared by the module: the OpenID provider (node oidc-provider, tests/idp.py) is both the
organisation's IdP for the gateway's web sign-in (`identity.web_login`) and the authorization server of an
OAuth-protected upstream (tests/upstreams/protected.py); the gateway is `manifold serve`. The browser is
Debian's Chromium (tests/browser/conftest.py); the tests type into the pages' fields and press their buttons,
and add no header of their own. Each page is kept as a screenshot (`make screenshots`: docs/screenshots/), checked with
axe-core. Each test has its own gateway user, so no test depends on what another connected.
"""

from __future__ import annotations

import base64
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import mcp_types as types
import pytest
from cryptography.fernet import Fernet
from playwright.async_api import Page, Response, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import run_http_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

PROTECTED = str(Path(__file__).resolve().parents[1] / "upstreams" / "protected.py")
SERVER = "prot"
MCP_AUDIENCE = "https://manifold.browser.test/mcp"
# Gateway users with API keys; each test has its own. Their login at the authorization server is the part
# before the @ (the upstream's tokens carry it as `sub`).
USERS = ("alice", "bob", "dan", "erin", "fay", "gus", "hal", "ivy")
CONNECT_TEXT = re.compile(r"Open (\S+) in your browser")


def email(user: str) -> str:
    return f"{user}@corp.com"


@dataclass
class Site:
    gw: Gateway
    idp: Idp
    keys: dict[str, str]  # user → API key

    def url(self, path: str) -> str:
        return self.gw.base + path


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
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
    with tempfile.TemporaryDirectory(prefix="manifold-browser-") as tmp:
        async with run_idp([web], accounts=accounts) as idp:
            args = ("--issuer", idp.issuer, "--scopes", "mcp:tools", "--record", str(Path(tmp) / "seen.jsonl"))
            async with run_http_upstream(PROTECTED, *args) as upstream_url:
                upstreams = {
                    SERVER: {
                        "transport": "http",
                        "url": upstream_url,
                        "auth": {"mode": "oauth", "allow_insecure_discovery": True},
                    }
                }
                extra = {
                    "users": {email(user): {} for user in USERS},
                    "identity": {
                        "idps": {"corp": {"issuer": idp.issuer, "audience": [MCP_AUDIENCE]}},
                        "web_login": {"idp": "corp", "client_id": "manifold-web", "client_secret": "web-secret"},
                    },
                }
                async with run_gateway(upstreams, extra=extra) as gw:
                    yield Site(gw, idp, await api_keys(gw))
                    assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def api_keys(gw: Gateway) -> dict[str, str]:
    """An API key for each user, made through the admin API with the development key (no CLI process)."""
    keys: dict[str, str] = {}
    async with gw.http() as http:
        for user in USERS:
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": email(user), "name": "web"})
            assert made.status_code == 201, made.text
            keys[user] = made.json()["token"]
    return keys


# ---- what a person does ------------------------------------------------------------------------------------------


class Tab:
    """A browser tab, with the HTTP status of each page it showed (the person sees the page; the test also
    checks the status the gateway gave it)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.statuses: list[tuple[str, int]] = []
        page.on("response", self._seen)

    def _seen(self, response: Response) -> None:
        if response.request.resource_type == "document" and response.frame == self.page.main_frame:
            self.statuses.append((response.url, response.status))

    @property
    def status(self) -> int:
        """The status of the page shown now (the last document the tab received)."""
        assert self.statuses, "no page loaded yet"
        return self.statuses[-1][1]

    async def open(self, url: str) -> None:
        await self.page.goto(url)

    async def heading(self, text: str | re.Pattern[str]) -> None:
        await expect(self.page.get_by_role("heading", level=1)).to_contain_text(text)

    async def says(self, text: str | re.Pattern[str]) -> None:
        await expect(self.page.locator("body")).to_contain_text(text)

    async def press(self, name: str | re.Pattern[str]) -> None:
        await self.page.get_by_role("button", name=name).click()

    async def sign_in_with_key(self, key: str) -> None:
        """On the gateway's sign-in page: type the key, press Sign in."""
        await self.heading("Sign in")
        await self.page.get_by_label("API key").fill(key)
        await self.press(re.compile(r"^Sign in$"))

    async def sign_in_at_server(self, login: str, site: Site) -> None:
        """On the authorization server's own pages: type a login and password, then approve."""
        await self.page.wait_for_url(site.idp.issuer + "/**")
        await self.page.locator("input[name=login]").fill(login)
        await self.page.locator("input[name=password]").fill("any password")
        await self.press("Sign-in")
        await self.page.wait_for_url(site.idp.issuer + "/**")
        await self.press("Continue")

    async def lists_connection(self, upstream: str) -> None:
        """The connections page shows this upstream, with a button to revoke it."""
        await expect(self.page.get_by_role("main")).to_contain_text(upstream)
        await expect(self.page.get_by_role("button", name=re.compile(r"^Revoke"))).to_be_visible()

    async def signed_in_as(self, user: str) -> None:
        await self.says(user)
        await expect(self.page.get_by_role("button", name="Sign out")).to_be_visible()


async def tab(new_page: NewPage, *, phone: bool = False) -> Tab:
    return Tab(await new_page(phone=phone))


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def whoami(site: Site, user: str) -> types.CallToolResult:
    async with site.gw.client(SERVER, key=site.keys[user]) as client:
        return await client.call_tool("whoami", {})


async def connect_link(site: Site, user: str) -> str:
    """The link a user is given by an MCP call that needs their account (in the tool error's text)."""
    result = await whoami(site, user)
    assert result.is_error, text_of(result)
    found = CONNECT_TEXT.search(text_of(result))
    assert found, text_of(result)
    return found.group(1)


async def connect(t: Tab, site: Site, user: str) -> None:
    """The whole connect flow in the browser, from the link to the gateway's "connected" page."""
    link = await connect_link(site, user)
    await t.open(link)
    await t.sign_in_with_key(site.keys[user])
    await t.page.wait_for_url(link)  # back to the link, signed in
    await t.heading(f"Connect {SERVER}")
    await t.press(f"Connect {SERVER}")
    await t.sign_in_at_server(user, site)
    await t.page.wait_for_url(site.url("/oauth/as/") + "*/callback?**")
    await t.heading("Connected")
    assert t.status == 200


# ---- signing in ----------------------------------------------------------------------------------------------------


async def test_sign_in_with_a_key_and_a_wrong_key(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    await t.open(site.url("/connections"))  # not signed in: the sign-in page, then back here
    await t.page.wait_for_url(site.url("/login") + "?**")
    await t.heading("Sign in")
    await look(t.page, "sign-in")

    wrong = "mfk_000000000000_" + "x" * 43
    await t.sign_in_with_key(wrong)
    await t.says("Sign-in failed: invalid key. Check that you pasted the whole key")  # the field's word, what to do
    assert t.status == 401
    assert wrong not in await t.page.content()  # the key typed is not sent back
    await look(t.page, "sign-in-failed")

    await t.sign_in_with_key(site.keys["dan"])
    await t.page.wait_for_url(site.url("/connections"))
    await t.heading("connections")
    await t.signed_in_as(email("dan"))
    await t.says("no connected accounts")
    assert t.status == 200


async def test_sign_in_through_the_organisations_idp(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    await t.open(site.url("/login?next=/connections"))
    await t.page.get_by_role("link", name=re.compile(r"organisation|sign in with", re.I)).click()
    await t.sign_in_at_server("carol", site)
    await t.page.wait_for_url(site.url("/connections"))
    await t.heading("connections")
    await t.signed_in_as("carol@corp.com")


async def test_sign_in_and_connections_on_a_phone(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page, phone=True)
    await t.open(site.url("/login?next=/connections"))
    await t.heading("Sign in")
    await look(t.page, "sign-in-phone")
    await t.page.get_by_label("API key").fill(site.keys["hal"])
    await t.page.keyboard.press("Enter")  # the form sends with the keyboard too
    await t.page.wait_for_url(site.url("/connections"))
    await t.signed_in_as(email("hal"))
    await look(t.page, "connections-phone")


async def test_sign_out(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    await t.open(site.url("/login?next=/connections"))
    await t.sign_in_with_key(site.keys["dan"])
    await t.page.wait_for_url(site.url("/connections"))
    await t.press("Sign out")
    await t.page.wait_for_url(site.url("/logout"))
    await t.heading("Signed out")
    assert t.status == 200
    await look(t.page, "signed-out")
    await t.open(site.url("/connections"))  # the session is over: sign in again
    await t.page.wait_for_url(site.url("/login") + "?**")
    await t.heading("Sign in")


# ---- connecting ----------------------------------------------------------------------------------------------------


async def test_connect_from_the_link_an_mcp_call_gave(site: Site, new_page: NewPage) -> None:
    """Sign-in page → consent → the authorization server's login and consent → the gateway's callback →
    "connected"; then the MCP call that asked for it works, the connection is listed, and the link is spent."""
    user = "alice"
    t = await tab(new_page)
    link = await connect_link(site, user)
    await t.open(link)
    await t.page.wait_for_url(site.url("/login") + "?**")
    await t.heading(f"Sign in to connect {SERVER}")  # says what the sign-in is for
    await look(t.page, "sign-in-to-connect")
    await t.sign_in_with_key(site.keys[user])

    await t.page.wait_for_url(link)  # back to the link, signed in
    await t.heading(f"Connect {SERVER}")
    await t.signed_in_as(email(user))
    await look(t.page, "consent")
    await t.press(f"Connect {SERVER}")

    await t.sign_in_at_server(user, site)
    await t.page.wait_for_url(site.url("/oauth/as/") + "*/callback?**")
    await t.heading("Connected")
    await t.says("close this window")
    await t.signed_in_as(email(user))
    assert t.status == 200
    await look(t.page, "connected")

    result = await whoami(site, user)
    assert not result.is_error and text_of(result) == user

    await t.page.get_by_role("link", name=re.compile(r"connections", re.I)).first.click()
    await t.page.wait_for_url(site.url("/connections"))
    await t.heading("connections")
    await t.lists_connection(SERVER)
    await look(t.page, "connections")

    await t.open(link)  # the same link again
    await t.heading("already used")
    assert t.status == 400
    await look(t.page, "error-link-used")


async def test_revoke_from_the_connections_page(site: Site, new_page: NewPage) -> None:
    user = "bob"
    t = await tab(new_page)
    await connect(t, site, user)
    await t.open(site.url("/connections"))
    await t.lists_connection(SERVER)
    await t.press(re.compile(r"^Revoke"))
    await t.page.wait_for_url(site.url("/connections"))
    await t.says(f"Revoked {SERVER}")
    await t.says("no connected accounts")
    assert t.status == 200
    await look(t.page, "connections-revoked")
    again = await whoami(site, user)
    assert again.is_error and CONNECT_TEXT.search(text_of(again))


# ---- what goes wrong -------------------------------------------------------------------------------------------------


async def test_the_authorization_server_says_no(site: Site, new_page: NewPage) -> None:
    """The person cancels at the authorization server, which sends the browser back with an error."""
    user = "erin"
    t = await tab(new_page)
    link = await connect_link(site, user)
    await t.open(link)
    await t.sign_in_with_key(site.keys[user])
    await t.page.wait_for_url(link)
    await t.press(f"Connect {SERVER}")
    await t.page.wait_for_url(site.idp.issuer + "/**")
    await t.page.get_by_role("link", name="Cancel").click()
    await t.page.wait_for_url(site.url("/oauth/as/") + "*/callback?**")
    await t.heading("Not connected")
    await t.says("access_denied")
    await t.signed_in_as(email(user))
    assert t.status == 400
    await look(t.page, "error-not-connected")
    assert (await whoami(site, user)).is_error
    await t.open(link)  # a failed attempt does not spend the link: it can be tried again
    await t.heading(f"Connect {SERVER}")
    assert t.status == 200


async def test_a_link_made_for_another_user(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    ivys_link = await connect_link(site, "ivy")
    await t.open(ivys_link)
    await t.sign_in_with_key(site.keys["fay"])  # fay opens the link ivy was given
    await t.page.wait_for_url(ivys_link)
    await t.heading("Not your link")
    await t.says("Nothing was connected")
    await expect(t.page.get_by_role("button", name=re.compile(f"Connect {SERVER}"))).to_have_count(0)
    assert t.status == 403
    await look(t.page, "error-not-your-link")


async def test_an_expired_link(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    link = await connect_link(site, "gus")
    await t.open(expired(site, link))
    await t.heading("link does not work")
    await t.says("expired")
    assert t.status == 400
    await look(t.page, "error-link-expired")


def expired(site: Site, link: str) -> str:
    """The same link as if it had been minted an hour ago (links live ~10 minutes): its token re-encrypted
    with the gateway's own link key, at an earlier time."""
    from manifold.outbound.oauth.links import _PURPOSE
    from manifold.security.crypto import Cipher

    keys = Cipher.load(site.gw.config_dir / "state").derive(_PURPOSE)
    fernets = [Fernet(base64.urlsafe_b64encode(k)) for k in keys]
    token = parse_qs(urlsplit(link).query)["t"][0]
    payload = fernets[0].decrypt(token.encode())
    old = fernets[0].encrypt_at_time(payload, int(time.time()) - 3600).decode()
    return link.replace(token, old)


async def test_a_form_left_open_too_long(site: Site, new_page: NewPage) -> None:
    """The sign-in form's own cookie is gone (it lasts 15 minutes) when the form is finally sent; and a
    consent page whose sign-in ended in another tab: each says what to do, and nothing happens."""
    t = await tab(new_page)
    await t.open(site.url("/login?next=/connections"))
    await t.page.context.clear_cookies()  # what 15 minutes do to the form's cookie
    await t.sign_in_with_key(site.keys["dan"])
    await t.says("sign-in form expired")
    assert t.status == 403
    await look(t.page, "error-form-expired")

    user = "gus"
    link = await connect_link(site, user)
    await t.open(link)
    await t.sign_in_with_key(site.keys[user])
    await t.page.wait_for_url(link)
    await t.heading(f"Connect {SERVER}")
    other = Tab(await t.page.context.new_page())
    await other.open(site.url("/connections"))
    await other.press("Sign out")
    await other.heading("Signed out")
    await t.press(f"Connect {SERVER}")  # the consent page is still open in the first tab
    await t.heading("Sign in first")
    assert t.status == 401
    await look(t.page, "error-sign-in-first")
    assert (await whoami(site, user)).is_error
    # Not a dead end: the page leads back through sign-in to the same consent.
    await t.page.get_by_role("link", name="Sign in and continue").click()
    await t.heading(f"Sign in to connect {SERVER}")


async def test_an_unknown_page(site: Site, new_page: NewPage) -> None:
    t = await tab(new_page)
    await t.open(site.url("/login?next=/connections"))
    await t.sign_in_with_key(site.keys["dan"])
    await t.page.wait_for_url(site.url("/connections"))
    await t.open(site.url("/connections/no-such-page"))
    await t.heading("Not found")
    await t.signed_in_as(email("dan"))  # like every page, it says who is signed in
    assert t.status == 404
    await look(t.page, "error-not-found")
    await t.open(site.url("/connect/nothing-here?t=x"))  # a connect link to an upstream that is not there
    await t.heading("Not found")
    await t.says("nothing-here")
    assert t.status == 404


async def test_an_address_outside_the_pages_is_a_page_too(site: Site, new_page: NewPage) -> None:
    """Someone types the gateway's address, or a wrong one, into the browser: they get a page that says
    where they are, not a JSON body meant for an API client."""
    t = await tab(new_page)
    await t.open(site.url("/no/such/page"))
    assert t.status == 404
    await t.heading("Not found")
    await t.says("Manifold")

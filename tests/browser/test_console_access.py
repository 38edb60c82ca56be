"""The console's access pages in headless Chromium against `manifold serve` and a real stdio upstream (the
kitchen MCP server), used as an admin uses them: make a key for a person and copy its secret from the page,
give that person a tool of the upstream in place, ask the explain box (allow, naming that grant), use the key
with a real MCP client (mcp 2.3.0), revoke the key (the client is refused), then find the calls in the audit
viewer with a filter and open one. Someone who is not an admin is refused on every one of these pages and
forms; a form without its CSRF token is refused. Every page is photographed and checked with axe-core.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import types
from playwright.async_api import Page, expect

from manifold.config.loader import load_config
from manifold.outbound.oauth.vault import Connection, Vault
from manifold.security.crypto import Cipher
from manifold.store.db import open_database
from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

KITCHEN = str(Path(__file__).resolve().parents[1] / "upstreams" / "kitchen.py")
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"
ALICE = "alice@corp.com"
PAGES = (
    "/admin/grants",
    "/admin/grants?server=kitchen&who=alice@corp.com&tool=add",
    "/admin/keys",
    "/admin/audit",
    "/admin/audit?server=kitchen",
    "/admin/connections",
)
FORMS = (
    "/admin/grants/add",
    "/admin/grants/g-0/remove",
    "/admin/keys/add",
    "/admin/keys/0123456789ab/revoke",
    "/admin/service-accounts/add",
    "/admin/service-accounts/x/delete",
    "/admin/connections/revoke",
)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    extra = {
        "identity": {"admins": [f"user:{ADMIN}"]},
        "users": {ADMIN: {}, PERSON: {}},
        "grants": [{"who": f"user:{ADMIN}", "what": ["server:*"]}],  # alice gets hers in the console
    }
    async with run_gateway({"kitchen": stdio_upstream(KITCHEN)}, extra=extra) as gw:
        keys: dict[str, str] = {}
        async with gw.http() as http:
            for user in (ADMIN, PERSON):
                made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "web"})
                assert made.status_code == 201, made.text
                keys[user] = made.json()["token"]
        yield Site(gw, keys)
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def sign_in(page: Page, site: Site, user: str) -> None:
    await page.goto(site.gw.base + "/admin")
    await page.get_by_label("API key").fill(site.keys[user])
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()


async def store_connection(gw: Gateway, user: str, upstream: str) -> None:
    """A connection in the gateway's own database, encrypted with its own key, as the OAuth callback stores one."""
    config = load_config(gw.config_dir / "manifold.yaml")
    engine = await open_database(config.database_url)
    try:
        now = time.time()
        await Vault(engine, Cipher.load(config.state_dir)).put(
            Connection(
                user=user,
                upstream=upstream,
                access_token="at-SECRET",
                refresh_token=None,
                expires_at=now + 3600,
                scopes=["repo", "read:org"],
                token_type="Bearer",
                issuer="https://issuer.example",
                client_id="c1",
                created_at=now,
                updated_at=now,
            )
        )
    finally:
        await engine.dispose()


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def initialize(gw: Gateway, token: str) -> httpx2.Response:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(gw.url("kitchen"), headers=headers, json=INITIALIZE)


async def test_an_admin_makes_a_key_grants_a_tool_explains_revokes_and_audits(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.gw.base)
    await sign_in(page, site, ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Admin console")

    # ---- a key for alice: the secret shown once, copied with the button ----
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Keys").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Keys and service accounts")
    await page.get_by_label("Owner").fill(ALICE)
    await page.get_by_label("Name", exact=True).fill("agent")
    await page.get_by_label("Expires after (optional)").fill("30d")
    await look(page, "console-keys")
    await page.get_by_role("button", name="Make key").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Key made")
    secret_field = page.get_by_label("Secret")
    await expect(secret_field).to_have_attribute("readonly", "")
    await page.get_by_role("button", name="Copy secret").click()
    await expect(page.get_by_text("Copied.")).to_be_visible()
    secret = await page.evaluate("navigator.clipboard.readText()")
    assert secret.startswith("mfk_") and secret == await secret_field.input_value()
    await look(page, "console-key-created", hide=[secret_field])  # no secret in docs/screenshots
    # Reloading the answer re-sends the form: no second key, and the secret is not shown again.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.reload()
    await expect(page.get_by_role("heading", level=1)).to_have_text("This form was already sent")
    assert secret not in await page.content()
    await page.goto(site.gw.base + "/admin/keys")
    assert secret not in await page.content()
    await expect(page.get_by_role("row", name=re.compile("agent"))).to_have_count(1)

    # Alice has no grant yet: her key opens nothing.
    assert (await initialize(site.gw, secret)).status_code == 403

    # ---- a grant for alice, added in place on the server's grants; the explain box names it ----
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Grants").click()
    await page.get_by_label("Show the grants of").select_option("kitchen")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Grants of kitchen")
    await page.get_by_role("radio", name="User (email or subject)").check()
    await page.locator("#grant-subject").fill(ALICE)
    await page.get_by_label("Server", exact=True).select_option("kitchen")
    await page.get_by_label("Tools").fill("add")
    await page.get_by_role("button", name="Add grant").click()
    added = page.get_by_role("status").filter(has_text="Added grant")
    await expect(added).to_be_visible()
    grant_id = re.search(r"g-[0-9a-f]+", await added.inner_text())
    assert grant_id is not None
    row = page.get_by_role("row", name=re.compile(grant_id.group(0)))
    await expect(row).to_contain_text(f"user:{ALICE}")
    await expect(row).to_contain_text("tool:kitchen/add")

    await page.get_by_label("Can this user").fill(ALICE)
    await page.get_by_label("use server").select_option("kitchen")
    await page.get_by_label("and call the tool (optional)").fill("add")
    await page.get_by_role("button", name="Explain").click()
    verdict = page.locator("#explain-result")
    await expect(verdict).to_contain_text("Allowed")
    await expect(verdict).to_contain_text(f"by grant {grant_id.group(0)} (api): user:{ALICE} → tool:kitchen/add")
    await look(page, "console-grants")
    await page.get_by_label("and call the tool (optional)").fill("echo")
    await page.get_by_role("button", name="Explain").click()
    await expect(page.locator("#explain-result")).to_contain_text("Denied")

    # ---- the key works with a real MCP client: exactly the granted tool ----
    async with site.gw.client("kitchen", key=secret) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"add"}
        result = await client.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error and "5" in text_of(result)

    # ---- revoke the key, after confirming ----
    await page.goto(site.gw.base + "/admin/keys")
    await page.get_by_role("link", name=re.compile(r"Revoke key agent")).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Revoke key agent")
    await look(page, "console-key-revoke")
    await page.get_by_role("button", name="Revoke key").click()
    await expect(page.get_by_role("status")).to_have_text("The key is revoked.")
    await expect(page.get_by_role("row", name=re.compile("agent"))).to_contain_text("revoked")
    assert (await initialize(site.gw, secret)).status_code == 401

    # ---- the calls in the audit viewer, found with a filter; one opened ----
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit").click()
    await page.get_by_label("User").fill(ALICE)
    await page.get_by_label("Tool").fill("add")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("#audit-rows tbody tr")
    await expect(rows.first).to_contain_text(f"user:{ALICE}")
    assert await rows.count() >= 1
    for i in range(await rows.count()):
        await expect(rows.nth(i)).to_contain_text("add")
    await look(page, "console-audit")
    await rows.first.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Audit row")
    facts = page.locator("dl.facts")
    await expect(facts).to_contain_text(f"user:{ALICE}")
    await expect(facts).to_contain_text("tools/call")
    await expect(facts).to_contain_text("kitchen")
    await look(page, "console-audit-row")
    # The console's own changes are rows too.
    await page.goto(site.gw.base + "/admin/audit?server=admin")
    await expect(page.locator("#audit-rows")).to_contain_text("console POST")

    # ---- a user's OAuth connection (stored as the connect flow stores one), listed and revoked ----
    await store_connection(site.gw, f"user:{ALICE}", "kitchen")
    await page.goto(site.gw.base + "/admin/connections")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connections")
    row = page.get_by_role("row", name=re.compile(ALICE))
    await expect(row).to_contain_text("repo read:org")
    assert "SECRET" not in await page.content()
    await look(page, "console-connections")
    await row.get_by_role("button", name=f"Revoke the connection of user:{ALICE} to kitchen").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Revoked the connection of user:{ALICE} to kitchen")
    await expect(page.get_by_role("row", name=re.compile(ALICE))).to_have_count(0)


async def test_someone_who_is_not_an_admin_is_refused_on_the_access_pages(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, PERSON)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    for url in PAGES:
        response = await page.goto(site.gw.base + url)
        assert response is not None and response.status == 403, url
        await expect(page.get_by_role("main")).to_contain_text("for the gateway's administrators")
    for url in FORMS:
        response = await page.request.post(site.gw.base + url, form={"csrf": "x"})
        assert response.status == 403, url


async def test_an_access_form_without_its_csrf_token_is_refused(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN)
    await page.goto(site.gw.base + "/admin/keys")
    await page.get_by_label("Id").fill("forged-bot")
    form = page.locator("form[action='/admin/service-accounts/add']")
    await form.locator("input[name=csrf]").evaluate("field => field.remove()")
    await page.get_by_role("button", name="Add service account").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await expect(page.get_by_role("main")).to_contain_text("not one this console gave you")
    await page.goto(site.gw.base + "/admin/keys")
    assert "sa:forged-bot" not in await page.content()


async def test_revoking_the_key_you_signed_in_with_warns_first_and_then_says_you_are_signed_out(
    site: Site, new_page: NewPage
) -> None:
    """Was (console review): no warning on the confirm page, then "Not allowed — The console is for the gateway's
    administrators." under "Signed in as" the admin, whose key had just been revoked."""
    async with site.gw.http() as http:
        made = await http.post(f"{site.gw.base}/admin/api/keys", json={"user": ADMIN, "name": "own-laptop"})
    own = made.json()["token"]
    page = await new_page()
    await page.goto(site.gw.base + "/admin/keys")
    await page.get_by_label("API key").fill(own)
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()
    await page.get_by_role("link", name=re.compile(r"Revoke key own-laptop")).click()
    await expect(page.get_by_role("alert")).to_have_text(
        "This is the key you signed in to this console with: revoking it signs you out."
    )
    await page.get_by_role("button", name="Revoke key").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    await expect(page.get_by_role("alert")).to_contain_text("The key you signed in with no longer works (revoked")
    await expect(page.get_by_text("Signed in as")).to_have_count(0)
    await page.get_by_role("link", name="Sign in again").click()
    await expect(page.get_by_label("API key")).to_be_visible()

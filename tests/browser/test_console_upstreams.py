"""Upstreams in the admin console, in headless Chromium against `manifold serve` and real upstream processes:
an admin adds an HTTP upstream through the form (the kitchen MCP server over HTTP), sees its tools, edits its
headers (the upstream receives the new value at once), and removes another upstream after confirming; an
upstream from manifold.yaml has no edit controls; a refused form keeps what was typed and says what is
wrong next to the field; a non-admin is refused on every new page. Screenshots and axe-core on every page."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import free_port, run_http_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

KITCHEN = str(Path(__file__).resolve().parents[1] / "upstreams" / "kitchen.py")
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]
    crm_url: str  # a kitchen server over HTTP, not yet known to the gateway


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    extra = {"identity": {"admins": [f"user:{ADMIN}"]}, "users": {ADMIN: {}, PERSON: {}}}
    async with run_http_upstream(KITCHEN, "--name", "crm") as crm_url, run_http_upstream(KITCHEN) as spare_url:
        async with run_gateway({"kitchen": stdio_upstream(KITCHEN)}, extra=extra) as gw:
            keys: dict[str, str] = {}
            async with gw.http() as http:
                for user in (ADMIN, PERSON):
                    made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "web"})
                    assert made.status_code == 201, made.text
                    keys[user] = made.json()["token"]
                spare = {"id": "spare", "transport": "http", "url": spare_url}
                made = await http.post(f"{gw.base}/admin/api/upstreams", json=spare)
                assert made.status_code == 201, made.text
            yield Site(gw, keys, crm_url)
            assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def sign_in(page: Page, site: Site, user: str) -> None:
    await page.goto(site.gw.base + "/admin")
    await page.get_by_label("API key").fill(site.keys[user])
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()


async def headers_seen_by(site: Site, upstream: str) -> dict[str, str]:
    """What the upstream received with a tools/call through the gateway (kitchen's `headers` tool)."""
    async with site.gw.client(upstream) as client:
        result = await client.call_tool("headers", {})
    text = next(c.text for c in result.content if c.type == "text")
    return json.loads(text)


async def test_an_admin_adds_edits_and_removes_upstreams(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Upstreams").click()
    # From manifold.yaml: shown with its file, no edit controls. From the API: edit, remove, YAML.
    kitchen = page.get_by_role("row", name=re.compile("kitchen"))
    await expect(kitchen).to_contain_text("defined in manifold.yaml")
    await expect(kitchen.get_by_role("link", name=re.compile("Edit|Remove|YAML"))).to_have_count(0)
    spare = page.get_by_role("row", name=re.compile("spare"))
    await expect(spare.get_by_role("link", name="Edit spare")).to_be_visible()
    await look(page, "console-upstreams-editable")

    await page.get_by_role("link", name="Add an upstream").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Add an upstream")
    await page.get_by_label("Id", exact=True).fill("crm")
    await page.get_by_label("Transport", exact=True).select_option("http")
    await expect(page.get_by_label("Command", exact=True)).to_be_hidden()  # the stdio fields only for stdio
    await page.get_by_label("URL", exact=True).fill(site.crm_url.replace("http://", "ftp://"))
    await page.get_by_label("Name 1").first.fill("X-Team")
    await page.get_by_label("Value of header 1").first.fill("blue")
    await look(page, "console-upstream-add")
    await page.get_by_role("button", name="Add upstream").click()
    # Refused: the problem next to the URL, what was typed kept (but not the secret).
    await expect(page.get_by_role("alert")).to_contain_text("Not saved")
    url_field = page.get_by_label("URL", exact=True)
    await expect(url_field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#err-url-1")).to_contain_text("http:// or https://")
    await expect(page.get_by_label("Id", exact=True)).to_have_value("crm")
    await expect(page.get_by_label("Name 1").first).to_have_value("X-Team")
    await expect(page.get_by_label("Value of header 1").first).to_have_value("")
    await look(page, "console-upstream-problem")
    await url_field.fill(site.crm_url)
    await page.get_by_label("Value of header 1").first.fill("blue")
    await page.get_by_role("button", name="Add upstream").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Tools of crm")
    await expect(page.get_by_role("heading", name="echo")).to_be_visible()  # served at once, listed
    assert (await headers_seen_by(site, "crm")).get("x-team") == "blue"

    # Edit: the stored header value is never shown; a new one replaces it, live.
    await page.goto(site.gw.base + "/admin/upstreams")
    await page.get_by_role("link", name="Edit crm").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Edit upstream crm")
    assert "blue" not in await page.content()
    await expect(page.get_by_label("Name 1").first).to_have_value("X-Team")
    await expect(page.get_by_label("Value of header 1").first).to_have_value("")
    await expect(page.locator("#header-hint-1")).to_contain_text("Stored, not shown")
    await page.get_by_label("Value of header 1").first.fill("green")
    await page.get_by_label("Name 2").first.fill("X-Region")
    await page.get_by_label("Value of header 2").first.fill("eu")
    await look(page, "console-upstream-edit")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tools of crm")
    seen = await headers_seen_by(site, "crm")
    assert (seen.get("x-team"), seen.get("x-region")) == ("green", "eu")

    # Remove another, after confirming.
    await page.goto(site.gw.base + "/admin/upstreams")
    await page.get_by_role("link", name="Remove spare").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Remove upstream spare")
    await look(page, "console-upstream-remove")
    await page.get_by_role("button", name="Remove spare").click()
    await expect(page.get_by_role("status")).to_contain_text("Removed upstream spare")
    await expect(page.get_by_role("row", name=re.compile("spare"))).to_have_count(0)
    await expect(page.get_by_role("row", name=re.compile("crm"))).to_be_visible()

    # The YAML of what was made here, never its secrets.
    await page.goto(site.gw.base + "/admin/export")
    await page.get_by_text("Show upstreams.yaml").click()
    exported = page.locator("pre.snippet").first
    await expect(exported).to_contain_text("X-Team: ${CRM_HEADERS_X_TEAM}")
    await expect(exported).not_to_contain_text("green")
    await look(page, "console-export")


async def test_a_person_who_is_not_an_admin_is_refused_on_the_upstream_pages(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, PERSON)
    for url in (
        "/admin/upstreams/new",
        "/admin/upstreams/spare/edit",
        "/admin/upstreams/spare/remove",
        "/admin/upstreams/spare/yaml",
        "/admin/export",
        "/admin/export/all.zip",
    ):
        response = await page.goto(site.gw.base + url)
        assert response is not None and response.status == 403, url
    for url in ("/admin/upstreams/new", "/admin/upstreams/spare/edit", "/admin/upstreams/spare/remove"):
        response = await page.request.post(site.gw.base + url, form={"csrf": "x", "id": "x"})
        assert response.status == 403, url


async def test_an_upstream_reached_with_each_persons_account_is_listed_with_the_admins_and_stays_ready(
    new_page: NewPage,
) -> None:
    """Was: the console listed every upstream's tools with no credential. An `oauth` upstream answered 401, which
    marked it down for everyone: /readyz answered 503 (a balancer took the replica out) from the moment an admin
    opened its Tools page or the server editor, and stayed so. Now the admin's own account is used, and an admin
    who has not connected theirs is shown where to."""
    protected = str(Path(__file__).resolve().parents[1] / "upstreams" / "protected.py")
    no_issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens: every request without a token is refused
    async with run_http_upstream(protected, "--issuer", no_issuer) as prot_url:
        upstreams = {
            "prot": {"transport": "http", "url": prot_url, "auth": {"mode": "oauth", "allow_insecure_discovery": True}}
        }
        extra = {"identity": {"admins": [f"user:{ADMIN}"]}, "users": {ADMIN: {}}}
        async with run_gateway(upstreams, extra=extra) as gw, gw.http() as http:
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": ADMIN, "name": "web"})
            site = Site(gw, {ADMIN: made.json()["token"]}, "")
            page = await new_page()
            await sign_in(page, site, ADMIN)
            await page.goto(f"{gw.base}/admin/upstreams/prot/tools")
            connect = page.get_by_role("link", name="connect your prot account")
            await expect(connect).to_be_visible()
            assert "/connect/prot" in (await connect.get_attribute("href") or "")
            await look(page, "console-tools-of-an-upstream-to-connect")
            await page.goto(f"{gw.base}/admin/servers/new")
            await expect(page.get_by_text("yours is not connected")).to_be_visible()
            ready = await http.get(f"{gw.base}/readyz")
            assert ready.status_code == 200, ready.text
            assert "Traceback" not in gw.log(), gw.log()[-4000:]

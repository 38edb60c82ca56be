"""The admin console at /admin in headless Chromium, used the way a person uses it: an admin signs in with
their key and looks at the upstreams and a tool's input schema; someone who is not an admin is refused on
every console URL and form; a form sent without its CSRF token is refused.

Real processes: the gateway is `manifold serve`, its upstream the kitchen MCP server over stdio.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

KITCHEN = str(Path(__file__).resolve().parents[1] / "upstreams" / "kitchen.py")
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"
CONSOLE_URLS = ("/admin", "/admin/upstreams", "/admin/upstreams/kitchen/tools", "/admin/upstreams/kitchen/tools?q=add")


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    extra = {"identity": {"admins": [f"user:{ADMIN}"]}, "users": {ADMIN: {}, PERSON: {}}}
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
    """Open the console, land on the sign-in form, type the key, press Sign in: back at the console."""
    await page.goto(site.gw.base + "/admin")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in")
    await page.get_by_label("API key").fill(site.keys[user])
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()


async def test_an_admin_sees_the_upstreams_and_a_tools_schema(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Admin console")
    await look(page, "console-home")

    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Upstreams").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Upstreams")
    row = page.get_by_role("row", name=re.compile("kitchen"))
    await expect(row).to_contain_text("stdio")
    await expect(row).to_contain_text("none")
    await look(page, "console-upstreams")

    await row.get_by_role("link", name="kitchen").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tools of kitchen")
    await expect(page.get_by_role("heading", name="echo")).to_be_visible()
    await page.get_by_label("Filter tools").fill("integers")  # htmx swaps the list as one types
    await expect(page.get_by_role("heading", name="echo")).to_have_count(0)
    await page.get_by_text("Input schema of add").click()
    schema = page.locator("pre.snippet").filter(has_text='"a"')
    await expect(schema).to_be_visible()
    await expect(schema).to_contain_text('"type": "integer"')
    await look(page, "console-tools")

    # The upstreams page now knows how many tools it has, and that it is up.
    await page.goto(site.gw.base + "/admin/upstreams")
    row = page.get_by_role("row", name=re.compile("kitchen"))
    await expect(row).to_contain_text("up")
    await expect(row.get_by_role("cell").nth(3)).not_to_have_text("—")


async def test_someone_who_is_not_an_admin_is_refused_everywhere(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, PERSON)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    # Not the console's navigation, each of whose links would be refused the same (console review).
    await expect(page.get_by_role("navigation", name="Console")).to_have_count(0)
    await expect(page.get_by_role("main").get_by_role("link")).to_have_text(["Your servers"])
    await look(page, "console-not-admin")
    for url in CONSOLE_URLS:
        response = await page.goto(site.gw.base + url)
        assert response is not None and response.status == 403, url
        await expect(page.get_by_role("main")).to_contain_text("for the gateway's administrators")
    # The console's one form, sent from a page of the gateway: refused as well.
    response = await page.request.post(site.gw.base + "/admin/upstreams/kitchen/refresh", form={"csrf": "x"})
    assert response.status == 403


async def test_a_form_without_its_csrf_token_is_refused(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN)
    await page.goto(site.gw.base + "/admin/upstreams/kitchen/tools")
    await page.locator("input[name=csrf]").last.evaluate("field => field.remove()")  # as a forged form would
    await page.get_by_role("button", name="Fetch the tool list again").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await expect(page.get_by_role("main")).to_contain_text("not one this console gave you")
    await page.goto(site.gw.base + "/admin/upstreams/kitchen/tools")  # with its token, the same button works
    await page.get_by_role("button", name="Fetch the tool list again").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tools of kitchen")


async def test_every_console_page_fits_a_phones_width(site: Site, new_page: NewPage) -> None:
    """Was (console review): at 375-390 px the upstreams, grants, keys, connections and server editor pages
    scrolled sideways (up to 682 px wide), Edit/Remove off-screen. Wide tables now scroll inside their box."""
    page = await new_page(phone=True)
    await sign_in(page, site, ADMIN)
    async with site.gw.http() as http:  # something in every table
        await http.post(f"{site.gw.base}/admin/api/keys", json={"user": PERSON, "name": "a-rather-long-key-name"})
        grant = {"who": f"user:{PERSON}", "what": ["tool:kitchen/add", "tool:kitchen/echo", "server:kitchen"]}
        await http.post(f"{site.gw.base}/admin/api/grants", json=grant)
    width = await page.evaluate("window.innerWidth")
    for url in (*CONSOLE_URLS, "/admin/grants", "/admin/keys", "/admin/connections", "/admin/servers",
                "/admin/servers/new", "/admin/audit", "/admin/pins", "/admin/export"):  # fmt: skip
        await page.goto(site.gw.base + url)
        scrolled = await page.evaluate("document.documentElement.scrollWidth")
        assert scrolled <= width, f"{url} is {scrolled} px wide on a {width} px screen"

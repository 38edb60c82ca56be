"""The virtual server editor (console/servers.py) in headless Chromium, used the way an admin uses it: build a
server from three tools of two upstreams by clicking, rename one, save; then a real MCP client (mcp 2.3.0 over
streamable HTTP, the development key) lists exactly those three names and calls them. A second admin builds
one with the keyboard only, and one with JavaScript off. The preview marks a collision before anything is saved.

Real processes: the gateway is `manifold serve`; its upstreams the kitchen MCP server over stdio (in the
config file) and the demo toolbox over streamable HTTP, added while the gateway runs: through the console's
upstream form in the click test, through the admin API (as "toolbox") for the others.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.browser.conftest import DESKTOP, NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import run_http_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

KITCHEN = str(Path(__file__).resolve().parents[1] / "upstreams" / "kitchen.py")
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"
FILE_SERVERS = {"kitchen-echo": {"description": "Echo only", "members": [{"upstream": "kitchen", "tools": ["echo"]}]}}
MAX_TABS = 300  # a bound on walking the page with Tab


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]
    toolbox_url: str


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    extra = {"identity": {"admins": [f"user:{ADMIN}"]}, "users": {ADMIN: {}, PERSON: {}}}
    async with (
        run_http_upstream("manifold.demo.toolbox") as toolbox_url,
        run_gateway({"kitchen": stdio_upstream(KITCHEN)}, virtual_servers=FILE_SERVERS, extra=extra) as gw,
    ):
        keys: dict[str, str] = {}
        async with gw.http() as http:
            for user in (ADMIN, PERSON):
                made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "web"})
                assert made.status_code == 201, made.text
                keys[user] = made.json()["token"]
            # The click test adds the same toolbox as "tools-http" through the console's upstream form.
            added = await http.post(
                f"{gw.base}/admin/api/upstreams", json={"id": "toolbox", "transport": "http", "url": toolbox_url}
            )
            assert added.status_code == 201, added.text
        yield Site(gw, keys, toolbox_url)
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def sign_in(page: Page, site: Site, user: str, next_path: str = "/admin/servers") -> None:
    await page.goto(site.gw.base + next_path)
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in")
    await page.get_by_label("API key").fill(site.keys[user])
    await page.get_by_label("API key").press("Enter")


async def tab_to(page: Page, selector: str) -> None:
    """Press Tab until the focused element matches `selector` (as a person walks a page)."""
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement !== null && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def preview_row(page: Page, name: str):  # noqa: ANN201 — a Playwright locator
    return page.locator("#preview").get_by_role("row", name=re.compile(rf"^{re.escape(name)}\b"))


async def test_an_admin_builds_a_server_by_clicking_and_a_client_gets_exactly_those_tools(
    site: Site, new_page: NewPage
) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN, "/admin/upstreams")
    # An HTTP upstream added through the console's upstream form (console/upstreams.py).
    await page.get_by_role("link", name="Add an upstream").click()
    await page.get_by_label("Id", exact=True).fill("tools-http")
    await page.get_by_label("Transport", exact=True).select_option("http")
    await page.get_by_label("URL", exact=True).fill(site.toolbox_url)
    await page.get_by_role("button", name="Add upstream").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tools of tools-http")  # added and listed

    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Virtual servers").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Virtual servers")
    await page.get_by_role("link", name="New virtual server").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("New virtual server")

    await page.get_by_label("Id", exact=True).fill("picked")
    await page.get_by_role("checkbox", name="echo from kitchen").check()
    await page.get_by_role("checkbox", name="add from kitchen").check()
    await page.get_by_label("Search tools").fill("words")  # htmx narrows the list as one types
    await expect(page.get_by_role("checkbox", name="echo from kitchen")).to_have_count(0)
    await page.get_by_role("checkbox", name="word_count from tools-http").check()
    await expect(preview_row(page, "tools-http__word_count")).to_be_visible()  # htmx re-rendered the preview
    await expect(page.locator("#preview")).to_contain_text("3 tools exposed")

    await page.get_by_label("Rename word_count of tools-http").fill("count_words")
    await page.get_by_label("Rename word_count of tools-http").press("Tab")  # change: the preview follows
    await expect(preview_row(page, "tools-http__count_words")).to_be_visible()
    await expect(preview_row(page, "tools-http__word_count")).to_have_count(0)
    await page.get_by_role("button", name="Save").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect to picked")
    await expect(page.get_by_role("status")).to_contain_text("picked is served now")
    await expect(page.locator("#server-url")).to_have_text(f"{site.gw.base}/mcp/picked")
    for label in ("VS Code", "Cursor", "Claude Code", "Claude Desktop", "Python SDK"):
        await expect(page.locator("summary").filter(has_text=label)).to_have_count(1)
    await look(page, "console-server-clients")
    # The Python SDK snippet, as copied from the page, run as it is with a key in the environment.
    await page.locator("summary", has_text="Python SDK").click()
    script = await page.get_by_label("Python SDK (mcp), with an API key").inner_text()
    env = {**os.environ, "MANIFOLD_API_KEY": site.gw.key}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert sorted(ast.literal_eval(ran.stdout.strip())) == ["kitchen__add", "kitchen__echo", "tools-http__count_words"]

    async with site.gw.client("picked") as client:  # mcp 2.3.0 over streamable HTTP with the dev key
        listed = await client.list_tools()
        assert sorted(t.name for t in listed.tools) == ["kitchen__add", "kitchen__echo", "tools-http__count_words"]
        echoed = await client.call_tool("kitchen__echo", {"text": "hello"})
        assert not echoed.is_error and "hello" in str(echoed.content)
        counted = await client.call_tool("tools-http__count_words", {"text": "one two three"})
        assert not counted.is_error and "3" in str(counted.structured_content or counted.content)

    await page.get_by_role("link", name="All virtual servers").click()
    row = page.get_by_role("row", name=re.compile("picked"))
    await expect(row).to_contain_text("console / API")
    await expect(row.get_by_role("cell").nth(1)).to_have_text("2")
    await expect(row.get_by_role("link", name="Grants of picked")).to_have_attribute(
        "href", "/admin/grants?server=picked"
    )
    from_file = page.get_by_role("row", name=re.compile("kitchen-echo"))
    await expect(from_file).to_contain_text("virtual_servers/kitchen-echo.yaml (read-only)")
    await look(page, "console-servers")
    await from_file.get_by_role("link", name="kitchen-echo", exact=True).click()
    await expect(page.get_by_role("main")).to_contain_text("read-only here; change it there")
    await expect(page.locator("pre.snippet")).to_contain_text("tools:")


async def test_typing_goes_on_while_the_preview_follows_a_rename(site: Site, new_page: NewPage) -> None:
    """Was (console review): the preview, which holds the rename and description fields, was swapped in whole
    when its answer came, so what the admin had typed in the meantime was erased (and not saved)."""
    page = await new_page()
    await sign_in(page, site, ADMIN, "/admin/servers/new")
    await page.get_by_label("Id", exact=True).fill("said")
    await page.get_by_role("checkbox", name="echo from kitchen").check()
    rename = page.get_by_label("Rename echo of kitchen")
    await expect(rename).to_be_visible()
    typed = asyncio.Event()

    async def slow_preview(route: Route) -> None:  # the preview's answer held until the typing is done
        await typed.wait()
        await route.continue_()

    await page.route("**/admin/servers/new", slow_preview)
    await rename.fill("say")
    await rename.press("Tab")  # change: the preview is asked for, and takes its time
    description = page.get_by_label("Description of echo of kitchen")
    await expect(description).to_be_focused()
    await page.keyboard.type("Says it back", delay=10)
    typed.set()
    await expect(preview_row(page, "kitchen__say")).to_be_visible()  # the preview came
    await expect(description).to_have_value("Says it back")
    await expect(description).to_be_focused()
    await page.unroute("**/admin/servers/new")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect to said")
    async with site.gw.client("said") as client:
        [tool] = (await client.list_tools()).tools
    assert (tool.name, tool.description) == ("kitchen__say", "Says it back")


async def test_the_preview_marks_a_collision_before_saving(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN, "/admin/servers/new")
    await page.get_by_label("Id", exact=True).fill("flat")
    await page.get_by_label("Prefix tool names with the member id").uncheck()
    await page.get_by_label("Search tools").fill("echo")
    await expect(page.get_by_role("checkbox", name="add from kitchen")).to_have_count(0)
    await page.get_by_role("checkbox", name="echo from kitchen").check()
    await page.get_by_role("checkbox", name="echo from toolbox").check()
    await expect(page.locator("#preview .badge", has_text="collision")).to_have_count(2)
    await expect(page.locator("#preview")).to_contain_text("both are left out")
    await look(page, "console-server-editor")
    # Renaming one of them resolves it, still before saving.
    await page.get_by_label("Rename echo of toolbox").fill("shout")
    await page.get_by_label("Rename echo of toolbox").press("Tab")
    await expect(page.locator("#preview .badge", has_text="collision")).to_have_count(0)
    await expect(preview_row(page, "shout")).to_be_visible()
    # A pattern that is not one: refused on save, the problem next to its field, what was typed kept.
    await page.locator("summary", has_text=re.compile(r"^kitchen$")).click()
    await page.get_by_label("Tool patterns of kitchen").fill("ad[d")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("alert")).to_contain_text("Not saved: 1 problem")
    patterns = page.get_by_label("Tool patterns of kitchen")
    await expect(patterns).to_have_value("ad[d")
    await expect(patterns).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".field-error")).to_contain_text("opens a '[' that is never closed")
    # No preview of a body that is not one, but the rename is still part of the form.
    await expect(page.locator("#server-form input[name='alias.toolbox/echo']")).to_have_value("shout")
    await look(page, "console-server-editor-refused")
    async with site.gw.http() as http:
        missing = await http.get(f"{site.gw.base}/admin/api/virtual-servers/flat")
        assert missing.status_code == 404  # nothing was saved


async def test_a_server_is_created_with_the_keyboard_only(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Virtual servers")
    await tab_to(page, "a[href='/admin/servers/new']")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("New virtual server")
    await tab_to(page, "#server-id")
    await page.keyboard.type("typed")
    await tab_to(page, "#q")
    await page.keyboard.type("uuid")
    await expect(page.get_by_role("checkbox", name="echo from kitchen")).to_have_count(0)
    await tab_to(page, "input[name=pick][value='toolbox/uuid']")
    await page.keyboard.press("Space")
    await expect(preview_row(page, "toolbox__uuid")).to_be_visible()
    await tab_to(page, "button[value=save]")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect to typed")
    async with site.gw.client("typed") as client:
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == ["toolbox__uuid"]


async def test_someone_who_is_not_an_admin_is_refused_on_the_server_pages(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, PERSON)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    for url in ("/admin/servers", "/admin/servers/new", "/admin/servers/picked", "/admin/servers/picked/clients"):
        response = await page.goto(site.gw.base + url)
        assert response is not None and response.status == 403, url
    for url in ("/admin/servers/new", "/admin/servers/picked", "/admin/servers/picked/delete"):
        response = await page.request.post(site.gw.base + url, form={"csrf": "x", "action": "save"})
        assert response.status == 403, url


async def test_a_save_without_its_csrf_token_is_refused(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site, ADMIN, "/admin/servers/new")
    await page.get_by_label("Id", exact=True).fill("forged")
    await page.get_by_role("checkbox", name="noop from kitchen").check()
    await page.locator("#server-form input[name=csrf]").evaluate("field => field.remove()")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await expect(page.get_by_role("main")).to_contain_text("not one this console gave you")
    async with site.gw.http() as http:
        missing = await http.get(f"{site.gw.base}/admin/api/virtual-servers/forged")
        assert missing.status_code == 404


async def test_the_editor_works_without_javascript(site: Site, chromium: Browser) -> None:
    """htmx only enhances: with scripts off, Filter, Preview and Save are plain form posts."""
    context = await chromium.new_context(java_script_enabled=False, viewport=DESKTOP, locale="en-GB")
    try:
        page = await context.new_page()
        await sign_in(page, site, ADMIN, "/admin/servers/new")
        await page.get_by_label("Id", exact=True).fill("plain")
        await page.get_by_label("Search tools").fill("uuid")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.get_by_role("checkbox", name="echo from kitchen")).to_have_count(0)
        await page.get_by_role("checkbox", name="uuid from toolbox").check()
        await page.get_by_role("button", name="Preview").click()
        await expect(preview_row(page, "toolbox__uuid")).to_be_visible()
        await page.get_by_label("Rename uuid of toolbox").fill("new_id")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Connect to plain")
    finally:
        await context.close()
    async with site.gw.client("plain") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["toolbox__new_id"]

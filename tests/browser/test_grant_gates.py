"""Approval gates on grants made at run time (docs/approvals.md), end to end: a gate set through the admin API
and one set in the console's grants form hold a real MCP client's call until an approver approves it in
headless Chromium, while calls of tools no gate covers run at once; the console shows each grant's gate; the
pages' header links to /approvals.

Real processes, shared by the module: the gateway (`manifold serve`) and the kitchen upstream (stdio, recording
every request it gets). manifold.yaml gives everyone every tool and has no gate: every gate here is made while
the gateway runs. Each test gates its own tool, so the tests do not see each other's gates.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import types
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

SERVER = "kitchen"
ADMIN = "root@corp.com"
USERS = {ADMIN: [], "alice@corp.com": ["eng"], "sam@corp.com": ["sre"]}  # alice calls, sam approves
OPEN_TEXT = re.compile(r"Open (\S+) in your browser")


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]
    record: Path

    def calls_of(self, tool: str) -> int:
        """How many times the upstream was asked to run `tool` (it records every request it gets)."""
        if not self.record.exists():
            return 0
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return sum(1 for entry in lines if entry.get("method") == "tools/call" and entry.get("name") == tool)


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    with tempfile.TemporaryDirectory(prefix="manifold-grant-gates-") as tmp:
        record = Path(tmp) / "seen.jsonl"
        extra = {
            "identity": {"admins": [f"user:{ADMIN}"]},
            "users": {user: {"teams": teams} for user, teams in USERS.items()},
            "grants": [{"who": "authenticated", "what": ["server:*"]}],
        }
        async with run_gateway({SERVER: stdio_upstream(KITCHEN, "--record", str(record))}, extra=extra) as gw:
            keys: dict[str, str] = {}
            async with gw.http() as http:
                for user in USERS:
                    made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "t"})
                    assert made.status_code == 201, made.text
                    keys[user] = made.json()["token"]
            yield Site(gw, keys, record)
            assert "Traceback" not in gw.log(), gw.log()[-4000:]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def sign_in(page: Page, url: str, key: str) -> None:
    """Open a page; the gateway asks to sign in first, then comes back to it."""
    await page.goto(url)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()
    await page.wait_for_url(url)


async def approve(site: Site, new_page: NewPage, url: str, *, phone: bool = False) -> Page:
    """sam (team sre) opens the request's page and approves; the header links to his list of requests.
    `phone`: on his phone, a browser of its own (when the test's desktop browser is someone else's)."""
    page = await new_page(phone=phone)
    await sign_in(page, url, site.keys["sam@corp.com"])
    await expect(page.locator("main")).to_contain_text("alice@corp.com")
    account = page.get_by_role("navigation", name="Account")
    await expect(account.get_by_role("link", name="Approvals")).to_have_attribute("href", "/approvals")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator("main")).to_contain_text("You approved this call.")
    return page


async def held_url(site: Site, tool: str, arguments: dict[str, object]) -> str:
    """alice calls `tool` with a client without URL elicitation: a held call is a tool error with the URL."""
    async with site.gw.client(SERVER, key=site.keys["alice@corp.com"]) as client:
        held = await client.call_tool(tool, arguments)
    found = OPEN_TEXT.search(text_of(held))
    assert held.is_error and found, text_of(held)
    return found.group(1)


async def test_a_gate_made_through_the_admin_api_holds_its_tool_until_approved(site: Site, new_page: NewPage) -> None:
    gate = {"require_approval": [f"tool:{SERVER}/echo"], "approvers": "team:sre"}
    async with site.gw.http() as http:
        body = {"who": "team:eng", "what": [f"server:{SERVER}"]}
        made = await http.post(f"{site.gw.base}/admin/api/grants", json=body)
        assert made.status_code == 201, made.text
        grant = f"{site.gw.base}/admin/api/grants/{made.json()['id']}"
        changed = await http.patch(grant, json=gate)  # the gate added to an existing grant
        assert changed.status_code == 200 and changed.json()["approvers"] == "team:sre", changed.text
        bad = await http.patch(grant, json={"approvers": None})
        assert bad.status_code == 400 and "approvers" in bad.json()["error"]
        assert (await http.get(grant)).json()["require_approval"] == gate["require_approval"]

    url = await held_url(site, "echo", {"text": "api gate"})  # in force at once, no restart
    assert url.startswith(f"{site.gw.base}/approvals/") and site.calls_of("echo") == 0
    async with site.gw.client(SERVER, key=site.keys["alice@corp.com"]) as client:
        free = await client.call_tool("add", {"a": 2, "b": 3})  # no gate covers add: it runs at once
        assert not free.is_error and "5" in text_of(free)

        await approve(site, new_page, url)
        ran = await client.call_tool("echo", {"text": "api gate"})
        assert not ran.is_error and text_of(ran) == "api gate" and site.calls_of("echo") == 1

    async with site.gw.http() as http:
        assert (await http.delete(grant)).status_code == 200
    async with site.gw.client(SERVER, key=site.keys["alice@corp.com"]) as client:  # the gate went with its grant
        assert not (await client.call_tool("echo", {"text": "after"})).is_error


async def test_the_console_sets_a_gate_and_shows_it(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site.gw.base + "/admin/grants", site.keys[ADMIN])
    await expect(page.get_by_role("navigation", name="Account").get_by_role("link", name="Approvals")).to_be_visible()
    await page.get_by_role("radio", name="Team").check()
    await page.locator("#grant-subject").fill("eng")
    await page.get_by_label("Server", exact=True).select_option(SERVER)
    await page.get_by_label("Calls wait for approval of").fill("noop")
    await page.get_by_role("button", name="Add grant").click()  # no approvers: refused, the form kept
    await expect(page.get_by_role("alert")).to_contain_text("require_approval needs approvers")
    await expect(page.get_by_label("Calls wait for approval of")).to_have_value("noop")

    await page.get_by_label("Approvers").fill("team:sre")
    await page.get_by_label("An approval lasts (seconds)").fill("3600")  # the same call passes again for an hour
    await page.get_by_role("button", name="Add grant").click()
    added = page.get_by_role("status").filter(has_text="Added grant")
    await expect(added).to_be_visible()
    grant_id = re.search(r"g-[0-9a-f]+", await added.inner_text())
    assert grant_id is not None
    row = page.get_by_role("row", name=re.compile(grant_id.group(0)))
    terms = "(a call waits 15 min; an approval lasts 1 h)"
    await expect(row).to_contain_text(f"approval by team:sre for tool:{SERVER}/noop {terms}")
    await expect(page.get_by_role("row", name=re.compile(r"grants\[0\]"))).to_contain_text("none")
    await look(page, "console-grant-gate")

    url = await held_url(site, "noop", {})
    assert site.calls_of("noop") == 0
    await approve(site, new_page, url, phone=True)
    async with site.gw.client(SERVER, key=site.keys["alice@corp.com"]) as client:
        ran = await client.call_tool("noop", {})
        again = await client.call_tool("noop", {})  # within the hour the approval lasts: not asked again
    assert not ran.is_error and not again.is_error and site.calls_of("noop") == 2

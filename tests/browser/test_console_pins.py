"""The console's tool pins page in headless Chromium against `manifold serve` and a real stdio upstream whose
tool changes its description at run time (tests/upstreams/shifty.py): the admin finds the held tool through the
console's navigation, reads the diff, approves it, and an MCP client is served the tool again. Someone who is
not an admin is refused on the page and the form, and a form without its CSRF token is refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.shifty import POISONED

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

SHIFTY = str(Path(__file__).resolve().parents[1] / "upstreams" / "shifty.py")
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"
DEADLINE_S = 20.0
POLL_S = 0.05


async def sign_in(page: Page, gw: Gateway, key: str) -> None:
    await page.goto(gw.base + "/admin")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()


async def listed(gw: Gateway) -> set[str]:
    async with gw.client("dictionary") as client:
        return {t.name for t in (await client.list_tools()).tools}


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Await `check()` (async) until it is true: a bounded poll of the gateway from outside."""
    end = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {DEADLINE_S:g}s")
        await anyio.sleep(POLL_S)


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    extra = {"identity": {"admins": [f"user:{ADMIN}"]}, "users": {ADMIN: {}, PERSON: {}}}
    async with run_gateway({"dictionary": stdio_upstream(SHIFTY)}, extra=extra) as gateway:
        yield gateway
        assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


async def test_an_admin_reads_the_diff_of_a_held_tool_and_approves_it(gw: Gateway, new_page: NewPage) -> None:
    async with gw.http() as http:
        keys = {}
        for user in (ADMIN, PERSON):
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": user, "name": "web"})
            assert made.status_code == 201, made.text
            keys[user] = made.json()["token"]
    async with gw.client("dictionary") as client:
        await client.call_tool("rug_pull", {})

    async def held() -> bool:
        return "lookup" not in await listed(gw)

    await until(held, "the changed tool was held")

    outsider = await new_page(phone=True)  # its own browser context: a different person
    await sign_in(outsider, gw, keys[PERSON])
    response = await outsider.goto(gw.base + "/admin/pins")
    assert response is not None and response.status == 403
    refused = await outsider.request.post(gw.base + "/admin/pins/approve", form={"csrf": "x"})
    assert refused.status == 403

    page = await new_page()
    await sign_in(page, gw, keys[ADMIN])
    # Found from where an admin looks first (console review: only /admin/pins said anything): the home page and
    # the upstream's Tools page say a change waits, and lead to it.
    await page.goto(gw.base + "/admin")
    await expect(page.get_by_role("main")).to_contain_text("1 changed tool definition waits for approval")
    await page.goto(gw.base + "/admin/upstreams/dictionary/tools")
    await expect(page.get_by_role("main")).to_contain_text(
        "1 tool of dictionary changed since approved and waits for approval, held out of this list"
    )
    await page.get_by_role("link", name="review the change").click()
    await expect(page.get_by_label("Upstream")).to_have_value("dictionary")  # a choice of upstreams, not a guess
    await page.goto(gw.base + "/admin/pins?upstream=Dictionary")
    await expect(page.get_by_role("alert")).to_have_text("There is no upstream 'Dictionary'.")
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Tool pins").click()
    await expect(page.get_by_role("heading", level=2)).to_have_text("dictionary/lookup")
    diff = page.get_by_label("Changes to dictionary/lookup")
    await expect(diff).to_contain_text(f'+  "description": "{POISONED}",')
    await expect(diff).to_contain_text('-  "description": "Look up a word in the dictionary.",')
    await look(page, "console-pins")

    # A forged form (no CSRF token) approves nothing.
    form = page.locator("form[action='/admin/pins/approve']").last
    await form.locator("input[name=csrf]").evaluate("field => field.remove()")
    await form.get_by_role("button").click()
    await expect(page.get_by_role("main")).to_contain_text("not one this console gave you")
    assert "lookup" not in await listed(gw)

    await page.goto(gw.base + "/admin/pins")
    await page.get_by_role("button", name="Approve the new definition of dictionary/lookup").click()
    await expect(page.get_by_role("status")).to_have_text("Approved dictionary/lookup.")
    await expect(page.get_by_role("main")).to_contain_text("No changed tool definition waits for approval")

    async def served() -> bool:
        return "lookup" in await listed(gw)

    await until(served, "the approved tool was served again")

"""The approval gate (docs/approvals.md), end to end: a caller's MCP client is held, an approver decides in
headless Chromium, and the caller's call then runs or fails.

Real processes, shared by the module: the gateway (`manifold serve`) and the kitchen upstream (stdio, recording
every request it gets, so a test can tell whether a held call reached it). Grants: everyone may use
everything; `echo` waits for an approver of team sre, `add` too but its requests expire after two seconds.
Each test calls with its own arguments, so no test finds another test's request.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import MCPError, UrlElicitationRequiredError
from mcp_types import URL_ELICITATION_REQUIRED
from playwright.async_api import Page, Response, expect

from tests.browser.conftest import NewPage, look
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN
from tests.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

SERVER = "kitchen"
USERS = {"alice": ["eng"], "sam": ["sre"], "nina": ["eng"]}  # alice calls, sam approves, nina may not
EXPIRES_SECONDS = 2
OPEN_TEXT = re.compile(r"Open (\S+) in your browser")


@dataclass
class Site:
    gw: Gateway
    keys: dict[str, str]
    record: Path

    def echo_calls(self) -> int:
        """How many times the upstream was asked to run echo (it records every request it gets)."""
        if not self.record.exists():
            return 0
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return sum(1 for entry in lines if entry.get("method") == "tools/call" and entry.get("name") == "echo")


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    with tempfile.TemporaryDirectory(prefix="manifold-approvals-") as tmp:
        record = Path(tmp) / "seen.jsonl"
        upstreams = {SERVER: stdio_upstream(KITCHEN, "--record", str(record))}
        extra = {
            "users": {f"{user}@corp.com": {"teams": teams} for user, teams in USERS.items()},
            "grants": [
                {
                    "who": "authenticated",
                    "what": ["server:*"],
                    "require_approval": [f"tool:{SERVER}/echo"],
                    "approvers": "team:sre",
                },
                {
                    "who": "authenticated",
                    "what": ["server:*"],
                    "require_approval": [f"tool:{SERVER}/add"],
                    "approvers": "team:sre",
                    "approval_timeout_seconds": EXPIRES_SECONDS,
                },
            ],
        }
        async with run_gateway(upstreams, extra=extra) as gw:
            keys: dict[str, str] = {}
            async with gw.http() as http:
                for user in USERS:
                    made = await http.post(f"{gw.base}/admin/api/keys", json={"user": f"{user}@corp.com", "name": "t"})
                    assert made.status_code == 201, made.text
                    keys[user] = made.json()["token"]
            yield Site(gw, keys, record)
            assert "Traceback" not in gw.log(), gw.log()[-4000:]


class Tab:
    """A browser tab, with the HTTP status of each page it showed."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.statuses: list[int] = []
        page.on("response", self._seen)

    def _seen(self, response: Response) -> None:
        if response.request.resource_type == "document" and response.frame == self.page.main_frame:
            self.statuses.append(response.status)

    async def open_signed_in(self, url: str, key: str) -> None:
        """Open a page; the gateway asks to sign in first, then comes back to it."""
        await self.page.goto(url)
        await expect(self.page.get_by_role("heading", level=1)).to_contain_text("Sign in")
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name=re.compile(r"^Sign in$")).click()
        await self.page.wait_for_url(url)

    async def says(self, text: str | re.Pattern[str]) -> None:
        await expect(self.page.locator("main")).to_contain_text(text)

    async def press(self, name: str) -> None:
        await self.page.get_by_role("button", name=name).click()


async def tab(new_page: NewPage) -> Tab:
    return Tab(await new_page())


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def _declares_url_elicitation(context: Any, params: Any) -> types.ElicitResult:
    raise AssertionError("a 2025-11-25 client is told with -32042, not asked with elicitation/create")


async def approve_in_browser(
    site: Site, new_page: NewPage, url: str, decision: str, *, shot: str | None = None, via_list: bool = False
) -> Tab:
    """sam (team sre) opens the request's page (from the link, or from his list of waiting requests), checks it,
    and presses Approve or Deny."""
    t = await tab(new_page)
    if via_list:
        await t.open_signed_in(site.gw.base + "/approvals", site.keys["sam"])
        await look(t.page, "approval-list")
        await t.page.locator(f'a[href="{urlsplit(url).path}"]').click()
        await t.page.wait_for_url(url)
    else:
        await t.open_signed_in(url, site.keys["sam"])
    await t.says("alice@corp.com")
    await t.says("Waiting for an approver")
    if shot:
        await look(t.page, shot)
    await t.press(decision)
    await t.says("You approved this call." if decision == "Approve" else "You denied this call.")
    assert t.statuses[-1] == 200
    return t


# ---- approve ----------------------------------------------------------------------------------------------------


async def test_2025_client_is_held_with_32042_and_runs_once_approved(site: Site, new_page: NewPage) -> None:
    args = {"text": "release v1.2"}
    completed: list[str] = []
    complete = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            completed.append(message.params.elicitation_id)
            complete.set()

    async with site.gw.client(
        SERVER, key=site.keys["alice"], elicitation_callback=_declares_url_elicitation, message_handler=on_message
    ) as c:
        with pytest.raises(MCPError) as raised:
            await c.call_tool("echo", args)
        assert raised.value.code == URL_ELICITATION_REQUIRED  # -32042
        (elicitation,) = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
        url = elicitation.url
        assert url.startswith(f"{site.gw.base}/approvals/")
        assert "team:sre" in elicitation.message

        with pytest.raises(MCPError) as again:  # not yet approved: held again, the same request
            await c.call_tool("echo", args)
        assert UrlElicitationRequiredError.from_error(again.value.error).elicitations[0].url == url

        t = await approve_in_browser(site, new_page, url, "Approve", shot="approval-request", via_list=True)
        await t.says("release v1.2")  # the arguments, as the approver saw them
        await look(t.page, "approval-approved")
        with anyio.fail_after(10):  # the session's stream is told the elicitation is complete
            await complete.wait()
        assert completed == [elicitation.elicitation_id]

        result = await c.call_tool("echo", args)  # the retry runs
        assert not result.is_error and text_of(result) == "release v1.2"

        with pytest.raises(MCPError) as once:  # one approval, one call: the next one asks again
            await c.call_tool("echo", args)
        assert UrlElicitationRequiredError.from_error(once.value.error).elicitations[0].url != url


async def test_2026_client_gets_input_required_and_its_continuation_runs_once_approved(
    site: Site, new_page: NewPage
) -> None:
    asked: list[types.ElicitRequestURLParams] = []

    async def approver_decides(context: Any, params: types.ElicitRequestURLParams) -> types.ElicitResult:
        # What a 2026-07-28 client does with a URL-mode elicitation: show the URL. Here the approver opens it.
        asked.append(params)
        await approve_in_browser(site, new_page, params.url, "Approve")
        return types.ElicitResult(action="accept")

    async with site.gw.client(
        SERVER, key=site.keys["alice"], mode="2026-07-28", elicitation_callback=approver_decides
    ) as client:
        result = await client.call_tool("echo", {"text": "modern approve"})  # retried with the requestState
    assert [p.mode for p in asked] == ["url"]
    assert asked[0].url.startswith(f"{site.gw.base}/approvals/")
    assert not result.is_error and text_of(result) == "modern approve"


# ---- deny -------------------------------------------------------------------------------------------------------


async def test_denied_call_fails_and_never_reaches_the_upstream(site: Site, new_page: NewPage) -> None:
    # A client without URL elicitation: the tool error's text holds the absolute URL.
    args = {"text": "drop the production database", "api_token": "sekrit-0123456789"}
    before = site.echo_calls()
    async with site.gw.client(SERVER, key=site.keys["alice"]) as client:
        held = await client.call_tool("echo", args)
        assert held.is_error
        found = OPEN_TEXT.search(text_of(held))
        assert found, text_of(held)
        url = found.group(1)

        t = await approve_in_browser(site, new_page, url, "Deny")
        assert "sekrit-0123456789" not in await t.page.content()  # arguments redacted as the audit log does
        await t.says("[redacted]")
        await look(t.page, "approval-denied")

        failed = await client.call_tool("echo", args)
    assert failed.is_error
    assert "denied by user:sam@corp.com" in text_of(failed)
    assert site.echo_calls() == before  # the upstream never saw it
    # The caller has been told (the request is closed): the page still says what was decided (it said
    # "Finished", for a denial and an expiry alike).
    await t.page.reload()
    await t.says("Denied (the caller was told)")


async def test_2026_client_denied(site: Site, new_page: NewPage) -> None:
    async def approver_denies(context: Any, params: types.ElicitRequestURLParams) -> types.ElicitResult:
        await approve_in_browser(site, new_page, params.url, "Deny")
        return types.ElicitResult(action="accept")

    async with site.gw.client(
        SERVER, key=site.keys["alice"], mode="2026-07-28", elicitation_callback=approver_denies
    ) as client:
        result = await client.call_tool("echo", {"text": "modern deny"})
    assert result.is_error and "denied by user:sam@corp.com" in text_of(result)


# ---- who may see and decide ------------------------------------------------------------------------------------


async def test_non_approver_gets_403(site: Site, new_page: NewPage) -> None:
    async with site.gw.client(SERVER, key=site.keys["alice"]) as client:
        held = await client.call_tool("echo", {"text": "who may see"})
    found = OPEN_TEXT.search(text_of(held))
    assert found, text_of(held)
    url = found.group(1)

    async with httpx2.AsyncClient() as http:  # any program given the link (Accept: */*) reaches the page too
        plain = await http.get(url)
    assert (plain.status_code, plain.headers["location"]) == (303, f"/login?{urlencode({'next': urlsplit(url).path})}")

    nina = await tab(new_page)
    await nina.open_signed_in(url, site.keys["nina"])
    assert nina.statuses[-1] == 403
    await nina.says("Only an approver (team:sre)")
    await look(nina.page, "approval-not-an-approver")


async def test_the_caller_cannot_approve_their_own_request(site: Site, new_page: NewPage) -> None:
    async with site.gw.client(SERVER, key=site.keys["sam"]) as client:  # an approver calling: held too
        own = await client.call_tool("echo", {"text": "my own"})
    own_url = OPEN_TEXT.search(text_of(own))
    assert own_url, text_of(own)
    sam = await tab(new_page)
    await sam.open_signed_in(own_url.group(1), site.keys["sam"])
    await sam.says("Waiting for an approver")
    await expect(sam.page.get_by_role("button", name="Approve")).to_have_count(0)


# ---- expiry -----------------------------------------------------------------------------------------------------


async def test_a_request_nobody_decides_expires_and_the_call_fails(site: Site, new_page: NewPage) -> None:
    async with site.gw.client(SERVER, key=site.keys["alice"]) as client:
        held = await client.call_tool("add", {"a": 2, "b": 40})
        deadline = time.time() + EXPIRES_SECONDS
        found = OPEN_TEXT.search(text_of(held))
        assert found, text_of(held)
        await wait_for(lambda: time.time() > deadline + 0.2, EXPIRES_SECONDS + 5, what="the request's expiry")

        t = await tab(new_page)
        await t.open_signed_in(found.group(1), site.keys["sam"])
        await t.says("Expired")
        await expect(t.page.get_by_role("button", name="Approve")).to_have_count(0)

        failed = await client.call_tool("add", {"a": 2, "b": 40})
        assert failed.is_error and "expired before an approver" in text_of(failed)
        again = await client.call_tool("add", {"a": 2, "b": 40})  # a new call asks again, with a new request
        assert again.is_error and OPEN_TEXT.search(text_of(again))
        assert OPEN_TEXT.search(text_of(again)).group(1) != found.group(1)  # type: ignore[union-attr]

"""The browser tests' Chromium: Debian's `chromium` driven by Playwright for Python (never a downloaded build).

One browser per test process (session-scoped; pytest-xdist runs several processes), a fresh context (cookies,
storage) per test. The tests add no header and intercept nothing: the browser sends what it sends.

    page = await new_page()                       # 1024x768; new_page(phone=True) is 390x844
    await look(page, "sign-in")                   # full-page screenshot: build/screenshots/sign-in.png
    await accessible(page)                        # axe-core: no "serious" or "critical" violation
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize, async_playwright

REPO = Path(__file__).resolve().parents[2]
# Where `look` keeps its screenshots: build/screenshots (ignored by git), so a test run leaves the tree as it
# was; `make screenshots` runs the browser tests with MANIFOLD_SCREENSHOTS=docs/screenshots to renew the
# committed ones.
SCREENSHOTS = REPO / os.environ.get("MANIFOLD_SCREENSHOTS", "build/screenshots")
AXE = REPO / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    # Quiet on the network: without these Chromium keeps calling home (closed network here, and not wanted).
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Every name but loopback fails at once: nothing leaves the machine, and a page that pulls a web font
    # from the internet (the authorization server's dev login does) does not wait for a network that is
    # not there.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
DESKTOP = ViewportSize(width=1024, height=768)
PHONE = ViewportSize(width=390, height=844)
SERIOUS = ("serious", "critical")

NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=os.environ.get("MANIFOLD_CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def new_page(chromium: Browser) -> AsyncIterator[NewPage]:
    """Pages in one fresh browser context (one person's browser: its cookies are shared by its tabs)."""
    contexts: dict[bool, BrowserContext] = {}

    async def make(*, phone: bool = False) -> Page:
        if phone not in contexts:
            contexts[phone] = await chromium.new_context(
                viewport=PHONE if phone else DESKTOP, locale="en-GB", timezone_id="UTC", device_scale_factor=1
            )
            contexts[phone].set_default_timeout(20_000)
        return await contexts[phone].new_page()

    try:
        yield make
    finally:
        for context in contexts.values():
            await context.close()


async def look(page: Page, name: str, hide: Sequence[Locator] = ()) -> None:
    """Keep a screenshot of the whole page as <name>.png in SCREENSHOTS (taken on every run), and check
    the page with axe-core. `hide`: what must not be in a committed picture (a key's secret), boxed over."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = str(SCREENSHOTS / f"{name}.png")
    await page.screenshot(path=path, full_page=True, animations="disabled", mask=list(hide))
    await accessible(page, name)


async def accessible(page: Page, name: str) -> None:
    """axe-core, injected into the page as it is: no violation of impact serious or critical."""
    # Not `add_script_tag`: the pages' Content-Security-Policy (rightly) refuses an inline script. Evaluated
    # through the DevTools protocol, as the test's own code, it is not the page's script.
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(_axe_source())
    result = await page.evaluate("axe.run()")
    bad = [v for v in result["violations"] if v.get("impact") in SERIOUS]
    assert not bad, f"accessibility ({name}, {page.url}):\n" + "\n".join(_describe(v) for v in bad)


@functools.cache
def _axe_source() -> str:
    return AXE.read_text() + "\n;undefined"


def _describe(violation: dict) -> str:
    nodes = "; ".join(" ".join(n.get("target", [])) or "?" for n in violation.get("nodes", [])[:5])
    return f"- [{violation['impact']}] {violation['id']}: {violation['help']} (at {nodes}) {violation['helpUrl']}"

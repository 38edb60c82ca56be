"""Web security of the approval pages, in process: a held call's arguments are the caller's own words, and
its tool and server names an upstream's; the approver's page shows them as text (the person's own flows in
Chromium: tests/browser/test_approvals.py; every other page against a hostile upstream:
tests/browser/test_websec_pages.py)."""

from __future__ import annotations

import base64
import json

import pytest

from manifold.policy.approval_store import NewApproval
from tests.unit.test_approval_pages import Site, browser, site  # noqa: F401 — `site` is the fixture

pytestmark = pytest.mark.anyio
MARKUP = '"><img id=pwned src=x><script>alert(1)</script>'


async def test_a_held_calls_words_are_text_on_the_approvers_pages(site: Site) -> None:  # noqa: F811
    approval = await site.approvals.store.create(
        NewApproval(
            principal="user:sam@corp.com",
            server="github",
            member="github",
            upstream="github",
            tool="delete_repo" + MARKUP,
            arguments={"repo" + MARKUP: MARKUP, "nested": {"x": [MARKUP]}},
            arguments_hash="0" * 64,
            grant_label="manifold.yaml grants[0]",
            approvers="team:sre",
            self_approval=False,
            valid_seconds=0,
            timeout_seconds=600,
        )
    )
    async with browser(site, "alice@corp.com") as http:
        for path in (f"/approvals/{approval.id}", "/approvals"):
            page = await http.get(path)
            assert page.status_code == 200, path
            assert "<img" not in page.text and "<script>" not in page.text, path
            assert "&lt;img id=pwned" in page.text, path
            assert page.headers["content-security-policy"].startswith("default-src 'none'")


async def test_signing_in_again_gives_a_new_session_id(site: Site) -> None:  # noqa: F811
    """Session fixation: whatever session a browser had, signing in makes a new random id (the CSRF tokens
    of the old one are worth nothing in the new)."""
    sids: list[str] = []
    for _ in range(2):
        async with browser(site, "alice@corp.com") as http:
            cookie = http.cookies["manifold-session"]
            payload = cookie.split(".")[0]
            sids.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["s"])
    assert sids[0] != sids[1] and all(len(s) >= 22 for s in sids)

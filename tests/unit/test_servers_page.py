"""The servers page's markup (web/servers_page.py) and the applications on the connections page (pages.py)."""

from __future__ import annotations

import json

from manifold.web import pages
from manifold.web.pages import Viewer
from manifold.web.servers_page import ServerRow, Upstream, servers_page, snippets

URL = "https://manifold.example/mcp/eng"
WHO = Viewer("alice@corp.com", "logout-token")


def test_every_snippet_names_the_url_and_carries_no_key() -> None:
    found = snippets("eng", URL)
    assert [label for label, _ in found][:3] == [
        "VS Code: .vscode/mcp.json",
        "Cursor: ~/.cursor/mcp.json",
        "Claude Code",
    ]
    for label, text in found:
        assert URL in text, label
        assert "Authorization" not in text and "headers" not in text and "mfk_" not in text, label
        if text.startswith("{"):
            json.loads(text)
    assert dict(found)["Claude Code"] == f"claude mcp add --transport http eng {URL}"


def test_the_page_escapes_what_it_shows_and_links_the_connect_page() -> None:
    row = ServerRow(
        server_id="eng",
        url=URL,
        description="<b>bold</b>",
        upstreams=[Upstream("gh", False, "https://manifold.example/connect/gh?t=a&b"), Upstream("jira", True, None)],
    )
    html = servers_page(viewer=WHO, rows=[row])
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'href="https://manifold.example/connect/gh?t=a&amp;b"' in html
    assert 'jira <span class="badge badge-ok">Connected</span>' in html
    assert "<script" not in html
    assert "You may not use any server" in servers_page(viewer=WHO, rows=[])


def test_the_connections_page_lists_allowed_applications_with_a_revoke_form() -> None:
    app = pages.AppRow(client_id="c-1", name="Pad <IDE>", servers=["eng"], allowed_at=0.0, revoke_csrf="tok")
    html = pages.connections(viewer=WHO, rows=[], apps=[app])
    assert "Pad &lt;IDE&gt;" in html and "Pad <IDE>" not in html
    assert '<input type="hidden" name="client" value="c-1">' in html
    assert '<input type="hidden" name="csrf" value="tok">' in html
    assert "Applications you allowed" not in pages.connections(viewer=WHO, rows=[])
    assert '<a href="/servers">Your servers</a>' in html  # every page's header


def test_the_consent_page_names_the_client_where_it_sends_back_and_the_servers() -> None:
    from manifold.authserver.consent import consent

    html = consent(
        viewer=WHO,
        client_name="Pad IDE",
        client_id="c-1",
        source="registered",
        redirect_host="localhost:4000",
        server_id="eng",
        resource=URL,
        fields={"client_id": "c-1"},
        csrf="tok",
        allowed=("https://manifold.example/mcp/ops", URL),
    )
    assert "Allow Pad IDE?" in html and "localhost:4000" in html and URL in html
    assert "Allowed before" in html and "https://manifold.example/mcp/ops" in html
    assert 'class="button button-primary" type="submit" name="decision" value="allow"' in html

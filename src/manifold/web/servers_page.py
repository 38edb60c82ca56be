"""The signed-in person's own page: the servers they may use, and how to add each to an MCP client.

    GET /          → /servers (signed in), or the sign-in first and then /servers
    GET /servers   every served server this person may use (the relay's own check: `server_allowed`), with
                   its URL, client snippets that need no key (the client signs in through the gateway's
                   authorization server when the server answers 401: docs/gateway-oauth.md), and the state
                   of each OAuth upstream behind it: connected, or a link to connect it now

The person is the principal an application they sign in will act as (identity/gateway_tokens.py
`principal_for`), restricted like the key they signed in with, so the page lists what their IDE will get.
No script (the pages' CSP allows none): a snippet is a `<pre>` to select and copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.responses import Response

from manifold.catalog.view import VirtualServerView
from manifold.config.models import OAuthAuth
from manifold.identity.api_keys import KeyRepository
from manifold.identity.directory import Snapshot
from manifold.outbound.oauth import ConnectLinks, Vault
from manifold.outbound.oauth.vault import ConnectionStatus
from manifold.principal import Credential, CredentialKind, Principal
from manifold.web import pages
from manifold.web.connect import UpstreamLookup
from manifold.web.page_request import PageRequest, login_redirect, viewer
from manifold.web.pages import Viewer, e
from manifold.web.responses import page
from manifold.web.session import SessionCookies, WebSession
from manifold.web.session_principal import session_principal

PAGE_PATH = "/servers"
CREDENTIAL = Credential(CredentialKind.GATEWAY_OAUTH)  # what an application the person signs in will carry


class ServerAccess(Protocol):
    """The relay's decisions (policy/access.py `PolicyAccess`)."""

    def server_allowed(self, principal: Principal, view: VirtualServerView) -> bool: ...
    def member_visible(self, principal: Principal, view: VirtualServerView, member_id: str) -> bool: ...


class Served(Protocol):
    def items(self) -> list[tuple[str, VirtualServerView]]: ...


class _NoServers:
    """Nothing served, nothing allowed: the page of a web app built without the relay (unit tests)."""

    def items(self) -> list[tuple[str, VirtualServerView]]:
        return []

    def server_allowed(self, principal: Principal, view: VirtualServerView) -> bool:
        return False

    def member_visible(self, principal: Principal, view: VirtualServerView, member_id: str) -> bool:
        return False


NO_SERVERS = _NoServers()


@dataclass(frozen=True)
class Upstream:
    """An OAuth upstream behind a server, for this person: connected, or the link that connects it."""

    upstream_id: str
    connected: bool
    connect_url: str | None


@dataclass(frozen=True)
class ServerRow:
    server_id: str
    url: str
    description: str | None
    upstreams: list[Upstream]


class ServersPage:
    def __init__(
        self,
        cookies: SessionCookies,
        *,
        served: Served,
        access: ServerAccess,
        directory: Callable[[], Snapshot],
        keys: KeyRepository,
        vault: Vault,
        links: ConnectLinks,
        upstream_config: UpstreamLookup,
    ) -> None:
        self.cookies = cookies
        self.served = served
        self.access = access
        self.directory = directory
        self.keys = keys
        self.vault = vault
        self.links = links
        self.upstream_config = upstream_config

    async def root(self, request: PageRequest) -> Response:
        if request.session is None:
            return page(303, location="/login?next=" + PAGE_PATH)
        return page(303, location=PAGE_PATH)

    async def servers(self, request: PageRequest) -> Response:
        session = request.session
        if session is None:
            return login_redirect(request)
        who = viewer(self.cookies.signer, session)
        principal = await self._principal(session)
        rows = [] if principal is None else await self._rows(principal, request.base_url)
        return page(200, servers_page(viewer=who, rows=rows))

    async def may_use(self, session: WebSession, server_id: str) -> bool:
        """Whether the signed-in person may use this server (as its MCP endpoint would decide): the
        authorization server signs in no application for a server its person has no grant for."""
        view = dict(self.served.items()).get(server_id)
        principal = await self._principal(session) if view is not None else None
        return principal is not None and view is not None and self.access.server_allowed(principal, view)

    async def _principal(self, session: WebSession) -> Principal | None:
        return await session_principal(session, self.directory, self.keys, CREDENTIAL)

    async def _rows(self, principal: Principal, base_url: str) -> list[ServerRow]:
        allowed = [
            (sid, view) for sid, view in sorted(self.served.items()) if self.access.server_allowed(principal, view)
        ]
        oauth: dict[str, bool] = {}  # the OAuth upstreams behind them → connected
        for _, view in allowed:
            for member in view.members:
                config = self.upstream_config(member.upstream)
                if config is not None and isinstance(config.auth, OAuthAuth):
                    oauth.setdefault(member.upstream, False)
        if oauth:
            for connection in await self.vault.list(principal.id):
                if connection.upstream in oauth and connection.status == ConnectionStatus.OK:
                    oauth[connection.upstream] = True
        rows: list[ServerRow] = []
        for sid, view in allowed:
            upstreams: dict[str, Upstream] = {}
            for member in view.members:
                upstream_id = member.upstream
                if upstream_id not in oauth or upstream_id in upstreams:
                    continue
                if not self.access.member_visible(principal, view, member.member_id):
                    continue
                connected = oauth[upstream_id]
                link = None if connected else self.links.mint(principal.id, upstream_id, base_url)
                upstreams[upstream_id] = Upstream(upstream_id, connected, link)
            rows.append(
                ServerRow(
                    server_id=sid,
                    url=f"{base_url.rstrip('/')}/mcp/{sid}",
                    description=view.config.description,
                    upstreams=list(upstreams.values()),
                )
            )
        return rows


# ---- markup ------------------------------------------------------------------------------------------------


def snippets(server_id: str, url: str) -> list[tuple[str, str]]:
    """(where it goes, what to paste) for the common MCP clients; none carries a key: the client signs in."""
    entry = {"type": "http", "url": url}
    return [
        ("VS Code: .vscode/mcp.json", json.dumps({"servers": {server_id: entry}}, indent=2)),
        ("Cursor: ~/.cursor/mcp.json", json.dumps({"mcpServers": {server_id: {"url": url}}}, indent=2)),
        ("Claude Code", f"claude mcp add --transport http {server_id} {url}"),
        ("Any client (generic JSON)", json.dumps({"mcpServers": {server_id: entry}}, indent=2)),
        (
            "Claude Desktop: claude_desktop_config.json (and any client that only starts commands, via mcp-remote)",
            json.dumps({"mcpServers": {server_id: {"command": "npx", "args": ["mcp-remote", url]}}}, indent=2),
        ),
    ]


def _upstream(row: Upstream) -> str:
    if row.connected:
        return f'<li>{e(row.upstream_id)} <span class="badge badge-ok">Connected</span></li>'
    return (
        f'<li>{e(row.upstream_id)} <span class="badge badge-broken">Not connected</span> '
        f'<a href="{e(row.connect_url or "")}">Connect {e(row.upstream_id)}</a></li>'
    )


def _server(row: ServerRow, first: bool) -> str:
    blocks = "".join(
        f"<details{' open' if first and i == 0 else ''}><summary>{e(label)}</summary>"
        f'<pre class="snippet" tabindex="0">{e(text)}</pre></details>'
        for i, (label, text) in enumerate(snippets(row.server_id, row.url))
    )
    about = f'<p class="muted">{e(row.description)}</p>' if row.description else ""
    accounts = ""
    if row.upstreams:
        accounts = (
            "<p>Accounts it uses (yours, connected once):</p>"
            f'<ul class="accounts">{"".join(_upstream(u) for u in row.upstreams)}</ul>'
        )
    return (
        f'<li class="connection"><h2>{e(row.server_id)}</h2>{about}'
        f'<dl class="facts"><div><dt>URL</dt><dd><code>{e(row.url)}</code></dd></div></dl>'
        f"{accounts}{blocks}</li>"
    )


def servers_page(*, viewer: Viewer, rows: Sequence[ServerRow]) -> str:
    if not rows:
        body = (
            "<p>You may not use any server of this gateway yet.</p>"
            '<p class="muted">Ask an administrator for a grant; the servers then show here.</p>'
        )
        return pages.layout("Your servers", body, viewer, wide=True)
    intro = (
        '<p class="lead">Add a server to your MCP client with one of these snippets. No key is needed: the '
        "client opens your browser, you sign in here and allow it once.</p>"
        '<p class="muted">Applications you allowed are listed, and can be revoked, under '
        '<a href="/connections">your connections</a>.</p>'
    )
    items = "".join(_server(row, i == 0) for i, row in enumerate(rows))
    return pages.layout("Your servers", intro + f'<ul class="connections">{items}</ul>', viewer, wide=True)

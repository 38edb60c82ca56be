"""The HTML of the gateway's few web pages. Plain HTML, no script, every value escaped.

Each function returns the page body; routes.py sends it with the security headers (no framing, no cross-site
referrer, no caching). Values that come from a request or the database go through `e()` — never an f-string
of raw text into markup. Every page has the same frame (`_layout`): the product's name and, when someone is
signed in, who that is with their connections and a sign-out button; one `<h1>`; a `<main>` landmark. The look
is one small stylesheet, static/manifold.css, which the gateway serves itself (`stylesheet()`, routes.py).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from importlib import resources
from urllib.parse import urlsplit

STYLESHEET_PATH = "/static/manifold.css"


@dataclass(frozen=True)
class Stylesheet:
    """The pages' stylesheet: its bytes, and the address the pages link (with a hash of the content, so a
    browser may keep it for a year and still gets a new one the moment the gateway ships another)."""

    body: bytes
    version: str

    @property
    def url(self) -> str:
        return f"{STYLESHEET_PATH}?v={self.version}"


@functools.cache
def stylesheet() -> Stylesheet:
    body = resources.files("manifold.web").joinpath("static", "manifold.css").read_bytes()
    return Stylesheet(body, hashlib.sha256(body).hexdigest()[:16])


def e(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person as the page header shows them (with the token of their sign-out button)."""

    display: str
    logout_csrf: str


def _sign_out_form(viewer: Viewer, *, small: bool) -> str:
    size = " button-small" if small else ""
    return (
        f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{e(viewer.logout_csrf)}">'
        f'<button class="button button-secondary{size}" type="submit">Sign out</button></form>'
    )


def layout(title: str, body: str, viewer: Viewer | None = None, *, wide: bool = False) -> str:
    """The frame every page shares around `body` (markup, escaped by the caller): the stylesheet, the header
    with the product's name and the signed-in `viewer`, one `<h1>` of `title`, the `<main>` landmark. The
    stylesheet's classes: `lead`, `muted`; `message message-error` (with role="alert") and `message message-ok`
    (role="status"); `button` (primary), `button button-secondary`, `button-danger`, `button-small`,
    `button-block`, `actions` (a row of buttons); `field`, `label`, `hint`; `dl.facts` of dt/dd pairs."""
    account = ""
    if viewer is not None:
        account = (
            '<nav class="account" aria-label="Account">'
            f"<p>Signed in as <strong>{e(viewer.display)}</strong></p>"
            '<a href="/servers">Your servers</a>'
            '<a href="/connections">Your connections</a>'
            '<a href="/approvals">Approvals</a>'
            f"{_sign_out_form(viewer, small=True)}</nav>"
        )
    width = "page" if wide else "page page-narrow"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · Manifold</title>"
        f'<link rel="stylesheet" href="{e(stylesheet().url)}"></head>\n'
        '<body><header class="site-header"><div class="bar">'
        '<p class="brand"><span class="brand-mark" aria-hidden="true"></span>Manifold</p>'
        f"{account}</div></header>\n"
        f'<main class="{width}"><div class="card">\n<h1>{e(title)}</h1>\n{body}\n</div></main></body></html>\n'
    )


_layout = layout  # deprecated alias: use `layout`


def _error(message: str) -> str:
    return f'<p class="message message-error" role="alert">{e(message)}</p>'


def _ok(message: str) -> str:
    return f'<p class="message message-ok" role="status">{e(message)}</p>'


def login(
    *,
    next_url: str,
    csrf: str,
    error: str | None = None,
    idp_login: str | None = None,
    connect: str | None = None,
) -> str:
    """The sign-in form. `connect` names the upstream the person is signing in to connect, when they came from
    a connect link that verified (sign_in.py); the page then says so."""
    problem_line = _error(error) if error else ""
    if connect is not None:
        title = f"Sign in to connect {connect}"
        lead = (
            f'<p class="lead">Sign in to the gateway first, so that <strong>{e(connect)}</strong> is connected to '
            "your own account. You will be asked to approve the connection next.</p>"
        )
    else:
        title = "Sign in"
        lead = '<p class="lead">Sign in to the gateway so it can tell who you are.</p>'
    key_button = "button-primary"
    idp = ""
    if idp_login is not None:
        idp = (
            f'<p><a class="button button-primary button-block" href="{e(idp_login)}">'
            "Sign in with your organisation's account</a></p>"
            '<p class="or">or, with an API key</p>'
        )
        key_button = "button-secondary"
    body = (
        f"{problem_line}{lead}{idp}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<div class="field"><label for="key">API key</label>'
        '<input id="key" type="password" name="key" autocomplete="off" required aria-describedby="key-hint">'
        '<span class="hint" id="key-hint">The key your MCP client uses to reach this gateway.</span></div>'
        f'<button class="button {key_button} button-block" type="submit">Sign in</button></form>'
    )
    return layout(title, body)


def consent(
    *,
    viewer: Viewer,
    upstream_id: str,
    principal_id: str,
    authorization_server: str | None,
    upstream_url: str,
    scopes: Iterable[str],
    link: str,
    csrf: str,
) -> str:
    scope_list = ", ".join(scopes) or "the server's defaults"
    # The authorization server is often discovered only when the flow starts (after this page): then the page
    # names the upstream whose sign-in service it will be, rather than something vague.
    if authorization_server:
        where = urlsplit(authorization_server).netloc
    else:
        where = f"the sign-in service of {urlsplit(upstream_url).netloc or upstream_id}"
    body = (
        f'<p class="lead">Connect <strong>{e(upstream_id)}</strong> for <strong>{e(principal_id)}</strong>?</p>'
        '<dl class="facts">'
        f"<div><dt>You sign in at</dt><dd>{e(where)}</dd></div>"
        f"<div><dt>Access asked for</dt><dd>{e(scope_list)}</dd></div>"
        "</dl>"
        f"<p>You will be sent to <strong>{e(where)}</strong> to sign in there and approve access. The gateway "
        f"keeps the resulting tokens, encrypted, and uses them only for your calls to {e(upstream_id)}. You can "
        'revoke this at any time under <a href="/connections">your connections</a>.</p>'
        f'<form method="post" action="/connect/{e(upstream_id)}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="t" value="{e(link)}">'
        f'<button class="button button-primary button-block" type="submit">Connect {e(upstream_id)}</button></form>'
        '<p class="muted">If you did not ask to connect this account, close this window.</p>'
    )
    return layout(f"Connect {upstream_id}", body, viewer)


def wrong_user(*, viewer: Viewer) -> str:
    body = (
        '<p class="message message-error" role="alert">This connect link was made for a different user than the '
        f"one signed in here (<strong>{e(viewer.display)}</strong>). Nothing was connected.</p>"
        "<p>If the link is yours, sign out and sign in again as yourself, then open the link again. "
        "If someone sent you this link, do not use it: it would connect your account to their user.</p>"
    )
    return layout("Not your link", body, viewer)


def connected(*, viewer: Viewer | None, upstream_id: str) -> str:
    body = (
        f'<p class="message message-ok" role="status"><strong>{e(upstream_id)}</strong> is connected.</p>'
        "<p>You can close this window and go back to your MCP client: the next call just works.</p>"
    )
    if viewer is not None:
        body += '<p><a class="button button-secondary" href="/connections">See your connections</a></p>'
    return layout("Connected", body, viewer)


def problem(
    title: str,
    message: str,
    *,
    viewer: Viewer | None = None,
    hint: str | None = None,
    action: tuple[str, str] | None = None,
) -> str:
    """An error page; `action` is (label, same-site path) of the one button that leads on from it."""
    extra = f"<p>{e(hint)}</p>" if hint else ""
    if action is not None:
        label, href = action
        extra += f'<p><a class="button button-primary" href="{e(href)}">{e(label)}</a></p>'

    sentence = message[:1].upper() + message[1:]  # the modules' messages start in lower case
    return layout(title, _error(sentence) + extra, viewer)


def sign_out(*, viewer: Viewer) -> str:
    """Asked for /logout with a GET while signed in: the button that signs out (a GET never does)."""
    body = (
        f"<p>You are signed in as <strong>{e(viewer.display)}</strong>. Signing out ends this browser's session "
        "with the gateway; your connected accounts stay connected.</p>"
        f'<div class="actions">{_sign_out_form(viewer, small=False)}'
        '<a href="/connections">Back to your connections</a></div>'
    )
    return layout("Sign out?", body, viewer)


def signed_out() -> str:
    body = (
        f"{_ok('You are signed out of the gateway.')}"
        "<p>Your connected accounts stay connected; your MCP client keeps working with its own key.</p>"
        '<p><a class="button button-secondary" href="/login">Sign in again</a></p>'
    )
    return layout("Signed out", body)


@dataclass(frozen=True)
class ConnectionRow:
    upstream_id: str
    connected_at: float | None
    updated_at: float | None
    expires_at: float | None
    scopes: list[str]
    status: str
    revoke_csrf: str


def _when(at: float | None) -> str:
    if at is None:
        return "—"
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


_STATUS = {"ok": ("Connected", "badge-ok"), "broken": ("Connect again", "badge-broken")}


@dataclass(frozen=True)
class AppRow:
    """An application (IDE, agent) the person allowed to sign in to the gateway as them (authserver/)."""

    client_id: str
    name: str | None
    servers: list[str]
    allowed_at: float
    revoke_csrf: str


def _apps(apps: list[AppRow]) -> str:
    if not apps:
        return ""
    items = [
        '<li class="connection"><div class="connection-head">'
        f"<h3>{e(app.name or app.client_id)}</h3>"
        '<form method="post" action="/connections">'
        f'<input type="hidden" name="csrf" value="{e(app.revoke_csrf)}">'
        f'<input type="hidden" name="client" value="{e(app.client_id)}">'
        '<button class="button button-danger button-small" type="submit" '
        f'aria-label="Revoke {e(app.name or app.client_id)}">Revoke</button></form></div>'
        '<dl class="facts">'
        f"<div><dt>Client id</dt><dd><code>{e(app.client_id)}</code></dd></div>"
        f"<div><dt>Servers</dt><dd>{e(' '.join(app.servers) or '—')}</dd></div>"
        f"<div><dt>Allowed</dt><dd>{e(_when(app.allowed_at))}</dd></div>"
        "</dl></li>"
        for app in apps
    ]
    return (
        '<h2 class="section">Applications you allowed</h2>'
        '<p class="muted">They sign in to the gateway as you. Revoking one ends its access at once; it has to '
        "ask you again.</p>"
        '<ul class="connections">' + "".join(items) + "</ul>"
    )


def connections(
    *, viewer: Viewer, rows: list[ConnectionRow], notice: str | None = None, apps: list[AppRow] | None = None
) -> str:
    """The person's connected upstream accounts and, below, the applications they allowed (`apps`)."""
    note = _ok(notice) if notice else ""
    if not rows:
        body = (
            f"{note}<p>You have no connected accounts.</p>"
            '<p class="muted">When a tool needs one of your accounts, your MCP client gives you a link to connect '
            "it; the connection then shows here, and you can revoke it at any time.</p>"
        )
        return layout("Your connections", body + _apps(apps or []), viewer, wide=True)
    items = []
    for row in rows:
        label, badge = _STATUS.get(row.status, (row.status, "badge-broken"))
        items.append(
            '<li class="connection"><div class="connection-head">'
            f'<h2>{e(row.upstream_id)}<span class="badge {badge}">{e(label)}</span></h2>'
            '<form method="post" action="/connections">'
            f'<input type="hidden" name="csrf" value="{e(row.revoke_csrf)}">'
            f'<input type="hidden" name="upstream" value="{e(row.upstream_id)}">'
            '<button class="button button-danger button-small" type="submit">Revoke</button></form></div>'
            '<dl class="facts">'
            f"<div><dt>Connected</dt><dd>{e(_when(row.connected_at))}</dd></div>"
            f"<div><dt>Last refreshed</dt><dd>{e(_when(row.updated_at))}</dd></div>"
            f"<div><dt>Token expires</dt><dd>{e(_when(row.expires_at))}</dd></div>"
            f"<div><dt>Scopes</dt><dd>{e(' '.join(row.scopes) or '—')}</dd></div>"
            "</dl></li>"
        )
    intro = (
        '<p class="muted">The accounts the gateway uses for your calls. Revoking one deletes its tokens; '
        "the next call that needs it gives you a new link.</p>"
    )
    accounts = '<ul class="connections">' + "".join(items) + "</ul>"
    return layout("Your connections", note + intro + accounts + _apps(apps or []), viewer, wide=True)

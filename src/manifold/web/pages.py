"""The HTML of the gateway's few web pages. Plain HTML, no script, every value escaped.

Each function returns the page body; routes.py sends it with the security headers (no framing, no
referrer, no caching). Values that come from a request or the database go through `e()` — never an
f-string of raw text into markup.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit


def e(value: object) -> str:
    return escape(str(value), quote=True)


def _layout(title: str, body: str, *, signed_in_as: str | None = None, logout_csrf: str | None = None) -> str:
    who = ""
    if signed_in_as is not None and logout_csrf is not None:
        who = (
            f'<p class="who">Signed in as <strong>{e(signed_in_as)}</strong> · '
            f'<a href="/connections">your connections</a></p>'
            f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{e(logout_csrf)}">'
            f'<button type="submit">Sign out</button></form>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · Manifold</title></head>\n"
        f"<body><header><p>Manifold</p>{who}</header>\n<main>\n<h1>{e(title)}</h1>\n{body}\n</main></body></html>\n"
    )


@dataclass(frozen=True)
class Viewer:
    """The signed-in person as the page header shows them (with the token of their sign-out button)."""

    display: str
    logout_csrf: str


def _wrap(title: str, body: str, viewer: Viewer | None) -> str:
    if viewer is None:
        return _layout(title, body)
    return _layout(title, body, signed_in_as=viewer.display, logout_csrf=viewer.logout_csrf)


def login(*, next_url: str, csrf: str, error: str | None = None, idp_login: str | None = None) -> str:
    problem = f'<p role="alert"><strong>{e(error)}</strong></p>' if error else ""
    idp = ""
    if idp_login is not None:
        idp = (
            f'<p><a href="{e(idp_login)}">Sign in with your organisation\'s account</a></p><p>or, with an API key:</p>'
        )
    body = (
        f"{problem}{idp}"
        "<p>Sign in to the gateway so it can tell who you are.</p>"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label>API key <input type="password" name="key" autocomplete="off" required></label> '
        '<button type="submit">Sign in</button></form>'
        "<p>Use the key your MCP client uses to reach this gateway.</p>"
    )
    return _layout("Sign in", body)


def consent(
    *,
    viewer: Viewer,
    upstream_id: str,
    principal_id: str,
    authorization_server: str | None,
    scopes: Iterable[str],
    link: str,
    csrf: str,
) -> str:
    scope_list = ", ".join(scopes) or "(the server's defaults)"
    where = urlsplit(authorization_server).netloc if authorization_server else "the server's sign-in page"
    body = (
        f"<p>Connect <strong>{e(upstream_id)}</strong> for <strong>{e(principal_id)}</strong>?</p>"
        f"<p>You will be sent to <strong>{e(where)}</strong> to sign in there and approve access "
        f"(scopes: {e(scope_list)}). The gateway keeps the resulting tokens, encrypted, and uses them only "
        f"for your calls to {e(upstream_id)}. You can revoke this at any time under "
        '<a href="/connections">your connections</a>.</p>'
        f'<form method="post" action="/connect/{e(upstream_id)}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="t" value="{e(link)}">'
        f'<button type="submit">Connect {e(upstream_id)}</button></form>'
        "<p>If you did not ask to connect this account, close this window.</p>"
    )
    return _wrap(f"Connect {upstream_id}", body, viewer)


def wrong_user(*, viewer: Viewer) -> str:
    body = (
        "<p>This connect link was made for a different user than the one signed in here "
        f"(<strong>{e(viewer.display)}</strong>). Nothing was connected.</p>"
        "<p>If the link is yours, sign out and sign in again as yourself, then open the link again. "
        "If someone sent you this link, do not use it: it would connect your account to their user.</p>"
    )
    return _wrap("Not your link", body, viewer)


def connected(*, viewer: Viewer | None, upstream_id: str) -> str:
    body = (
        f"<p><strong>{e(upstream_id)}</strong> is connected. You can close this window and go back to your "
        "MCP client: the next call just works.</p>"
    )
    return _wrap("Connected", body, viewer)


def problem(title: str, message: str, *, viewer: Viewer | None = None, hint: str | None = None) -> str:
    extra = f"<p>{e(hint)}</p>" if hint else ""
    return _wrap(title, f'<p role="alert">{e(message)}</p>{extra}', viewer)


def signed_out() -> str:
    return _layout("Signed out", "<p>You are signed out of the gateway's web pages.</p>")


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


def connections(*, viewer: Viewer, rows: list[ConnectionRow], notice: str | None = None) -> str:
    note = f'<p role="status">{e(notice)}</p>' if notice else ""
    if not rows:
        return _wrap("Your connections", f"{note}<p>You have no connected accounts.</p>", viewer)
    lines = []
    for row in rows:
        lines.append(
            "<tr>"
            f"<td>{e(row.upstream_id)}</td><td>{e(_when(row.connected_at))}</td>"
            f"<td>{e(_when(row.updated_at))}</td><td>{e(_when(row.expires_at))}</td>"
            f"<td>{e(' '.join(row.scopes) or '—')}</td><td>{e(row.status)}</td>"
            f'<td><form method="post" action="/connections">'
            f'<input type="hidden" name="csrf" value="{e(row.revoke_csrf)}">'
            f'<input type="hidden" name="upstream" value="{e(row.upstream_id)}">'
            f'<button type="submit">Revoke</button></form></td>'
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>upstream</th><th>connected</th><th>last refreshed</th><th>token expires</th>"
        "<th>scopes</th><th>status</th><th></th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
    )
    return _wrap("Your connections", note + table, viewer)

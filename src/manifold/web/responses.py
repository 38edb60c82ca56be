"""Every web page goes out through `page()`: HTML with the headers that keep it from being framed, cached or
leaking its URL (the connect link and the OAuth code are in URLs) through a Referer."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import HTMLResponse

from manifold.web import pages
from manifold.web.pages import Viewer

SECURITY_HEADERS = {
    "content-security-policy": "frame-ancestors 'none'; default-src 'self'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # no-referrer made Chromium send Origin: null on our own forms
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


def page(status: int, body: str = "", *, location: str | None = None, cookies: Sequence[str] = ()) -> HTMLResponse:
    """A page (or a redirect, with `location`). `cookies` are whole Set-Cookie values from
    `session.SessionCookies`, which owns their attributes (`SameSite=Lax` as written, `__Host-` names)."""
    response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
    if location is not None:
        response.headers["location"] = location
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def problem(
    status: int, title: str, message: str, *, viewer: Viewer | None = None, hint: str | None = None
) -> HTMLResponse:
    """A page that says what went wrong (never a traceback)."""
    return page(status, pages.problem(title, message, viewer=viewer, hint=hint))

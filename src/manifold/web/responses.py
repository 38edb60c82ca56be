"""Every web page goes out through `page()`: HTML with the headers that keep it from being framed, cached or
leaking its URL (the connect link and the OAuth code are in URLs) through a Referer to another site. The CSP
lets a page load only the gateway's own stylesheet: no script at all, nothing from elsewhere, no framing."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import HTMLResponse, Response

from manifold.web import pages
from manifold.web.pages import Viewer

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'",
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
    status: int,
    title: str,
    message: str,
    *,
    viewer: Viewer | None = None,
    hint: str | None = None,
    action: tuple[str, str] | None = None,
) -> HTMLResponse:
    """A page that says what went wrong (never a traceback), with at most one button leading on."""
    return page(status, pages.problem(title, message, viewer=viewer, hint=hint, action=action))


YEAR_SECONDS = 365 * 24 * 3600


def stylesheet(version: str | None) -> Response:
    """The pages' stylesheet. Asked for by the address the pages link (its content hash as `v`), a browser may
    keep it for a year; asked for otherwise, it must check again each time."""
    sheet = pages.stylesheet()
    cache = f"public, max-age={YEAR_SECONDS}, immutable" if version == sheet.version else "no-cache"
    headers = {
        "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
        "x-content-type-options": "nosniff",
        "cache-control": cache,
        "etag": f'"{sheet.version}"',
    }
    return Response(sheet.body, media_type="text/css", headers=headers)

"""CSRF protection for the web pages' forms.

Three layers, each enough on its own against a cross-site form post:
- the session cookie is `SameSite=Lax`, so another site's POST arrives without it;
- every form carries a token derived (HMAC) from the signed-in session's random id *and the action* it
  authorises (`consent:<upstream>`, `revoke:<upstream>`, `logout`), so a token is worth nothing outside the
  session and the button it was rendered for; the sign-in form's token is bound to a short-lived pre-login
  cookie instead (login CSRF: signing a victim in as the attacker, then having them connect their account
  to the attacker's user);
- a POST whose `Origin` (or `Sec-Fetch-Site`) says it came from another site is refused before any of that.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from manifold.web.session import Signer


def token(signer: Signer, binding: str, action: str) -> str:
    """The form token for `action` in the session (or pre-login form) identified by `binding`."""
    return signer.mac("csrf:" + action, binding.encode())


def valid(signer: Signer, binding: str, action: str, sent: str | None) -> bool:
    """Whether `sent` is the token for `action` in this session. Whatever else a form carries (nothing,
    non-ASCII, megabytes, another shape) is not valid, and never an error."""
    return sent is not None and signer.verify("csrf:" + action, binding.encode(), sent)


def cross_site(headers: Mapping[str, str], base_url: str) -> str | None:
    """Why a POST looks cross-site, or None.

    `Sec-Fetch-Site` comes first: a page cannot set it, and every current browser sends it. When it says
    same-origin the `Origin` is not consulted — Chromium sends `Origin: null` on a same-origin form POST from a
    page whose referrer policy withholds the referrer, and a sandboxed frame on another site sends
    `Sec-Fetch-Site: cross-site` with its `null`. Without it (older browsers), the `Origin` must be ours. A
    request with neither is not from a browser page and carries no ambient session to abuse anyway. The
    CSRF token is checked after this in every case."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return None
        return f"the form was sent from another site (Sec-Fetch-Site: {fetch_site[:20]})"
    origin = headers.get("origin")
    if origin is None:
        return None
    ours = urlsplit(base_url)
    theirs = urlsplit(origin)
    if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
        return "the form was sent from another origin"
    return None

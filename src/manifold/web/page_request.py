"""One request to a web page, as the page handlers see it once the checks every page shares have passed
(routes.py: Host/Origin, cross-site POST, body size): its fields, cookies and signed-in session."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.responses import Response

from manifold.web import csrf
from manifold.web.pages import Viewer
from manifold.web.responses import page
from manifold.web.session import Signer, WebSession


@dataclass(frozen=True)
class PageRequest:
    method: str
    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    form: dict[str, str]  # empty unless a URL-encoded POST
    cookies: dict[str, str]
    session: WebSession | None  # None: nobody is signed in (or the key that signed them in was revoked)
    base_url: str  # the gateway's origin as the browser sees it, for redirect URIs
    client: str  # the client's address, for throttling failed sign-ins

    @property
    def posted(self) -> bool:
        return self.method == "POST"


def viewer(signer: Signer, session: WebSession) -> Viewer:
    """The signed-in person as the page header shows them, with the token of their sign-out button."""
    return Viewer(session.display, csrf.token(signer, session.sid, "logout"))


# The longest page address the sign-in form carries along to come back to: a connect link is a few hundred
# characters; anything much longer would make a `Location` header proxies and clients refuse.
MAX_NEXT_CHARS = 2048


def login_redirect(request: PageRequest) -> Response:
    """To the sign-in form, and back to this page afterwards (without its query, if that is too long)."""
    target = request.path
    if request.query:
        target += "?" + urlencode(request.query)
    if len(target) > MAX_NEXT_CHARS:
        target = request.path[:MAX_NEXT_CHARS]
    return page(303, location="/login?" + urlencode({"next": target}))

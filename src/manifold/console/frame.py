"""What every console page shares: rendering (Jinja2 templates in the web pages' frame), the headers, the
checks each page passes (signed in, an admin, the cross-site check and a CSRF token on every POST) and the
gateway's services the pages act through.

A page module (console/upstreams.py, servers.py, access.py, ...) exports `routes(frame) -> list[Route]`,
wrapping each handler in `frame.page(handler)`; console/app.py collects them. A handler is
`async (request, principal, session) -> Response` and only runs for an admin.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import jinja2
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations
from manifold.catalog.lists import UpstreamLists
from manifold.config.models import GatewaySettings
from manifold.identity.api_keys import KeyRepository
from manifold.identity.directory import Snapshot
from manifold.outbound.oauth.vault import Vault
from manifold.policy.admins import is_admin
from manifold.principal import Credential, CredentialKind, Principal
from manifold.security.origin import OriginPolicy
from manifold.upstream.credential import Outbound
from manifold.web import csrf
from manifold.web.forms import BodyTooLarge, TooManyFields, form_fields, read_body
from manifold.web.page_request import viewer
from manifold.web.pages import stylesheet
from manifold.web.session import SessionCookies, WebSession
from manifold.web.session_principal import session_principal
from manifold.web.signed_out import SignedOut

log = logging.getLogger(__name__)

PREFIX = "/admin"
# The web pages' policy, plus the console's own script (htmx) and its requests back to the console.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}

# An editor's form names many tools (one checkbox each); the body is still bounded by max_body_bytes.
MAX_FIELDS = 5000

# Every page route takes all three: the wrong one gets the console's 405 page (Frame.page), not Starlette's.
METHODS = ["GET", "HEAD", "POST"]

Handler = Callable[[Request, Principal, WebSession], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class Health(Protocol):
    """The pool's view of each upstream (upstream/pool.py `UpstreamPool.health`)."""

    def health(self) -> dict[str, dict[str, object]]: ...


@functools.cache
def static_file(name: str) -> tuple[bytes, str]:
    """A file of console/static/ and its version (the first 16 hex digits of its SHA-256)."""
    body = resources.files("manifold.console").joinpath("static", name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={static_file(name)[1]}"


@functools.cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("manifold.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static_url"] = static_url
    env.globals["stylesheet_url"] = lambda: stylesheet().url
    return env


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(templates().get_template(template).render(**values), status_code=status, headers=HEADERS)


HOME_LINKS = (("/admin", "Console home"), ("/servers", "Your servers"))


def problem(
    status: int,
    title: str,
    message: str,
    who: object = None,
    links: tuple[tuple[str, str], ...] = HOME_LINKS,
    *,
    console_nav: bool = True,
) -> HTMLResponse:
    """`console_nav`: show the console's own navigation (not to someone who may not use the console)."""
    return render(
        "problem.html", status, title=title, message=message, viewer=who, links=links, console_nav=console_nav
    )


def redirect(path: str) -> RedirectResponse:
    """After a POST: back to a console page (303, so a reload does not post again)."""
    return RedirectResponse(path, status_code=303, headers=HEADERS)


class Refused(Exception):
    """Raised inside a page to answer with `response` instead (a 403, a redirect to sign in, ...)."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


@dataclass(frozen=True)
class Services:
    """What the console acts through: the admin API's own operations (`admin.perform` — one code path
    with the JSON API and the CLI, audited), and the reads the pages need."""

    settings: GatewaySettings
    admins: list[str]
    cookies: SessionCookies
    keys: KeyRepository
    directory: Callable[[], Snapshot]
    admin: AdminApi
    catalog_ops: CatalogOperations
    health: Health
    lists: UpstreamLists
    sync: Callable[[], Awaitable[None]]
    engine: AsyncEngine  # reads the admin API has no route for (the audit log)
    vault: Vault  # each user's OAuth connections
    # (admin, upstream id) -> the credential the admin's own requests carry to it (relay/handlers.py
    # `Gateway.credential_of`): an upstream's tools are listed with it, as a call of theirs would be
    credential_of: Callable[[Principal, str], Awaitable[Outbound]]


class Frame:
    """The checks and helpers every page uses."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.origin = OriginPolicy.from_settings(services.settings)
        self.signed_out = SignedOut(services.engine)  # sessions ended by signing out (web/signed_out.py)

    # ---- wrapping a handler --------------------------------------------------------------------------

    def page(self, handler: Handler, *, post: bool = False) -> Endpoint:
        """`handler` behind the checks: GET/HEAD only (or POST only when `post`), signed in, an admin; a
        POST also passes the cross-site check and carries the CSRF token of `action(handler name, ...)`."""

        async def endpoint(request: Request) -> Response:
            try:
                if post != (request.method == "POST"):
                    return problem(405, "Not allowed", f"{request.url.path[:200]} takes no {request.method[:10]}.")
                await self.services.sync()
                principal, session = await self._admin(request)
                if request.method == "POST":
                    await self._check_post(request, session, handler.__name__)
                return await handler(request, principal, session)
            except Refused as exc:
                return exc.response
            except Exception:  # noqa: BLE001 — a page that says so, never a traceback in the browser
                log.exception("console page %s failed", request.url.path)
                return problem(500, "Something went wrong", "The console could not show this page.")

        return endpoint

    # ---- what pages use ------------------------------------------------------------------------------

    def who(self, session: WebSession) -> object:
        """The signed-in person as the page header shows them (name, the sign-out form's token)."""
        return viewer(self.services.cookies.signer, session)

    def csrf(self, session: WebSession, handler: str, *path_values: str) -> str:
        """The token a form posting to `handler` (its function name) for the object named by `path_values`
        (the route's path parameters, in order) must carry."""
        return csrf.token(self.services.cookies.signer, session.sid, self.action(handler, path_values))

    def notice_query(self, session: WebSession, key: str, text: str, **more: str) -> str:
        """The query of a redirect after an action that says what was done (`key=text`), signed for this
        session: only the gateway can make a page say something (`notice`)."""
        signature = csrf.token(self.services.cookies.signer, session.sid, f"notice:{key}:{text}")
        return urlencode({**more, key: text, "signed": signature})

    def notice(self, request: Request, session: WebSession, key: str) -> str | None:
        """The `key` text of a `notice_query`, or None — also for a link someone else made up ("?approved=
        Your account is locked, call ..."): a page says only what this session's own action made it say."""
        text = request.query_params.get(key)
        if not text:  # (as long as the request head allows: it is bounded by limits.request_head_bytes)
            return None
        sent = request.query_params.get("signed")
        return text if csrf.valid(self.services.cookies.signer, session.sid, f"notice:{key}:{text}", sent) else None

    @staticmethod
    def form(request: Request) -> dict[str, str]:
        """The POSTed form, the first value of each field (read and checked by `page`)."""
        return request.state.console_form

    @staticmethod
    def form_lists(request: Request) -> dict[str, list[str]]:
        """The POSTed form with every value of each field (checkboxes, multiple selects), in order."""
        fields: dict[str, list[str]] = {}
        body = request.state.console_body.decode("utf-8", "replace")
        for name, value in parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS):
            fields.setdefault(name, []).append(value)
        return fields

    @staticmethod
    def action(name: str, path_values: tuple[str, ...] | list[str]) -> str:
        """What a form's CSRF token is bound to: the handler and the object it acts on."""
        return f"console:{name}:{'/'.join(path_values)}"

    # ---- the checks ----------------------------------------------------------------------------------

    async def _admin(self, request: Request) -> tuple[Principal, WebSession]:
        session = self.services.cookies.session(dict(request.cookies))
        if session is not None and await self.signed_out.ended(session):
            session = None
        if session is None:
            if request.method == "POST":
                raise Refused(problem(403, "Not allowed", "Sign in first."))
            target = PREFIX if request.url.path == PREFIX else request.url.path
            raise Refused(RedirectResponse(f"/login?next={target}", status_code=303, headers=HEADERS))
        principal = await self._principal(session)
        if principal is None and session.method.startswith("api_key:"):
            # The key this session was signed in with no longer works (revoked, perhaps from this very console,
            # or expired): said as such, not as "not an administrator" under "Signed in as ..." (review).
            raise Refused(
                problem(
                    403,
                    "Signed out",
                    "The key you signed in with no longer works (revoked, expired, or its owner removed). "
                    "Sign in again with a valid key.",
                    links=((f"/login?next={PREFIX}", "Sign in again"),),
                )
            )
        if principal is None or not is_admin(principal, self.services.admins):
            who = self.who(session)
            raise Refused(
                problem(
                    403,
                    "Not allowed",
                    "The console is for the gateway's administrators.",
                    who,
                    links=(("/servers", "Your servers"),),  # not the console's pages: each would say the same
                    console_nav=False,
                )
            )
        return principal, session

    async def _principal(self, session: WebSession) -> Principal | None:
        """As the web pages see it (web/session_principal.py): a key's restriction kept, so it is no admin."""
        kind, _, ref = session.method.partition(":")
        kind_of = CredentialKind.API_KEY if kind == "api_key" else CredentialKind.IDP_JWT
        credential = Credential(kind_of, ref or None)
        return await session_principal(session, self.services.directory, self.services.keys, credential)

    async def _check_post(self, request: Request, session: WebSession, handler: str) -> None:
        settings = self.services.settings
        base = settings.public_url or f"http://{request.headers.get('host') or '127.0.0.1'}"
        cross = csrf.cross_site(request.headers, base)
        if cross is not None:
            raise Refused(problem(403, "Not allowed", cross))
        try:
            body = await read_body(request, settings.max_body_bytes)
            form = form_fields(request.headers.get("content-type"), body, MAX_FIELDS)
        except BodyTooLarge:
            raise Refused(problem(413, "Too large", f"The form is over {settings.max_body_bytes} bytes.")) from None
        except (TooManyFields, ClientDisconnect):
            raise Refused(problem(400, "Not understood", "The form could not be read.")) from None
        action = self.action(handler, [str(v) for v in request.path_params.values()])
        if not csrf.valid(self.services.cookies.signer, session.sid, action, form.get("csrf")):
            raise Refused(problem(403, "Not allowed", "The form was not one this console gave you; reload the page."))
        request.state.console_form = form
        request.state.console_body = body

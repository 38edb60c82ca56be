"""The gateway's browser pages, as one ASGI app: the route table and the checks every page passes.

    /login, /login/oidc, /login/callback, /logout     sign_in.py
    /connect/{upstream}, /oauth/callback, /connections connect.py
    /, /servers                                        servers_page.py (the person's servers and snippets)
    /approvals, /approvals/{id}                        approvals.py (held calls: approve or deny)
    /static/manifold.css                               the pages' stylesheet (pages.stylesheet)

Before any page: the Host/Origin check (DNS-rebinding protection), then the changes made elsewhere are
applied (a key revoked from the CLI ends its web session on the very next page). A POST must not come from
another site (csrf.py), and its body is bounded by `max_body_bytes`. A session signed in with an API key
lasts only as long as that key is usable. Every answer is a page with the security headers
(responses.py); errors are pages that say what went wrong, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive as StarletteReceive
from starlette.types import Scope as StarletteScope
from starlette.types import Send as StarletteSend

from manifold.asgi import Receive, Scope, Send
from manifold.config.models import GatewaySettings, IdentitySettings
from manifold.identity.api_keys import KeyRepository
from manifold.identity.app_consents import AppConsents
from manifold.identity.authenticator import Authenticator
from manifold.outbound.oauth import ConnectLinks, OAuthFlows, Vault
from manifold.policy.approvals import Approvals
from manifold.security.crypto import Cipher
from manifold.security.origin import OriginPolicy
from manifold.security.secret_store import SecretStore
from manifold.web import csrf
from manifold.web.approvals import LIST as APPROVAL_LIST
from manifold.web.approvals import PAGE as APPROVAL_PAGE
from manifold.web.approvals import ApprovalPages
from manifold.web.connect import ConnectPages, UpstreamLookup
from manifold.web.forms import BodyTooLarge, TooManyFields, form_fields, query_fields, read_body
from manifold.web.page_request import PageRequest, viewer
from manifold.web.pages import STYLESHEET_PATH
from manifold.web.responses import problem, stylesheet
from manifold.web.servers_page import NO_SERVERS, PAGE_PATH, Served, ServerAccess, ServersPage
from manifold.web.session import SessionCookies, WebSession, session_keys
from manifold.web.sign_in import SignInPages, connect_purpose
from manifold.web.signed_out import SignedOut

log = logging.getLogger(__name__)

Sync = Callable[[], Awaitable[None]]
PageHandler = Callable[[PageRequest], Awaitable[Response]]
GET = frozenset({"GET", "HEAD"})
GET_POST = frozenset({"GET", "HEAD", "POST"})


class WebApp:
    """The web pages, an ASGI app: `await web(scope, receive, send)`."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        identity: IdentitySettings,
        keys: KeyRepository,
        authenticator: Authenticator,
        engine: AsyncEngine,
        cipher: Cipher,
        secrets: SecretStore,
        links: ConnectLinks,
        flows: OAuthFlows,
        vault: Vault,
        upstream_config: UpstreamLookup,
        sync: Sync,
        served: Served = NO_SERVERS,
        access: ServerAccess | None = None,
        apps: AppConsents | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.public_url = settings.public_url
        self.max_body = settings.max_body_bytes
        self.origin = OriginPolicy.from_settings(settings)
        self.keys = keys
        self.sync = sync
        secure = bool(self.public_url and self.public_url.startswith("https://"))
        self.cookies = SessionCookies(session_keys(cipher), secure=secure)
        self.signed_out = SignedOut(engine)
        purpose = connect_purpose(links, upstream_config)
        sign_in = SignInPages(self.cookies, authenticator, identity, secrets.lookup, self.signed_out, purpose)
        connect = ConnectPages(self.cookies, engine, links, flows, vault, upstream_config, apps)
        directory = lambda: authenticator.directory.snapshot  # noqa: E731
        servers = ServersPage(
            self.cookies,
            served=served if access is not None else NO_SERVERS,
            access=access if access is not None else NO_SERVERS,
            directory=directory,
            keys=keys,
            vault=vault,
            links=links,
            upstream_config=upstream_config,
        )
        self.may_use_server = servers.may_use  # for the authorization server (authserver/routes.py)
        self.router = Router(
            routes=[
                self._route("/login", sign_in.login, GET_POST),
                self._route("/login/oidc", sign_in.oidc_start, GET),
                self._route("/login/callback", sign_in.oidc_finish, GET),
                self._route("/logout", sign_in.logout, GET_POST),
                self._route("/connect/{upstream_id}", connect.connect, GET_POST),
                self._route("/oauth/callback", connect.callback, GET),  # clients configured by hand
                self._route("/oauth/as/{server}/callback", connect.callback, GET),  # registered: one per server
                self._route("/connections", connect.connections, GET_POST),
                self._route("/", servers.root, GET),
                self._route(PAGE_PATH, servers.servers, GET),
                Route(STYLESHEET_PATH, _stylesheet, methods=list(GET_POST)),
                *(
                    [
                        self._route(
                            APPROVAL_LIST, ApprovalPages(self.cookies, approvals, directory, keys).waiting, GET
                        ),
                        self._route(
                            APPROVAL_PAGE, ApprovalPages(self.cookies, approvals, directory, keys).approval, GET_POST
                        ),
                    ]
                    if approvals is not None
                    else []
                ),
            ],
            redirect_slashes=False,  # a redirect would be an answer without the pages' headers
            default=self._not_found,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The gateway types `send` as taking a dict, Starlette as taking any mutable mapping; Starlette only
        # ever passes dicts, so the server's `send` serves it as it is.
        send_message = cast(StarletteSend, send)
        request = Request(scope, receive)
        try:
            refused = await self._before_routing(request)
        except Exception:  # noqa: BLE001 — a page that says so, never a traceback in the browser
            log.exception("web page %s failed", request.scope["path"])
            refused = _failed()
        if refused is not None:
            await refused(scope, receive, send_message)
            return
        await self.router(scope, receive, send_message)

    async def _before_routing(self, request: Request) -> Response | None:
        headers = dict(request.headers.items())
        if headers.get("origin") == "null" and headers.get("sec-fetch-site") == "same-origin":
            # A browser's own word that the page was ours (Sec-Fetch-Site cannot be set by a page), with the
            # origin withheld by a referrer policy; the Host is still checked, and so is the CSRF token.
            del headers["origin"]
        problem_text = self.origin.check(headers)
        if problem_text is not None:
            return problem(403, "Not allowed", problem_text)
        if request.method not in GET_POST:
            return problem(405, "Not allowed", f"{request.method[:10]} is not used here.")
        if request.scope["path"] == STYLESHEET_PATH:
            return None  # the same for everyone: no session, no changes to apply
        await self.sync()
        return None

    def _route(self, path: str, handler: PageHandler, methods: frozenset[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            if request.method not in methods:
                return problem(405, "Not allowed", f"{path} takes no {request.method[:10]}.")
            try:
                page_request = await self._page_request(request)
                if isinstance(page_request, Response):
                    return page_request
                return await handler(page_request)
            except Exception:  # noqa: BLE001 — a page that says so, never a traceback in the browser
                log.exception("web page %s failed", request.scope["path"])
                return _failed()

        # Every method reaches the endpoint, which answers 405 as a page (Starlette's own 405 is plain text).
        return Route(path, endpoint, methods=list(GET_POST))

    async def _page_request(self, request: Request) -> PageRequest | Response:
        """The request as the pages see it, or the answer when it is refused before any page."""
        base_url = self.base_url(request)
        try:
            query = query_fields(request.query_params)
        except TooManyFields:
            return problem(400, "Not understood", "The address has more parameters than any page here.")
        form: dict[str, str] = {}
        if request.method == "POST":
            refused = csrf.cross_site(request.headers, base_url)
            if refused is not None:
                return problem(403, "Not allowed", refused)
            try:
                body = await read_body(request, self.max_body)
                form = form_fields(request.headers.get("content-type"), body)
            except BodyTooLarge:
                return problem(413, "Too large", f"The form is over {self.max_body} bytes.")
            except TooManyFields:
                return problem(400, "Not understood", "The form has more fields than any page here.")
            except ClientDisconnect:
                return problem(400, "Not understood", "The form did not arrive whole.")  # nobody reads it
        cookies = dict(request.cookies)
        return PageRequest(
            method=request.method,
            path=str(request.scope["path"]),
            path_params={k: str(v) for k, v in request.path_params.items()},
            query=query,
            form=form,
            cookies=cookies,
            session=await self._session(cookies),
            base_url=base_url,
            client=request.client.host if request.client else "?",
        )

    def base_url(self, request: Request) -> str:
        """The gateway's own origin as the browser sees it: `public_url`, else the (checked) Host header."""
        if self.public_url:
            return self.public_url
        return f"http://{request.headers.get('host') or '127.0.0.1'}"

    async def _not_found(self, scope: StarletteScope, receive: StarletteReceive, send: StarletteSend) -> None:
        """No such page: said in the pages' frame, with who is signed in (as every page shows)."""
        try:
            session = await self._session(dict(Request(scope).cookies))
        except Exception:  # noqa: BLE001 — the page says "not found" all the same
            log.exception("web page %s: session lookup failed", scope["path"])
            session = None
        who = viewer(self.cookies.signer, session) if session is not None else None
        await problem(404, "Not found", "There is no such page.", viewer=who)(scope, receive, send)

    async def _session(self, cookies: dict[str, str]) -> WebSession | None:
        session = self.cookies.session(cookies)
        if session is None or await self.signed_out.ended(session):
            return None
        kind, _, ref = session.method.partition(":")
        if kind == "api_key":
            # The key that proved who this is must still be good: revoking or expiring it ends the session.
            record = await self.keys.get(ref)
            if record is None or record.usable(time.time()) is not None:
                return None
        return session


async def _stylesheet(request: Request) -> Response:
    if request.method not in GET:
        return problem(405, "Not allowed", f"{STYLESHEET_PATH} takes no {request.method[:10]}.")
    return stylesheet(request.query_params.get("v"))


def _failed() -> Response:
    return problem(500, "Something went wrong", "The gateway could not show this page.")

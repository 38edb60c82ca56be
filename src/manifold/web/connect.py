"""Connecting an OAuth upstream, the authorization server's answer, and the user's connections.

    GET  /connect/{upstream}?t=…   consent page for the link's user  POST           → 303 to the authorization server
    GET  /oauth/callback?code&state&iss (or /oauth/as/<server>/callback) → tokens stored, "you can close this window"
    GET  /connections              the signed-in user's connections  POST (revoke)  → revoked, list again
                                   and the applications they allowed (gateway OAuth; revoke: same POST)

Why each step (the MCP security best practices' confused-deputy rules: the user consents, `state` is
single-use and made only after consent, the redirect URI is exact):
- The connect link names the user it was minted for; the page makes the person in the browser prove they are
  that user (sign-in), otherwise someone who was sent the link would connect *their* account to the
  sender's user — the sender's calls would then run with the victim's third-party access.
- Nothing leaves for the authorization server on a GET: the user clicks a CSRF-protected button first, and
  only then is the OAuth `state` created (bound to the user by outbound/oauth), one per attempt, single-use.
- A link makes one connection: it is spent when the tokens it led to are stored (outbound/oauth/client.py),
  so an attempt that failed (the authorization server unreachable, access declined there, the token exchange
  refused) can be tried again from the same link until it expires.
- The callback completes only for the signed-in user the flow was started for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from manifold.config.models import OAuthAuth, UpstreamConfig
from manifold.identity.app_consents import AppConsents
from manifold.identity.gateway_tokens import server_of_resource
from manifold.outbound.oauth import ConnectLinks, DiscoveryError, InvalidLink, OAuthError, OAuthFlows, Vault
from manifold.outbound.oauth.links import is_spent, link_digest
from manifold.security.crypto import DecryptError
from manifold.web import csrf, pages
from manifold.web.page_request import PageRequest, login_redirect, viewer
from manifold.web.responses import page, problem
from manifold.web.session import SessionCookies

log = logging.getLogger(__name__)
FRESH_LINK_HINT = "Call the tool again from your MCP client to get a fresh link."
RETRY_HINT = "Open the connect link again to try once more: it works until it expires, or until it has connected."

UpstreamLookup = Callable[[str], UpstreamConfig | None]


class ConnectPages:
    def __init__(
        self,
        cookies: SessionCookies,
        engine: AsyncEngine,
        links: ConnectLinks,
        flows: OAuthFlows,
        vault: Vault,
        upstream_config: UpstreamLookup,
        apps: AppConsents | None = None,
    ) -> None:
        self.cookies = cookies
        self.apps = apps
        self.engine = engine  # where spent connect links are remembered (outbound/oauth/links.py)
        self.links = links
        self.flows = flows
        self.vault = vault
        self.upstream_config = upstream_config

    # ---- /connect/{upstream} ----

    async def connect(self, request: PageRequest) -> Response:
        upstream_id = request.path_params["upstream_id"]
        upstream = self.upstream_config(upstream_id)
        if upstream is None or not isinstance(upstream.auth, OAuthAuth) or upstream.url is None:
            return problem(404, "Not found", f"No OAuth upstream named '{upstream_id[:100]}'.")
        auth = upstream.auth
        link = (request.form.get("t") if request.posted else request.query.get("t")) or ""
        session = request.session
        try:
            principal_id = self.links.verify(link, upstream_id)
        except InvalidLink as exc:
            who = viewer(self.cookies.signer, session) if session else None
            reason = str(exc) or "this connect link is not valid"
            return problem(400, "This link does not work", reason, hint=FRESH_LINK_HINT, viewer=who)
        if session is None:
            if request.posted:
                return problem(
                    401,
                    "Sign in first",
                    "Your sign-in ended before you approved.",
                    action=("Sign in and continue", f"/connect/{upstream_id}?t={quote(link)}"),
                )
            return login_redirect(request)
        who = viewer(self.cookies.signer, session)
        if session.principal_id != principal_id:
            log.warning("connect link for another user refused (signed in as %s)", session.principal_id)
            return page(403, pages.wrong_user(viewer=who))
        if await is_spent(self.engine, link):
            return problem(
                400,
                "This link was already used",
                "This connect link has connected your account already; a link makes one connection.",
                hint=FRESH_LINK_HINT,
                viewer=who,
            )
        action = f"consent:{upstream_id}"
        if not request.posted:
            body = pages.consent(
                viewer=who,
                upstream_id=upstream_id,
                principal_id=principal_id,
                authorization_server=auth.issuer or auth.authorization_endpoint,
                upstream_url=upstream.url,
                scopes=auth.scopes,
                link=link,
                csrf=csrf.token(self.cookies.signer, session.sid, action),
            )
            return page(200, body)
        if not csrf.valid(self.cookies.signer, session.sid, action, request.form.get("csrf")):
            return problem(403, "Not allowed", "The consent form was not from this session.")
        redirect_uri = request.base_url + "/oauth/callback"
        try:
            url = await self.flows.start(
                principal_id, upstream_id, auth, upstream.url, redirect_uri, link_digest=link_digest(link)
            )
        except Exception as exc:  # noqa: BLE001 — discovery or registration failed: say so on the page
            reason = safe_reason(exc)
            log.warning("connect %s for %s could not start: %s", upstream_id, principal_id, reason)
            message = f"Connecting {upstream_id} could not start: {reason}"
            return problem(502, "Could not reach the sign-in service", message, hint=RETRY_HINT, viewer=who)
        return page(303, location=url)

    # ---- /oauth/callback ----

    async def callback(self, request: PageRequest) -> Response:
        session = request.session
        if session is None:
            return problem(
                401,
                "Sign in first",
                "You are not signed in to the gateway in this browser, so the connection cannot be saved.",
                hint="Open the connect link from your MCP client again.",
            )
        who = viewer(self.cookies.signer, session)
        q = request.query
        try:
            connection = await self.flows.complete(
                q.get("state", ""), q.get("code"), q.get("iss"), q.get("error"), session.principal_id, request.path
            )
        except Exception as exc:  # noqa: BLE001 — denied, expired state, wrong issuer, token endpoint down…
            reason = safe_reason(exc)
            log.warning("oauth callback for %s failed: %s", session.principal_id, reason)
            return problem(400, "Not connected", reason, hint=RETRY_HINT, viewer=who)
        # (the flows tell the broker, which drops anything it cached)
        log.info("connected %s for %s", connection.upstream, session.principal_id)
        return page(200, pages.connected(viewer=who, upstream_id=connection.upstream))

    # ---- /connections ----

    async def connections(self, request: PageRequest) -> Response:
        session = request.session
        if session is None:
            if request.posted:
                return problem(401, "Sign in first", "Your sign-in ended.", action=("Sign in", "/connections"))
            return login_redirect(request)
        signer = self.cookies.signer
        notice = None
        if request.posted and "client" in request.form and self.apps is not None:
            client_id = request.form.get("client", "")
            if not csrf.valid(signer, session.sid, f"revoke-app:{client_id}", request.form.get("csrf")):
                return problem(403, "Not allowed", "The revoke form was not from this session.")
            if await self.apps.revoke_client(session.principal_id, client_id):
                log.info("revoked application %s for %s (web)", client_id[:200], session.principal_id)
                notice = "Revoked the application: its tokens no longer work, and it has to ask you again."
            else:
                notice = "That application was not allowed."
        elif request.posted:
            upstream_id = request.form.get("upstream", "")
            if not csrf.valid(signer, session.sid, f"revoke:{upstream_id}", request.form.get("csrf")):
                return problem(403, "Not allowed", "The revoke form was not from this session.")
            if await self.flows.revoke(session.principal_id, upstream_id):
                log.info("revoked %s for %s (web)", upstream_id, session.principal_id)
                notice = f"Revoked {upstream_id}: calls to it need you to connect again."
            else:
                notice = f"You had no connection to {upstream_id}."
        rows = [
            pages.ConnectionRow(
                upstream_id=c.upstream,
                connected_at=c.created_at,
                updated_at=c.updated_at,
                expires_at=c.expires_at,
                scopes=list(c.scopes),
                status=c.status.value,
                revoke_csrf=csrf.token(signer, session.sid, f"revoke:{c.upstream}"),
            )
            for c in await self.vault.list(session.principal_id)
        ]
        rows.sort(key=lambda r: r.upstream_id)
        apps = [
            pages.AppRow(
                client_id=c.client_id,
                name=c.client_name,
                servers=[server_of_resource(r) or r for r in c.resources],
                allowed_at=c.updated_at,
                revoke_csrf=csrf.token(signer, session.sid, f"revoke-app:{c.client_id}"),
            )
            for c in (await self.apps.consents(session.principal_id) if self.apps is not None else ())
        ]
        body = pages.connections(viewer=viewer(signer, session), rows=rows, notice=notice, apps=apps)
        return page(200, body)


def safe_reason(exc: BaseException) -> str:
    """What went wrong, for the page. The OAuth modules' own errors are written for the user (never a token);
    anything else is unexpected, so the page names only its type and the log has the rest."""
    if isinstance(exc, OAuthError | DiscoveryError | DecryptError):
        return (str(exc).strip() or type(exc).__name__)[:300]
    log.error("web: unexpected %s", type(exc).__name__, exc_info=exc)
    return f"an unexpected error ({type(exc).__name__}); the gateway's log has the details"

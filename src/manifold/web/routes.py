"""The gateway's browser pages: sign-in, connecting an OAuth upstream, and the user's connections.

    GET  /login?next=…            sign-in form (API key)            POST /login    → session cookie, 303 to next
    GET  /login/oidc?next=…       → 303 to the IdP (identity.web_login)
    GET  /login/callback           the IdP's answer                  → session cookie, 303 to next
    GET  /logout                   sign-out button                   POST /logout   → cookie cleared
    GET  /connect/{upstream}?t=…   consent page for the link's user  POST           → 303 to the authorization server
    GET  /oauth/callback?code&state&iss                              → tokens stored, "you can close this window"
    GET  /connections              the signed-in user's connections  POST (revoke)  → revoked, list again

Why each step (DESIGN.md "Auth required", spec-notes §1.3 confused deputy):
- The connect link names the user it was minted for; the page makes the person in the browser prove they are
  that user (sign-in), otherwise someone who was sent the link would connect *their* account to the
  sender's user — the sender's calls would then run with the victim's third-party access.
- Nothing leaves for the authorization server on a GET: the user clicks a CSRF-protected button first, and
  only then is the OAuth `state` created (bound to the user by outbound/oauth).
- The callback completes only for the signed-in user the flow was started for.
- Every page: no framing (`frame-ancestors 'none'`, `X-Frame-Options: DENY`), no referrer (the link and
  the code are in URLs), no caching. Errors are pages that say what went wrong, never a traceback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from manifold.config.models import OAuthAuth
from manifold.principal import CredentialKind, Principal, PrincipalKind
from manifold.security.origin import OriginPolicy
from manifold.web import csrf, pages
from manifold.web.oidc_login import PENDING_SECONDS, LoginFailed, OidcLogin, Pending
from manifold.web.pages import Viewer
from manifold.web.session import SESSION_SECONDS, SessionCookies, WebSession, session_keys

if TYPE_CHECKING:
    from manifold.live import Live

log = logging.getLogger(__name__)
JSON = dict[str, Any]

SECURITY_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-security-policy", b"frame-ancestors 'none'; default-src 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
MAX_FORM_FIELD = 8192


@dataclass
class Response:
    status: int
    body: str = ""
    location: str | None = None
    cookies: tuple[str, ...] = ()


class WebApp:
    """An ASGI-style handler for the web pages. Reads the OAuth parts (`outbound.oauth.OutboundCredentials`)
    from `live.outbound_credentials` at request time: they are created in `Live.start()`, after this object."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.failed_logins = FailedAttempts()
        settings = live.config.settings
        self.public_url = settings.public_url
        self.origin = OriginPolicy.from_settings(settings)
        self.secure = bool(self.public_url and self.public_url.startswith("https://"))
        self._cookies: SessionCookies | None = None
        self._oidc: OidcLogin | None = None

    @property
    def cookies(self) -> SessionCookies:
        if self._cookies is None:  # the key is loaded in Live.start(), after this object was made
            self._cookies = SessionCookies(session_keys(self._oauth().cipher), secure=self.secure)
        return self._cookies

    async def __call__(self, scope: JSON, receive: Any, send: Any, read_body: Any) -> None:
        headers: dict[str, str] = scope["_headers"]
        try:
            response = await self._route(scope, receive, send, headers, read_body)
        except OAuthUnavailable:
            response = Response(503, pages.problem("Not available", _safe_reason(OAuthUnavailable())))
        except Exception:  # noqa: BLE001 — a page that says so, never a traceback in the browser
            log.exception("web page %s failed", scope["path"])
            response = Response(500, pages.problem("Something went wrong", "The gateway could not show this page."))
        if response is not None:
            await _send(send, response)

    # ---- routing ----

    async def _route(
        self, scope: JSON, receive: Any, send: Any, headers: dict[str, str], read_body: Any
    ) -> Response | None:
        problem = self.origin.check(headers)
        if problem is not None:
            return Response(403, pages.problem("Not allowed", problem))
        await self.live.sync()  # a key revoked from the CLI ends its web session on the very next page
        method = scope["method"]
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=20)
        form: dict[str, str] = {}
        if method == "POST":
            body = await read_body(scope, receive, send)
            if body is None:
                return None  # read_body answered (too large) or the client went away
            refused = csrf.cross_site(headers, self.base_url(headers))
            if refused is not None:
                return Response(403, pages.problem("Not allowed", refused))
            form = _form(headers, body)
        elif method not in ("GET", "HEAD"):
            return Response(405, pages.problem("Not allowed", f"{method[:10]} is not used here."))
        cookies = self.cookies.parse(headers.get("cookie"))
        session = await self._session(cookies)
        request = Request(method, path, _first(query), form, headers, cookies, session)

        if path == "/login":
            if method != "POST":
                return await self._login_form(request)
            client = (scope.get("client") or ("?", 0))[0]
            if self.failed_logins.exceeded(client):
                body = pages.problem("Too many attempts", "Too many failed sign-ins from here; wait a few minutes.")
                return Response(429, body)
            response = await self._login_post(request)
            if response.status == 401:
                self.failed_logins.add(client)
            return response
        if path in ("/login/oidc", "/login/callback") and method != "POST":
            oidc = self.oidc_login()
            if oidc is None:
                return Response(404, pages.problem("Not found", "Sign-in through an identity provider is not set up."))
            if path == "/login/oidc":
                return await self._oidc_start(request, oidc)
            return await self._oidc_finish(request, oidc)
        if path == "/logout":
            return self._logout(request)
        if path == "/connections":
            return await self._connections(request)
        if path == "/oauth/callback":
            if method == "POST":
                return Response(405, pages.problem("Not allowed", "The callback is a GET."))
            return await self._callback(request)
        if path.startswith("/connect/"):
            upstream_id = path[len("/connect/") :]
            return await self._connect(request, upstream_id)
        return Response(404, pages.problem("Not found", "There is no such page."))

    # ---- helpers ----

    def base_url(self, headers: dict[str, str]) -> str:
        """The gateway's own origin as the browser sees it: `public_url`, else the (checked) Host header."""
        if self.public_url:
            return self.public_url
        return f"http://{headers.get('host') or '127.0.0.1'}"

    def oidc_login(self) -> OidcLogin | None:
        """The IdP sign-in, when `identity.web_login` is configured."""
        login = self.live.config.gateway.identity.web_login
        if login is None:
            return None
        if self._oidc is None:
            secret = login.client_secret
            if secret is not None and secret.startswith("secret:"):
                secret = self._oauth().secrets.lookup(secret[len("secret:") :])
            idp_id = login.idp
            self._oidc = OidcLogin(idp_id, self.live.config.gateway.identity.idps[idp_id], login, secret)
        return self._oidc

    def viewer(self, session: WebSession) -> Viewer:
        return Viewer(session.display, csrf.token(self.cookies.signer, session.sid, "logout"))

    async def _session(self, cookies: dict[str, str]) -> WebSession | None:
        session = self.cookies.session(cookies)
        if session is None:
            return None
        kind, _, ref = session.method.partition(":")
        if kind == "api_key":
            # The key that proved who this is must still be good: revoking or expiring it ends the session.
            record = await self.live.keys.get(ref)
            if record is None or record.usable(time.time()) is not None:
                return None
        return session

    def _login_redirect(self, request: Request) -> Response:
        target = request.path
        if request.query:
            target += "?" + urlencode(request.query)
        return Response(303, location="/login?" + urlencode({"next": target}))

    def _oauth(self) -> Any:
        oauth = getattr(self.live, "outbound_credentials", None)
        if oauth is None:
            raise OAuthUnavailable
        return oauth

    def _oauth_upstream(self, upstream_id: str) -> tuple[Any, OAuthAuth] | None:
        config = self.live.gateway.pool.config(upstream_id)
        if config is None or not isinstance(config.auth, OAuthAuth):
            return None
        return config, config.auth

    # ---- sign-in ----

    async def _login_form(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        nonce, cookie = self.cookies.new_pre_login()
        next_url = _safe_next(request.query.get("next") or request.form.get("next"))
        oidc = self.oidc_login()
        idp_login = None if oidc is None else "/login/oidc?" + urlencode({"next": next_url})
        token = csrf.token(self.cookies.signer, nonce, "login")
        body = pages.login(next_url=next_url, csrf=token, error=error, idp_login=idp_login)
        return Response(status, body, cookies=(cookie,))

    async def _oidc_start(self, request: Request, oidc: OidcLogin) -> Response:
        redirect_uri = self.base_url(request.headers) + "/login/callback"
        try:
            url, pending = await oidc.start(redirect_uri, _safe_next(request.query.get("next")))
        except LoginFailed as exc:
            return Response(502, pages.problem("Could not sign in", str(exc)))
        cookie = self.cookies.new_oidc_pending(pending.to_json(), PENDING_SECONDS)
        return Response(303, location=url, cookies=(cookie,))

    async def _oidc_finish(self, request: Request, oidc: OidcLogin) -> Response:
        pending = Pending.from_json(self.cookies.oidc_pending(request.cookies))
        clear = self.cookies.clear_oidc_pending()
        if pending is None:
            body = pages.problem("Could not sign in", "This sign-in expired or was started in another browser.")
            return Response(400, body, cookies=(clear,))
        redirect_uri = self.base_url(request.headers) + "/login/callback"
        try:
            principal = await oidc.finish(pending, request.query, redirect_uri)
        except LoginFailed as exc:
            log.warning("web sign-in through %s failed: %s", oidc.label, exc)
            return Response(400, pages.problem("Could not sign in", str(exc)), cookies=(clear,))
        cookie = self.cookies.new_session(principal.id, _display(principal), f"idp:{oidc.label}")
        log.info("web sign-in: %s (idp:%s)", principal.id, oidc.label)
        return Response(303, location=_safe_next(pending.next_url), cookies=(cookie, clear))

    async def _login_post(self, request: Request) -> Response:
        nonce = self.cookies.pre_login(request.cookies)
        if nonce is None or not csrf.valid(self.cookies.signer, nonce, "login", request.form.get("csrf")):
            return await self._login_form(request, error="The sign-in form expired; please try again.", status=400)
        key = request.form.get("key", "").strip()
        if not key:
            return await self._login_form(request, error="Enter your API key.", status=400)
        from manifold.identity.authenticator import Unauthenticated

        try:
            principal = await self.live.authenticator.authenticate(f"Bearer {key}")
        except Unauthenticated as exc:
            return await self._login_form(request, error=f"Sign-in failed: {exc.reason}.", status=401)
        if principal.kind is PrincipalKind.ANONYMOUS:
            return await self._login_form(request, error="Sign-in failed: invalid token.", status=401)
        method, lifetime = _sign_in_method(principal)
        cookie = self.cookies.new_session(principal.id, _display(principal), method, lifetime=lifetime)
        log.info("web sign-in: %s (%s)", principal.id, method)
        target = _safe_next(request.form.get("next"))
        return Response(303, location=target, cookies=(cookie, self.cookies.clear_pre_login()))

    def _logout(self, request: Request) -> Response:
        session = request.session
        if request.method != "POST":
            if session is None:
                return Response(200, pages.signed_out())
            body = pages.problem("Sign out?", "Use the button above to sign out.", viewer=self.viewer(session))
            return Response(200, body)
        if session is not None and not csrf.valid(self.cookies.signer, session.sid, "logout", request.form.get("csrf")):
            return Response(403, pages.problem("Not allowed", "The sign-out form was not from this session."))
        return Response(200, pages.signed_out(), cookies=(self.cookies.clear_session(),))

    # ---- connecting ----

    async def _connect(self, request: Request, upstream_id: str) -> Response:
        found = self._oauth_upstream(upstream_id)
        if found is None:
            return Response(404, pages.problem("Not found", f"No OAuth upstream named '{upstream_id[:100]}'."))
        upstream, auth = found
        link = request.form.get("t") if request.method == "POST" else request.query.get("t")
        oauth = self._oauth()
        from manifold.outbound.oauth.links import InvalidLink

        try:
            principal_id = oauth.links.verify(link or "", upstream_id)
        except InvalidLink as exc:
            return Response(
                400,
                pages.problem(
                    "This link does not work",
                    str(exc) or "this connect link is not valid",
                    hint="Call the tool again from your MCP client to get a fresh link.",
                    viewer=self.viewer(request.session) if request.session else None,
                ),
            )
        session = request.session
        if session is None:
            if request.method == "POST":
                return Response(401, pages.problem("Sign in first", "Your sign-in ended; open the link again."))
            return self._login_redirect(request)
        viewer = self.viewer(session)
        if session.principal_id != principal_id:
            log.warning("connect link for another user refused (signed in as %s)", session.principal_id)
            return Response(403, pages.wrong_user(viewer=viewer))
        from manifold.outbound.oauth.links import is_spent, spend

        used = pages.problem(
            "This link was already used",
            "A connect link starts one connection.",
            hint="Call the tool again from your MCP client to get a fresh link.",
            viewer=viewer,
        )
        if await is_spent(self.live.engine, link or ""):
            return Response(400, used)
        action = f"consent:{upstream_id}"
        if request.method == "GET":
            body = pages.consent(
                viewer=viewer,
                upstream_id=upstream_id,
                principal_id=principal_id,
                authorization_server=auth.issuer or auth.authorization_endpoint,
                scopes=auth.scopes,
                link=link or "",
                csrf=csrf.token(self.cookies.signer, session.sid, action),
            )
            return Response(200, body)
        if not csrf.valid(self.cookies.signer, session.sid, action, request.form.get("csrf")):
            return Response(403, pages.problem("Not allowed", "The consent form was not from this session."))
        if not await spend(self.live.engine, link or ""):
            return Response(400, used)
        redirect_uri = self.base_url(request.headers) + "/oauth/callback"
        try:
            url = await oauth.flows.start(principal_id, upstream_id, auth, upstream.url, redirect_uri)
        except Exception as exc:  # noqa: BLE001 — discovery or registration failed: say so on the page
            reason = _safe_reason(exc)
            log.warning("connect %s for %s could not start: %s", upstream_id, principal_id, reason)
            return Response(
                502,
                pages.problem(
                    "Could not reach the sign-in service",
                    f"Connecting {upstream_id} could not start: {reason}",
                    viewer=viewer,
                ),
            )
        return Response(303, location=url)

    async def _callback(self, request: Request) -> Response:
        session = request.session
        q = request.query
        if session is None:
            return Response(
                401,
                pages.problem(
                    "Sign in first",
                    "You are not signed in to the gateway in this browser, so the connection cannot be saved.",
                    hint="Open the connect link from your MCP client again.",
                ),
            )
        viewer = self.viewer(session)
        oauth = self._oauth()
        try:
            connection = await oauth.flows.complete(
                q.get("state", ""), q.get("code"), q.get("iss"), q.get("error"), session.principal_id
            )
        except Exception as exc:  # noqa: BLE001 — denied, expired state, wrong issuer, token endpoint down…
            reason = _safe_reason(exc)
            log.warning("oauth callback for %s failed: %s", session.principal_id, reason)
            return Response(400, pages.problem("Not connected", reason, viewer=viewer))
        upstream_id = connection.upstream  # (the flows tell the broker, which drops anything it cached)
        log.info("connected %s for %s", upstream_id, session.principal_id)
        return Response(200, pages.connected(viewer=viewer, upstream_id=upstream_id))

    # ---- connections ----

    async def _connections(self, request: Request) -> Response:
        session = request.session
        if session is None:
            if request.method == "POST":
                return Response(401, pages.problem("Sign in first", "Your sign-in ended."))
            return self._login_redirect(request)
        oauth = self._oauth()
        notice = None
        if request.method == "POST":
            upstream_id = request.form.get("upstream", "")
            if not csrf.valid(self.cookies.signer, session.sid, f"revoke:{upstream_id}", request.form.get("csrf")):
                return Response(403, pages.problem("Not allowed", "The revoke form was not from this session."))
            if await oauth.flows.revoke(session.principal_id, upstream_id):
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
                scopes=list(c.scopes or []),
                status=str(getattr(c.status, "value", c.status)),
                revoke_csrf=csrf.token(self.cookies.signer, session.sid, f"revoke:{c.upstream}"),
            )
            for c in await oauth.broker.vault.list(session.principal_id)
        ]
        rows.sort(key=lambda r: r.upstream_id)
        return Response(200, pages.connections(viewer=self.viewer(session), rows=rows, notice=notice))


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    session: WebSession | None


class FailedAttempts:
    """Failed sign-ins per client address in a sliding window: keys cannot be guessed, but a flood of tries
    should not become a flood of work and log lines."""

    def __init__(self, limit: int = 10, window_seconds: float = 300.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_clients = max_clients
        self._seen: dict[str, list[float]] = {}

    def _recent(self, client: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        recent = [t for t in self._seen.get(client, ()) if t > cutoff]
        if recent:
            self._seen[client] = recent
        else:
            self._seen.pop(client, None)
        return recent

    def exceeded(self, client: str) -> bool:
        return len(self._recent(client)) >= self.limit

    def add(self, client: str) -> None:
        if len(self._seen) >= self.max_clients and client not in self._seen:
            self._seen.clear()  # bounded memory; an attacker spreading over many addresses gains nothing
        self._seen.setdefault(client, []).append(time.monotonic())


class OAuthUnavailable(Exception):
    """The gateway has no OAuth parts (nothing wired): a page says so."""


def _first(values: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0][:MAX_FORM_FIELD] for k, v in values.items() if v}


def _form(headers: dict[str, str], body: bytes) -> dict[str, str]:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    return _first(parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=20))


def _safe_next(value: str | None) -> str:
    """Only a path on this gateway (no scheme, no host, no `//` or `\\` tricks): an open redirect after
    sign-in would make the sign-in page a phishing tool."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/connections"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/connections"
    return quote(value, safe="/?=&%:+,;@-._~")


def _sign_in_method(principal: Principal) -> tuple[str, float]:
    """How the session was proven, and how long it may last."""
    match principal.credential.kind:
        case CredentialKind.API_KEY | CredentialKind.SA_TOKEN:
            return f"api_key:{principal.credential.ref}", SESSION_SECONDS
        case CredentialKind.IDP_JWT:
            exp = principal.claims.get("exp")
            left = float(exp) - time.time() if isinstance(exp, int | float) else SESSION_SECONDS
            return f"idp:{principal.idp}", max(60.0, min(SESSION_SECONDS, left))
        case CredentialKind.NONE:
            return "none", SESSION_SECONDS


def _display(principal: Principal) -> str:
    return principal.name if principal.kind is PrincipalKind.USER else principal.id


def _safe_reason(exc: BaseException) -> str:
    """What went wrong, for the page. The OAuth modules' own errors are written for the user (never a token);
    anything else is unexpected, so the page names only its type and the log has the rest."""
    from manifold.outbound.oauth import DiscoveryError, OAuthError
    from manifold.security.crypto import DecryptError

    if isinstance(exc, OAuthUnavailable):
        return "OAuth upstreams are not available in this gateway"
    if isinstance(exc, OAuthError | DiscoveryError | DecryptError):
        return (str(exc).strip() or type(exc).__name__)[:300]
    log.error("web: unexpected %s", type(exc).__name__, exc_info=exc)
    return f"an unexpected error ({type(exc).__name__}); the gateway's log has the details"


async def _send(send: Any, response: Response) -> None:
    body = response.body.encode()
    headers = list(SECURITY_HEADERS)
    if response.location is not None:
        headers.append((b"location", response.location.encode("latin-1", errors="strict")))
    for cookie in response.cookies:
        headers.append((b"set-cookie", cookie.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

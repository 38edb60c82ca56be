"""Signing in to the web pages, with an API key or through the organisation's IdP, and signing out.

    GET  /login?next=…        the sign-in form                  POST /login  → session cookie, 303 to next
    GET  /login/oidc?next=…   → 303 to the IdP (identity.web_login)
    GET  /login/callback      the IdP's answer                  → session cookie, 303 to next
    GET  /logout              the sign-out button               POST /logout → cookie cleared

The sign-in form's CSRF token is bound to a short-lived pre-login cookie (login CSRF: signing a victim in as
the attacker, then having them connect their account to the attacker's user). `next` may only be a path on
this gateway: an open redirect after sign-in would make the sign-in page a phishing tool.

Reached from a connect link (`next` is `/connect/{upstream}?t=…`), the form says what the sign-in is for
("Sign in to connect github") — but only for a link that verifies, to an OAuth upstream that exists: a made-up
`next` gets the plain sign-in form, so the page never repeats words an attacker chose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import assert_never
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from starlette.responses import Response

from manifold.config.models import IdentitySettings, OAuthAuth, UpstreamConfig
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.outbound.oauth import ConnectLinks, InvalidLink
from manifold.principal import CredentialKind, Principal, PrincipalKind
from manifold.web import csrf, pages
from manifold.web.oidc_login import PENDING_SECONDS, LoginFailed, OidcLogin, Pending
from manifold.web.page_request import MAX_NEXT_CHARS, PageRequest, viewer
from manifold.web.responses import page, problem
from manifold.web.session import SESSION_SECONDS, SessionCookies
from manifold.web.signed_out import SignedOut
from manifold.web.throttle import FailedAttempts

log = logging.getLogger(__name__)
DEFAULT_NEXT = "/servers"  # the person's servers and what to paste into a client

# What a sign-in is for, from where it goes next: the upstream a connect link connects, or None.
Purpose = Callable[[str], str | None]


class SignInPages:
    def __init__(
        self,
        cookies: SessionCookies,
        authenticator: Authenticator,
        identity: IdentitySettings,
        secret: Callable[[str], str],
        signed_out: SignedOut,
        purpose: Purpose | None = None,
    ) -> None:
        self.cookies = cookies
        self.signed_out = signed_out  # signing out ends the session itself, not only this browser's cookie
        self.purpose = purpose
        self.authenticator = authenticator
        self.identity = identity
        self.secret = secret  # `secret:NAME` values (the IdP client secret may be one)
        self.failed = FailedAttempts()
        self._oidc: OidcLogin | None = None

    def oidc_login(self) -> OidcLogin | None:
        """The IdP sign-in, when `identity.web_login` is configured. Made on first use: a `secret:` reference
        that does not resolve then fails that page, not the gateway's start."""
        login = self.identity.web_login
        if login is None:
            return None
        if self._oidc is None:
            secret = login.client_secret
            if secret is not None and secret.startswith("secret:"):
                secret = self.secret(secret[len("secret:") :])
            self._oidc = OidcLogin(login.idp, self.identity.idps[login.idp], login, secret)
        return self._oidc

    # ---- with an API key ----

    async def login(self, request: PageRequest) -> Response:
        if not request.posted:
            return self._form(request)
        # The try is taken before the key is checked, and only a failure keeps it (web/throttle.py). Over the
        # limit the key is still checked: a right one signs in, a wrong one is told only to wait.
        attempt = self.failed.begin(request.client)
        failed = False
        try:
            response = await self._login_post(request)
            failed = response.status_code == 401
        finally:
            attempt.settle(failed=failed)
        if failed and attempt.limited:
            return problem(429, "Too many attempts", "Too many failed sign-ins from here; wait a few minutes.")
        return response

    def _form(self, request: PageRequest, *, error: str | None = None, status: int = 200) -> Response:
        nonce, cookie = self.cookies.new_pre_login()
        next_url = safe_next(request.query.get("next") or request.form.get("next"))
        idp_login = None if self.identity.web_login is None else "/login/oidc?" + urlencode({"next": next_url})
        token = csrf.token(self.cookies.signer, nonce, "login")
        connect = self.purpose(next_url) if self.purpose is not None else None
        body = pages.login(next_url=next_url, csrf=token, error=error, idp_login=idp_login, connect=connect)
        return page(status, body, cookies=(cookie,))

    async def _login_post(self, request: PageRequest) -> Response:
        nonce = self.cookies.pre_login(request.cookies)
        if nonce is None or not csrf.valid(self.cookies.signer, nonce, "login", request.form.get("csrf")):
            return self._form(request, error="The sign-in form expired; please try again.", status=403)
        key = request.form.get("key", "").strip()
        if not key:
            return self._form(request, error="Enter your API key.", status=400)
        try:
            principal = await self.authenticator.authenticate(f"Bearer {key}")
        except Unauthenticated as exc:
            return self._form(request, error=_refused_key(exc.reason), status=401)
        if principal.kind is PrincipalKind.ANONYMOUS:
            return self._form(request, error=_refused_key("invalid token"), status=401)
        method, lifetime = sign_in_method(principal)
        cookie = self.cookies.new_session(principal.id, display_name(principal), method, lifetime=lifetime)
        log.info("web sign-in: %s (%s)", principal.id, method)
        target = safe_next(request.form.get("next"))
        return page(303, location=target, cookies=(cookie, self.cookies.clear_pre_login()))

    # ---- through the IdP ----

    async def oidc_start(self, request: PageRequest) -> Response:
        oidc = self.oidc_login()
        if oidc is None:
            return _no_idp()
        redirect_uri = request.base_url + "/login/callback"
        try:
            url, pending = await oidc.start(redirect_uri, safe_next(request.query.get("next")))
        except LoginFailed as exc:
            return problem(502, "Could not sign in", str(exc))
        cookie = self.cookies.new_oidc_pending(pending.to_json(), PENDING_SECONDS)
        return page(303, location=url, cookies=(cookie,))

    async def oidc_finish(self, request: PageRequest) -> Response:
        oidc = self.oidc_login()
        if oidc is None:
            return _no_idp()
        pending = Pending.from_json(self.cookies.oidc_pending(request.cookies))
        clear = self.cookies.clear_oidc_pending()
        if pending is None:
            body = pages.problem("Could not sign in", "This sign-in expired or was started in another browser.")
            return page(400, body, cookies=(clear,))
        redirect_uri = request.base_url + "/login/callback"
        try:
            principal = await oidc.finish(pending, request.query, redirect_uri)
        except LoginFailed as exc:
            log.warning("web sign-in through %s failed: %s", oidc.label, exc)
            return page(400, pages.problem("Could not sign in", str(exc)), cookies=(clear,))
        cookie = self.cookies.new_session(principal.id, display_name(principal), f"idp:{oidc.label}")
        log.info("web sign-in: %s (idp:%s)", principal.id, oidc.label)
        return page(303, location=safe_next(pending.next_url), cookies=(cookie, clear))

    # ---- signing out ----

    async def logout(self, request: PageRequest) -> Response:
        session = request.session
        if not request.posted:
            if session is None:
                return page(200, pages.signed_out())
            who = viewer(self.cookies.signer, session)
            return page(200, pages.sign_out(viewer=who))
        if session is not None and not csrf.valid(self.cookies.signer, session.sid, "logout", request.form.get("csrf")):
            return problem(403, "Not allowed", "The sign-out form was not from this session.")
        if session is not None:
            await self.signed_out.end(session)
            log.info("web sign-out: %s", session.principal_id)
        return page(200, pages.signed_out(), cookies=(self.cookies.clear_session(),))


def _no_idp() -> Response:
    return problem(404, "Not found", "Sign-in through an identity provider is not set up.")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: only a path on this gateway (no scheme, no host, no `//` or `\\`
    tricks) of a sensible length, else the connections page."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return DEFAULT_NEXT
    target = quote(value, safe="/?=&%:+,;@-._~")
    return target if len(target) <= MAX_NEXT_CHARS else DEFAULT_NEXT


def connect_purpose(links: ConnectLinks, upstream_config: Callable[[str], UpstreamConfig | None]) -> Purpose:
    """The upstream a sign-in is for, when `next` is a connect link that verifies for an OAuth upstream of this
    gateway (checked as the connect page checks it, without spending it), else None."""

    def purpose(next_url: str) -> str | None:
        parts = urlsplit(next_url)
        prefix, _, upstream_id = parts.path.partition("/connect/")
        if prefix or not upstream_id or "/" in upstream_id:
            return None
        upstream_id = unquote(upstream_id)
        upstream = upstream_config(upstream_id)
        if upstream is None or not isinstance(upstream.auth, OAuthAuth):
            return None
        tokens = parse_qs(parts.query).get("t") or [""]
        try:
            links.verify(tokens[0], upstream_id)
        except InvalidLink:
            return None
        return upstream_id

    return purpose


def sign_in_method(principal: Principal) -> tuple[str, float]:
    """How the session was proven, and how long it may last."""
    match principal.credential.kind:
        case CredentialKind.API_KEY | CredentialKind.SA_TOKEN:
            return f"api_key:{principal.credential.ref}", SESSION_SECONDS
        case CredentialKind.IDP_JWT:
            exp = principal.claims.get("exp")
            left = float(exp) - time.time() if isinstance(exp, int | float) else SESSION_SECONDS
            return f"idp:{principal.idp}", max(60.0, min(SESSION_SECONDS, left))
        case CredentialKind.NONE | CredentialKind.GATEWAY_OAUTH:  # the latter never signs in here
            return "none", SESSION_SECONDS
        case _:
            assert_never(principal.credential.kind)


def display_name(principal: Principal) -> str:
    return principal.name if principal.kind is PrincipalKind.USER else principal.id


def _refused_key(reason: str) -> str:
    """The authenticator's reason in the form's words (the field is an API key, not a "token"), and what to
    do about it (console review: "Sign-in failed: invalid token." said neither)."""
    said = reason.replace("tokens", "keys").replace("token", "key")
    return (
        f"Sign-in failed: {said}. Check that you pasted the whole key (it starts with mfk_, mfs_ or mfd_), "
        "or ask an administrator for a new one."
    )

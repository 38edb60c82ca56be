"""Signing in to the web pages with the organisation's IdP: OpenID Connect authorization code + PKCE.

`identity.web_login` names one of `identity.idps` and the gateway's client there. The person ends up as the
same principal their IdP tokens make them on `/mcp` (the IdP's `claims` mapping, `user_domains`, external
identities: `IdpVerifier` decides both), so a connect link minted for an MCP call with an IdP token matches
the browser sign-in of the same person.

What is checked, in order: the `state` against the one in this browser's own short-lived sealed cookie (so a
callback cannot be replayed into someone else's browser), an `error` from the IdP, the RFC 9207 `iss` when
sent, then the code is redeemed with the PKCE verifier; the ID token is verified like any token from that
IdP (its JWKS, algorithm allow-list, `iss`, `exp`) with `aud` = our client id and the `nonce` we sent.
Claims the ID token leaves out (many IdPs put `email` only in userinfo) are read from the userinfo endpoint
when its `sub` is the ID token's. The IdP is configured, not discovered from a third party, so its URLs are
trusted like `identity.idps` itself. No token, code or secret goes into a log line or a page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from manifold.config.models import IdpConfig, WebLoginConfig
from manifold.identity.idp_jwt import IdpUnavailable, IdpVerifier, InvalidToken
from manifold.principal import Principal

TIMEOUT = aiohttp.ClientTimeout(total=10.0)
PENDING_SECONDS = 600  # the person has this long to sign in at the IdP
MAX_DOCUMENT_BYTES = 1024 * 1024


class LoginFailed(Exception):
    """The IdP sign-in did not work; the message is fit for the page (never a token or code)."""


@dataclass(frozen=True)
class Pending:
    """One sign-in on its way through the IdP; kept in this browser's sealed cookie."""

    state: str
    nonce: str
    verifier: str
    next_url: str
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {"s": self.state, "n": self.nonce, "v": self.verifier, "next": self.next_url, "exp": self.expires_at}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Pending | None:
        if data is None:
            return None
        try:
            pending = cls(str(data["s"]), str(data["n"]), str(data["v"]), str(data["next"]), float(data["exp"]))
        except (KeyError, TypeError, ValueError):
            return None
        return pending if pending.expires_at > time.time() else None


class OidcLogin:
    def __init__(self, idp_id: str, idp: IdpConfig, login: WebLoginConfig, client_secret: str | None) -> None:
        self.idp_id = idp_id
        self.idp = idp
        self.login = login
        self._secret = client_secret
        # ID tokens are verified like the IdP's access tokens, but their audience is our client.
        self._id_token_config = idp.model_copy(update={"audience": [login.client_id]})

    @property
    def label(self) -> str:
        return self.idp_id

    async def start(self, redirect_uri: str, next_url: str) -> tuple[str, Pending]:
        """The IdP's authorization URL, and what the callback will need (to keep in the browser's cookie)."""
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            metadata = await self._metadata(http)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        pending = Pending(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=verifier,
            next_url=next_url,
            expires_at=time.time() + PENDING_SECONDS,
        )
        query = {
            "response_type": "code",
            "client_id": self.login.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.login.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint = metadata["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}", pending

    async def finish(self, pending: Pending, query: dict[str, str], redirect_uri: str) -> Principal:
        if not hmac.compare_digest(query.get("state", ""), pending.state):
            raise LoginFailed("this sign-in does not belong to this browser; start again")
        if query.get("error"):
            code = "".join(c for c in query["error"][:60] if c.isalnum() or c in "_-.")
            raise LoginFailed(f"the identity provider did not sign you in ({code})")
        iss = query.get("iss")
        if iss is not None and iss != self.idp.issuer:
            raise LoginFailed("the sign-in answer came from another issuer than the one it was sent to; refused")
        code = query.get("code")
        if not code:
            raise LoginFailed("the identity provider sent no code")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            metadata = await self._metadata(http)
            tokens = await self._redeem(http, metadata["token_endpoint"], code, pending.verifier, redirect_uri)
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise LoginFailed("the identity provider sent no ID token")
            verifier = IdpVerifier(self.idp_id, self._id_token_config, session=http)
            try:
                principal = await verifier.verify(id_token)
            except InvalidToken as exc:
                raise LoginFailed(f"the ID token was refused: {exc.reason}") from None
            except IdpUnavailable:
                raise LoginFailed("the identity provider's signing keys could not be fetched") from None
            claims = dict(principal.claims)
            if not hmac.compare_digest(str(claims.get("nonce", "")), pending.nonce):
                raise LoginFailed("the ID token was not issued for this sign-in (nonce); start again")
            userinfo = await self._userinfo(http, metadata.get("userinfo_endpoint"), tokens.get("access_token"))
            if userinfo and userinfo.get("sub") == claims.get("sub"):
                try:
                    # The ID token's own claims win; userinfo only fills gaps (email, groups).
                    principal = verifier.principal_from_claims({**userinfo, **claims}, id_token)
                except InvalidToken as exc:
                    raise LoginFailed(f"the sign-in was refused: {exc.reason}") from None
        return principal

    # ---- talking to the IdP ----

    async def _metadata(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        url = self.idp.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await _json(http, "GET", url)
        if document.get("issuer") != self.idp.issuer:
            raise LoginFailed("the identity provider's metadata names another issuer")
        for name in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(document.get(name), str) or not document[name].startswith(("https://", "http://")):
                raise LoginFailed(f"the identity provider's metadata has no usable {name}")
        return document

    async def _redeem(
        self, http: aiohttp.ClientSession, endpoint: str, code: str, verifier: str, redirect_uri: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if self._secret:
            headers["Authorization"] = aiohttp.BasicAuth(self.login.client_id, self._secret).encode()
        else:
            form["client_id"] = self.login.client_id
        body = await _json(http, "POST", endpoint, data=form, headers=headers, expect_ok=False)
        if "access_token" not in body and "id_token" not in body:
            error = "".join(c for c in str(body.get("error", "unknown"))[:60] if c.isalnum() or c in "_-.")
            raise LoginFailed(f"the identity provider refused the sign-in code ({error})")
        return body

    async def _userinfo(
        self, http: aiohttp.ClientSession, endpoint: object, access_token: object
    ) -> dict[str, Any] | None:
        if not isinstance(endpoint, str) or not isinstance(access_token, str):
            return None
        try:
            return await _json(http, "GET", endpoint, headers={"Authorization": f"Bearer {access_token}"})
        except LoginFailed:
            return None  # the ID token alone still names the person


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, *, expect_ok: bool = True, **kwargs: Any
) -> dict[str, Any]:
    import json

    try:
        async with http.request(method, url, allow_redirects=False, **kwargs) as resp:
            raw = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoginFailed(f"the identity provider could not be reached ({type(exc).__name__})") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise LoginFailed("the identity provider's answer is too large")
    if expect_ok and status != 200:
        raise LoginFailed(f"the identity provider answered HTTP {status}")
    try:
        document = json.loads(raw)
    except ValueError:
        raise LoginFailed(f"the identity provider's answer (HTTP {status}) is not JSON") from None
    if not isinstance(document, dict):
        raise LoginFailed("the identity provider's answer is not a JSON object")
    return document

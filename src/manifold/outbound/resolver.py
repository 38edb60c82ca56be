"""Which credential goes upstream for one call: one exhaustive `match` over the upstream's auth mode.

The result is an `Outbound`: headers to add to the upstream requests, and the identity the upstream session
is keyed by. `identity=None` means one shared session for every caller (none, static); any per-caller
credential gets its own session per (upstream, identity), so no caller's request ever travels on a session
opened with someone else's credential. The caller's own `Authorization` header is never among the headers
unless the mode is `passthrough`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from manifold.config.models import (
    ExchangeAuth,
    ForwardedAuth,
    NoAuth,
    OAuthAuth,
    PassthroughAuth,
    StaticAuth,
    UpstreamConfig,
)
from manifold.outbound import forwarded
from manifold.principal import CredentialKind, Principal
from manifold.upstream.credential import SHARED, Outbound


class OutboundRefused(Exception):
    """The call cannot go upstream with a credential; `reason` is fit for the caller (no secrets)."""

    def __init__(self, upstream_id: str, reason: str) -> None:
        super().__init__(f"upstream '{upstream_id}': {reason}")
        self.upstream_id = upstream_id
        self.reason = reason


class AuthRequired(Exception):
    """The user has no usable connection to an OAuth upstream: they must connect it in the browser."""

    def __init__(self, upstream_id: str, connect_url: str, reason: str = "not connected") -> None:
        super().__init__(f"upstream '{upstream_id}' needs you to connect your account: {connect_url}")
        self.upstream_id = upstream_id
        self.connect_url = connect_url
        self.reason = reason


@dataclass(frozen=True)
class CallContext:
    principal: Principal
    member_id: str
    server_id: str
    forwarded_raw: str | None = None  # the client's x-mcp-headers, parsed only for `forwarded` upstreams
    member_ids: tuple[str, ...] = ()


class OAuthTokens(Protocol):
    async def access_token(self, principal: Principal, upstream_id: str, config: OAuthAuth, ctx: CallContext) -> str:
        """A valid access token for (user, upstream), refreshed if due; raises AuthRequired."""
        ...

    def expire(self, user: str, upstream: str) -> None:
        """The upstream refused the token: the next `access_token` refreshes it."""
        ...


class TokenExchange(Protocol):
    async def exchange(self, principal: Principal, upstream_id: str, config: ExchangeAuth) -> str:
        """An access token for the upstream's audience in exchange for the caller's; raises OutboundRefused."""
        ...

    def forget(self, user: str, upstream: str) -> None:
        """The upstream refused the exchanged token: the next `exchange` asks the token service again."""
        ...


def oauth_identity(principal_id: str) -> str:
    """The identity of a user's `oauth` credential (and so of their upstream session and lists): the user's, whichever
    account of the upstream they connected."""
    return f"oauth:{principal_id}"


def _fingerprint(headers: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(headers):
        digest.update(name.lower().encode() + b"\0" + headers[name].encode() + b"\0")
    return digest.hexdigest()[:32]


class CredentialResolver:
    def __init__(
        self,
        *,
        secret: Callable[[str], str] | None = None,
        oauth: OAuthTokens | None = None,
        exchange: TokenExchange | None = None,
    ) -> None:
        self._secret = secret  # `secret:NAME` → value (security/secret_store.py)
        self.oauth = oauth
        self.exchange = exchange
        # Per upstream: the static auth last resolved and its headers. Compared by value, not by `id()`: an
        # upstream replaced at run time drops its config, and CPython may give the new one the same id.
        self._static: dict[str, tuple[StaticAuth, Outbound]] = {}

    def _value(self, upstream_id: str, text: str) -> str:
        if text.startswith("secret:"):
            if self._secret is None:
                raise OutboundRefused(upstream_id, "the secret store is not available")
            try:
                return self._secret(text[len("secret:") :])
            except LookupError as exc:
                raise OutboundRefused(upstream_id, str(exc)) from None
        return text

    def secrets_changed(self) -> None:
        self._static.clear()

    def rejected(self, upstream_id: str, config: UpstreamConfig, principal: Principal) -> bool:
        """The upstream refused the credential we sent: drop what we cached so the next resolve gets a
        fresh one. Returns whether retrying with a fresh credential makes sense."""
        auth = config.auth
        match auth:
            case OAuthAuth():
                if self.oauth is None:
                    return False
                self.oauth.expire(principal.id, upstream_id)
                return True
            case ExchangeAuth():
                if self.exchange is None:
                    return False
                self.exchange.forget(principal.id, upstream_id)
                return True
            case NoAuth() | StaticAuth() | PassthroughAuth() | ForwardedAuth():
                return False
            case _:
                assert_never(auth)

    def static(self, upstream_id: str, auth: StaticAuth) -> Outbound:
        cached = self._static.get(upstream_id)
        # `is` first: the hot path compares one pointer (the cache holds the config, so its id is not reused).
        if cached is not None and (cached[0] is auth or cached[0] == auth):
            return cached[1]
        headers = {name: self._value(upstream_id, v) for name, v in auth.headers.items()}
        if auth.bearer:
            headers["Authorization"] = f"Bearer {self._value(upstream_id, auth.bearer)}"
        outbound = Outbound(headers, None)
        self._static[upstream_id] = (auth, outbound)
        return outbound

    async def resolve(self, upstream_id: str, config: UpstreamConfig, ctx: CallContext) -> Outbound:
        principal = ctx.principal
        auth = config.auth
        match auth:
            case NoAuth():
                return SHARED
            case StaticAuth():
                return self.static(upstream_id, auth)
            case OAuthAuth():
                if self.oauth is None:
                    raise OutboundRefused(upstream_id, "OAuth upstreams are not available in this gateway")
                token = await self.oauth.access_token(principal, upstream_id, auth, ctx)
                return Outbound({"Authorization": f"Bearer {token}"}, oauth_identity(principal.id))
            case PassthroughAuth():
                return Outbound(
                    {"Authorization": f"Bearer {_passthrough_token(upstream_id, auth, principal)}"},
                    f"passthrough:{principal.id}",
                )
            case ForwardedAuth():
                try:
                    sent = forwarded.parse(ctx.forwarded_raw, list(ctx.member_ids) or [ctx.member_id])
                    headers = forwarded.select(sent.get(ctx.member_id, {}), auth.allow, upstream_id)
                except forwarded.ForwardedError as exc:
                    raise OutboundRefused(upstream_id, str(exc)) from None
                if not headers:
                    return SHARED
                return Outbound(headers, f"forwarded:{_fingerprint(headers)}")
            case ExchangeAuth():
                if self.exchange is None:
                    raise OutboundRefused(upstream_id, "token exchange is not available in this gateway")
                token = await self.exchange.exchange(principal, upstream_id, auth)
                return Outbound({"Authorization": f"Bearer {token}"}, f"exchange:{principal.id}")
            case _:
                assert_never(auth)


def _passthrough_token(upstream_id: str, auth: PassthroughAuth, principal: Principal) -> str:
    """The caller's token, only when it was validated here (an IdP JWT) and names this upstream as audience:
    the MCP spec forbids handing a token to a party it was not issued for."""
    if principal.credential.kind is not CredentialKind.IDP_JWT or not principal.token:
        raise OutboundRefused(upstream_id, "passes the caller's token through, and only an IdP token can be passed")
    aud: Any = principal.claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud or [])
    if auth.audience not in audiences:
        raise OutboundRefused(
            upstream_id, f"your token's audience does not include '{auth.audience}', so it cannot be passed through"
        )
    return principal.token

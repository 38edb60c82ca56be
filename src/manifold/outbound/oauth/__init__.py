"""Per-user OAuth to upstreams. The encryption and the `secret:NAME` store it relies on are the gateway's
own, in manifold.security (crypto.py: Cipher; secret_store.py: SecretStore).

    vault.py      Vault, Connection: each user's tokens per upstream, encrypted
    links.py      ConnectLinks: the one-time `/connect/{upstream}?t=…` URL on the gateway's origin
    discovery.py  401 → RFC 9728 → RFC 8414 / OIDC, with SSRF rules for every discovered URL
    client.py     OAuthFlows: authorization code + PKCE, the one object the gateway holds for the steps below
    plan.py       which authorization server, resource and scopes one authorization uses
    registration.py  the OAuth clients: configured, remembered, or registered dynamically (RFC 7591)
    callback.py   the single-use `state` of an authorization in flight, and the callback's checks
    tokens.py     token endpoint (code, refresh) and RFC 7009 revocation
    errors.py     OAuthError and its kinds, messages fit for the user
    broker.py     OAuthBroker: `resolver.OAuthTokens`, cached tokens, one refresh at a time
    tables.py     the tables (registered on manifold.store.db.metadata by importing this package)

The composition root (runtime/compose.py) builds them for the gateway.
"""

from __future__ import annotations

from manifold.outbound.oauth import tables  # noqa: F401 — registers the tables before create_all
from manifold.outbound.oauth.broker import OAuthBroker
from manifold.outbound.oauth.client import OAuthFlows
from manifold.outbound.oauth.discovery import DiscoveryError, UnsafeUrl
from manifold.outbound.oauth.errors import (
    AuthorizationDenied,
    ConfigurationProblem,
    InvalidState,
    IssuerMismatch,
    OAuthError,
    TokenError,
)
from manifold.outbound.oauth.links import ConnectLinks, InvalidLink
from manifold.outbound.oauth.vault import Connection, ConnectionStatus, Vault

__all__ = [
    "AuthorizationDenied",
    "ConfigurationProblem",
    "ConnectLinks",
    "Connection",
    "ConnectionStatus",
    "DiscoveryError",
    "InvalidLink",
    "InvalidState",
    "IssuerMismatch",
    "OAuthBroker",
    "OAuthError",
    "OAuthFlows",
    "TokenError",
    "UnsafeUrl",
    "Vault",
]

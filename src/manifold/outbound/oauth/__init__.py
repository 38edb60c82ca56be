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

`open_outbound_credentials` wires them for the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

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
from manifold.security.crypto import Cipher
from manifold.security.secret_store import SecretStore

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
    "OutboundCredentials",
    "TokenError",
    "UnsafeUrl",
    "Vault",
    "open_outbound_credentials",
]


@dataclass
class OutboundCredentials:
    cipher: Cipher
    secrets: SecretStore
    links: ConnectLinks
    flows: OAuthFlows
    broker: OAuthBroker

    async def aclose(self) -> None:
        await self.flows.aclose()


async def open_outbound_credentials(
    engine: AsyncEngine, state_dir: Path, public_base_url: Callable[[], str]
) -> OutboundCredentials:
    """Load the key, check it against the database (WrongKey: stop the gateway), load the secrets."""
    cipher = Cipher.load(state_dir)
    await cipher.check(engine)
    store = SecretStore(engine, cipher)
    await store.load()
    links = ConnectLinks.from_cipher(cipher)
    flows = OAuthFlows(engine, cipher, secret=store.lookup)
    broker = OAuthBroker(engine, cipher, links, flows, public_base_url)
    return OutboundCredentials(cipher, store, links, flows, broker)

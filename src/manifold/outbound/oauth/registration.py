"""The OAuth clients the gateway uses at authorization servers: configured in the upstream's auth, or
registered dynamically (RFC 7591) and remembered per issuer and redirect URI, as the MCP spec asks (a
client_id means nothing at another server). Client secrets are stored encrypted, so a callback or a
revocation needs no configuration lookup.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth.discovery import Fetcher
from manifold.outbound.oauth.errors import ConfigurationProblem, OAuthError, error_code
from manifold.outbound.oauth.plan import AuthorizationPlan, server_key
from manifold.outbound.oauth.tables import oauth_clients
from manifold.outbound.oauth.vault import Connection
from manifold.security.crypto import Cipher

log = logging.getLogger(__name__)


class ClientAuthMethod(str, enum.Enum):
    """How the client authenticates at the token endpoint (RFC 8414's default is basic)."""

    BASIC = "client_secret_basic"
    POST = "client_secret_post"
    NONE = "none"


# Most preferred first.
AUTH_METHODS = (ClientAuthMethod.BASIC, ClientAuthMethod.POST, ClientAuthMethod.NONE)


class ClientSource(str, enum.Enum):
    REGISTERED = "registered"
    CONFIGURED = "configured"


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str | None = None
    auth_method: ClientAuthMethod = ClientAuthMethod.NONE


def choose_auth_method(supported: list[str] | None, *, has_secret: bool) -> ClientAuthMethod:
    if not has_secret:
        return ClientAuthMethod.NONE
    for method in (ClientAuthMethod.BASIC, ClientAuthMethod.POST):
        if supported is None or method.value in supported:
            return method
    return ClientAuthMethod.BASIC


def _auth_method(value: object) -> ClientAuthMethod | None:
    try:
        return ClientAuthMethod(value)
    except ValueError:
        return None


CALLBACK_PATH = "/oauth/callback"  # the redirect URI's path of a client configured by hand


def registered_redirect_uri(base_url: str, key: str) -> str:
    """The redirect URI of a client registered dynamically at the authorization server `key` (server_key):
    `<base_url>/oauth/as/<16 hex digits of its SHA-256>/callback`, one per server. A shared one let a hostile
    upstream whose metadata names another server's authorization endpoint have that server's code, and its
    PKCE verifier, sent to its own token endpoint (an OAuth mix-up, RFC 9700 §4.4; attack probe): the other
    server now refuses the redirect URI, which is not the one the gateway registered there. None is a prefix of
    another, nor of `/oauth/callback`, which a configured client (registered by hand) keeps: some servers
    (GitHub) accept any redirect URI below the registered one."""
    return f"{base_url}/oauth/as/{hashlib.sha256(key.encode()).hexdigest()[:16]}/callback"


def _is_loopback_redirect(redirect_uri: str) -> bool:
    host = (urlsplit(redirect_uri).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1")


class ClientRegistry:
    def __init__(
        self,
        engine: AsyncEngine,
        cipher: Cipher,
        fetcher: Fetcher,
        *,
        secret: Callable[[str], str] | None = None,
        client_name: str = "Manifold",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._fetcher = fetcher
        self._secret = secret  # `secret:NAME` → value (SecretStore.lookup)
        self._client_name = client_name
        self._clock = clock

    async def for_authorization(
        self, upstream_id: str, plan: AuthorizationPlan, config: OAuthAuth, redirect_uri: str
    ) -> Client:
        """The client to authorize with: configured; else one registered earlier at that server for this
        redirect URI; else a new one registered dynamically (RFC 7591)."""
        supported = plan.server.token_endpoint_auth_methods_supported
        if config.client_id:
            secret = self.configured_secret(upstream_id, config.client_secret) if config.client_secret else None
            client = Client(config.client_id, secret, choose_auth_method(supported, has_secret=secret is not None))
            await self._remember(plan.server_key, client, redirect_uri, ClientSource.CONFIGURED)
            return client
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(oauth_clients).where(
                        oauth_clients.c.issuer == plan.server_key,
                        oauth_clients.c.redirect_uri == redirect_uri,
                        oauth_clients.c.source == ClientSource.REGISTERED.value,
                    )
                )
            ).first()
        if row is not None:
            return self._client_of(row)
        endpoint = plan.server.registration_endpoint
        if not endpoint:
            where = plan.issuer or plan.server.token_endpoint
            raise ConfigurationProblem(
                f"upstream '{upstream_id}': the authorization server {where} offers no dynamic client registration: "
                "set client_id (and client_secret) in the upstream's auth"
            )
        return await self._register(upstream_id, plan, endpoint, redirect_uri)

    async def for_connection(self, connection: Connection, config: OAuthAuth) -> Client:
        """The client a stored connection refreshes with."""
        stored = await self.stored(server_key(connection.issuer, connection.token_endpoint), connection.client_id or "")
        if config.client_id and config.client_id == connection.client_id:
            # The configured secret wins: an administrator may have rotated it since.
            secret = self.configured_secret(connection.upstream, config.client_secret) if config.client_secret else None
            if stored is not None and (stored.secret is None) == (secret is None):
                return Client(config.client_id, secret, stored.auth_method)
            return Client(config.client_id, secret, choose_auth_method(None, has_secret=secret is not None))
        if stored is None:
            raise OAuthError(
                f"upstream '{connection.upstream}': the OAuth client of this connection is no longer known"
            )
        return stored

    async def stored(self, key: str, client_id: str) -> Client | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(oauth_clients).where(oauth_clients.c.issuer == key, oauth_clients.c.client_id == client_id)
                )
            ).first()
        return None if row is None else self._client_of(row)

    def configured_secret(self, upstream_id: str, value: str) -> str:
        """A configured client_secret: literal, or `secret:NAME` from the secret store."""
        if value.startswith("secret:"):
            if self._secret is None:
                raise ConfigurationProblem(f"upstream '{upstream_id}': the secret store is not available")
            try:
                return self._secret(value[len("secret:") :])
            except LookupError as exc:
                raise ConfigurationProblem(f"upstream '{upstream_id}': {exc}") from None
        return value

    async def _register(self, upstream_id: str, plan: AuthorizationPlan, endpoint: str, redirect_uri: str) -> Client:
        supported = plan.server.token_endpoint_auth_methods_supported
        wanted = next((m for m in AUTH_METHODS if supported is None or m.value in supported), ClientAuthMethod.BASIC)
        body = {
            "client_name": self._client_name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": wanted.value,
            "application_type": "native" if _is_loopback_redirect(redirect_uri) else "web",
        }
        reply = await self._fetcher.request(
            "POST",
            endpoint,
            json_body=body,
            headers={"Accept": "application/json"},
            insecure=plan.insecure,
            trusted=plan.trusted,
            what="registration endpoint",
        )
        answer = reply.body if isinstance(reply.body, dict) else {}
        client_id = answer.get("client_id")
        if reply.status not in (200, 201) or not isinstance(client_id, str):
            raise OAuthError(
                f"upstream '{upstream_id}': dynamic client registration failed (HTTP {reply.status}, "
                f"{error_code(answer.get('error', 'no client_id'))})"
            )
        secret = answer.get("client_secret") if isinstance(answer.get("client_secret"), str) else None
        method = _auth_method(answer.get("token_endpoint_auth_method"))
        if method is None:
            method = wanted if (secret or wanted is ClientAuthMethod.NONE) else ClientAuthMethod.NONE
        client = Client(client_id, secret if method is not ClientAuthMethod.NONE else None, method)
        await self._remember(plan.server_key, client, redirect_uri, ClientSource.REGISTERED)
        log.info("oauth: registered a client at %s for upstream '%s'", plan.issuer or endpoint, upstream_id)
        return client

    async def _remember(self, key: str, client: Client, redirect_uri: str, source: ClientSource) -> None:
        values = {
            "redirect_uri": redirect_uri,
            "secret": self._cipher.encrypt_text(client.secret) if client.secret else None,
            "auth_method": client.auth_method.value,
            "source": source.value,
        }
        where = (oauth_clients.c.issuer == key, oauth_clients.c.client_id == client.client_id)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(update(oauth_clients).where(*where).values(**values))
                if result.rowcount == 0:
                    await conn.execute(
                        oauth_clients.insert().values(
                            issuer=key, client_id=client.client_id, created_at=self._clock(), **values
                        )
                    )
        except IntegrityError:  # the same client stored concurrently: theirs is as good
            pass

    def _client_of(self, row: Row[tuple[object, ...]]) -> Client:
        secret = self._cipher.decrypt_text(row.secret) if row.secret else None
        return Client(row.client_id, secret, _auth_method(row.auth_method) or ClientAuthMethod.NONE)

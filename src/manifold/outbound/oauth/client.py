"""The OAuth 2.1 leg: authorization code + PKCE S256 against an upstream's authorization server, with the
gateway as a confidential (or registered) client and the user's browser as the user agent.

    url = await flows.start(principal_id, upstream_id, config, upstream_url, redirect_uri)   # → browser
    connection = await flows.complete(state, code, iss, error, principal_id)                # ← callback
    connection = await flows.refresh(connection, config)                                     # broker
    await flows.revoke(principal_id, upstream_id)                                            # RFC 7009

`OAuthFlows` is the one object the rest of the gateway holds; each step lives in its own module:
plan.py (which authorization server, resource and scopes), registration.py (the client: configured,
remembered, or RFC 7591 dynamic registration), callback.py (the single-use `state` and the callback's
checks), tokens.py (token endpoint: code, refresh; RFC 7009 revocation). Connections are stored in the vault.

Tokens, codes, verifiers and client secrets never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth import tokens
from manifold.outbound.oauth.callback import (
    STATE_TTL_SECONDS,
    PendingAuthorization,
    PendingAuthorizations,
    accepted_code,
)
from manifold.outbound.oauth.discovery import Fetcher
from manifold.outbound.oauth.errors import ConfigurationProblem, InvalidState, OAuthError
from manifold.outbound.oauth.links import spend
from manifold.outbound.oauth.plan import dedupe, plan_authorization, server_key
from manifold.outbound.oauth.registration import CALLBACK_PATH, ClientRegistry, registered_redirect_uri
from manifold.outbound.oauth.vault import Connection, ConnectionStatus, Vault
from manifold.security.crypto import Cipher

log = logging.getLogger(__name__)

# Authorization-request parameters the gateway sets itself; `extra_authorize_params` may not replace them.
RESERVED_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource"}
)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 random bytes as the verifier (86 characters, RFC 7636 allows 43-128)."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), ""))


class OAuthFlows:
    def __init__(
        self,
        engine: AsyncEngine,
        cipher: Cipher,
        *,
        fetcher: Fetcher | None = None,
        secret: Callable[[str], str] | None = None,
        client_name: str = "Manifold",
        state_ttl_seconds: float = STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.vault = Vault(engine, cipher)
        self.fetcher = fetcher or Fetcher()
        self.clients = ClientRegistry(engine, cipher, self.fetcher, secret=secret, client_name=client_name, clock=clock)
        self.pending = PendingAuthorizations(engine, cipher, ttl_seconds=state_ttl_seconds, clock=clock)
        self._clock = clock
        self._listeners: list[Callable[[str, str], None]] = []

    def add_listener(self, callback: Callable[[str, str], None]) -> None:
        """`callback(user, upstream)` after a connection is stored or removed here (the broker drops its cache)."""
        self._listeners.append(callback)

    def changed(self, user: str, upstream: str) -> None:
        """Tell the listeners a connection was stored or removed (here, or elsewhere: the broker's sync)."""
        for callback in self._listeners:
            callback(user, upstream)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def start(
        self,
        principal_id: str,
        upstream_id: str,
        config: OAuthAuth,
        upstream_url: str,
        redirect_uri: str,
        *,
        www_authenticate: str | None = None,
        link_digest: str = "",
    ) -> str:
        """The authorization URL to send the browser to. `www_authenticate` is a challenge already seen at
        the upstream (e.g. 403 insufficient_scope, whose `scope` is then requested); otherwise discovery
        probes the upstream itself. `link_digest`: the connect link this attempt came from
        (links.link_digest), spent by `complete` when the tokens are stored, not before: a failed attempt
        leaves it usable."""
        if not principal_id:
            raise OAuthError("a connection needs a signed-in user")
        reserved = sorted(RESERVED_PARAMS & set(config.extra_authorize_params))
        if reserved:
            raise ConfigurationProblem(
                f"upstream '{upstream_id}': extra_authorize_params may not set {', '.join(reserved)} "
                "(the gateway sets them itself)"
            )
        plan = await plan_authorization(self.fetcher, upstream_id, config, upstream_url, www_authenticate)
        if not config.client_id:  # registered dynamically: a redirect URI of that server's own
            redirect_uri = registered_redirect_uri(redirect_uri.removesuffix(CALLBACK_PATH), plan.server_key)
        client = await self.clients.for_authorization(upstream_id, plan, config, redirect_uri)
        verifier, challenge = pkce_pair()
        pending = PendingAuthorization(
            verifier=verifier,
            redirect_uri=redirect_uri,
            resource=plan.resource,
            scopes=plan.scopes,
            issuer=plan.issuer,
            iss_required=plan.server.iss_parameter_supported,
            client_id=client.client_id,
            token_endpoint=plan.server.token_endpoint,
            revocation_endpoint=config.revocation_endpoint or plan.server.revocation_endpoint,
            policy=plan.policy.value,
            link=link_digest,
        )
        state = await self.pending.open(principal_id, upstream_id, pending)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": plan.resource,
        }
        if plan.scopes:
            params["scope"] = " ".join(plan.scopes)
            if "offline_access" in plan.scopes:
                # OpenID Connect Core §11: an OP ignores offline_access unless the user is asked to consent,
                # and without it there is no refresh token (the user would reconnect every hour).
                params["prompt"] = "consent"
        for name, value in config.extra_authorize_params.items():
            if name == "scope":  # extra scopes add to the chosen ones
                params["scope"] = " ".join(dedupe(params.get("scope", "").split() + value.split()))
            else:
                params[name] = value
        log.info("oauth: %s is connecting upstream '%s' at %s", principal_id, upstream_id, plan.issuer or "?")
        return _with_query(plan.server.authorization_endpoint, params)

    async def complete(
        self,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None,
        principal_id: str,
        arrived_at: str | None = None,
    ) -> Connection:
        """Redeem the callback of an authorization started by `principal_id`; store and return the connection.
        `arrived_at`: the path the browser came back to, which must be the sign-in's redirect URI's."""
        now = self._clock()
        returned = await self.pending.take(state, principal_id)
        # (`endswith`: a proxy in front may strip a path prefix that public_url carries)
        if arrived_at is not None and not urlsplit(returned.pending.redirect_uri).path.endswith(arrived_at):
            raise InvalidState(
                f"upstream '{returned.upstream_id}': the sign-in came back to another authorization server's "
                "address; refused (start again from the connect link)"
            )
        code = accepted_code(returned, code, iss, error)
        upstream_id, pending = returned.upstream_id, returned.pending
        client = await self.clients.stored(server_key(pending.issuer, pending.token_endpoint), pending.client_id)
        if client is None:
            raise OAuthError(f"upstream '{upstream_id}': the OAuth client of this sign-in is no longer known")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
            "resource": pending.resource,
        }
        body = await tokens.token_request(
            self.fetcher, upstream_id, pending.token_endpoint, form, client, pending.endpoint_policy
        )
        refresh_token = body.get("refresh_token")
        connection = Connection(
            user=principal_id,
            upstream=upstream_id,
            access_token=body["access_token"],
            refresh_token=refresh_token if isinstance(refresh_token, str) else None,
            expires_at=tokens.expires_at(body, now),
            scopes=tokens.granted_scopes(body, pending.scopes),
            token_type="Bearer",
            issuer=pending.issuer,
            client_id=client.client_id,
            created_at=now,
            updated_at=now,
            status=ConnectionStatus.OK,
            token_endpoint=pending.token_endpoint,
            revocation_endpoint=pending.revocation_endpoint,
            resource=pending.resource,
            endpoint_policy=pending.endpoint_policy,
        )
        if pending.link and not await spend(self._engine, pending.link):
            # Another attempt from the same link was completed first: a link makes one connection.
            raise OAuthError(
                f"upstream '{upstream_id}': the connect link of this sign-in was already used to connect; "
                "nothing was changed"
            )
        await self.vault.put(connection)
        self.changed(principal_id, upstream_id)
        log.info("oauth: %s connected upstream '%s'", principal_id, upstream_id)
        return connection

    async def refresh(self, connection: Connection, config: OAuthAuth) -> Connection:
        """A refreshed connection, stored. Raises TokenError (`error == "invalid_grant"`: the refresh token
        is dead), OAuthError or DiscoveryError."""
        refreshed = await tokens.refresh(self.fetcher, self.clients, connection, config, self._clock())
        await self.vault.put(refreshed)
        log.info("oauth: refreshed the connection of %s to upstream '%s'", connection.user, connection.upstream)
        return refreshed

    async def revoke(self, principal_id: str, upstream_id: str) -> bool:
        """Revoke the user's grant at the authorization server (RFC 7009, when it has a revocation endpoint)
        and delete the connection. False when there was none."""
        connection = await self.vault.get(principal_id, upstream_id)
        if connection is None:
            return False
        if connection.revocation_endpoint:
            await tokens.revoke_at_server(self.fetcher, self.clients, connection, connection.revocation_endpoint)
        removed = await self.vault.delete(principal_id, upstream_id)
        self.changed(principal_id, upstream_id)
        log.info("oauth: %s disconnected upstream '%s'", principal_id, upstream_id)
        return removed

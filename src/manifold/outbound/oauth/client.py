"""The OAuth 2.1 leg: authorization code + PKCE S256 against an upstream's authorization server, with the
gateway as a confidential (or registered) client and the user's browser as the user agent.

    url = await flows.start(principal_id, upstream_id, config, upstream_url, redirect_uri)   # → browser
    connection = await flows.complete(state, code, iss, error, principal_id)                # ← callback
    connection = await flows.refresh(connection, config)                                     # broker
    await flows.revoke(principal_id, upstream_id)                                            # RFC 7009

`start` finds the authorization server (configured, or discovered from the upstream: discovery.py),
obtains a client (configured; else one registered earlier at that issuer for this redirect URI; else RFC
7591 dynamic registration), and records the attempt under a random single-use `state` for ~10 minutes:
who started it, the PKCE verifier, the endpoints, the RFC 8707 resource. `complete` accepts the callback
only for that state, once, before it expires, for the same principal, from the same issuer (RFC 9207 `iss`,
required when the server advertises it), then redeems the code and stores the tokens in the vault.

Tokens, codes, verifiers and client secrets never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth.discovery import (
    DiscoveryError,
    Fetcher,
    ServerMetadata,
    bearer_challenge,
    check_url,
    discover,
    fetch_server_metadata,
)
from manifold.outbound.oauth.tables import oauth_clients, oauth_pending
from manifold.outbound.oauth.vault import Connection, ConnectionStatus, EndpointPolicy, Vault
from manifold.security.crypto import Cipher

log = logging.getLogger(__name__)

STATE_TTL_SECONDS = 600
# Client authentication at the token endpoint, most preferred first (RFC 8414's default is basic).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
# Authorization-request parameters the gateway sets itself; `extra_authorize_params` may not replace them.
RESERVED_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource"}
)
_ERROR_CODE = re.compile(r"[^A-Za-z0-9_.\-]")


class OAuthError(Exception):
    """The flow cannot go on; the message is fit for the user (no tokens, codes or secrets)."""


class InvalidState(OAuthError):
    pass


class IssuerMismatch(OAuthError):
    pass


class AuthorizationDenied(OAuthError):
    pass


class ConfigurationProblem(OAuthError):
    pass


class TokenError(OAuthError):
    """The token endpoint refused: `error` is its RFC 6749 error code (e.g. invalid_grant)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str | None = None
    auth_method: str = "none"


@dataclass(frozen=True)
class _Plan:
    """Where and how one authorization runs."""

    server: ServerMetadata
    issuer: str | None  # None only when endpoints are configured without an issuer
    resource: str
    scopes: list[str]
    trusted: bool  # endpoints from configuration (or a configured issuer): no SSRF rules
    insecure: bool  # allow_insecure_discovery

    @property
    def server_key(self) -> str:
        return server_key(self.issuer, self.server.token_endpoint)

    @property
    def policy(self) -> EndpointPolicy:
        if self.trusted:
            return EndpointPolicy.TRUSTED
        return EndpointPolicy.INSECURE if self.insecure else EndpointPolicy.CHECKED


def server_key(issuer: str | None, token_endpoint: str | None) -> str:
    """What identifies an authorization server for client records: its issuer, else its token endpoint."""
    return issuer or token_endpoint or ""


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 random bytes as the verifier (86 characters, RFC 7636 allows 43-128)."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _error_code(value: Any) -> str:
    """An error code from the other side, safe to show: a short token, nothing else."""
    return _ERROR_CODE.sub("", str(value))[:64] or "unknown_error"


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), ""))


def _canonical_resource(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def _is_loopback_redirect(redirect_uri: str) -> bool:
    host = (urlsplit(redirect_uri).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1")


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def choose_auth_method(supported: list[str] | None, *, has_secret: bool) -> str:
    if not has_secret:
        return "none"
    for method in AUTH_METHODS[:2]:
        if supported is None or method in supported:
            return method
    return "client_secret_basic"


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
        self._cipher = cipher
        self.vault = Vault(engine, cipher)
        self.fetcher = fetcher or Fetcher()
        self._secret = secret  # `secret:NAME` → value (SecretStore.lookup)
        self._client_name = client_name
        self._state_ttl = state_ttl_seconds
        self._clock = clock
        self._listeners: list[Callable[[str, str], None]] = []

    def add_listener(self, callback: Callable[[str, str], None]) -> None:
        """`callback(user, upstream)` after a connection is stored or removed here (the broker drops its cache)."""
        self._listeners.append(callback)

    def _changed(self, user: str, upstream: str) -> None:
        for callback in self._listeners:
            callback(user, upstream)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    # ---- start -------------------------------------------------------------------------------

    async def start(
        self,
        principal_id: str,
        upstream_id: str,
        config: OAuthAuth,
        upstream_url: str,
        redirect_uri: str,
        *,
        www_authenticate: str | None = None,
    ) -> str:
        """The authorization URL to send the browser to. `www_authenticate` is a challenge already seen at
        the upstream (e.g. 403 insufficient_scope, whose `scope` is then requested); otherwise discovery
        probes the upstream itself."""
        if not principal_id:
            raise OAuthError("a connection needs a signed-in user")
        reserved = sorted(RESERVED_PARAMS & set(config.extra_authorize_params))
        if reserved:
            raise ConfigurationProblem(
                f"upstream '{upstream_id}': extra_authorize_params may not set {', '.join(reserved)} "
                "(the gateway sets them itself)"
            )
        plan = await self._plan(upstream_id, config, upstream_url, www_authenticate)
        client = await self._client(upstream_id, plan, config, redirect_uri)
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(32)
        now = self._clock()
        payload = {
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "resource": plan.resource,
            "scopes": plan.scopes,
            "issuer": plan.issuer,
            "iss_required": plan.server.iss_parameter_supported,
            "client_id": client.client_id,
            "token_endpoint": plan.server.token_endpoint,
            "revocation_endpoint": config.revocation_endpoint or plan.server.revocation_endpoint,
            "policy": plan.policy.value,
        }
        async with self._engine.begin() as conn:
            await conn.execute(delete(oauth_pending).where(oauth_pending.c.expires_at < now))
            await conn.execute(
                oauth_pending.insert().values(
                    state_hash=_hash_state(state),
                    user=principal_id,
                    upstream=upstream_id,
                    payload=self._cipher.encrypt_text(json.dumps(payload)),
                    expires_at=now + self._state_ttl,
                    created_at=now,
                )
            )
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
                params["scope"] = " ".join(_dedupe(params.get("scope", "").split() + value.split()))
            else:
                params[name] = value
        log.info("oauth: %s is connecting upstream '%s' at %s", principal_id, upstream_id, plan.issuer or "?")
        return _with_query(plan.server.authorization_endpoint, params)

    async def _plan(
        self, upstream_id: str, config: OAuthAuth, upstream_url: str, www_authenticate: str | None
    ) -> _Plan:
        insecure = config.allow_insecure_discovery
        challenge = bearer_challenge(www_authenticate)
        resource_metadata = None
        if config.authorization_endpoint or config.token_endpoint:
            if not (config.authorization_endpoint and config.token_endpoint):
                raise ConfigurationProblem(
                    f"upstream '{upstream_id}': set both authorization_endpoint and token_endpoint, or neither "
                    "(to discover them)"
                )
            server = ServerMetadata(
                issuer=config.issuer or "",
                authorization_endpoint=check_url(config.authorization_endpoint, insecure=True),
                token_endpoint=check_url(config.token_endpoint, insecure=True),
                revocation_endpoint=config.revocation_endpoint,
            )
            issuer, trusted = config.issuer, True
        else:
            try:
                if config.issuer:
                    server = await fetch_server_metadata(self.fetcher, config.issuer, insecure=insecure, trusted=True)
                    trusted = True
                else:
                    found = await discover(
                        self.fetcher, upstream_url, insecure=insecure, www_authenticate=www_authenticate
                    )
                    server, resource_metadata, trusted = found.server, found.resource, False
                    challenge = challenge or found.challenge
            except DiscoveryError as exc:  # the same kind (UnsafeUrl stays UnsafeUrl), naming the upstream
                raise type(exc)(f"upstream '{upstream_id}': {exc}") from None
            issuer = server.issuer
            methods = server.code_challenge_methods_supported
            if not methods or "S256" not in methods:
                # MCP authorization: a client MUST refuse a server that does not advertise PKCE S256.
                raise DiscoveryError(
                    f"upstream '{upstream_id}': the authorization server {issuer} does not advertise PKCE S256 "
                    "(code_challenge_methods_supported); refusing to authorize"
                )
        resource = _canonical_resource(
            config.resource or (resource_metadata.resource if resource_metadata else upstream_url)
        )
        wanted = challenge.scope.split() if challenge is not None and challenge.scope else []
        if config.scopes:
            scopes = _dedupe([*config.scopes, *wanted])
        else:
            # MCP scope selection: the challenge's scope, else what the resource says it supports, else none.
            scopes = _dedupe(wanted or (resource_metadata.scopes_supported if resource_metadata else None) or [])
            if scopes and "offline_access" in (server.scopes_supported or []) and "offline_access" not in scopes:
                scopes.append("offline_access")  # a refresh token, where the server offers one (SEP-2207)
        return _Plan(server, issuer or None, resource, scopes, trusted, insecure)

    async def _client(self, upstream_id: str, plan: _Plan, config: OAuthAuth, redirect_uri: str) -> Client:
        supported = plan.server.token_endpoint_auth_methods_supported
        if config.client_id:
            secret = self._value(upstream_id, config.client_secret) if config.client_secret else None
            client = Client(config.client_id, secret, choose_auth_method(supported, has_secret=secret is not None))
            await self._remember_client(plan.server_key, client, redirect_uri, source="configured")
            return client
        key = plan.server_key
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(oauth_clients).where(
                        oauth_clients.c.issuer == key,
                        oauth_clients.c.redirect_uri == redirect_uri,
                        oauth_clients.c.source == "registered",
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

    async def _register(self, upstream_id: str, plan: _Plan, endpoint: str, redirect_uri: str) -> Client:
        supported = plan.server.token_endpoint_auth_methods_supported
        wanted = next((m for m in AUTH_METHODS if supported is None or m in supported), "client_secret_basic")
        body = {
            "client_name": self._client_name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": wanted,
            "application_type": "native" if _is_loopback_redirect(redirect_uri) else "web",
        }
        reply = await self.fetcher.request(
            "POST",
            endpoint,
            json_body=body,
            headers={"Accept": "application/json"},
            insecure=plan.insecure,
            trusted=plan.trusted,
            what="registration endpoint",
        )
        answer = reply.body if isinstance(reply.body, dict) else {}
        if reply.status not in (200, 201) or not isinstance(answer.get("client_id"), str):
            raise OAuthError(
                f"upstream '{upstream_id}': dynamic client registration failed (HTTP {reply.status}, "
                f"{_error_code(answer.get('error', 'no client_id'))})"
            )
        secret = answer.get("client_secret") if isinstance(answer.get("client_secret"), str) else None
        method = answer.get("token_endpoint_auth_method")
        if method not in AUTH_METHODS:
            method = wanted if (secret or wanted == "none") else "none"
        client = Client(answer["client_id"], secret if method != "none" else None, method)
        await self._remember_client(plan.server_key, client, redirect_uri, source="registered")
        log.info("oauth: registered a client at %s for upstream '%s'", plan.issuer or endpoint, upstream_id)
        return client

    async def _remember_client(self, key: str, client: Client, redirect_uri: str, *, source: str) -> None:
        values = {
            "redirect_uri": redirect_uri,
            "secret": self._cipher.encrypt_text(client.secret) if client.secret else None,
            "auth_method": client.auth_method,
            "source": source,
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

    async def _stored_client(self, key: str, client_id: str) -> Client | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(oauth_clients).where(oauth_clients.c.issuer == key, oauth_clients.c.client_id == client_id)
                )
            ).first()
        return None if row is None else self._client_of(row)

    def _client_of(self, row: Any) -> Client:
        secret = self._cipher.decrypt_text(row.secret) if row.secret else None
        return Client(row.client_id, secret, row.auth_method)

    def _value(self, upstream_id: str, value: str) -> str:
        if value.startswith("secret:"):
            if self._secret is None:
                raise ConfigurationProblem(f"upstream '{upstream_id}': the secret store is not available")
            try:
                return self._secret(value[len("secret:") :])
            except LookupError as exc:
                raise ConfigurationProblem(f"upstream '{upstream_id}': {exc}") from None
        return value

    # ---- complete ----------------------------------------------------------------------------

    async def complete(
        self, state: str, code: str | None, iss: str | None, error: str | None, principal_id: str
    ) -> Connection:
        """Redeem the callback of an authorization started by `principal_id`; store and return the connection."""
        now = self._clock()
        key = _hash_state(state or "")
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(oauth_pending).where(oauth_pending.c.state_hash == key))).first()
            # Single use: whatever happens next, this state is spent.
            used = (
                (await conn.execute(delete(oauth_pending).where(oauth_pending.c.state_hash == key))).rowcount
                if row is not None
                else 0
            )
        if row is None or used != 1:
            raise InvalidState("this sign-in is unknown or was already used: start again from the connect link")
        if row.expires_at < now:
            raise InvalidState("this sign-in took too long and has expired: start again from the connect link")
        if row.user != principal_id:
            raise InvalidState("this sign-in was started by another user: start again from your own connect link")
        upstream_id = row.upstream
        pending = json.loads(self._cipher.decrypt_text(row.payload))
        if error:
            raise AuthorizationDenied(
                f"upstream '{upstream_id}': the authorization server did not grant access ({_error_code(error)})"
            )
        expected = pending["issuer"]
        if iss is not None and expected and iss != expected:
            raise IssuerMismatch(
                f"upstream '{upstream_id}': the authorization response came from another issuer than the one "
                "the sign-in was sent to; refused (RFC 9207)"
            )
        if iss is None and pending["iss_required"]:
            raise IssuerMismatch(
                f"upstream '{upstream_id}': the authorization response does not name its issuer although the "
                "server promises to (RFC 9207); refused"
            )
        if not code:
            raise OAuthError(f"upstream '{upstream_id}': the authorization server sent no code")
        key_of_server = server_key(pending["issuer"], pending["token_endpoint"])
        client = await self._stored_client(key_of_server, pending["client_id"])
        if client is None:
            raise OAuthError(f"upstream '{upstream_id}': the OAuth client of this sign-in is no longer known")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending["redirect_uri"],
            "code_verifier": pending["verifier"],
            "resource": pending["resource"],
        }
        body = await self._token_request(
            upstream_id, pending["token_endpoint"], form, client, EndpointPolicy(pending["policy"])
        )
        connection = Connection(
            user=principal_id,
            upstream=upstream_id,
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None,
            expires_at=_expires_at(body, now),
            scopes=_scopes(body, pending["scopes"]),
            token_type="Bearer",
            issuer=pending["issuer"],
            client_id=client.client_id,
            created_at=now,
            updated_at=now,
            status=ConnectionStatus.OK,
            token_endpoint=pending["token_endpoint"],
            revocation_endpoint=pending["revocation_endpoint"],
            resource=pending["resource"],
            endpoint_policy=EndpointPolicy(pending["policy"]),
        )
        await self.vault.put(connection)
        self._changed(principal_id, upstream_id)
        log.info("oauth: %s connected upstream '%s'", principal_id, upstream_id)
        return connection

    # ---- refresh and revoke ------------------------------------------------------------------

    async def refresh(self, connection: Connection, config: OAuthAuth) -> Connection:
        """A refreshed connection, stored. Raises TokenError (`error == "invalid_grant"`: the refresh token
        is dead), OAuthError or DiscoveryError."""
        upstream_id = connection.upstream
        if not connection.refresh_token:
            raise TokenError(f"upstream '{upstream_id}': the connection has no refresh token", "invalid_grant")
        endpoint = config.token_endpoint or connection.token_endpoint
        if not endpoint:
            raise OAuthError(f"upstream '{upstream_id}': no token endpoint is known for this connection")
        if config.token_endpoint or connection.endpoint_policy is EndpointPolicy.TRUSTED:
            policy = EndpointPolicy.TRUSTED
        else:  # the upstream's current setting decides, not the one at connection time
            policy = EndpointPolicy.INSECURE if config.allow_insecure_discovery else EndpointPolicy.CHECKED
        client = await self._client_for(connection, config)
        form = {"grant_type": "refresh_token", "refresh_token": connection.refresh_token}
        if connection.resource:
            form["resource"] = connection.resource
        now = self._clock()
        body = await self._token_request(upstream_id, endpoint, form, client, policy)
        # A server that rotates refresh tokens sends a new one; one that does not keeps the old one valid.
        rotated = body.get("refresh_token")
        refreshed = connection.with_tokens(
            access_token=body["access_token"],
            refresh_token=rotated if isinstance(rotated, str) and rotated else connection.refresh_token,
            expires_at=_expires_at(body, now),
            scopes=_scopes(body, connection.scopes),
            updated_at=now,
            status=ConnectionStatus.OK,
        )
        await self.vault.put(refreshed)
        log.info("oauth: refreshed the connection of %s to upstream '%s'", connection.user, upstream_id)
        return refreshed

    async def revoke(self, principal_id: str, upstream_id: str) -> bool:
        """Revoke the user's grant at the authorization server (RFC 7009, when it has a revocation endpoint)
        and delete the connection. False when there was none."""
        connection = await self.vault.get(principal_id, upstream_id)
        if connection is None:
            return False
        if connection.revocation_endpoint:
            await self._revoke_at_server(connection)
        removed = await self.vault.delete(principal_id, upstream_id)
        self._changed(principal_id, upstream_id)
        log.info("oauth: %s disconnected upstream '%s'", principal_id, upstream_id)
        return removed

    async def _revoke_at_server(self, connection: Connection) -> None:
        assert connection.revocation_endpoint is not None
        client = await self._stored_client(
            server_key(connection.issuer, connection.token_endpoint), connection.client_id or ""
        )
        if client is None:
            log.warning("oauth: cannot revoke at the server for upstream '%s': client unknown", connection.upstream)
            return
        # Revoking the refresh token ends the grant (and, at most servers, its access tokens too).
        token, hint = (
            (connection.refresh_token, "refresh_token")
            if connection.refresh_token
            else (connection.access_token, "access_token")
        )
        form, headers = _client_auth(client, {"token": token, "token_type_hint": hint})
        try:
            reply = await self.fetcher.request(
                "POST",
                connection.revocation_endpoint,
                data=form,
                headers=headers,
                insecure=connection.endpoint_policy is EndpointPolicy.INSECURE,
                trusted=connection.endpoint_policy is EndpointPolicy.TRUSTED,
                what="revocation endpoint",
            )
        except DiscoveryError as exc:
            log.warning("oauth: revocation for upstream '%s' failed: %s", connection.upstream, exc)
            return
        if reply.status != 200:
            log.warning(
                "oauth: the revocation endpoint for upstream '%s' answered HTTP %s", connection.upstream, reply.status
            )

    async def _client_for(self, connection: Connection, config: OAuthAuth) -> Client:
        key = server_key(connection.issuer, connection.token_endpoint)
        stored = await self._stored_client(key, connection.client_id or "")
        if config.client_id and config.client_id == connection.client_id:
            # The configured secret wins: an administrator may have rotated it since.
            secret = self._value(connection.upstream, config.client_secret) if config.client_secret else None
            if stored is not None and (stored.secret is None) == (secret is None):
                return Client(config.client_id, secret, stored.auth_method)
            return Client(config.client_id, secret, choose_auth_method(None, has_secret=secret is not None))
        if stored is None:
            raise OAuthError(
                f"upstream '{connection.upstream}': the OAuth client of this connection is no longer known"
            )
        return stored

    async def _token_request(
        self,
        upstream_id: str,
        endpoint: str,
        form: dict[str, str],
        client: Client,
        policy: EndpointPolicy,
    ) -> dict[str, Any]:
        data, headers = _client_auth(client, form)
        reply = await self.fetcher.request(
            "POST",
            endpoint,
            data=data,
            headers=headers,
            insecure=policy is EndpointPolicy.INSECURE,
            trusted=policy is EndpointPolicy.TRUSTED,
            what="token endpoint",
        )
        body = reply.body if isinstance(reply.body, dict) else {}
        if reply.status != 200 or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            code = _error_code(body.get("error") or f"http_{reply.status}")
            raise TokenError(f"upstream '{upstream_id}': the token endpoint refused ({code})", code)
        token_type = str(body.get("token_type") or "Bearer")
        if token_type.lower() != "bearer":
            raise TokenError(
                f"upstream '{upstream_id}': the token endpoint issued a '{_error_code(token_type)}' token; only "
                "Bearer tokens are supported",
                "unsupported_token_type",
            )
        return body


def _client_auth(client: Client, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of a token-endpoint request, authenticated as `client`."""
    data = dict(form)
    headers = {"Accept": "application/json"}
    match client.auth_method:
        case "client_secret_basic" if client.secret is not None:
            # RFC 6749 §2.3.1: both parts form-encoded before Base64.
            pair = f"{quote(client.client_id, safe='')}:{quote(client.secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        case "client_secret_post" if client.secret is not None:
            data["client_id"] = client.client_id
            data["client_secret"] = client.secret
        case _:
            data["client_id"] = client.client_id
    return data, headers


def _expires_at(body: dict[str, Any], now: float) -> float | None:
    value = body.get("expires_in")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        seconds = None
    return None if seconds is None or seconds < 0 else now + seconds


def _scopes(body: dict[str, Any], requested: list[str]) -> list[str]:
    scope = body.get("scope")
    return scope.split() if isinstance(scope, str) and scope.strip() else list(requested)

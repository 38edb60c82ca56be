"""The token endpoint and the revocation endpoint: redeeming a code, refreshing a connection, revoking it
(RFC 7009). Every request authenticates as the connection's client (RFC 6749 §2.3.1)."""

from __future__ import annotations

import base64
import logging
from typing import Any, assert_never
from urllib.parse import quote

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth.discovery import DiscoveryError, Fetcher
from manifold.outbound.oauth.errors import OAuthError, TokenError, error_code
from manifold.outbound.oauth.plan import server_key
from manifold.outbound.oauth.registration import Client, ClientAuthMethod, ClientRegistry
from manifold.outbound.oauth.vault import Connection, ConnectionStatus, EndpointPolicy

log = logging.getLogger(__name__)

TokenResponse = dict[str, Any]  # the token endpoint's JSON object, as sent


async def token_request(
    fetcher: Fetcher,
    upstream_id: str,
    endpoint: str,
    form: dict[str, str],
    client: Client,
    policy: EndpointPolicy,
) -> TokenResponse:
    """POST `form` to the token endpoint as `client`: the answer when it issued a Bearer access token,
    else TokenError naming the server's error code."""
    data, headers = client_auth(client, form)
    reply = await fetcher.request(
        "POST",
        endpoint,
        data=data,
        headers=headers,
        insecure=policy is EndpointPolicy.INSECURE,
        trusted=policy is EndpointPolicy.TRUSTED,
        what="token endpoint",
    )
    body: TokenResponse = reply.body if isinstance(reply.body, dict) else {}
    if reply.status != 200 or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        code = error_code(body.get("error") or f"http_{reply.status}")
        raise TokenError(f"upstream '{upstream_id}': the token endpoint refused ({code})", code)
    token_type = str(body.get("token_type") or "Bearer")
    if token_type.lower() != "bearer":
        raise TokenError(
            f"upstream '{upstream_id}': the token endpoint issued a '{error_code(token_type)}' token; only "
            "Bearer tokens are supported",
            "unsupported_token_type",
        )
    return body


def client_auth(client: Client, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of a token-endpoint request, authenticated as `client`."""
    data = dict(form)
    headers = {"Accept": "application/json"}
    secret = client.secret
    if secret is None:  # a public client (or one whose secret is not known here) presents its id only
        data["client_id"] = client.client_id
        return data, headers
    match client.auth_method:
        case ClientAuthMethod.BASIC:
            # RFC 6749 §2.3.1: both parts form-encoded before Base64.
            pair = f"{quote(client.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        case ClientAuthMethod.POST:
            data["client_id"] = client.client_id
            data["client_secret"] = secret
        case ClientAuthMethod.NONE:
            data["client_id"] = client.client_id
        case _:
            assert_never(client.auth_method)
    return data, headers


def expires_at(body: TokenResponse, now: float) -> float | None:
    value = body.get("expires_in")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        seconds = None
    return None if seconds is None or seconds < 0 else now + seconds


def granted_scopes(body: TokenResponse, requested: list[str]) -> list[str]:
    scope = body.get("scope")
    return scope.split() if isinstance(scope, str) and scope.strip() else list(requested)


async def refresh(
    fetcher: Fetcher, clients: ClientRegistry, connection: Connection, config: OAuthAuth, now: float
) -> Connection:
    """The connection with refreshed tokens (not stored). Raises TokenError (`error == "invalid_grant"`: the
    refresh token is dead), OAuthError or DiscoveryError."""
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
    client = await clients.for_connection(connection, config)
    form = {"grant_type": "refresh_token", "refresh_token": connection.refresh_token}
    if connection.resource:
        form["resource"] = connection.resource
    body = await token_request(fetcher, upstream_id, endpoint, form, client, policy)
    # A server that rotates refresh tokens sends a new one; one that does not keeps the old one valid.
    rotated = body.get("refresh_token")
    return connection.with_tokens(
        access_token=body["access_token"],
        refresh_token=rotated if isinstance(rotated, str) and rotated else connection.refresh_token,
        expires_at=expires_at(body, now),
        scopes=granted_scopes(body, connection.scopes),
        updated_at=now,
        status=ConnectionStatus.OK,
    )


async def revoke_at_server(fetcher: Fetcher, clients: ClientRegistry, connection: Connection, endpoint: str) -> None:
    """RFC 7009 at `endpoint` (the connection's revocation endpoint). A failure is logged, not raised: the
    connection is deleted here either way."""
    client = await clients.stored(server_key(connection.issuer, connection.token_endpoint), connection.client_id or "")
    if client is None:
        log.warning("oauth: cannot revoke at the server for upstream '%s': client unknown", connection.upstream)
        return
    # Revoking the refresh token ends the grant (and, at most servers, its access tokens too).
    token, hint = (
        (connection.refresh_token, "refresh_token")
        if connection.refresh_token
        else (connection.access_token, "access_token")
    )
    form, headers = client_auth(client, {"token": token, "token_type_hint": hint})
    try:
        reply = await fetcher.request(
            "POST",
            endpoint,
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

"""Where and how one authorization runs: the authorization server (configured, or discovered from the
upstream: discovery.py), the RFC 8707 resource, and the scopes to ask for."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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
from manifold.outbound.oauth.errors import ConfigurationProblem
from manifold.outbound.oauth.vault import EndpointPolicy


@dataclass(frozen=True)
class AuthorizationPlan:
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


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _canonical_resource(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


async def plan_authorization(
    fetcher: Fetcher, upstream_id: str, config: OAuthAuth, upstream_url: str, www_authenticate: str | None
) -> AuthorizationPlan:
    """The plan for one authorization. `www_authenticate` is a challenge already seen at the upstream (its
    `scope` is then requested); otherwise discovery probes the upstream itself."""
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
                server = await fetch_server_metadata(fetcher, config.issuer, insecure=insecure, trusted=True)
                trusted = True
            else:
                found = await discover(fetcher, upstream_url, insecure=insecure, www_authenticate=www_authenticate)
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
        scopes = dedupe([*config.scopes, *wanted])
    else:
        # MCP scope selection: the challenge's scope, else what the resource says it supports, else none.
        scopes = dedupe(wanted or (resource_metadata.scopes_supported if resource_metadata else None) or [])
        if scopes and "offline_access" in (server.scopes_supported or []) and "offline_access" not in scopes:
            scopes.append("offline_access")  # a refresh token, where the server offers one (SEP-2207)
    return AuthorizationPlan(server, issuer or None, resource, scopes, trusted, insecure)

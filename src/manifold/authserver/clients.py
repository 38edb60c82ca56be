"""The clients of the gateway's authorization server, and how a `client_id` becomes one.

- **Configured** (`identity.authorization_server.clients`): confidential third-party apps, with a secret.
- **Client ID Metadata Documents**: the `client_id` is an https URL with a path; the document there names
  the client and its redirect URIs, and must name itself as `client_id`. Fetched with the SSRF guard of the
  outbound discovery (outbound/oauth/discovery.py: https only, public addresses only, checked again at
  connect time, no redirects, bounded size), cached for a few minutes. `allow_insecure_client_urls` lifts
  the https/public rule, for development only.
- **Dynamically registered** (RFC 7591): public clients (PKCE) or confidential ones; kept in the database.

Redirect URIs match exactly, except that a loopback `http` redirect URI matches on any port (RFC 8252 §7.3:
native apps listen on an ephemeral port).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

from manifold.authserver.store import AuthStore, digest
from manifold.config.models import AuthorizationServerSettings
from manifold.outbound.oauth.discovery import DiscoveryError, Fetcher, check_url

CIMD_CACHE_SECONDS = 300.0
CIMD_CACHE_ENTRIES = 1000
GRANT_TYPES = ("authorization_code", "refresh_token")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
# The longest redirect URI a client may have: what an authorization code's row holds (gw_oauth_codes).
MAX_REDIRECT_URI = 2000


class ClientProblem(Exception):
    """The client_id names no usable client; the message says why (shown to the person, never redirected)."""


def split_url(url: str) -> SplitResult | None:
    """`url` taken apart, or None when it is no URL at all: a bad bracketed host (`http://[zz]/`), a port out
    of range. What a client sends is taken apart here, so that it is refused, never a 500."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # checked on reading
    except ValueError:
        return None
    return parts


def is_cimd_url(client_id: str) -> bool:
    parts = split_url(client_id)
    if parts is None:
        return False
    return parts.scheme in ("https", "http") and bool(parts.netloc) and parts.path not in ("", "/")


def redirect_uri_allowed(uri: str, *, insecure: bool = False) -> bool:
    """Whether a client may be sent its codes at `uri`: https, loopback http (RFC 8252 §7.3) or a native app's
    private-use scheme (§7.1: a reverse domain name, so never `javascript:`, `data:` or `vbscript:`), with no
    fragment. `insecure` (`allow_insecure_client_urls`, development only) also lets plain http to any host.
    Never a URI that Python and a browser would read as two different places (`_ambiguous`)."""
    if len(uri) > MAX_REDIRECT_URI or _ambiguous(uri):
        return False
    parts = split_url(uri)
    if parts is None or parts.fragment or not parts.scheme:
        return False
    if parts.scheme in ("https", "http") and not _host_and_port_only(parts):
        return False
    if parts.scheme == "https":
        return bool(parts.netloc)
    if parts.scheme == "http":
        return bool(parts.hostname) and (insecure or parts.hostname in LOOPBACK_HOSTS)
    return "." in parts.scheme


def redirect_matches(registered: str, requested: str) -> bool:
    if registered == requested:
        return True
    if _ambiguous(requested) or _ambiguous(registered):
        return False
    a, b = split_url(registered), split_url(requested)
    if a is None or b is None or a.scheme != "http" or b.scheme != "http" or a.hostname not in LOOPBACK_HOSTS:
        return False
    if not (_host_and_port_only(a) and _host_and_port_only(b)):
        return False
    # RFC 8252 §7.3: any port on the same loopback host, the rest exactly as registered.
    return (a.hostname, a.path, a.query, a.fragment) == (b.hostname, b.path, b.query, b.fragment) and bool(b.hostname)


def _ambiguous(uri: str) -> bool:
    """Characters on which Python's `urlsplit` and a browser's URL parser (WHATWG) part ways: a backslash is
    a path separator to a browser only (`http://evil.example\\@127.0.0.1/cb` is 127.0.0.1 to Python,
    evil.example to Chromium), and whitespace and control characters are dropped by one and kept by the other.
    A redirect URI holding one is refused, whatever else it says."""
    return "\\" in uri or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri)


def _host_and_port_only(parts: SplitResult) -> bool:
    """The authority is `host` or `host:port`, nothing more: no userinfo (`anything@127.0.0.1` would match a
    loopback redirect by its host alone), no empty port."""
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    netloc = parts.netloc.lower()
    return netloc == shown or (parts.port is not None and netloc == f"{shown}:{parts.port}")


@dataclass(frozen=True)
class GatewayClient(ClientMixin):
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    auth_method: str  # none | client_secret_basic | client_secret_post
    source: str  # configured | registered | metadata-document
    secret_hash: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else ""  # "": none, name it

    def get_allowed_scope(self, scope: Collection[str] | str) -> str:
        # No scopes of our own: what the client asked for is recorded and echoed, and decides nothing
        # (grants decide what the person may do, the token's audience which server).
        words = scope.split() if isinstance(scope, str) else list(scope or ())
        return " ".join(w for w in words if w)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_matches(r, redirect_uri) for r in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.auth_method == "none" or self.secret_hash is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")  # a secret, in the header or the form

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES

    @property
    def redirect_host(self) -> str:
        parts = split_url(self.redirect_uris[0]) if self.redirect_uris else None
        return parts.netloc if parts is not None else "?"


class ClientRegistry:
    def __init__(
        self, settings: AuthorizationServerSettings, store: AuthStore, fetcher: Fetcher, secret: Callable[[str], str]
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.secret = secret  # `secret:NAME` values
        self._documents: dict[str, tuple[GatewayClient, float]] = {}

    async def find(self, client_id: str) -> GatewayClient:
        """The client, or ClientProblem saying why there is none."""
        if not client_id or len(client_id) > 2000:
            raise ClientProblem("the client_id is missing or too long")
        configured = self.settings.clients.get(client_id)
        if configured is not None:
            secret = configured.client_secret
            if secret.startswith("secret:"):
                secret = self.secret(secret[len("secret:") :])
            return GatewayClient(
                client_id=client_id,
                name=configured.name or client_id,
                redirect_uris=tuple(configured.redirect_uris),
                auth_method="client_secret_basic",
                source="configured",
                secret_hash=digest(secret),
            )
        if is_cimd_url(client_id):
            return await self._document(client_id)
        found = await self.store.registered_client(client_id)
        if found is None:
            raise ClientProblem("no client is registered with this client_id")
        metadata, secret_hash = found
        return registered_client(client_id, metadata, secret_hash)

    def cached(self, client_id: str) -> bool:
        """Whether `client_id` is a metadata document held in the cache (finding it fetches nothing)."""
        entry = self._documents.get(client_id)
        return entry is not None and entry[1] > time.monotonic()

    async def _document(self, url: str) -> GatewayClient:
        now = time.monotonic()
        cached = self._documents.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        insecure = self.settings.allow_insecure_client_urls
        try:
            check_url(url, insecure=insecure, what="client metadata document")
            reply = await self.fetcher.request("GET", url, insecure=insecure, what="client metadata document")
        except DiscoveryError as exc:
            raise ClientProblem(str(exc)) from None
        body = reply.body
        if reply.status != 200 or not isinstance(body, dict):
            raise ClientProblem(f"the client metadata document answered {reply.status}, not a JSON document")
        if body.get("client_id") != url:
            raise ClientProblem("the client metadata document does not name its own URL as client_id")
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise ClientProblem("the client metadata document lists no redirect_uris")
        if not all(redirect_uri_allowed(u, insecure=insecure) for u in uris):
            # As for a client that registers itself (routes.py): the person would be sent, with a code, to
            # a `javascript:` or `data:` address, or over plain http to another host.
            raise ClientProblem(
                "the client metadata document lists a redirect URI that is not https, loopback http or an app "
                "scheme (or has a fragment)"
            )
        method = body.get("token_endpoint_auth_method", "none")
        if method != "none":
            raise ClientProblem(
                "a client known by its metadata document must be public (token_endpoint_auth_method none)"
            )
        name = body.get("client_name")
        client = GatewayClient(
            client_id=url,
            name=name[:200] if isinstance(name, str) and name else urlsplit(url).netloc,
            redirect_uris=tuple(uris),
            auth_method="none",
            source="metadata-document",
            metadata=body,
        )
        if len(self._documents) >= CIMD_CACHE_ENTRIES:
            self._documents.clear()
        self._documents[url] = (client, now + CIMD_CACHE_SECONDS)
        return client


def registered_client(client_id: str, metadata: Mapping[str, Any], secret_hash: str | None) -> GatewayClient:
    name = metadata.get("client_name")
    return GatewayClient(
        client_id=client_id,
        name=name[:200] if isinstance(name, str) and name else client_id,
        redirect_uris=tuple(metadata.get("redirect_uris") or ()),
        auth_method=str(metadata.get("token_endpoint_auth_method") or "client_secret_basic"),
        source="registered",
        secret_hash=secret_hash,
        metadata=metadata,
    )

"""Finding an upstream's authorization server, treating every discovered URL as hostile.

The chain (MCP authorization, 2025-11-25): the upstream answers 401 with `WWW-Authenticate: Bearer
resource_metadata="…"` → that RFC 9728 protected-resource metadata (or, without the header, the well-known
`/.well-known/oauth-protected-resource{path}` then `/.well-known/oauth-protected-resource`) names the
authorization servers → the first one's RFC 8414 metadata (`/.well-known/oauth-authorization-server{path}`),
then OpenID discovery (`/.well-known/openid-configuration{path}`, `{path}/.well-known/openid-configuration`).
An upstream with no protected-resource metadata at all is treated the 2025-03-26 way: its origin is the
authorization server.

Those URLs come from the upstream and whoever controls it (SSRF: CVE-2025-6514 in mcp-remote). Unless the
upstream's `allow_insecure_discovery` is on, every request to a discovered URL must be https, to a host
that is an IP literal or name resolving only to public addresses; the check runs again in the resolver
aiohttp connects with (so a name cannot change its answer between check and connect: DNS rebinding), and
redirects are never followed. Response bodies are capped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import ResolveResult

from manifold.protocol import LATEST_HANDSHAKE

MAX_BODY_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 10.0
MCP_PROBE_VERSION = LATEST_HANDSHAKE


class DiscoveryError(Exception):
    """The authorization server could not be found or is not usable; the message says what and where."""


class UnsafeUrl(DiscoveryError):
    """A discovered URL points somewhere the gateway must not go (http, private address, odd scheme)."""


# ---- URL policy -----------------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """Only globally routable unicast addresses: no loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7),
    link-local (169.254/16, fe80::/10), shared (100.64/10), multicast, reserved or unspecified ones."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by that address (attack probe: NAT64 and 6to4 forms
        # of 169.254.169.254 and 10/8 passed as global): mapped, NAT64's well-known prefix and 6to4. NAT64's
        # local-use prefix, Teredo and the deprecated IPv4-compatible form are refused outright.
        if ip in _NAT64_LOCAL or ip in _IPV4_COMPATIBLE or ip.teredo is not None:
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 §2.5.5.1, deprecated


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_url(url: str, *, insecure: bool, what: str = "URL") -> str:
    """Refuse a discovered URL before anything is sent to it (the name's addresses are checked when
    connecting). `insecure` (allow_insecure_discovery) still demands http(s) and no credentials in the URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError:
        raise UnsafeUrl(f"the {what} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise UnsafeUrl(f"the {what} {_show(url)} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(f"the {what} {_show(url)} carries credentials")
    if parts.fragment:
        raise UnsafeUrl(f"the {what} {_show(url)} has a fragment")
    if insecure:
        return url
    if parts.scheme != "https":
        raise UnsafeUrl(
            f"the {what} {_show(url)} is not https (discovered URLs must be https; set allow_insecure_discovery "
            "only for upstreams you run yourself)"
        )
    literal = _ip_literal(host)
    if literal is not None and not is_public_address(literal):
        raise UnsafeUrl(
            f"the {what} {_show(url)} points at a non-public address (loopback, private or link-local); set "
            "allow_insecure_discovery only for upstreams you run yourself"
        )
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        raise UnsafeUrl(f"the {what} {_show(url)} points at localhost")
    return url


def _show(url: str) -> str:
    """A URL for a message: scheme, host, port and path only (a query may hold anything)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return repr(urlunsplit((parts.scheme, f"{host}{port}", parts.path[:200], "", "")))
    except ValueError:
        return "'(unparseable URL)'"


class PublicOnlyResolver(aiohttp.ThreadedResolver):
    """The resolver of the session that fetches discovered URLs: a name that resolves to any non-public
    address is refused at connect time, whatever it answered when it was first checked."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if not results or any(not is_public_address(r["host"]) for r in results):
            raise OSError(f"{host} resolves to a non-public address")
        return results


async def check_resolves_public(host: str) -> None:
    """A name must resolve only to public addresses (a clear message before connecting; the resolver above
    enforces it again at connect time)."""
    if _ip_literal(host) is not None:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise DiscoveryError(f"cannot resolve {host!r}") from None
    addresses = {str(info[4][0]) for info in infos}  # a sockaddr: (host, port, ...), host always a str here
    if not addresses or any(not is_public_address(a) for a in addresses):
        raise UnsafeUrl(
            f"{host!r} resolves to a non-public address (loopback, private or link-local); set "
            "allow_insecure_discovery only for upstreams you run yourself"
        )


# ---- HTTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None
    headers: Mapping[str, str]


class Fetcher:
    """Every HTTP request of the OAuth leg. `trusted` requests (configured endpoints and issuers) and
    requests for upstreams with `allow_insecure_discovery` skip the address checks; all others are held to
    them. Redirects are never followed."""

    def __init__(self, *, timeout_seconds: float = TIMEOUT_SECONDS, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max = max_body_bytes
        self._plain: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None

    def _session(self, guarded: bool) -> aiohttp.ClientSession:
        if guarded:
            if self._guarded is None or self._guarded.closed:
                connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), use_dns_cache=False)
                self._guarded = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
            return self._guarded
        if self._plain is None or self._plain.closed:
            self._plain = aiohttp.ClientSession(timeout=self._timeout)
        return self._plain

    async def aclose(self) -> None:
        for session in (self._plain, self._guarded):
            if session is not None and not session.closed:
                await session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        insecure: bool,
        trusted: bool = False,
        what: str = "URL",
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        guarded = not (trusted or insecure)
        if trusted:
            check_url(url, insecure=True, what=what)
        else:
            check_url(url, insecure=insecure, what=what)
        if guarded:
            await check_resolves_public(urlsplit(url).hostname or "")
        session = self._session(guarded)
        try:
            async with session.request(
                method, url, data=data, json=json_body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(self._max + 1)
                if len(raw) > self._max:
                    raise DiscoveryError(f"the {what} {_show(url)} answered with more than {self._max} bytes")
                if 300 <= resp.status < 400:
                    raise DiscoveryError(f"the {what} {_show(url)} answered with a redirect, which is not followed")
                try:
                    body = json.loads(raw) if raw else None
                except (ValueError, UnicodeDecodeError):
                    body = None
                return Reply(resp.status, body, dict(resp.headers))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DiscoveryError(f"cannot reach the {what} {_show(url)}: {type(exc).__name__}") from None

    async def probe(self, url: str, *, insecure: bool) -> Reply:
        """An unauthenticated MCP `initialize` to the upstream, to read its 401 challenge."""
        body = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": MCP_PROBE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "manifold-oauth-discovery", "version": "1"},
            },
        }
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        guarded = not insecure
        check_url(url, insecure=insecure, what="upstream URL")
        if guarded:
            await check_resolves_public(urlsplit(url).hostname or "")
        try:
            async with self._session(guarded).post(url, json=body, headers=headers, allow_redirects=False) as resp:
                # Only the status and the challenge matter; an upstream that lets `initialize` through may
                # answer with a stream, which is not read.
                return Reply(resp.status, None, dict(resp.headers))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DiscoveryError(f"cannot reach the upstream {_show(url)}: {type(exc).__name__}") from None


# ---- WWW-Authenticate -----------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})")
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9\-._~+/]+=*\s*(?:,|$)")


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def resource_metadata(self) -> str | None:
        return self.params.get("resource_metadata")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(header: str) -> list[Challenge]:
    """RFC 9110 §11.6.1 challenges: `Bearer realm="x", scope="a b", Basic realm="y"` → two challenges."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in " \t,":
            pos += 1
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        token68 = _TOKEN68.match(header, pos)
        if token68 is not None and not _PARAM.match(header, pos):
            pos = token68.end()
        else:
            while True:
                param = _PARAM.match(header, pos)
                if param is None:
                    break
                value = param.group(2)
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params.setdefault(param.group(1).lower(), value)
                pos = param.end()
        challenges.append(Challenge(scheme.group(1), params))
    return challenges


def bearer_challenge(header: str | None) -> Challenge | None:
    if not header:
        return None
    for challenge in parse_challenges(header):
        if challenge.scheme.lower() == "bearer":
            return challenge
    return None


# ---- metadata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceMetadata:
    """RFC 9728 protected-resource metadata."""

    url: str
    resource: str
    authorization_servers: list[str]
    scopes_supported: list[str] | None


@dataclass(frozen=True)
class ServerMetadata:
    """RFC 8414 / OpenID authorization-server metadata (the fields the gateway uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    scopes_supported: list[str] | None = None
    code_challenge_methods_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    iss_parameter_supported: bool = False


@dataclass(frozen=True)
class Discovery:
    server: ServerMetadata
    resource: ResourceMetadata | None
    challenge: Challenge | None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default)


def resource_covers(resource: str, url: str) -> bool:
    """Does the protected-resource identifier `resource` cover the upstream URL? Same origin, and the
    resource's path is the URL's path or one of its parent paths (RFC 9728 §3.3, as the MCP SDKs apply it)."""
    try:
        if _origin(resource) != _origin(url):
            return False
        rpath = urlsplit(resource).path.rstrip("/")
        upath = urlsplit(url).path.rstrip("/")
    except ValueError:
        return False
    return rpath == "" or upath == rpath or upath.startswith(rpath + "/")


def well_known_resource_urls(upstream_url: str) -> list[str]:
    parts = urlsplit(upstream_url)
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = parts.path.rstrip("/")
    urls = [f"{base}/.well-known/oauth-protected-resource{path}"] if path else []
    urls.append(f"{base}/.well-known/oauth-protected-resource")
    return urls


def server_metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live, in the order the MCP spec gives (no fallback to the root when the
    issuer has a path: that document would be another tenant's)."""
    parts = urlsplit(issuer)
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = parts.path.rstrip("/")
    if not path:
        return [f"{base}/.well-known/oauth-authorization-server", f"{base}/.well-known/openid-configuration"]
    return [
        f"{base}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/openid-configuration{path}",
        f"{base}{path}/.well-known/openid-configuration",
    ]


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


async def fetch_resource_metadata(
    fetcher: Fetcher, upstream_url: str, challenge: Challenge | None, *, insecure: bool
) -> ResourceMetadata | None:
    """The upstream's protected-resource metadata, or None when it publishes none."""
    candidates = well_known_resource_urls(upstream_url)
    if challenge is not None and challenge.resource_metadata:
        candidates.insert(0, challenge.resource_metadata)
    for url in candidates:
        reply = await fetcher.request("GET", url, insecure=insecure, what="protected resource metadata URL")
        if reply.status != 200 or not isinstance(reply.body, dict):
            continue
        body = reply.body
        resource = body.get("resource")
        servers = _str_list(body.get("authorization_servers"))
        if not isinstance(resource, str) or not servers:
            raise DiscoveryError(
                f"the protected resource metadata at {_show(url)} lacks 'resource' or 'authorization_servers'"
            )
        if not resource_covers(resource, upstream_url):
            raise DiscoveryError(
                f"the protected resource metadata at {_show(url)} is for {_show(resource)}, not for this upstream "
                f"({_show(upstream_url)}): refusing to authorize"
            )
        return ResourceMetadata(url, resource, servers, _str_list(body.get("scopes_supported")))
    return None


async def fetch_server_metadata(fetcher: Fetcher, issuer: str, *, insecure: bool, trusted: bool) -> ServerMetadata:
    tried = []
    for url in server_metadata_urls(issuer):
        reply = await fetcher.request(
            "GET", url, insecure=insecure, trusted=trusted, what="authorization server metadata URL"
        )
        tried.append(url)
        if reply.status != 200 or not isinstance(reply.body, dict):
            continue
        return parse_server_metadata(reply.body, issuer, url, insecure=insecure or trusted)
    raise DiscoveryError(
        f"no authorization server metadata for {_show(issuer)} (tried {', '.join(_show(u) for u in tried)})"
    )


def parse_server_metadata(body: dict[str, Any], issuer: str, url: str, *, insecure: bool) -> ServerMetadata:
    if not isinstance(body.get("issuer"), str) or body["issuer"].rstrip("/") != issuer.rstrip("/"):
        # RFC 8414 §3.3: metadata for another issuer must not be used (a mix-up attack in waiting).
        raise DiscoveryError(f"the metadata at {_show(url)} names another issuer than {_show(issuer)}")
    endpoints: dict[str, str | None] = {}
    for name in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
        value = body.get(name)
        if value is None:
            endpoints[name] = None
            continue
        if not isinstance(value, str):
            raise DiscoveryError(f"the metadata at {_show(url)} has a malformed {name}")
        endpoints[name] = check_url(value, insecure=insecure, what=name.replace("_", " "))
    authorization_endpoint, token_endpoint = endpoints["authorization_endpoint"], endpoints["token_endpoint"]
    if not authorization_endpoint or not token_endpoint:
        raise DiscoveryError(f"the metadata at {_show(url)} lacks an authorization or token endpoint")
    if _origin(authorization_endpoint) not in (_origin(issuer), _origin(token_endpoint)):
        # The person signs in where the authorization endpoint is, and the code goes to the token endpoint: on
        # an origin that is neither the issuer's nor the token endpoint's, that is another server's sign-in
        # whose code this one would receive (an OAuth mix-up, RFC 9700 §4.4; review: a hostile upstream's
        # metadata named an honest server's endpoint and handed out a client it registered there itself).
        raise DiscoveryError(
            f"the metadata at {_show(url)} sends people to sign in at {_show(authorization_endpoint)}, on "
            "neither the issuer's origin nor its token endpoint's; refused (an OAuth mix-up). Configure "
            "authorization_endpoint and token_endpoint in the upstream's auth if this server is laid out so"
        )
    return ServerMetadata(
        issuer=body["issuer"],
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        registration_endpoint=endpoints["registration_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        scopes_supported=_str_list(body.get("scopes_supported")),
        code_challenge_methods_supported=_str_list(body.get("code_challenge_methods_supported")),
        token_endpoint_auth_methods_supported=_str_list(body.get("token_endpoint_auth_methods_supported")),
        iss_parameter_supported=body.get("authorization_response_iss_parameter_supported") is True,
    )


async def discover(
    fetcher: Fetcher, upstream_url: str, *, insecure: bool, www_authenticate: str | None = None
) -> Discovery:
    """Upstream → protected-resource metadata → authorization-server metadata.

    `www_authenticate` is a challenge the caller already has (e.g. a 403 insufficient_scope); without it
    the upstream is probed with an unauthenticated request."""
    challenge = bearer_challenge(www_authenticate)
    if challenge is None:
        reply = await fetcher.probe(upstream_url, insecure=insecure)
        if reply.status == 401:
            challenge = bearer_challenge(reply.headers.get("WWW-Authenticate"))
    resource = await fetch_resource_metadata(fetcher, upstream_url, challenge, insecure=insecure)
    if resource is not None:
        issuer = check_url(resource.authorization_servers[0], insecure=insecure, what="authorization server")
        server = await fetch_server_metadata(fetcher, issuer, insecure=insecure, trusted=False)
        return Discovery(server, resource, challenge)
    # 2025-03-26: no protected-resource metadata; the upstream's origin is its authorization server.
    parts = urlsplit(upstream_url)
    origin = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    try:
        server = await fetch_server_metadata(fetcher, origin, insecure=insecure, trusted=False)
    except DiscoveryError as exc:
        raise DiscoveryError(
            f"{_show(upstream_url)} publishes no usable OAuth metadata (RFC 9728 protected-resource metadata, or "
            f"RFC 8414 at its origin: {exc}); configure authorization_endpoint, token_endpoint and client_id"
        ) from None
    return Discovery(server, None, challenge)

"""DNS-rebinding protection: the `Host` and `Origin` a request may carry.

A web page on evil.example that resolves its name to 127.0.0.1 can make a browser POST to a local
gateway; the browser then sends `Host: evil.example` and `Origin: http://evil.example`. Loopback names
are always allowed; anything else must be configured (`allowed_hosts`, `allowed_origins`, `public_url`).
Requests without `Origin` (non-browser clients) pass the Origin check; so do requests without `Host`
(HTTP/1.0), which no browser sends.

Both headers are parsed strictly (config/hosts.py, whose grammar also checks the configured values), and
anything that does not parse is refused: a host is a DNS name, an
IPv4 address (four decimal parts) or a bracketed IPv6 literal (no zone id), then an optional `:port` of
digits; an origin is `scheme://host[:port]` with nothing else (no userinfo, path, query, spaces,
backslashes or percent-encoding). A lenient parser would find `localhost` in `localhost:@evil.example`.
Names compare case-insensitively and without the root's trailing dot (`LocalHost.` is `localhost`);
IPv6 literals in their compressed form.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from manifold.config.hosts import configured_host, configured_origin, parse_host, parse_origin
from manifold.config.models import GatewaySettings

__all__ = ["HOST_REFUSED", "LOOPBACK", "ORIGIN_REFUSED", "OriginPolicy", "parse_host", "parse_origin"]

LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
MAX_REMEMBERED = 256  # allowed header values remembered per header

HOST_REFUSED = "Host header not allowed (DNS-rebinding protection); add it to gateway.allowed_hosts"
ORIGIN_REFUSED = "Origin not allowed (DNS-rebinding protection); add it to gateway.allowed_origins"


class OriginPolicy:
    """The hosts and origins a request may name. `check` runs on every request, so the header values it
    found allowed are remembered (a few, bounded: a client varying them only costs itself the parsing)."""

    def __init__(self, hosts: frozenset[str], origins: frozenset[tuple[str, str, int | None]]) -> None:
        self.hosts = hosts
        self.origins = origins
        self._good_hosts: set[str] = set()
        self._good_origins: set[str] = set()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> OriginPolicy:
        """Every entry of allowed_hosts and allowed_origins parses (config/models.py refuses one that does
        not); the bound host and public_url's origin are added when they parse, and left out otherwise: they
        could never match a request's header."""
        hosts = set(LOOPBACK) | {h for h in map(configured_host, settings.allowed_hosts) if h is not None}
        origins = {o for o in map(configured_origin, settings.allowed_origins) if o is not None}
        if settings.host not in ("0.0.0.0", "::", ""):
            bound = configured_host(settings.host)
            if bound is not None:
                hosts.add(bound)
        if settings.public_url:
            parts = urlsplit(settings.public_url)
            public = configured_origin(f"{parts.scheme}://{parts.netloc}")
            if public is not None:
                hosts.add(public[1])
                origins.add(public)
        return cls(frozenset(hosts), frozenset(origins))

    def check(self, headers: dict[str, str]) -> str | None:
        """None when allowed, otherwise the reason (safe to show: it never repeats the value)."""
        host = headers.get("host")
        if host is not None and host not in self._good_hosts:
            if not self.host_allowed(host):
                return HOST_REFUSED
            _remember(self._good_hosts, host)
        origin = headers.get("origin")
        if origin is not None and origin not in self._good_origins:
            if not self.origin_allowed(origin):
                return ORIGIN_REFUSED
            _remember(self._good_origins, origin)
        return None

    def host_allowed(self, value: str) -> bool:
        parsed = parse_host(value)
        return parsed is not None and parsed[0] in self.hosts

    def origin_allowed(self, value: str) -> bool:
        parsed = parse_origin(value)
        return parsed is not None and (parsed[1] in LOOPBACK or parsed in self.origins)


def _remember(good: set[str], value: str) -> None:
    if len(good) >= MAX_REMEMBERED:
        good.clear()
    good.add(value)

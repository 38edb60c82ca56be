"""DNS-rebinding protection: the `Host` and `Origin` an MCP request may carry.

A web page on evil.example that resolves its name to 127.0.0.1 can make a browser POST to a local
gateway; the browser then sends `Host: evil.example` and `Origin: http://evil.example`. Loopback names
are always allowed; anything else must be configured (`allowed_hosts`, `allowed_origins`, `public_url`).
Requests without `Origin` (non-browser clients) pass the Origin check.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from manifold.config.models import GatewaySettings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _host_only(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class OriginPolicy:
    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> OriginPolicy:
        hosts = set(LOOPBACK) | {_host_only(h) for h in settings.allowed_hosts}
        origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        if settings.host not in ("0.0.0.0", "::", ""):
            hosts.add(_host_only(settings.host))
        if settings.public_url:
            parts = urlsplit(settings.public_url)
            hosts.add(_host_only(parts.netloc))
            origins.add(f"{parts.scheme}://{parts.netloc}".lower())
        return cls(frozenset(hosts), frozenset(origins))

    def check(self, headers: dict[str, str]) -> str | None:
        """None when allowed, otherwise the reason (safe to show)."""
        host = headers.get("host")
        if host is not None and _host_only(host) not in self.hosts:
            return "Host header not allowed (DNS-rebinding protection); add it to gateway.allowed_hosts"
        origin = headers.get("origin")
        if origin is not None and origin != "null":
            parts = urlsplit(origin)
            if _host_only(parts.netloc) not in LOOPBACK and origin.rstrip("/").lower() not in self.origins:
                return "Origin not allowed (DNS-rebinding protection); add it to gateway.allowed_origins"
        elif origin == "null":
            return "Origin 'null' not allowed"
        return None

"""DNS-rebinding protection: the `Host` and `Origin` a request may carry.

A web page on evil.example that resolves its name to 127.0.0.1 can make a browser POST to a local
gateway; the browser then sends `Host: evil.example` and `Origin: http://evil.example`. Loopback names
are always allowed; anything else must be configured (`allowed_hosts`, `allowed_origins`, `public_url`).
Requests without `Origin` (non-browser clients) pass the Origin check; so do requests without `Host`
(HTTP/1.0), which no browser sends.

Both headers are parsed strictly, and anything that does not parse is refused: a host is a DNS name, an
IPv4 address (four decimal parts) or a bracketed IPv6 literal (no zone id), then an optional `:port` of
digits; an origin is `scheme://host[:port]` with nothing else (no userinfo, path, query, spaces,
backslashes or percent-encoding). A lenient parser would find `localhost` in `localhost:@evil.example`.
Names compare case-insensitively and without the root's trailing dot (`LocalHost.` is `localhost`);
IPv6 literals in their compressed form.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from manifold.config.models import GatewaySettings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
MAX_HOST_CHARS = 260  # a 253-character name, `:` and five digits
MAX_ORIGIN_CHARS = 300
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REMEMBERED = 256  # allowed header values remembered per header

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_HOST = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,31})://(?P<authority>[^/?#@\\%\s]*)")
_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")

HOST_REFUSED = "Host header not allowed (DNS-rebinding protection); add it to gateway.allowed_hosts"
ORIGIN_REFUSED = "Origin not allowed (DNS-rebinding protection); add it to gateway.allowed_origins"


def parse_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a `Host` header value, the host normalised (lower case, no trailing dot, IPv6
    compressed and bracketed); None when it is not exactly a host and an optional port."""
    if not value or len(value) > MAX_HOST_CHARS or not value.isascii():
        return None
    found = _HOST.fullmatch(value.lower())
    if found is None:
        return None
    host = _normalise(found["host"])
    if host is None:
        return None
    port = found["port"]
    if port is None:
        return host, None
    number = int(port)
    return (host, number) if number <= 65535 else None


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an `Origin` header value, normalised as `parse_host` does (and the scheme's
    default port left out); None when it is not exactly `scheme://host[:port]`."""
    if not value or len(value) > MAX_ORIGIN_CHARS or not value.isascii():
        return None
    found = _ORIGIN.fullmatch(value.lower())
    if found is None:
        return None
    host = parse_host(found["authority"])
    if host is None:
        return None
    scheme = found["scheme"]
    name, port = host
    return scheme, name, None if port == DEFAULT_PORTS.get(scheme) else port


def _normalise(host: str) -> str | None:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return f"[{address.compressed}]"
    if _NAME.fullmatch(host) is None or len(host.rstrip(".")) > 253:
        return None
    name = host.removesuffix(".")
    last = name.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        # Shaped like an IPv4 address: only the plain dotted quad, never `127.1`, `0177.0.0.1` or
        # `2130706433`, which different resolvers read differently. And no trailing dot on an address.
        if name != host or _IPV4.fullmatch(name) is None or any(int(p) > 255 for p in name.split(".")):
            return None
    return name


def _configured_host(value: str) -> str | None:
    """A host from the configuration: as in a Host header, or a bare IPv6 address (`gateway.host: ::1`)."""
    value = value.strip()
    parsed = parse_host(value) or parse_host(f"[{value}]")
    return None if parsed is None else parsed[0]


def _configured_origin(value: str) -> tuple[str, str, int | None] | None:
    return parse_origin(value.strip().rstrip("/"))


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
        """Values that do not parse are left out: they could never match a request's header."""
        hosts = set(LOOPBACK) | {h for h in map(_configured_host, settings.allowed_hosts) if h is not None}
        origins = {o for o in map(_configured_origin, settings.allowed_origins) if o is not None}
        if settings.host not in ("0.0.0.0", "::", ""):
            bound = _configured_host(settings.host)
            if bound is not None:
                hosts.add(bound)
        if settings.public_url:
            parts = urlsplit(settings.public_url)
            public = _configured_origin(f"{parts.scheme}://{parts.netloc}")
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

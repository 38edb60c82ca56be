"""The one grammar of hosts and origins: `gateway.allowed_hosts` / `allowed_origins` (config/models.py) and the
`Host` / `Origin` headers of requests (security/origin.py) are parsed alike, so a configured value that does not
parse (it could never match a request) is refused at load rather than left out unnoticed."""

from __future__ import annotations

import ipaddress
import re

MAX_HOST_CHARS = 260  # a 253-character name, `:` and five digits
MAX_ORIGIN_CHARS = 300
DEFAULT_PORTS = {"http": 80, "https": 443}

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_HOST = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,31})://(?P<authority>[^/?#@\\%\s]*)")
_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


def parse_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a `Host` header value, the host normalised (lower case, no trailing dot, IPv6
    compressed and bracketed); None when it is not exactly a host and an optional port."""
    if not value or len(value) > MAX_HOST_CHARS or not value.isascii():
        return None
    found = _HOST.fullmatch(value.lower())
    if found is None:
        return None
    host = _normalise_host(found["host"])
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


def _normalise_host(host: str) -> str | None:
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


def configured_host(value: str) -> str | None:
    """A host from the configuration: as in a Host header (its port, if any, is not compared), or a bare IPv6
    address (`gateway.host: ::1`)."""
    value = value.strip()
    parsed = parse_host(value) or parse_host(f"[{value}]")
    return None if parsed is None else parsed[0]


def configured_origin(value: str) -> tuple[str, str, int | None] | None:
    """An origin from the configuration: as in an Origin header, a trailing `/` allowed."""
    return parse_origin(value.strip().rstrip("/"))

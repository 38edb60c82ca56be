"""DNS-rebinding protection (security/origin.py): which `Host` and `Origin` values a request may carry.

A host is a DNS name, an IPv4 address or a bracketed IPv6 literal, then an optional `:port` of digits; an
origin is `scheme://host[:port]` and nothing else. Anything else is refused, whatever part of it looks
allowed: a parser that finds `localhost` inside `localhost:@evil.example` lets the rebinding page through.
"""

from __future__ import annotations

import pytest

from manifold.config.models import GatewaySettings
from manifold.security.origin import OriginPolicy, parse_host, parse_origin

LOCAL = OriginPolicy.from_settings(GatewaySettings())
PUBLIC = OriginPolicy.from_settings(
    GatewaySettings(
        host="0.0.0.0",
        public_url="https://mcp.corp.example",
        allowed_hosts=["gateway.internal:8470", "Other.Corp.Example", "10.1.2.3", "::1"],
        allowed_origins=["https://app.corp.example", "https://tools.corp.example:8443/"],
    )
)

ALLOWED_HOSTS = [
    "localhost",
    "localhost:8470",
    "LOCALHOST:8470",  # names are case-insensitive
    "localhost.",  # the fully qualified spelling of the same name
    "localhost.:8470",
    "127.0.0.1",
    "127.0.0.1:8470",
    "[::1]",
    "[::1]:8470",
    "[0:0:0:0:0:0:0:1]:8470",  # the same address written out
    "localhost:0",
    "localhost:65535",
]

REFUSED_HOSTS = [
    "evil.example",
    "rebind.evil.example",
    "rebind.evil.example:8470",
    "localhost:@evil.example",  # userinfo
    "localhost@evil.example",
    "user:pass@localhost",
    "localhost:1@evil.example",
    "[::1]evil.example",  # something after the literal
    "[::1]:8470evil.example",
    "[::1]:@evil.example",
    "[::1",
    "::1",  # an IPv6 literal must be bracketed in a Host
    "[::1]]",
    "[fe80::1%25eth0]",  # zone ids: not sent by browsers, and not ours to interpret
    "[fe80::1%eth0]:8470",
    "[v1.fe80]",
    "[127.0.0.1]",
    "[localhost]",
    "localhost:",  # an empty port
    "localhost:8470:8470",
    "localhost:-1",
    "localhost:+80",
    "localhost:65536",
    "localhost:123456",
    "localhost:0x50",
    "localhost: 8470",
    "localhost:８４７０",  # non-ASCII digits
    "localhost/",  # paths
    "localhost/evil",
    "localhost:8470/x",
    "localhost?x",
    "localhost#x",
    "localhost\\evil.example",  # backslashes
    "localhost\\",
    "local%68ost",  # percent-encoding
    "%6c%6f%63%61%6c%68%6f%73%74",
    "localhost%00.evil.example",
    "localhost\x00",
    " localhost",  # spaces
    "localhost ",
    "local host",
    "localhost\t",
    "\tlocalhost",
    "localhost\r\nX-Evil: 1",
    "",  # empty
    " ",
    ":8470",
    ".",
    "localhost..",  # more than the one root dot
    ".localhost",
    "localhost.evil.example",
    "evil.example.localhost.",
    "127.0.0.1.evil.example",
    "127.0.0.1.",
    "127.1",  # another spelling of a loopback address, resolved differently by different parsers
    "127.0.0.01",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "2130706433",
    "127.0.0.1:8470.",
    "-localhost",
    "localhost-.",
    "lo_calhost",  # not this one's name, whatever the rules for underscores
    "ｌｏｃａｌｈｏｓｔ",  # fullwidth letters, which IDNA would map to localhost
    "locаlhost",  # a Cyrillic а
    "xn--localhost",
    "l" * 64 + ".example",  # a label over 63 characters
    "a." * 130 + "example",  # a name over 253 characters
    "localhost:" + "1" * 10_000,  # over-long
    "x" * 100_000,
]


@pytest.mark.parametrize("host", ALLOWED_HOSTS)
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert LOCAL.check({"host": host}) is None


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_anything_else_in_host_is_refused(host: str) -> None:
    assert LOCAL.check({"host": host}) is not None
    assert PUBLIC.check({"host": host}) is not None


@pytest.mark.parametrize(
    "host",
    [
        "mcp.corp.example",
        "MCP.corp.example:443",
        "mcp.corp.example.",
        "gateway.internal",
        "gateway.internal:9999",  # a configured host is allowed on any port, as before
        "other.corp.example",
        "10.1.2.3:8470",
        "[::1]:8470",
    ],
)
def test_configured_hosts_are_allowed(host: str) -> None:
    assert PUBLIC.check({"host": host}) is None
    if "corp" in host or "internal" in host or "10.1" in host:
        assert LOCAL.check({"host": host}) is not None


ALLOWED_ORIGINS = [
    "http://localhost",
    "http://localhost:1234",
    "HTTP://LOCALHOST:1234",
    "https://127.0.0.1:8443",
    "http://[::1]:3000",
    "http://localhost.:1234",
]

REFUSED_ORIGINS = [
    "http://evil.example",
    "http://rebind.evil.example:8470",
    "http://localhost:1@evil.example",  # userinfo
    "http://localhost:@evil.example",
    "http://user@localhost",
    "http://user:pass@localhost:1234",
    "http://[::1]evil.example",
    "http://[::1]:80@evil.example",
    "http://[fe80::1%25eth0]:80",
    "http://localhost/",  # an origin has no path, not even `/`
    "http://localhost:1234/x",
    "http://localhost?x=1",
    "http://localhost#x",
    "http://localhost\\@evil.example",
    "http:\\\\localhost",
    "http://local%68ost",
    "http://localhost%2e",
    "http://localhost:",
    "http://localhost:65536",
    "http://localhost:12ab",
    "http:/localhost",
    "http:localhost",
    "//localhost",
    "localhost",
    "localhost:1234",
    "http://",
    "://localhost",
    "1http://localhost",
    "ht tp://localhost",
    "http ://localhost",
    " http://localhost",
    "http://localhost ",
    "http://local host",
    "http://localhost\r\n",
    "http://localhost\x00",
    "null",  # a sandboxed frame, a file:// page, a redirect across origins
    "NULL",
    "",
    " ",
    "http://127.1",
    "http://0x7f.0.0.1",
    "http://ｌｏｃａｌｈｏｓｔ",
    "http://localhost." + "x" * 300,
    "http://" + "a" * 100_000,
]


@pytest.mark.parametrize("origin", ALLOWED_ORIGINS)
def test_loopback_origins_are_allowed(origin: str) -> None:
    assert LOCAL.check({"host": "localhost:8470", "origin": origin}) is None


@pytest.mark.parametrize("origin", REFUSED_ORIGINS)
def test_anything_else_in_origin_is_refused(origin: str) -> None:
    assert LOCAL.check({"host": "localhost:8470", "origin": origin}) is not None
    assert PUBLIC.check({"host": "mcp.corp.example", "origin": origin}) is not None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://mcp.corp.example", True),
        ("HTTPS://MCP.CORP.EXAMPLE", True),
        ("https://app.corp.example", True),
        ("https://tools.corp.example:8443", True),
        ("http://mcp.corp.example", False),  # another scheme is another origin
        ("https://mcp.corp.example:444", False),  # another port is another origin
        ("https://tools.corp.example", False),
        ("https://app.corp.example.evil.example", False),
        ("https://evil.example/https://app.corp.example", False),
    ],
)
def test_configured_origins_are_allowed_exactly(origin: str, allowed: bool) -> None:
    assert (PUBLIC.check({"host": "mcp.corp.example", "origin": origin}) is None) is allowed


def test_a_request_without_host_or_origin_passes() -> None:
    """Non-browser clients send no Origin; a request without Host (HTTP/1.0) cannot have been rebound."""
    assert LOCAL.check({}) is None
    assert LOCAL.check({"host": "localhost"}) is None


def test_the_parsers_name_what_they_read() -> None:
    assert parse_host("LocalHost.:8470") == ("localhost", 8470)
    assert parse_host("[0:0::1]") == ("[::1]", None)
    assert parse_host("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_host("localhost:@evil.example") is None
    assert parse_origin("HTTPS://Mcp.Corp.Example:8443") == ("https", "mcp.corp.example", 8443)
    assert parse_origin("http://localhost:1@evil.example") is None


def test_the_reason_never_repeats_the_value() -> None:
    """The refusal is shown to whoever sent the request: it names the setting, not what was sent."""
    reason = LOCAL.check({"host": "<script>evil.example"})
    assert reason is not None and "<script>" not in reason and "allowed_hosts" in reason
    reason = LOCAL.check({"origin": "http://<b>evil.example"})
    assert reason is not None and "<b>" not in reason and "allowed_origins" in reason

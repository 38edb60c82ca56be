"""The hostile-input side of discovery: challenges, metadata locations, resource matching, and the SSRF rules
for every URL an upstream hands the gateway (no network beyond loopback is ever contacted)."""

from __future__ import annotations

import pytest

from manifold.outbound.oauth.discovery import (
    DiscoveryError,
    Fetcher,
    PublicOnlyResolver,
    UnsafeUrl,
    bearer_challenge,
    check_resolves_public,
    check_url,
    is_public_address,
    parse_challenges,
    parse_server_metadata,
    resource_covers,
    server_metadata_urls,
    well_known_resource_urls,
)


def test_bearer_challenges_are_parsed_with_quoting_and_several_schemes() -> None:
    header = (
        'Basic realm="x", Bearer error="insufficient_scope", scope="files:read files:write", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", '
        'error_description="needs \\"write\\", sorry"'
    )
    basic, bearer = parse_challenges(header)
    assert basic.scheme == "Basic" and basic.params == {"realm": "x"}
    assert bearer.error == "insufficient_scope"
    assert bearer.scope == "files:read files:write"
    assert bearer.resource_metadata == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert bearer.params["error_description"] == 'needs "write", sorry'
    assert bearer_challenge(header) == bearer
    assert bearer_challenge("Bearer") is not None and bearer_challenge("Bearer").params == {}
    assert bearer_challenge("Negotiate abc123==, Bearer realm=api").params == {"realm": "api"}
    assert bearer_challenge('Basic realm="x"') is None and bearer_challenge(None) is None


def test_metadata_locations_follow_the_spec_order() -> None:
    assert well_known_resource_urls("https://mcp.example.com/v1/mcp") == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert server_metadata_urls("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]
    # With a path, never the root document: it would describe another tenant.
    assert server_metadata_urls("https://auth.example.com/tenant1/") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize(
    ("resource", "url", "covers"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp", True),
        ("https://mcp.example.com", "https://mcp.example.com/mcp", True),
        ("https://MCP.example.com:443/", "https://mcp.example.com/mcp", True),
        ("https://mcp.example.com/api", "https://mcp.example.com/api/mcp", True),
        ("https://mcp.example.com/ap", "https://mcp.example.com/api/mcp", False),
        ("https://mcp.example.com/other", "https://mcp.example.com/mcp", False),
        ("https://evil.example.com/mcp", "https://mcp.example.com/mcp", False),
        ("http://mcp.example.com/mcp", "https://mcp.example.com/mcp", False),
        ("https://mcp.example.com:8443/mcp", "https://mcp.example.com/mcp", False),
    ],
)
def test_a_resource_covers_only_its_own_origin_and_paths(resource: str, url: str, covers: bool) -> None:
    assert resource_covers(resource, url) is covers


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1"]
    + ["fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "not-an-ip"]
    # IPv6 forms carrying a private IPv4 address (attack probe): NAT64, 6to4, NAT64 local-use, IPv4-compatible, Teredo
    + ["64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:a00:7::", "2002:7f00:1::1", "64:ff9b:1::808:808"]
    + ["::a00:7", "::808:808", "2001:0:4136:e378:8000:63bf:3fff:fdd2"],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://auth.example.com/token", "not https"),
        ("https://127.0.0.1/token", "non-public address"),
        ("https://[::1]:8443/token", "non-public address"),
        ("https://169.254.169.254/latest/meta-data", "non-public address"),
        ("https://10.0.0.5/.well-known/oauth-authorization-server", "non-public address"),
        ("https://localhost/x", "localhost"),
        ("https://api.localhost/x", "localhost"),
        ("https://user:pw@auth.example.com/x", "credentials"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("javascript:alert(1)", "not an http(s) URL"),
        ("https://auth.example.com/x#frag", "fragment"),
        ("https://auth.example.com:99999/x", "not a valid URL"),
    ],
)
def test_discovered_urls_must_be_https_and_public(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_url(url, insecure=False)


def test_allow_insecure_discovery_still_demands_http_urls() -> None:
    assert check_url("http://127.0.0.1:9000/token", insecure=True)
    for url in ("file:///etc/passwd", "gopher://x", "http://u:p@127.0.0.1/"):
        with pytest.raises(UnsafeUrl):
            check_url(url, insecure=True)


@pytest.mark.anyio
async def test_names_resolving_to_private_addresses_are_refused_before_and_at_connect() -> None:
    with pytest.raises(UnsafeUrl, match="non-public"):
        await check_resolves_public("localhost")
    with pytest.raises(OSError, match="non-public"):
        await PublicOnlyResolver().resolve("localhost", 443)


@pytest.mark.anyio
async def test_the_fetcher_refuses_before_sending_anything() -> None:
    fetcher = Fetcher()
    try:
        for url in ("http://127.0.0.1:1/x", "https://127.0.0.1:1/x", "https://169.254.169.254/latest"):
            with pytest.raises(UnsafeUrl):
                await fetcher.request("GET", url, insecure=False)
            with pytest.raises(UnsafeUrl):
                await fetcher.probe(url, insecure=False)
    finally:
        await fetcher.aclose()


def test_metadata_for_another_issuer_or_with_unsafe_endpoints_is_refused() -> None:
    good = {
        "issuer": "https://auth.example.com",
        "authorization_endpoint": "https://auth.example.com/authorize",
        "token_endpoint": "https://auth.example.com/token",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
    }
    parsed = parse_server_metadata(
        good, "https://auth.example.com/", "https://auth.example.com/.well-known/x", insecure=False
    )
    assert parsed.iss_parameter_supported and parsed.registration_endpoint is None
    with pytest.raises(DiscoveryError, match="another issuer"):
        parse_server_metadata(
            {**good, "issuer": "https://evil.example.com"}, "https://auth.example.com", "u", insecure=False
        )
    with pytest.raises(UnsafeUrl, match="token endpoint"):
        parse_server_metadata(
            {**good, "token_endpoint": "https://169.254.169.254/token"}, "https://auth.example.com", "u", insecure=False
        )
    with pytest.raises(DiscoveryError, match="lacks"):
        parse_server_metadata({"issuer": "https://auth.example.com"}, "https://auth.example.com", "u", insecure=False)

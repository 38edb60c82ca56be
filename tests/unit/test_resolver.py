"""Which credential goes upstream for one call (outbound/resolver.py), each auth mode with real objects:
a real secret store and OAuth vault over a SQLite file, no gateway process.

What a user would notice: the right header reaches the right upstream, a per-caller credential gets its own
session identity, a refusal names the problem and never a secret, and an unconnected OAuth upstream asks the
user to connect instead of failing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from manifold.config.models import (
    ExchangeAuth,
    ForwardedAuth,
    NoAuth,
    OAuthAuth,
    PassthroughAuth,
    StaticAuth,
    Transport,
    UpstreamAuth,
    UpstreamConfig,
)
from manifold.outbound.oauth import ConnectLinks, OAuthBroker, OAuthFlows
from manifold.outbound.oauth import Vault as TokenVault
from manifold.outbound.resolver import AuthRequired, CallContext, CredentialResolver, OutboundRefused
from manifold.principal import ANONYMOUS, Credential, CredentialKind, Principal, PrincipalKind
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from manifold.upstream.credential import SHARED

pytestmark = pytest.mark.anyio

UPSTREAM = "gh"
GATEWAY = "http://127.0.0.1:8470"
SECRET = "s3cr3t-value-9c1d"


def upstream(auth: UpstreamAuth) -> UpstreamConfig:
    return UpstreamConfig(transport=Transport.HTTP, url="http://127.0.0.1:9/mcp", auth=auth)


def user(name: str, *, kind: CredentialKind = CredentialKind.API_KEY, aud: object = None) -> Principal:
    claims = {} if aud is None else {"aud": aud}
    token = f"jwt-of-{name}" if kind is CredentialKind.IDP_JWT else None
    return Principal(
        kind=PrincipalKind.USER, name=name, credential=Credential(kind, "idp1"), claims=claims, token=token
    )


def call(principal: Principal = ANONYMOUS, *, forwarded: object = None) -> CallContext:
    raw = None if forwarded is None else orjson.dumps(forwarded).decode()
    return CallContext(principal=principal, member_id=UPSTREAM, server_id=UPSTREAM, forwarded_raw=raw)


@dataclass
class Vault:
    """The gateway's secret store and OAuth broker over one fresh SQLite file."""

    secrets: SecretStore
    broker: OAuthBroker


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="the test's key")
    await cipher.check(engine)
    secrets = SecretStore(engine, cipher)
    flows = OAuthFlows(engine, cipher, secret=secrets.lookup)
    broker = OAuthBroker(TokenVault(engine, cipher), ConnectLinks.from_cipher(cipher), flows, lambda: GATEWAY)
    try:
        yield Vault(secrets, broker)
    finally:
        await flows.aclose()
        await engine.dispose()


# ---- none and static ---------------------------------------------------------------------------------------


async def test_no_auth_shares_one_session_and_sends_nothing() -> None:
    outbound = await CredentialResolver().resolve(UPSTREAM, upstream(NoAuth()), call())
    assert outbound is SHARED
    assert outbound.headers == {} and outbound.identity is None


async def test_static_credentials_come_from_the_secret_store_and_are_shared(vault: Vault) -> None:
    await vault.secrets.set("gh-token", SECRET)
    resolver = CredentialResolver(secret=vault.secrets.lookup)
    auth = StaticAuth(mode="static", bearer="secret:gh-token", headers={"X-Tenant": "acme"})
    outbound = await resolver.resolve(UPSTREAM, upstream(auth), call(user("alice")))
    assert outbound.headers == {"X-Tenant": "acme", "Authorization": f"Bearer {SECRET}"}
    assert outbound.identity is None  # one session for every caller
    assert SECRET not in repr(outbound)


async def test_a_secret_changed_with_the_cli_is_sent_once_the_store_reloads(vault: Vault) -> None:
    await vault.secrets.set("gh-token", "old-value")
    resolver = CredentialResolver(secret=vault.secrets.lookup)
    config = upstream(StaticAuth(mode="static", headers={"X-Api-Key": "secret:gh-token"}))
    assert (await resolver.resolve(UPSTREAM, config, call())).headers == {"X-Api-Key": "old-value"}
    await vault.secrets.set("gh-token", "new-value")
    await vault.secrets.load()
    resolver.secrets_changed()
    assert (await resolver.resolve(UPSTREAM, config, call())).headers == {"X-Api-Key": "new-value"}


async def test_an_unknown_secret_refuses_the_call_naming_the_secret(vault: Vault) -> None:
    resolver = CredentialResolver(secret=vault.secrets.lookup)
    config = upstream(StaticAuth(mode="static", bearer="secret:missing"))
    with pytest.raises(OutboundRefused) as caught:
        await resolver.resolve(UPSTREAM, config, call())
    assert caught.value.upstream_id == UPSTREAM
    assert "'missing'" in caught.value.reason and "manifold secrets set missing" in caught.value.reason


async def test_a_secret_reference_without_a_store_refuses_the_call() -> None:
    config = upstream(StaticAuth(mode="static", bearer="secret:gh-token"))
    with pytest.raises(OutboundRefused, match="secret store is not available"):
        await CredentialResolver().resolve(UPSTREAM, config, call())


async def test_a_replaced_upstream_never_sends_the_previous_upstreams_headers() -> None:
    """The admin API replaces an upstream: the old config object is dropped and a new one built. CPython
    soon hands the new object the old one's address, so a cache keyed by `id(auth)` served the old headers."""
    resolver = CredentialResolver()
    for generation in range(200):
        config = upstream(StaticAuth(mode="static", headers={"X-Tenant": f"tenant-{generation}"}))
        outbound = await resolver.resolve(UPSTREAM, config, call())
        assert outbound.headers == {"X-Tenant": f"tenant-{generation}"}
        del config, outbound  # replaced: nothing keeps the old configuration alive


async def test_an_equal_static_config_reuses_the_resolved_headers(vault: Vault) -> None:
    """A catalog reload rebuilds equal configs: no secret lookup, the same headers object (one session)."""
    await vault.secrets.set("gh-token", SECRET)
    lookups: list[str] = []

    def lookup(name: str) -> str:
        lookups.append(name)
        return vault.secrets.lookup(name)

    resolver = CredentialResolver(secret=lookup)
    first = await resolver.resolve(UPSTREAM, upstream(StaticAuth(mode="static", bearer="secret:gh-token")), call())
    again = await resolver.resolve(UPSTREAM, upstream(StaticAuth(mode="static", bearer="secret:gh-token")), call())
    assert again == first and lookups == ["gh-token"]


# ---- forwarded --------------------------------------------------------------------------------------------


FORWARDED = upstream(ForwardedAuth(mode="forwarded", allow=["X-GitHub-Token"]))


async def test_forwarded_allowed_header_goes_upstream_on_a_session_of_its_own() -> None:
    resolver = CredentialResolver()
    mine = await resolver.resolve(UPSTREAM, FORWARDED, call(forwarded={"x-github-token": SECRET}))
    assert mine.headers == {"X-GitHub-Token": SECRET}  # the allow-list's spelling
    assert mine.identity is not None and mine.identity.startswith("forwarded:") and SECRET not in mine.identity
    same = await resolver.resolve(UPSTREAM, FORWARDED, call(forwarded={"X-GitHub-Token": SECRET}))
    other = await resolver.resolve(UPSTREAM, FORWARDED, call(forwarded={"X-GitHub-Token": "another"}))
    assert same.identity == mine.identity and other.identity != mine.identity


async def test_forwarded_header_not_on_the_allow_list_is_refused_without_its_value() -> None:
    with pytest.raises(OutboundRefused) as caught:
        await CredentialResolver().resolve(UPSTREAM, FORWARDED, call(forwarded={"Cookie": SECRET}))
    assert "'Cookie'" in caught.value.reason and SECRET not in str(caught.value)


async def test_forwarded_without_the_header_shares_the_plain_session() -> None:
    assert await CredentialResolver().resolve(UPSTREAM, FORWARDED, call()) is SHARED


# ---- passthrough ------------------------------------------------------------------------------------------


PASSTHROUGH = upstream(PassthroughAuth(mode="passthrough", audience="https://gh.example"))


@pytest.mark.parametrize("aud", ["https://gh.example", ["other", "https://gh.example"]])
async def test_passthrough_sends_the_callers_token_when_issued_for_this_upstream(aud: object) -> None:
    alice = user("alice", kind=CredentialKind.IDP_JWT, aud=aud)
    outbound = await CredentialResolver().resolve(UPSTREAM, PASSTHROUGH, call(alice))
    assert outbound.headers == {"Authorization": "Bearer jwt-of-alice"}
    assert outbound.identity == f"passthrough:{alice.id}"


async def test_passthrough_refuses_a_token_issued_for_another_audience() -> None:
    bob = user("bob", kind=CredentialKind.IDP_JWT, aud="https://elsewhere.example")
    with pytest.raises(OutboundRefused, match="audience does not include 'https://gh.example'") as caught:
        await CredentialResolver().resolve(UPSTREAM, PASSTHROUGH, call(bob))
    assert "jwt-of-bob" not in str(caught.value)


async def test_passthrough_refuses_a_gateway_api_key() -> None:
    with pytest.raises(OutboundRefused, match="only an IdP token can be passed"):
        await CredentialResolver().resolve(UPSTREAM, PASSTHROUGH, call(user("carol")))


# ---- oauth and exchange -----------------------------------------------------------------------------------


OAUTH = upstream(OAuthAuth(mode="oauth", issuer="https://idp.example"))


async def test_oauth_not_connected_asks_the_user_to_connect(vault: Vault) -> None:
    resolver = CredentialResolver(secret=vault.secrets.lookup, oauth=vault.broker)
    alice = user("alice")
    with pytest.raises(AuthRequired) as caught:
        await resolver.resolve(UPSTREAM, OAUTH, call(alice))
    assert caught.value.upstream_id == UPSTREAM and caught.value.reason == "not connected"
    link = urlsplit(caught.value.connect_url)
    assert f"{link.scheme}://{link.netloc}" == GATEWAY and link.path == f"/connect/{UPSTREAM}"
    # The link is minted for this user and this upstream (the connect page checks it).
    token = dict(part.split("=", 1) for part in link.query.split("&"))["t"]
    assert vault.broker.links.verify(token, UPSTREAM) == alice.id


async def test_oauth_in_a_gateway_without_the_broker_is_refused() -> None:
    with pytest.raises(OutboundRefused, match="OAuth upstreams are not available"):
        await CredentialResolver().resolve(UPSTREAM, OAUTH, call(user("alice")))


async def test_exchange_in_a_gateway_without_token_exchange_is_refused() -> None:
    auth = ExchangeAuth(mode="exchange", token_endpoint="https://idp.example/token", audience="gh", client_id="gw")
    config = upstream(auth)
    with pytest.raises(OutboundRefused, match="token exchange is not available"):
        await CredentialResolver().resolve(UPSTREAM, config, call(user("alice", kind=CredentialKind.IDP_JWT)))

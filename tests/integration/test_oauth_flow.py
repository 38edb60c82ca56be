"""Per-user OAuth to an upstream, end to end against real parts: a real authorization server (node
oidc-provider, tests/idp.py), a real protected MCP upstream (tests/upstreams/protected.py: FastMCP validating
the provider's JWTs with aud = its own URL), a real SQLite file. The browser is played by `Idp.authorize`
(development login and consent forms, redirects read, never followed to the callback).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from sqlalchemy import select

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth import (
    AuthorizationDenied,
    Connection,
    ConnectionStatus,
    ConnectLinks,
    InvalidState,
    IssuerMismatch,
    OAuthBroker,
    OAuthFlows,
    UnsafeUrl,
)
from manifold.outbound.oauth.registration import registered_redirect_uri
from manifold.outbound.oauth.tables import oauth_clients, oauth_pending
from manifold.outbound.oauth.vault import Vault
from manifold.outbound.resolver import AuthRequired, CallContext, OutboundRefused
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.security.crypto import Cipher
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import UPSTREAMS, run_http_upstream

pytestmark = pytest.mark.anyio

PROTECTED = str(UPSTREAMS / "protected.py")
UPSTREAM = "prot"
GATEWAY = "http://127.0.0.1:8470"
REDIRECT = f"{GATEWAY}/oauth/callback"
GATEWAY_SECRET = "gateway-client-secret-3f9a"


def person(name: str) -> Principal:
    return Principal(kind=PrincipalKind.USER, name=name, credential=Credential(CredentialKind.API_KEY, f"k-{name}"))


ALICE, BOB = person("alice"), person("bob")

# Everything discovered from the upstream: its 401 → RFC 9728 → the provider's metadata → DCR.
DISCOVER = OAuthAuth(mode="oauth", allow_insecure_discovery=True, extra_authorize_params={"prompt": "consent"})


def configured(idp: Idp, **overrides: object) -> OAuthAuth:
    """A pre-registered client at a configured issuer (trusted: no discovery, no SSRF rules needed)."""
    settings = {
        "mode": "oauth",
        "issuer": idp.issuer,
        "client_id": "gateway",
        "client_secret": "secret:gateway-client",
        "scopes": ["mcp:tools", "offline_access"],
        "extra_authorize_params": {"prompt": "consent"},  # oidc-provider grants offline_access only with consent
        **overrides,
    }
    return OAuthAuth(**settings)


@pytest.fixture(scope="module")
async def idp() -> AsyncIterator[Idp]:
    gateway = IdpClient("gateway", client_secret=GATEWAY_SECRET, metadata={"redirect_uris": [REDIRECT]})
    async with run_idp([gateway], scopes="mcp:tools") as provider:
        yield provider


@dataclass
class Upstream:
    url: str
    record: Path

    def seen(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture(scope="module")
async def upstream(idp: Idp, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Upstream]:
    record = tmp_path_factory.mktemp("protected") / "record.jsonl"
    args = ("--issuer", idp.issuer, "--scopes", "mcp:tools", "--record", str(record))
    async with run_http_upstream(PROTECTED, *args) as url:
        yield Upstream(url, record)


@dataclass
class Gateway:
    """The gateway's outbound-OAuth parts over one fresh database."""

    state: Path
    cipher: Cipher
    flows: OAuthFlows
    broker: OAuthBroker
    links: ConnectLinks
    vault: Vault
    clock: list[float]

    async def connect(self, idp: Idp, who: Principal, config: OAuthAuth, upstream_url: str) -> Connection:
        url = await self.flows.start(who.id, UPSTREAM, config, upstream_url, REDIRECT)
        back = await idp.authorize(url, login=who.name)
        return await self.flows.complete(back["state"], back.get("code"), back.get("iss"), back.get("error"), who.id)

    async def token(self, who: Principal, config: OAuthAuth) -> str:
        ctx = CallContext(principal=who, member_id=UPSTREAM, server_id=UPSTREAM)
        return await self.broker.access_token(who, UPSTREAM, config, ctx)

    def stored_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.state.glob("manifold.db*")) if not p.name.endswith("shm"))


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher.load(tmp_path)
    await cipher.check(engine)
    store = SecretStore(engine, cipher)
    await store.set("gateway-client", GATEWAY_SECRET)
    clock = [time.time()]
    flows = OAuthFlows(engine, cipher, secret=store.lookup, clock=lambda: clock[0])
    links = ConnectLinks.from_cipher(cipher)
    broker = OAuthBroker(Vault(engine, cipher), links, flows, lambda: GATEWAY)
    try:
        yield Gateway(tmp_path, cipher, flows, broker, links, Vault(engine, cipher), clock)
    finally:
        await flows.aclose()
        await engine.dispose()


async def whoami(url: str, token: str) -> str:
    async with Client(StreamableHttpTransport(url, headers={"Authorization": f"Bearer {token}"})) as client:
        result = await client.call_tool("whoami", {})
    return result.content[0].text


async def grants(idp: Idp, kind: str) -> int:
    return (await idp.counts())["grants"].get(kind, 0)


async def make_due(gw: Gateway, who: Principal, *, expires_in: float) -> Connection:
    """Rewrite the stored expiry (the token text stays): the next call must decide whether to refresh."""
    stored = await gw.vault.get(who.id, UPSTREAM)
    assert stored is not None
    await gw.vault.put(stored.with_tokens(expires_at=time.time() + expires_in))
    gw.broker.forget(who.id, UPSTREAM)
    return stored


# ---- connecting ---------------------------------------------------------------------------------


async def test_discovery_from_the_upstreams_401_connects_each_user_to_their_own_account(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    before = await idp.counts()
    alice = await gw.connect(idp, ALICE, DISCOVER, upstream.url)
    assert alice.issuer == idp.issuer and alice.status is ConnectionStatus.OK
    assert alice.resource == upstream.url  # the upstream's RFC 9728 resource, sent as RFC 8707 resource
    assert alice.refresh_token and alice.expires_at and alice.expires_at > time.time()
    assert (await idp.counts())["registration"] == before["registration"] + 1  # RFC 7591 at the provider

    bob = await gw.connect(idp, BOB, DISCOVER, upstream.url)
    assert (await idp.counts())["registration"] == before["registration"] + 1  # the client is reused

    # Two users at once: each call carries its own user's token, and the upstream sees that user.
    tokens = await asyncio.gather(*(gw.token(who, DISCOVER) for who in (ALICE, BOB, ALICE, BOB)))
    assert tokens == [alice.access_token, bob.access_token] * 2
    assert await whoami(upstream.url, tokens[0]) == "alice"
    assert await whoami(upstream.url, tokens[1]) == "bob"
    seen = [entry for entry in upstream.seen() if entry["method"] == "tools/call"]
    assert {"authorization": f"Bearer {alice.access_token}", "sub": "alice", "method": "tools/call"} in seen
    assert {"authorization": f"Bearer {bob.access_token}", "sub": "bob", "method": "tools/call"} in seen
    # What a user's connections page lists: their own, and nobody else's.
    assert [(c.user, c.upstream) for c in await gw.vault.list(ALICE.id)] == [(ALICE.id, UPSTREAM)]
    assert len(await gw.vault.list()) == 2


async def test_nothing_secret_is_stored_in_clear(gw: Gateway, idp: Idp, upstream: Upstream) -> None:
    url = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT)
    async with gw.flows._engine.connect() as conn:  # noqa: SLF001 — reading what the flow keeps in flight
        pending = (await conn.execute(select(oauth_pending.c.payload))).scalar_one()
    verifier = json.loads(gw.cipher.decrypt_text(pending))["verifier"]
    back = await idp.authorize(url, login="alice")
    connection = await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id)
    async with gw.flows._engine.connect() as conn:  # noqa: SLF001
        client_secret = (await conn.execute(select(oauth_clients.c.secret))).scalar_one()
    secrets = {
        "access token": connection.access_token,
        "refresh token": connection.refresh_token,
        "registered client secret": gw.cipher.decrypt_text(client_secret),
        "PKCE verifier": verifier,
        "state": back["state"],
    }
    stored = gw.stored_bytes()
    for what, value in secrets.items():
        assert value and value.encode() not in stored, f"the {what} is stored in clear"
    assert b"alice" in stored  # the row is there, keyed by its user: only the secrets are encrypted


async def test_a_preregistered_client_at_a_configured_issuer(gw: Gateway, idp: Idp, upstream: Upstream) -> None:
    """Configured issuer and client (secret from the secret store): trusted, so no allow_insecure_discovery is
    needed for this loopback provider, and nothing is registered."""
    before = await idp.counts()
    connection = await gw.connect(idp, ALICE, configured(idp), upstream.url)
    assert connection.client_id == "gateway" and connection.refresh_token
    assert (await idp.counts())["registration"] == before["registration"]
    assert await whoami(upstream.url, await gw.token(ALICE, configured(idp))) == "alice"


# ---- the callback's checks ------------------------------------------------------------------------


async def test_a_state_is_single_use_bound_to_its_user_and_short_lived(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    tokens_before = (await idp.counts())["token"]

    # Another signed-in user presenting alice's callback gets nothing, and spends it.
    url = await gw.flows.start(ALICE.id, UPSTREAM, config, upstream.url, REDIRECT)
    back = await idp.authorize(url, login="alice")
    with pytest.raises(InvalidState, match="another user"):
        await gw.flows.complete(back["state"], back["code"], back["iss"], None, BOB.id)
    with pytest.raises(InvalidState, match="already used"):
        await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id)

    # Replaying a completed callback.
    url = await gw.flows.start(ALICE.id, UPSTREAM, config, upstream.url, REDIRECT)
    back = await idp.authorize(url, login="alice")
    await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id)
    with pytest.raises(InvalidState, match="already used"):
        await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id)

    # A sign-in left for more than ten minutes.
    url = await gw.flows.start(ALICE.id, UPSTREAM, config, upstream.url, REDIRECT)
    back = await idp.authorize(url, login="alice")
    gw.clock[0] += 601
    with pytest.raises(InvalidState, match="expired"):
        await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id)

    with pytest.raises(InvalidState, match="unknown"):
        await gw.flows.complete("made-up-state", "code", idp.issuer, None, ALICE.id)
    # Only the one legitimate callback reached the token endpoint.
    assert (await idp.counts())["token"] == tokens_before + 1


async def test_an_answer_from_another_issuer_or_a_refusal_is_not_redeemed(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    tokens_before = (await idp.counts())["token"]
    for iss in ("http://127.0.0.1:1/evil-issuer", None):  # mix-up (RFC 9207), or iss dropped although promised
        url = await gw.flows.start(ALICE.id, UPSTREAM, config, upstream.url, REDIRECT)
        back = await idp.authorize(url, login="alice")
        with pytest.raises(IssuerMismatch):
            await gw.flows.complete(back["state"], back["code"], iss, None, ALICE.id)
    url = await gw.flows.start(ALICE.id, UPSTREAM, config, upstream.url, REDIRECT)
    state = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))["state"]
    with pytest.raises(AuthorizationDenied, match="access_denied"):
        await gw.flows.complete(state, None, idp.issuer, "access_denied", ALICE.id)
    assert (await idp.counts())["token"] == tokens_before
    assert await gw.vault.get(ALICE.id, UPSTREAM) is None


async def test_a_dynamically_registered_client_has_a_redirect_uri_of_its_server_and_callbacks_must_come_there(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    """The mix-up defence in depth (RFC 9700 §4.4; attack probe): a client the gateway registers dynamically gets
    `/oauth/as/<hash of its server>/callback`, a path no other server's is a prefix of; a callback arriving at
    another path (another server's, or the configured clients' `/oauth/callback`) is refused, unredeemed."""
    tokens_before = (await idp.counts())["token"]
    url = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT)
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert redirect.startswith(f"{GATEWAY}/oauth/as/") and redirect.endswith("/callback")
    assert registered_redirect_uri(GATEWAY, "another server") != redirect
    back = await idp.authorize(url, login="alice")
    for elsewhere in ("/oauth/callback", urlsplit(registered_redirect_uri(GATEWAY, "another server")).path):
        url = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT)
        other = await idp.authorize(url, login="alice")
        with pytest.raises(InvalidState, match="another authorization server"):
            await gw.flows.complete(other["state"], other["code"], other["iss"], None, ALICE.id, elsewhere)
    await gw.flows.complete(back["state"], back["code"], back["iss"], None, ALICE.id, urlsplit(redirect).path)
    assert (await idp.counts())["token"] == tokens_before + 1


# ---- tokens on every call -------------------------------------------------------------------------


async def test_not_connected_asks_to_connect_with_a_link_for_that_user(gw: Gateway, idp: Idp) -> None:
    with pytest.raises(AuthRequired) as caught:
        await gw.token(ALICE, configured(idp))
    assert caught.value.reason == "not connected" and caught.value.upstream_id == UPSTREAM
    assert caught.value.connect_url.startswith(f"{GATEWAY}/connect/{UPSTREAM}?t=")
    assert gw.links.verify(caught.value.connect_url.split("t=", 1)[1], UPSTREAM) == ALICE.id


async def test_a_token_is_refreshed_before_it_expires(gw: Gateway, idp: Idp, upstream: Upstream) -> None:
    config = configured(idp, refresh_margin_seconds=60)
    await gw.connect(idp, ALICE, config, upstream.url)
    # Thirty seconds left, with a 60-second margin: due.
    old = await make_due(gw, ALICE, expires_in=30)
    refreshes = await grants(idp, "refresh_token")
    token = await gw.token(ALICE, config)
    assert token != old.access_token
    assert await grants(idp, "refresh_token") == refreshes + 1
    assert await whoami(upstream.url, token) == "alice"
    stored = await gw.vault.get(ALICE.id, UPSTREAM)
    assert stored is not None and stored.access_token == token and stored.expires_at > time.time() + 60
    assert stored.refresh_token  # rotated or not (this provider keeps a confidential client's), one is kept
    # Cached now: more calls make no request.
    tokens = (await idp.counts())["token"]
    assert [await gw.token(ALICE, config) for _ in range(5)] == [token] * 5
    assert (await idp.counts())["token"] == tokens

    # Outside the margin nothing is refreshed.
    await make_due(gw, ALICE, expires_in=300)
    assert await gw.token(ALICE, config) == token
    assert (await idp.counts())["token"] == tokens


async def test_a_hundred_concurrent_calls_with_an_expired_token_make_one_refresh(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    await gw.connect(idp, ALICE, config, upstream.url)
    old = await make_due(gw, ALICE, expires_in=-1)
    before = await idp.counts()
    tokens = await asyncio.gather(*(gw.token(ALICE, config) for _ in range(100)))
    after = await idp.counts()
    assert len(set(tokens)) == 1 and tokens[0] != old.access_token
    assert after["token"] == before["token"] + 1
    assert after["grants"].get("refresh_token", 0) == before["grants"].get("refresh_token", 0) + 1
    assert await whoami(upstream.url, tokens[0]) == "alice"


async def test_the_hot_path_reads_nothing_and_a_removal_elsewhere_is_noticed(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    connection = await gw.connect(idp, ALICE, config, upstream.url)
    assert await gw.token(ALICE, config) == connection.access_token
    # Another process (the CLI, a replica) deletes the row: the cache answers without looking…
    assert await gw.vault.delete(ALICE.id, UPSTREAM)
    assert await gw.token(ALICE, config) == connection.access_token
    # …until the `connections` revision moves and the gateway syncs.
    await gw.broker.sync()
    with pytest.raises(AuthRequired, match="connect your account"):
        await gw.token(ALICE, config)


async def test_a_refused_refresh_token_breaks_the_connection_and_asks_to_connect_again(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    connection = await gw.connect(idp, ALICE, config, upstream.url)
    # The user revoked the grant at the provider.
    auth = {"Authorization": aiohttp.encode_basic_auth("gateway", GATEWAY_SECRET)}
    async with aiohttp.ClientSession() as http:
        form = {"token": connection.refresh_token, "token_type_hint": "refresh_token"}
        async with http.post(f"{idp.issuer}/token/revocation", data=form, headers=auth) as resp:
            assert resp.status == 200
    await make_due(gw, ALICE, expires_in=-1)
    tokens = (await idp.counts())["token"]
    with pytest.raises(AuthRequired) as caught:
        await gw.token(ALICE, config)
    assert caught.value.reason == "connection expired"
    assert gw.links.verify(caught.value.connect_url.split("t=", 1)[1], UPSTREAM) == ALICE.id
    stored = await gw.vault.get(ALICE.id, UPSTREAM)
    assert stored is not None and stored.status is ConnectionStatus.BROKEN
    assert (await idp.counts())["token"] == tokens + 1  # the one refused refresh
    # A broken connection is not retried at the provider on every call.
    with pytest.raises(AuthRequired, match="connect your account"):
        await gw.token(ALICE, config)
    assert (await idp.counts())["token"] == tokens + 1
    # Connecting again repairs it.
    await gw.connect(idp, ALICE, config, upstream.url)
    assert await whoami(upstream.url, await gw.token(ALICE, config)) == "alice"


async def test_revoke_ends_the_grant_at_the_provider_and_forgets_the_connection(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    config = configured(idp)
    connection = await gw.connect(idp, ALICE, config, upstream.url)
    assert await gw.token(ALICE, config) == connection.access_token  # cached
    revocations = (await idp.counts())["revocation"]
    assert await gw.flows.revoke(ALICE.id, UPSTREAM) is True
    assert (await idp.counts())["revocation"] == revocations + 1  # RFC 7009 at the provider
    assert await gw.vault.get(ALICE.id, UPSTREAM) is None
    with pytest.raises(AuthRequired) as caught:
        await gw.token(ALICE, config)  # the cache was dropped with it
    assert caught.value.reason == "not connected"
    # The provider no longer honours the refresh token.
    auth = {"Authorization": aiohttp.encode_basic_auth("gateway", GATEWAY_SECRET)}
    async with aiohttp.ClientSession() as http:
        form = {"grant_type": "refresh_token", "refresh_token": connection.refresh_token}
        async with http.post(f"{idp.issuer}/token", data=form, headers=auth) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    assert await gw.flows.revoke(ALICE.id, UPSTREAM) is False


async def test_while_the_provider_is_down_a_valid_token_keeps_working(gw: Gateway) -> None:
    """A refresh that fails for a reason other than a dead refresh token must not break calls that can still
    succeed, nor turn into "connect again": the still-valid token is used; an expired one is a clear refusal."""
    gateway = IdpClient("gateway", client_secret=GATEWAY_SECRET, metadata={"redirect_uris": [REDIRECT]})
    async with run_idp([gateway], scopes="mcp:tools") as provider:
        config = configured(provider)
        connection = await gw.connect(provider, ALICE, config, "http://127.0.0.1:9/mcp")
        await provider.stop()
        await make_due(gw, ALICE, expires_in=30)
        assert await gw.token(ALICE, config) == connection.access_token
        await make_due(gw, ALICE, expires_in=-1)
        with pytest.raises(OutboundRefused) as caught:
            await gw.token(ALICE, config)
    assert "could not be refreshed" in caught.value.reason and "cannot reach the token endpoint" in caught.value.reason
    assert connection.refresh_token not in str(caught.value) and connection.access_token not in str(caught.value)
    stored = await gw.vault.get(ALICE.id, UPSTREAM)
    assert stored is not None and stored.status is ConnectionStatus.OK  # not broken: it may work again later


# ---- discovery is held to the SSRF rules ---------------------------------------------------------


async def test_discovery_refuses_http_and_private_targets_unless_allowed(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    strict = OAuthAuth(mode="oauth")  # allow_insecure_discovery: false
    before = await idp.counts()
    with pytest.raises(UnsafeUrl, match="not https"):
        await gw.flows.start(ALICE.id, UPSTREAM, strict, upstream.url, REDIRECT)
    https_loopback = upstream.url.replace("http://", "https://")
    with pytest.raises(UnsafeUrl, match="non-public address"):
        await gw.flows.start(ALICE.id, UPSTREAM, strict, https_loopback, REDIRECT)
    with pytest.raises(UnsafeUrl, match="non-public address"):
        await gw.flows.start(ALICE.id, UPSTREAM, strict, "https://169.254.169.254/mcp", REDIRECT)
    after = await idp.counts()
    assert (after["discovery"], after["registration"]) == (before["discovery"], before["registration"])
    # The same upstream with the development switch on is discovered (test_discovery_from_the_upstreams_401…).

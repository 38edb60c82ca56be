"""The gateway's own authorization server, in process: redirect-URI matching, and the access tokens it
issues as the authenticator checks them (signature, type, expiry, revocation, key rotation, where they are
accepted). The protocol end to end, through a running gateway, is in tests/e2e/test_gateway_oauth.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from manifold.authserver.clients import redirect_matches
from manifold.authserver.routes import PerMinute
from manifold.authserver.store import AuthStore, CodeRow
from manifold.config.models import GatewayConfig
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.identity.directory import Directory
from manifold.identity.gateway_tokens import GatewayTokens
from manifold.principal import CredentialKind
from manifold.security.crypto import Cipher, generate_key
from manifold.security.signing import SigningKeys
from manifold.store.db import default_url, open_database

pytestmark = pytest.mark.anyio

USER = "alice@corp.com"
RESOURCE = "https://gw.test/mcp/eng"
CLIENT = "https://ide.example/client.json"


@pytest.mark.parametrize(
    ("registered", "requested", "matches"),
    [
        ("https://app.example/cb", "https://app.example/cb", True),
        ("https://app.example/cb", "https://app.example/cb/", False),
        ("https://app.example/cb", "https://app.example:8443/cb", False),
        ("https://app.example/cb", "https://app.example/cb?x=1", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback", True),  # RFC 8252: any port
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:51234/callback", True),
        ("http://localhost:3000/callback", "http://localhost:9/callback", True),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:3000/other", False),
        ("http://127.0.0.1:3000/callback", "http://localhost:3000/callback", False),  # another host
        ("http://127.0.0.1:3000/callback", "https://127.0.0.1:3000/callback", False),
        ("http://app.example/cb", "http://app.example:81/cb", False),  # not loopback: exact only
        ("http://[::1]/cb", "http://[::1]:5000/cb", True),
        # Read by a browser as another host, or with userinfo: never the loopback rule (security probe).
        ("http://127.0.0.1/callback", "http://evil.example\\@127.0.0.1:8080/callback", False),
        ("http://127.0.0.1/callback", "http://evil.example@127.0.0.1:8080/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:8080\\@evil.example/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:8080/callback\n", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:/callback", False),
    ],
)
def test_redirect_uris_match_exactly_except_a_loopback_port(registered: str, requested: str, matches: bool) -> None:
    assert redirect_matches(registered, requested) is matches


@dataclass
class World:
    cipher: Cipher
    signing: SigningKeys
    store: AuthStore
    authenticator: Authenticator
    grant_id: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    engine = await open_database(default_url(tmp_path))
    directory = Directory(engine, GatewayConfig.model_validate({"users": {USER: {"teams": ["eng"]}}}))
    await directory.load()
    cipher = Cipher([generate_key()], source="test")
    signing = SigningKeys(cipher)
    store = AuthStore(engine)
    authenticator = Authenticator(
        KeyRepository(engine), directory, None, cache_seconds=60, gateway_tokens=GatewayTokens(signing, engine)
    )
    code = CodeRow(CLIENT, f"user:{USER}", "http://127.0.0.1/cb", "", RESOURCE, "x" * 43, "S256", time.time() + 60)
    await store.save_code("the-code", code)
    assert await store.exchange_code("the-code", "grant-1", code, "refresh-1", time.time() + 3600)
    try:
        yield World(cipher, signing, store, authenticator, "grant-1")
    finally:
        await engine.dispose()


def issue(keys: KeySet, *, grant: str = "grant-1", exp: float | None = None, typ: str = "at+jwt") -> str:
    now = int(time.time())
    claims = {
        "iss": "https://gw.test",
        "sub": f"user:{USER}",
        "aud": RESOURCE,
        "client_id": CLIENT,
        "fam": grant,
        "iat": now,
        "exp": int(exp if exp is not None else now + 300),
    }
    return jwt.encode({"alg": "ES256", "typ": typ}, claims, keys)


async def test_a_token_is_the_persons_principal_for_one_server(world: World) -> None:
    token = issue(KeySet([world.signing.signing_key()]))
    principal = await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)
    assert principal.id == f"user:{USER}" and principal.teams == frozenset({"eng"})
    assert principal.credential.kind is CredentialKind.GATEWAY_OAUTH and principal.credential.ref == CLIENT
    assert principal.servers == frozenset({"eng"}) and principal.claims["aud"] == RESOURCE


async def test_a_token_is_never_an_admin_or_sign_in_credential(world: World) -> None:
    token = issue(KeySet([world.signing.signing_key()]))
    for _ in range(2):  # verified, then from the cache
        with pytest.raises(Unauthenticated, match="MCP endpoints only"):
            await world.authenticator.authenticate(f"Bearer {token}")
        await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda keys: issue(keys, exp=time.time() - 5), "token expired"),
        (lambda keys: issue(keys, typ="JWT"), "invalid token"),
        (lambda keys: issue(keys, grant="no-such-grant"), "token revoked"),
    ],
)
async def test_refusals(world: World, make: object, reason: str) -> None:
    assert callable(make)
    token = make(KeySet([world.signing.signing_key()]))
    with pytest.raises(Unauthenticated) as refused:
        await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)
    assert refused.value.reason == reason


async def test_a_token_signed_by_another_gateway_is_refused(world: World) -> None:
    stranger = SigningKeys(Cipher([generate_key()], source="test"))
    token = issue(KeySet([stranger.signing_key()]))
    assert GatewayTokens.is_ours(token)  # shaped like ours: its kid says so
    with pytest.raises(Unauthenticated) as refused:
        await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)
    assert refused.value.reason == "invalid token"


async def test_revoking_the_grant_refuses_its_tokens_once_the_cache_is_cleared(world: World) -> None:
    token = issue(KeySet([world.signing.signing_key()]))
    await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)
    assert await world.store.revoke_grant(world.grant_id, "test")
    world.authenticator.invalidate()  # what the "auth" revision bump does in every gateway process
    with pytest.raises(Unauthenticated, match="revoked"):
        await world.authenticator.authenticate(f"Bearer {token}", accept_gateway_tokens=True)


async def test_after_a_key_rotation_old_tokens_still_verify_and_new_ones_use_the_new_key(world: World) -> None:
    old_key = world.signing.signing_key()
    old_token = issue(KeySet([old_key]))
    world.cipher._set_keys([generate_key(), *world.cipher.keys])  # noqa: SLF001 — what rotate-key leaves behind
    new_key = world.signing.signing_key()
    assert new_key.kid != old_key.kid
    assert {k["kid"] for k in world.signing.jwks()["keys"]} == {old_key.kid, new_key.kid}
    await world.authenticator.authenticate(f"Bearer {old_token}", accept_gateway_tokens=True)
    await world.authenticator.authenticate(f"Bearer {issue(KeySet([new_key]))}", accept_gateway_tokens=True)


def test_signing_keys_are_the_same_in_every_replica() -> None:
    secret = generate_key()
    one, two = SigningKeys(Cipher([secret], source="a")), SigningKeys(Cipher([secret], source="b"))
    assert one.jwks() == two.jwks()
    assert all("d" not in key for key in one.jwks()["keys"])  # public only


def test_registrations_per_address_are_limited_and_bounded() -> None:
    limit = PerMinute(2)
    assert [limit.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("b", 1.0)  # another address has its own count
    assert limit.allow("a", 61.0)  # a minute later
    for n in range(PerMinute.MAX_ADDRESSES + 5):
        limit.allow(f"10.0.{n // 256}.{n % 256}", 2.0)
    assert len(limit._counts) <= PerMinute.MAX_ADDRESSES  # noqa: SLF001


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        ("https://app.example/cb", True),
        ("http://127.0.0.1:8080/cb", True),
        ("com.example.app:/oauth", True),
        ("http://app.example/cb", False),  # plain http off loopback
        ("https://app.example/cb#frag", False),
        ("javascript:alert(1)", False),
    ],
)
def test_a_configured_clients_redirect_uris_are_checked_at_load(uri: str, accepted: bool) -> None:
    body = {"identity": {"authorization_server": {"clients": {"app": {"client_secret": "s", "redirect_uris": [uri]}}}}}
    if accepted:
        GatewayConfig.model_validate(body)
    else:
        with pytest.raises(ValueError, match="redirect URI"):
            GatewayConfig.model_validate(body)

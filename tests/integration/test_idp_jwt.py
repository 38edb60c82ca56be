"""IdP JWTs → principals, against a real OpenID Provider (node oidc-provider) with its real signing key.

Accepted tokens come from the provider's token endpoint; refused ones are either real tokens presented in
the wrong place or tokens crafted with the provider's own key (expired, not yet valid, tampered…).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from manifold.config.models import ExternalIdentity, GatewayConfig, IdpConfig
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.identity.idp_jwt import IdpRegistry, IdpVerifier, InvalidToken
from manifold.principal import CredentialKind, PrincipalKind
from manifold.store.db import default_url, open_database
from tests.idp import Idp, IdpClient, free_port, run_idp

RESOURCE = "http://127.0.0.1:8470/mcp"

CORP_CLIENTS = [
    IdpClient("alice", claims={"email": "alice@corp.com", "groups": ["eng", "ops"]}),
    IdpClient("carol", claims={"groups": "eng design"}),  # no email; groups as a space-separated string
    IdpClient("acme-bot", claims={"tenant": "acme", "groups": ["support"]}),
    IdpClient("initech-bot", claims={"tenant": ["initech", "other"]}),
    IdpClient("globex-bot", claims={"tenant": "globex"}),
    IdpClient("mallory", claims={"email": "ceo@corp.com", "email_verified": False}),
    IdpClient("portal"),  # a web app users log in to (authorization code)
]
CORP_ACCOUNTS = {"dave": {"email": "dave@corp.com", "email_verified": True, "groups": ["sre"]}}
OTHER_CLIENTS = [IdpClient("bob", claims={"email": "bob@other.org", "groups": ["partners"]})]


@pytest.fixture(scope="module")
async def corp() -> AsyncIterator[Idp]:
    async with run_idp(CORP_CLIENTS, accounts=CORP_ACCOUNTS) as idp:
        yield idp


@pytest.fixture(scope="module")
async def other() -> AsyncIterator[Idp]:
    async with run_idp(OTHER_CLIENTS) as idp:
        yield idp


def config(idp: Idp, **overrides) -> IdpConfig:
    return IdpConfig(issuer=idp.issuer, audience=[RESOURCE], **overrides)


async def refused(registry: IdpRegistry, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await registry.authenticate(token)
    assert token not in str(caught.value)
    return caught.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict, claims: dict, sign) -> str:
    """A JWT assembled by hand, for algorithms PyJWT rightly refuses to produce with these keys."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


@pytest.fixture
async def corp_registry(corp: Idp) -> AsyncIterator[IdpRegistry]:
    registry = IdpRegistry({"corp": config(corp)})
    yield registry
    await registry.aclose()


# ---- accepted -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_user_token_gives_user_with_teams_from_groups(corp, corp_registry):
    token = await corp.token("alice", resource=RESOURCE)
    principal = await corp_registry.authenticate(token)
    assert principal.kind is PrincipalKind.USER
    assert principal.id == "user:alice@corp.com"
    assert principal.email == "alice@corp.com"
    assert principal.teams == {"eng", "ops"}
    assert principal.idp == "corp"
    assert principal.credential.kind is CredentialKind.IDP_JWT and principal.credential.ref == "corp"
    assert principal.claims["sub"] == "alice" and principal.claims["iss"] == corp.issuer
    assert principal.token == token


@pytest.mark.anyio
async def test_token_from_a_user_login_gives_that_user(corp, corp_registry):
    token = await corp.user_token("dave", client_id="portal", resource=RESOURCE)
    principal = await corp_registry.authenticate(token)
    assert principal.id == "user:dave@corp.com"
    assert principal.teams == {"sre"}
    assert principal.claims["client_id"] == "portal"


@pytest.mark.anyio
async def test_user_without_email_is_named_by_idp_and_subject(corp, corp_registry):
    principal = await corp_registry.authenticate(await corp.token("carol", resource=RESOURCE))
    assert principal.id == "user:corp:carol"
    assert principal.email is None
    assert principal.teams == {"eng", "design"}


@pytest.mark.anyio
async def test_unverified_email_does_not_name_the_user(corp, corp_registry):
    principal = await corp_registry.authenticate(await corp.token("mallory", resource=RESOURCE))
    assert principal.id == "user:corp:mallory"
    assert principal.email is None


@pytest.mark.anyio
async def test_claim_mapping_is_configurable(corp):
    mapping = {"subject": "client_id", "email": "contact", "groups": "tenant"}
    registry = IdpRegistry({"corp": config(corp, claims=mapping)})
    try:
        principal = await registry.authenticate(await corp.token("initech-bot", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert principal.name == "corp:initech-bot"
    assert principal.teams == {"initech", "other"}


@pytest.mark.anyio
async def test_an_idp_limited_to_its_domains_cannot_name_other_users(other):
    # A partner IdP allowed to speak only for partner.example: its token claiming another domain's address
    # (bob@other.org here) does not become that user, and its groups give no teams.
    registry = IdpRegistry({"partner": config(other, user_domains=["partner.example"], teams_from_groups=False)})
    try:
        principal = await registry.authenticate(await other.token("bob", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert principal.id == "user:partner:bob"
    assert principal.email is None
    assert principal.teams == frozenset()


@pytest.mark.anyio
async def test_an_idp_names_users_in_its_own_domains(other):
    registry = IdpRegistry({"partner": config(other, user_domains=["OTHER.org"])})
    try:
        principal = await registry.authenticate(await other.token("bob", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert principal.id == "user:bob@other.org"
    assert principal.teams == {"partners"}


@pytest.mark.anyio
@pytest.mark.parametrize("user_domains", [[], ["corp.com"]])
async def test_a_subject_never_names_a_local_user(corp, user_domains):
    # `dev` is the development key's owner; an IdP's subject `dev` is that IdP's user, not ours. Nor does an
    # email claim that is no address, or an address in a subject, make the IdP's user a local one.
    registry = IdpRegistry({"corp": config(corp, user_domains=user_domains)})
    try:
        by_subject = await registry.authenticate(corp.sign(corp.claims(audience=RESOURCE, subject="dev")))
        by_bad_email = await registry.authenticate(
            corp.sign(corp.claims(audience=RESOURCE, subject="dev", email="dev", email_verified=True))
        )
        address_as_subject = await registry.authenticate(
            corp.sign(corp.claims(audience=RESOURCE, subject="alice@corp.com"))
        )
    finally:
        await registry.aclose()
    assert by_subject.id == "user:corp:dev" and by_subject.email is None
    assert by_bad_email.id == "user:corp:dev" and by_bad_email.email is None
    # No `@` in a name an IdP's subject makes: a `user:*@corp.com` grant or a `users:` email is not it.
    assert address_as_subject.id == "user:corp:alice%40corp.com" and address_as_subject.email is None


ACME = ExternalIdentity(name="acme", match={"tenant": "acme"}, teams=["customers"])


@pytest.mark.anyio
async def test_external_identity_admitted_by_tenant(corp):
    registry = IdpRegistry({"corp": config(corp, external=[ACME], external_only=True)})
    try:
        principal = await registry.authenticate(await corp.token("acme-bot", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert principal.kind is PrincipalKind.EXTERNAL
    assert principal.external_identity == "acme"
    assert principal.id == "ext:corp:acme:acme-bot"
    assert principal.teams == {"support", "customers"}
    assert principal.credential.kind is CredentialKind.IDP_JWT


@pytest.mark.anyio
async def test_other_tenant_refused_when_external_only(corp):
    registry = IdpRegistry({"corp": config(corp, external=[ACME], external_only=True)})
    try:
        assert await refused(registry, await corp.token("globex-bot", resource=RESOURCE)) == "token not admitted"
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_unmatched_token_is_a_user_when_not_external_only(corp):
    registry = IdpRegistry({"corp": config(corp, external=[ACME])})
    try:
        principal = await registry.authenticate(await corp.token("globex-bot", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert principal.kind is PrincipalKind.USER
    assert principal.id == "user:corp:globex-bot"


@pytest.mark.anyio
async def test_external_match_any_of_and_list_claims(corp):
    # `match` lists mean any of; the token's `tenant` is itself a list: one shared element is enough.
    partners = ExternalIdentity(name="partners", match={"tenant": ["initech", "hooli"], "client_id": "initech-bot"})
    registry = IdpRegistry({"corp": config(corp, external=[ACME, partners], external_only=True)})
    try:
        principal = await registry.authenticate(await corp.token("initech-bot", resource=RESOURCE))
        assert principal.external_identity == "partners"
        assert principal.teams == frozenset()
        # Every key must match: carol has no tenant at all.
        assert await refused(registry, await corp.token("carol", resource=RESOURCE)) == "token not admitted"
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_two_idps_in_one_registry_each_verify_their_own(corp, other):
    registry = IdpRegistry({"corp": config(corp), "partner": config(other)})
    try:
        alice = await registry.authenticate(await corp.token("alice", resource=RESOURCE))
        bob = await registry.authenticate(await other.token("bob", resource=RESOURCE))
    finally:
        await registry.aclose()
    assert (alice.id, alice.idp) == ("user:alice@corp.com", "corp")
    assert (bob.id, bob.idp, bob.teams) == ("user:bob@other.org", "partner", {"partners"})


@pytest.mark.anyio
async def test_discovery_is_used_once_then_keys_come_from_cache(corp):
    registry = IdpRegistry({"corp": config(corp)})
    try:
        before = await corp.counts()
        tokens = [await corp.token(name, resource=RESOURCE) for name in ("alice", "carol", "acme-bot")]
        for token in tokens * 3:
            await registry.authenticate(token)
        after = await corp.counts()
    finally:
        await registry.aclose()
    assert after["discovery"] - before["discovery"] == 1
    assert after["jwks"] - before["jwks"] == 1


@pytest.mark.anyio
async def test_configured_jwks_uri_skips_discovery(corp):
    registry = IdpRegistry({"corp": config(corp, jwks_uri=f"{corp.issuer}/jwks")})
    try:
        before = await corp.counts()
        await registry.authenticate(await corp.token("alice", resource=RESOURCE))
        after = await corp.counts()
    finally:
        await registry.aclose()
    assert after["discovery"] == before["discovery"]
    assert after["jwks"] - before["jwks"] == 1


@pytest.mark.anyio
async def test_clock_skew_tolerates_a_just_expired_token(corp):
    now = int(time.time())
    token = corp.sign(corp.claims(audience=RESOURCE, iat=now - 300, exp=now - 20))
    lenient = IdpRegistry({"corp": config(corp, clock_skew_seconds=60)})
    strict = IdpRegistry({"corp": config(corp, clock_skew_seconds=0)})
    try:
        assert (await lenient.authenticate(token)).name == "corp:someone"
        assert await refused(strict, token) == "token expired"
    finally:
        await lenient.aclose()
        await strict.aclose()


# ---- refused ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_expired_token_refused(corp, corp_registry):
    now = int(time.time())
    token = corp.sign(corp.claims(audience=RESOURCE, iat=now - 7200, exp=now - 3600))
    assert await refused(corp_registry, token) == "token expired"


@pytest.mark.anyio
async def test_token_without_expiry_refused(corp, corp_registry):
    claims = corp.claims(audience=RESOURCE)
    del claims["exp"]
    assert await refused(corp_registry, corp.sign(claims)) == "token has no 'exp' claim"


@pytest.mark.anyio
async def test_not_yet_valid_token_refused(corp, corp_registry):
    token = corp.sign(corp.claims(audience=RESOURCE, nbf=int(time.time()) + 3600, lifetime_s=7200))
    assert await refused(corp_registry, token) == "token not yet valid"


@pytest.mark.anyio
async def test_token_issued_in_the_future_refused(corp, corp_registry):
    token = corp.sign(corp.claims(audience=RESOURCE, iat=int(time.time()) + 3600, lifetime_s=7200))
    assert await refused(corp_registry, token) == "token not yet valid"


@pytest.mark.anyio
async def test_wrong_audience_refused(corp, corp_registry):
    token = await corp.token("alice", resource="http://127.0.0.1:9/some-other-api")
    assert await refused(corp_registry, token) == "wrong audience"


@pytest.mark.anyio
async def test_token_from_an_unconfigured_issuer_refused(other, corp_registry):
    token = await other.token("bob", resource=RESOURCE)
    assert await refused(corp_registry, token) == "unknown issuer"


@pytest.mark.anyio
async def test_issuer_forged_with_another_idps_key_refused(corp, other, corp_registry):
    forged = corp.claims(audience=RESOURCE, subject="alice", email="alice@corp.com")
    # Signed by the other IdP, under its own kid: the first IdP has no such key.
    assert await refused(corp_registry, other.sign(forged)) == "unknown signing key"
    # Signed by the other IdP but claiming the first IdP's kid: the signature does not verify.
    assert await refused(corp_registry, other.sign(forged, headers={"kid": corp.kid})) == "bad signature"


@pytest.mark.anyio
async def test_verifier_checks_issuer_exactly(corp):
    verifier = IdpVerifier("corp", config(corp))
    try:
        token = corp.sign(corp.claims(audience=RESOURCE, iss=corp.issuer + "/"))
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(token)
    finally:
        await verifier.aclose()
    assert caught.value.reason == "wrong issuer"


@pytest.mark.anyio
async def test_alg_none_refused(corp, corp_registry):
    token = craft({"alg": "none", "kid": corp.kid}, corp.claims(audience=RESOURCE), lambda _: b"")
    assert IdpRegistry.looks_like_jwt(token)
    assert await refused(corp_registry, token) == "algorithm not allowed"


@pytest.mark.anyio
@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
async def test_hs256_signed_with_the_public_key_refused(corp, corp_registry, secret_form):
    public = corp.private_key.public_key()
    secret = (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if secret_form == "pem"
        else json.dumps(corp.public_jwk).encode()
    )
    token = craft(
        {"alg": "HS256", "kid": corp.kid},
        corp.claims(audience=RESOURCE),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    assert await refused(corp_registry, token) == "algorithm not allowed"


@pytest.mark.anyio
async def test_key_type_must_fit_the_algorithm(corp):
    # ES256 is allowed, but the kid names the IdP's RSA key: an EC signature must not be checked against it.
    registry = IdpRegistry({"corp": config(corp, algorithms=["RS256", "ES256"])})
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(corp.claims(audience=RESOURCE), ec_key, algorithm="ES256", headers={"kid": corp.kid})
    try:
        assert await refused(registry, token) == "unknown signing key"
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_algorithm_outside_the_allow_list_refused(corp, corp_registry):
    token = jwt.encode(corp.claims(audience=RESOURCE), corp.private_key, algorithm="PS256", headers={"kid": corp.kid})
    assert await refused(corp_registry, token) == "algorithm not allowed"


@pytest.mark.anyio
async def test_unknown_kid_refused(corp, corp_registry):
    token = corp.sign(corp.claims(audience=RESOURCE), headers={"kid": "no-such-key"})
    assert await refused(corp_registry, token) == "unknown signing key"


@pytest.mark.anyio
async def test_tampered_payload_refused(corp, corp_registry):
    header, payload, signature = (await corp.token("alice", resource=RESOURCE)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"].append("admins")
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert await refused(corp_registry, tampered) == "bad signature"


@pytest.mark.anyio
async def test_garbage_refused_as_malformed(corp_registry):
    assert not IdpRegistry.looks_like_jwt("mfk_abc.def")
    assert await refused(corp_registry, "abc.def.ghi") == "malformed token"


@pytest.mark.anyio
async def test_unreachable_idp_reported_as_unavailable(corp, caplog):
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there: discovery is refused at once
    registry = IdpRegistry({"down": IdpConfig(issuer=issuer, audience=[RESOURCE])})
    token = corp.sign(corp.claims(audience=RESOURCE, iss=issuer))
    try:
        with caplog.at_level("WARNING", logger="manifold.identity.idp_jwt"):
            assert await refused(registry, token) == "identity provider unavailable"
    finally:
        await registry.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("identity provider down" in message for message in warnings)
    assert not any(token in message for message in warnings)


# ---- key cache --------------------------------------------------------------------------------------------


def random_kid_tokens(idp: Idp, count: int) -> list[str]:
    return [idp.sign(idp.claims(audience=RESOURCE), headers={"kid": secrets.token_hex(8)}) for _ in range(count)]


@pytest.mark.anyio
async def test_unknown_kid_flood_fetches_keys_at_most_once(corp):
    registry = IdpRegistry({"corp": config(corp, jwks_min_refresh_seconds=30)})
    try:
        before = await corp.counts()
        flood = random_kid_tokens(corp, 50)
        reasons = await asyncio.gather(*(refused(registry, token) for token in flood[:25]))
        reasons += [await refused(registry, token) for token in flood[25:]]
        await registry.authenticate(await corp.token("alice", resource=RESOURCE))
        after = await corp.counts()
    finally:
        await registry.aclose()
    assert set(reasons) == {"unknown signing key"}
    assert after["jwks"] - before["jwks"] <= 1


@pytest.mark.anyio
async def test_concurrent_refetches_share_one_request(corp):
    # With no minimum interval every unknown kid may refetch; 50 at once still cause one request.
    registry = IdpRegistry({"corp": config(corp, jwks_min_refresh_seconds=0)})
    try:
        await registry.authenticate(await corp.token("alice", resource=RESOURCE))
        before = await corp.counts()
        reasons = await asyncio.gather(*(refused(registry, token) for token in random_kid_tokens(corp, 50)))
        after = await corp.counts()
    finally:
        await registry.aclose()
    assert set(reasons) == {"unknown signing key"}
    assert after["jwks"] - before["jwks"] == 1


@pytest.mark.anyio
async def test_rotated_signing_key_is_fetched_on_first_use():
    async with AsyncExitStack() as stack:
        before_rotation = await stack.enter_async_context(run_idp(CORP_CLIENTS))
        allowed = IdpRegistry({"corp": config(before_rotation, jwks_min_refresh_seconds=0)})
        stack.push_async_callback(allowed.aclose)
        throttled = IdpRegistry({"corp": config(before_rotation, jwks_min_refresh_seconds=3600)})
        stack.push_async_callback(throttled.aclose)
        old_token = await before_rotation.token("alice", resource=RESOURCE)
        for registry in (allowed, throttled):
            await registry.authenticate(old_token)
        await before_rotation.stop()

        # Same issuer, new key (new kid): the IdP rotated.
        after_rotation = await stack.enter_async_context(run_idp(CORP_CLIENTS, port=before_rotation.port))
        assert after_rotation.issuer == before_rotation.issuer and after_rotation.kid != before_rotation.kid
        new_token = await after_rotation.token("alice", resource=RESOURCE)
        assert (await allowed.authenticate(new_token)).id == "user:alice@corp.com"
        # A verifier that fetched moments ago waits out jwks_min_refresh_seconds before asking again.
        assert await refused(throttled, new_token) == "unknown signing key"


def test_one_issuer_per_idp():
    idp = IdpConfig(issuer="http://127.0.0.1:1", audience=[RESOURCE])
    with pytest.raises(ValueError, match="'a' and 'b' have the same issuer"):
        IdpRegistry({"a": idp, "b": idp})


# ---- hostile tokens: every one a refusal, none another exception -------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.anyio
async def test_deeply_nested_token_is_malformed(corp, corp_registry):
    header = b64(json.dumps({"alg": "RS256", "kid": corp.kid}).encode())
    payload = b64(json.dumps(corp.claims(audience=RESOURCE)).encode())
    deep_payload = b64(nested(5000).encode())
    deep_header = b64(('{"alg":"RS256","x":' + nested(5000) + "}").encode())
    assert await refused(corp_registry, f"{header}.{deep_payload}.sig") == "malformed token"
    assert await refused(corp_registry, f"{deep_header}.{payload}.sig") == "malformed token"


@pytest.mark.anyio
async def test_oversize_token_is_not_decoded(corp, corp_registry):
    token = corp.sign(corp.claims(audience=RESOURCE, padding="x" * 20_000))
    assert not IdpRegistry.looks_like_jwt(token)
    assert await refused(corp_registry, token) == "malformed token"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": "tomorrow"}, "malformed token"),
        ({"exp": {"at": 1}}, "malformed token"),
        ({"nbf": [1]}, "malformed token"),
        ({"iat": "now"}, "malformed token"),
        ({"aud": {"a": RESOURCE}}, "wrong audience"),
        ({"aud": [RESOURCE, 1]}, "wrong audience"),
        ({"sub": {"id": "alice"}}, "malformed token"),
        ({"sub": ["alice"]}, "malformed token"),
        ({"groups": {"eng": True}}, "malformed groups claim"),
        ({"groups": 42}, "malformed groups claim"),
        ({"groups": ["eng", {"a": 1}]}, "malformed groups claim"),
        ({"groups": [f"g{i}" for i in range(600)]}, "malformed groups claim"),
        ({"groups": " ".join(f"g{i}" for i in range(600))}, "malformed groups claim"),
        ({"groups": ["x" * 1000]}, "malformed groups claim"),
        ({"deep": json.loads(nested(500))}, None),  # deep but decodable: an ordinary token
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v)) if isinstance(v, dict) else None,
)
async def test_signed_claims_of_the_wrong_type_are_refused(corp, corp_registry, claims, reason):
    # Signed with the IdP's own key: only the claims are wrong.
    token = corp.sign({**corp.claims(audience=RESOURCE), **claims})
    if reason is None:
        assert (await corp_registry.authenticate(token)).id == "user:corp:someone"
    else:
        assert await refused(corp_registry, token) == reason


@pytest.mark.anyio
async def test_claims_of_the_wrong_type_that_name_nobody_are_ignored(corp, corp_registry):
    token = corp.sign(
        corp.claims(audience=RESOURCE, email=["alice@corp.com"], email_verified={"yes": True}, groups=None)
    )
    principal = await corp_registry.authenticate(token)
    assert principal.id == "user:corp:someone" and principal.email is None and principal.teams == frozenset()


@pytest.mark.anyio
async def test_a_far_future_expiry_is_no_crash(corp, tmp_path):
    # PyJWT accepts any integer `exp`; 10^400 has no float. Through the authenticator (which caches the
    # principal until `exp`), it is a valid token cached for `cache_seconds`, not an OverflowError.
    engine = await open_database(default_url(tmp_path))
    directory = Directory(engine, GatewayConfig())
    registry = IdpRegistry({"corp": config(corp)})
    authenticator = Authenticator(KeyRepository(engine), directory, registry, cache_seconds=60)
    try:
        token = corp.sign({**corp.claims(audience=RESOURCE), "exp": 10**400})
        assert (await authenticator.authenticate(f"Bearer {token}")).id == "user:corp:someone"
        assert (await authenticator.authenticate(f"Bearer {token}")).id == "user:corp:someone"
    finally:
        await registry.aclose()
        await engine.dispose()

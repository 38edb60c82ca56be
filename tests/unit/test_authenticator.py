"""The authenticator in process, over a real SQLite file: what an unauthenticated caller can make it hold,
and that any malformed bearer is a plain refusal (`Unauthenticated`, so a 401), never another exception.

IdP tokens signed by a real provider are in tests/integration/test_idp_jwt.py; the same refusals through a
running gateway are in tests/e2e/test_hardening_identity.py.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from manifold.config.models import GatewayConfig, IdpConfig
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.identity.directory import Directory
from manifold.identity.idp_jwt import IdpRegistry, IdpVerifier, InvalidToken
from manifold.store.db import default_url, open_database

pytestmark = pytest.mark.anyio

USER = "alice@corp.com"
# Nothing listens here: a token that got as far as fetching keys would be refused as "unavailable". Every
# hostile token below must be refused before that, for what it is.
ISSUER = "http://127.0.0.1:9"


@dataclass
class World:
    authenticator: Authenticator
    keys: KeyRepository
    token: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    engine = await open_database(default_url(tmp_path))
    keys = KeyRepository(engine)
    directory = Directory(engine, GatewayConfig.model_validate({"users": {USER: {}}}))
    await directory.load()
    idps = IdpRegistry({"corp": IdpConfig(issuer=ISSUER, audience=["https://gw.test/mcp"])})
    authenticator = Authenticator(keys, directory, idps, cache_seconds=60)
    _, token = await keys.create(OwnerKind.USER, USER, "laptop")
    try:
        yield World(authenticator, keys, token)
    finally:
        await idps.aclose()
        await engine.dispose()


def unknown_key() -> str:
    return f"mfk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def refusal(authenticator: Authenticator, bearer: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(f"Bearer {bearer}")
    assert not caught.value.missing
    assert bearer not in caught.value.reason
    return caught.value.reason


# ---- API keys: what unknown ids leave behind -------------------------------------------------------------


async def test_random_unknown_key_ids_do_not_grow_the_key_cache(world: World) -> None:
    authenticator = world.authenticator
    assert (await authenticator.authenticate(f"Bearer {world.token}")).name == USER
    held = authenticator.key_records_cached
    assert held == 1  # the one key in the database
    for _ in range(30_000):
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(f"Bearer {unknown_key()}")
    # Nothing is kept for an id that names no key: what is held is the keys that exist, whatever is tried.
    assert authenticator.key_records_cached == held
    assert (await authenticator.authenticate(f"Bearer {world.token}")).name == USER
    # A key created afterwards works once the change is seen (what the change sync does), flood or not.
    _, second = await world.keys.create(OwnerKind.USER, "bob@corp.com", "desktop")
    authenticator.invalidate()
    assert (await authenticator.authenticate(f"Bearer {second}")).name == "bob@corp.com"
    assert (await authenticator.authenticate(f"Bearer {world.token}")).name == USER
    assert authenticator.key_records_cached == 2


async def test_unknown_id_and_wrong_secret_read_the_same(world: World) -> None:
    key_id = world.token.split("_")[1]
    wrong_secret = f"mfk_{key_id}_{secrets.token_urlsafe(32)}"
    for _ in range(2):  # the first time from the database, the second from the cache: the same either way
        assert await refusal(world.authenticator, wrong_secret) == "invalid token"
        assert await refusal(world.authenticator, unknown_key()) == "invalid token"


# ---- any malformed bearer is a refusal ---------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    return b64(json.dumps(value).encode())


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


GOOD_HEADER = segment({"alg": "RS256", "kid": "k1"})
GOOD_PAYLOAD = segment({"iss": ISSUER, "sub": "x", "aud": "https://gw.test/mcp", "exp": 4102444800})


def raw(text: str) -> str:
    return b64(text.encode())


DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000
ISS_OVER_DEEP = '{"iss":"' + ISSUER + '","x":' + nested(5000) + "}"
ALG_OVER_DEEP = '{"alg":"RS256","x":' + nested(5000) + "}"
HUGE_ALG = '{"alg":' + "9" * 5000 + "}"  # more digits than int() converts by default
HUGE_ISS = '{"iss":' + "9" * 5000 + "}"

HOSTILE: dict[str, str] = {
    "payload nested 5,000 deep": f"{GOOD_HEADER}.{b64(nested(5000).encode())}.sig",
    "payload object nested 5,000 deep": f"{GOOD_HEADER}.{raw(DEEP_OBJECT)}.sig",
    "iss inside a payload nested 5,000 deep": f"{GOOD_HEADER}.{raw(ISS_OVER_DEEP)}.sig",
    "header nested 5,000 deep": f"{b64(nested(5000).encode())}.{GOOD_PAYLOAD}.sig",
    "header object nested 5,000 deep": f"{raw(ALG_OVER_DEEP)}.{GOOD_PAYLOAD}.sig",
    "oversize token": f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{'A' * 20_000}",
    "huge payload": f"{GOOD_HEADER}.{b64(json.dumps({'iss': ISSUER, 'x': 'y' * 100_000}).encode())}.sig",
    "two segments": f"{GOOD_HEADER}.{GOOD_PAYLOAD}",
    "four segments": f"{GOOD_HEADER}.{GOOD_PAYLOAD}.sig.more",
    "one segment": GOOD_HEADER,
    "empty segments": "..",
    "binary payload": f"{GOOD_HEADER}.{b64(bytes(range(256)))}.sig",
    "payload not JSON": f"{GOOD_HEADER}.{b64(b'not json')}.sig",
    "payload a list": f"{GOOD_HEADER}.{segment([ISSUER])}.sig",
    "payload a string": f"{GOOD_HEADER}.{segment(ISSUER)}.sig",
    "iss an object": f"{GOOD_HEADER}.{segment({'iss': {'a': 1}})}.sig",
    "iss a list": f"{GOOD_HEADER}.{segment({'iss': [ISSUER]})}.sig",
    "header not JSON": f"{b64(b'{')}.{GOOD_PAYLOAD}.sig",
    "header a list": f"{segment(['RS256'])}.{GOOD_PAYLOAD}.sig",
    "alg a list": f"{segment({'alg': ['RS256']})}.{GOOD_PAYLOAD}.sig",
    "alg an object": f"{segment({'alg': {'RS256': 1}})}.{GOOD_PAYLOAD}.sig",
    "kid an object": f"{segment({'alg': 'RS256', 'kid': {'a': 1}})}.{GOOD_PAYLOAD}.sig",
    "kid a list": f"{segment({'alg': 'RS256', 'kid': ['k1']})}.{GOOD_PAYLOAD}.sig",
    "bad base64 length": f"{GOOD_HEADER}.A.sig",
    "huge number in header": f"{raw(HUGE_ALG)}.{GOOD_PAYLOAD}.sig",
    "huge number in payload": f"{GOOD_HEADER}.{raw(HUGE_ISS)}.sig",
    "non-ASCII": "héllo.wörld.ünïcode",
    "non-ASCII in a JWT": f"{GOOD_HEADER}.{GOOD_PAYLOAD}.sïg",
    "control characters": "a\x00b.c\x01d.e\x7ff",
    "latin-1 garbage": bytes(range(128, 256)).decode("latin-1"),
    "an mfk_ key with non-ASCII": "mfk_0123456789ab_" + "é" * 43,
    "an oversize mfk_ key": "mfk_0123456789ab_" + "x" * 100_000,
    "a dev key with garbage": "mfd_\x00\xff",
}


@pytest.mark.parametrize("bearer", HOSTILE.values(), ids=HOSTILE.keys())
async def test_malformed_bearer_is_refused_as_invalid(
    world: World, bearer: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="manifold.identity"):
        reason = await refusal(world.authenticator, bearer)
    assert reason in {"malformed token", "invalid token", "unknown issuer", "algorithm not allowed"}
    # Each refused for what it is, not by the last-resort net for surprises (which logs "unexpected").
    assert not caplog.records


async def test_a_groups_claim_of_10000_names_is_refused() -> None:
    # What the web sign-in merges from userinfo is not bounded by the token's size; the claim is.
    verifier = IdpVerifier("corp", IdpConfig(issuer=ISSUER, audience=["https://gw.test/mcp"]))
    with pytest.raises(InvalidToken) as caught:
        verifier.principal_from_claims({"sub": "a", "groups": [f"g{i}" for i in range(10_000)]}, "token")
    assert caught.value.reason == "malformed groups claim"
    await verifier.aclose()


async def test_a_surprise_while_verifying_is_a_refusal_and_one_log_line(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The last resort for a failure nobody foresaw (a library raising something new): still a 401.
    async def surprise(self: IdpVerifier, token: str) -> None:
        raise TypeError(token)

    monkeypatch.setattr(IdpVerifier, "_verify", surprise)
    with caplog.at_level("WARNING", logger="manifold.identity"):
        assert await refusal(world.authenticator, f"{GOOD_HEADER}.{GOOD_PAYLOAD}.sig") == "malformed token"
    assert [r.getMessage() for r in caplog.records] == ["identity provider corp: token refused: unexpected TypeError"]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_key_made_by_another_process_a_moment_ago_is_accepted_before_the_change_is_heard(
    world: World,
) -> None:
    """Was: 401 until the change reached this gateway (PostgreSQL: its notification, some milliseconds later;
    seen in CI as a client refused right after `manifold keys create`). The held rows are not told of the new key
    here at all (no `invalidate`): the refused key's row is read once."""
    authenticator = world.authenticator
    assert (await authenticator.authenticate(f"Bearer {world.token}")).name == USER  # the rows are held now
    other_process = KeyRepository(world.keys.engine)
    _, fresh = await other_process.create(OwnerKind.USER, USER, "made elsewhere")
    assert (await authenticator.authenticate(f"Bearer {fresh}")).name == USER
    prefix, key_id, _ = fresh.split("_", 2)
    wrong_secret = f"{prefix}_{key_id}_{secrets.token_urlsafe(32)}"
    assert await refusal(authenticator, wrong_secret) == "invalid token"


async def test_rereading_refused_keys_is_throttled(world: World) -> None:
    authenticator = world.authenticator
    reads = 0
    keys_get = world.keys.get

    async def counted_get(key_id: str):  # the real query, counted
        nonlocal reads
        reads += 1
        return await keys_get(key_id)

    world.keys.get = counted_get  # type: ignore[method-assign]
    for _ in range(500):
        await refusal(authenticator, unknown_key())
    assert reads <= 25, reads  # a burst of 20, and what 20 a second adds while the loop runs


async def test_a_wrong_secret_for_a_key_in_use_does_not_make_the_gateway_read_every_key_again(world: World) -> None:
    """The re-read of a refused key compares what decides a token (hash, revocation, expiry, owner, servers),
    not when it was last used: that is written without telling anyone, so comparing it let anyone with a used
    key's id throw away the held rows, 20 times a second (found by review)."""
    authenticator = world.authenticator
    principal = await authenticator.authenticate(f"Bearer {world.token}")
    assert authenticator.key_records_cached == 1
    await world.keys.touch({principal.credential.ref or "": 1_900_000_000.0})  # the batched last-used write
    prefix, key_id, _ = world.token.split("_", 2)
    assert await refusal(authenticator, f"{prefix}_{key_id}_{secrets.token_urlsafe(32)}") == "invalid token"
    assert authenticator.key_records_cached == 1  # still held: nothing that decides anything changed

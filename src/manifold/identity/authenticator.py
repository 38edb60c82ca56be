"""Bearer token → Principal, for every request.

Three kinds of bearer: our API keys (`mfk_…`), service-account tokens (`mfs_…`) and the development key
(`mfd_…`) are looked up by id and compared by hash; a JWT signed by the gateway itself (its header's key id
says so) is an access token of the gateway's authorization server (identity/gateway_tokens.py), accepted on
the MCP endpoints only; any other JWT goes to the IdP whose issuer it names. A validated credential is
cached (keyed by the token's SHA-256, never the token) until the earlier of `identity.cache_seconds` and its
own expiry. Any change to keys, principals or grants — made here, by the admin API or by the CLI in another
process — clears the cache before the next request is decided (see store/revisions.py), so a revoked key fails at once.

What a caller without a credential can make this hold is nothing: key rows are held as one index of every
key in the database (read once after each change, when a key is first needed), so a made-up `mfk_` id is a
dictionary miss — no row cached for it, no database query — and only credentials that verified enter the
principal cache. An unknown id and a wrong secret take the same path (one dictionary lookup, one
constant-time comparison of hashes), so neither the answer nor its timing tells which key ids exist. Any
bearer, however malformed, ends in `Unauthenticated` (a 401).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import math
import time
from collections.abc import Mapping
from typing import assert_never

from manifold.identity.api_keys import KeyRecord, KeyRepository, OwnerKind, hash_token, key_id_of
from manifold.identity.directory import Directory
from manifold.identity.gateway_tokens import GatewayTokens, InvalidGatewayToken
from manifold.identity.idp_jwt import MAX_TOKEN_CHARS, IdpRegistry, InvalidToken
from manifold.principal import ANONYMOUS, Credential, CredentialKind, Principal, PrincipalKind

log = logging.getLogger(__name__)
MAX_CACHED = 50_000  # verified credentials (only a valid credential gets in)
# Compared with the hash of a token whose id names no key, so that path does the same work as a wrong secret.
_NO_KEY_HASH = hash_token("").encode()
_MCP_ONLY = "this token is for the MCP endpoints only"


RECHECKS_PER_SECOND = 20.0  # refused keys whose row is read again from the database (bursts of as many)


class TokenBucket:
    """At most `rate` per second on average, in bursts of as many."""

    __slots__ = ("_rate", "_tokens", "_at")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()  # not the wall clock: a step back would starve the bucket for as long
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _deciding(record: KeyRecord | None) -> tuple[object, ...] | None:
    """What of a key row decides whether a token passes, and as whom."""
    if record is None:
        return None
    return (record.key_hash, record.revoked_at, record.expires_at, record.owner_kind, record.owner_id, record.servers)


class Unauthenticated(Exception):
    """Reason is shown to the client: it names what is wrong, never which keys or users exist."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


class Authenticator:
    def __init__(
        self,
        keys: KeyRepository,
        directory: Directory,
        idps: IdpRegistry | None,
        *,
        cache_seconds: float,
        allow_unauthenticated: bool = False,
        gateway_tokens: GatewayTokens | None = None,
    ) -> None:
        self.keys = keys
        self.directory = directory
        self.idps = idps
        self.cache_seconds = cache_seconds
        self.allow_unauthenticated = allow_unauthenticated
        self.gateway_tokens = gateway_tokens
        self._cache: dict[str, tuple[Principal, float]] = {}
        # key id -> row, every key in the database (revoked ones too, to say so); None: read on first need
        self._records: Mapping[str, KeyRecord] | None = None
        self._records_generation = 0  # bumped by every change, so a read that overlapped one is not kept
        self._records_lock = asyncio.Lock()
        self._recheck = TokenBucket(RECHECKS_PER_SECOND)
        self.last_used: dict[str, float] = {}  # key id -> time, written to the DB in batches

    def invalidate(self) -> None:
        """Keys, principals or grants changed: decide every credential afresh."""
        self._cache.clear()
        self._records = None
        self._records_generation += 1

    @property
    def key_records_cached(self) -> int:
        """How many key rows are held: the keys in the database, whatever ids callers make up."""
        return len(self._records) if self._records is not None else 0

    async def authenticate(self, authorization: str | None, *, accept_gateway_tokens: bool = False) -> Principal:
        """The caller. Access tokens the gateway issued itself (authserver/) are for its MCP endpoints only:
        anywhere else (`accept_gateway_tokens` false: admin API, sign-in form) they are refused."""
        if not authorization:
            if self.allow_unauthenticated:
                return ANONYMOUS
            raise Unauthenticated("missing bearer token", missing=True)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("malformed token")  # not hashed, not parsed, not looked up
        digest = hash_token(token)
        now = time.time()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[1]:
            principal = cached[0]
            kind = principal.credential.kind
            if kind is CredentialKind.API_KEY or kind is CredentialKind.SA_TOKEN:
                self.last_used[principal.credential.ref or ""] = now
            elif kind is CredentialKind.GATEWAY_OAUTH and not accept_gateway_tokens:
                raise Unauthenticated(_MCP_ONLY)
            return principal
        principal, valid_until = await self._verify(token, now)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (principal, min(valid_until, now + self.cache_seconds))
        if principal.credential.kind is CredentialKind.GATEWAY_OAUTH and not accept_gateway_tokens:
            raise Unauthenticated(_MCP_ONLY)
        return principal

    async def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        key_id = key_id_of(token)
        if key_id is not None:
            return await self._verify_key(key_id, token, now)
        if self.gateway_tokens is not None and self.gateway_tokens.is_ours(token):
            try:
                return await self.gateway_tokens.verify(token, self.directory.snapshot, now)
            except InvalidGatewayToken as exc:
                raise Unauthenticated(exc.reason) from None
        if self.idps is not None and self.idps.looks_like_jwt(token):
            try:
                principal = await self.idps.authenticate(token)
            except InvalidToken as exc:
                raise Unauthenticated(exc.reason) from None
            snap = self.directory.snapshot
            extra = snap.user_teams(principal.email, principal.name)
            if extra:
                principal = dataclasses.replace(principal, teams=principal.teams | extra)
            return principal, _expiry(principal.claims.get("exp"), now)
        raise Unauthenticated("invalid token")

    async def _verify_key(self, key_id: str, token: str, now: float) -> tuple[Principal, float]:
        record = await self._record(key_id)
        if (record is None or not record.matches(token)) and self._recheck.take():
            # A key made a moment ago by the CLI or on another replica is not among the rows held here until
            # the change is heard (PostgreSQL: its notification, some milliseconds later): its row is read once.
            # For an unknown id and a wrong secret alike, so the time taken tells nothing about which ids exist;
            # throttled, so made-up keys cannot turn into a query each.
            fresh = await self.keys.get(key_id)
            if _deciding(fresh) != _deciding(record):  # not last_used_at: written without telling anyone
                record = fresh
                self._records = None  # stale: read afresh on next need
                self._records_generation += 1
        # Unknown id and wrong secret read the same, and cost the same: one comparison of hashes in constant
        # time either way. The answer must not tell which keys exist.
        if record is None:
            hmac.compare_digest(_NO_KEY_HASH, hash_token(token).encode())
            raise Unauthenticated("invalid token")
        if not record.matches(token):
            raise Unauthenticated("invalid token")
        unusable = record.usable(now)
        if unusable is not None:
            raise Unauthenticated(f"token {unusable}")
        principal = self._key_principal(record, token)
        self.last_used[record.id] = now
        return principal, record.expires_at if record.expires_at is not None else float("inf")

    async def _record(self, key_id: str) -> KeyRecord | None:
        """The key row of this id (None: no such key)."""
        records = self._records
        if records is None:
            records = await self._read_records()
        return records.get(key_id)

    async def _read_records(self) -> Mapping[str, KeyRecord]:
        """Every key row, read once for all the requests that need it after a change."""
        async with self._records_lock:
            if self._records is not None:
                return self._records  # read while this request waited
            generation = self._records_generation
            records = {record.id: record for record in await self.keys.list(include_revoked=True)}
            if generation == self._records_generation:  # no change arrived while reading: keep it
                self._records = records
            return records

    def _key_principal(self, record: KeyRecord, token: str) -> Principal:
        snap = self.directory.snapshot
        servers = frozenset(record.servers) if record.servers is not None else None
        match record.owner_kind:
            case OwnerKind.USER:
                user = snap.users.get(record.owner_id)
                email = user.email if user else (record.owner_id if "@" in record.owner_id else None)
                kind = CredentialKind.API_KEY
                return Principal(
                    kind=PrincipalKind.USER,
                    name=record.owner_id,
                    credential=Credential(kind, record.id),
                    email=email,
                    teams=snap.user_teams(record.owner_id),
                    servers=servers,
                    token=token,
                )
            case OwnerKind.SERVICE_ACCOUNT:
                sa = snap.service_accounts.get(record.owner_id)
                if sa is None:
                    raise Unauthenticated("invalid token")  # the account was deleted
                return Principal(
                    kind=PrincipalKind.SERVICE_ACCOUNT,
                    name=sa.id,
                    credential=Credential(CredentialKind.SA_TOKEN, record.id),
                    teams=frozenset(sa.teams),
                    servers=servers,
                    token=token,
                )
            case _:
                assert_never(record.owner_kind)

    async def flush_last_used(self) -> None:
        """Write the last-used times collected since the last flush (one entry per key that verified)."""
        used, self.last_used = self.last_used, {}
        try:
            await self.keys.touch(used)
        except Exception as exc:  # noqa: BLE001 — bookkeeping must never break serving
            log.warning("could not record key last-used times: %s", type(exc).__name__)


def _expiry(exp: object, now: float) -> float:
    """A verified token's `exp` as a time: any number PyJWT accepted (an integer of 400 digits is +inf);
    without a usable one, the credential is not cached past now."""
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return now
    try:
        value = float(exp)
    except OverflowError:
        return math.inf
    return value if not math.isnan(value) else now

"""JWTs from external identity providers → Principal.

One `IdpVerifier` per configured IdP holds that IdP's signing keys (JWKS) and checks a token against its
`IdpConfig`; `IdpRegistry` routes a token to the verifier whose issuer the token names.

Why PyJWT directly and not FastMCP's JWTVerifier: that one does not check `nbf`, and we need control over
which key may verify which algorithm. The rules, in the order they are applied:

1. The header's `alg` must be in the IdP's allow-list *before* any key is looked at, so `none`, HS256 and
   friends never reach key handling (an HS256 token "signed" with the RSA public key is the classic attack).
2. The key is chosen by `kid` from the cached JWKS; its `kty` (and `crv`) must fit the algorithm and its own
   `alg`, when it declares one, must equal the header's. `oct` (symmetric) keys are never loaded.
3. PyJWT checks the signature with a `PyJWK` bound to that one algorithm, then `iss` (exact), `aud` (one of
   the configured audiences), `exp` (required), `nbf` and `iat` (when present), all with the IdP's clock skew.

The hot path does no I/O: keys are cached per IdP. An unknown `kid` triggers a refetch at most once per
`jwks_min_refresh_seconds` (a flood of made-up kids must not turn the gateway into a load generator aimed at
the IdP), and concurrent refetches share one request. Reasons given to clients are short and fixed; no
token text ever goes into an exception or a log line.

Whatever a token holds, the answer is `InvalidToken` (a 401): a token longer than `MAX_TOKEN_CHARS` is not
decoded at all, JSON nested too deep or not an object is "malformed token", and claims of the wrong type
(a `groups` object, an `exp` string) are refused rather than guessed at.

Who a token names: its verified email, when the IdP may speak for that address (any address when
`user_domains` is empty, else only those in the listed domains); otherwise `<idp>:<subject>`, a name of
that IdP's own that no local user, key owner or email pattern shares (see `subject_name`). So an IdP whose
token says `sub: dev` is `user:corp:dev`, never the development key's owner `user:dev`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import jwt

from manifold.config.models import ExternalIdentity, IdpConfig
from manifold.identity.claims import MISSING, claim_value, token_has_claims
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind

log = logging.getLogger(__name__)

# Key type (and curves) each allowed algorithm may be verified with. HMAC and `none` are absent on purpose.
KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
MAX_DOCUMENT_BYTES = 1024 * 1024  # a JWKS or discovery document larger than this is not one
# A fetch that failed is retried no sooner than this (or jwks_min_refresh_seconds, if shorter), so an IdP
# outage is not made worse, yet a gateway that started while its IdP was down recovers quickly.
FAILED_FETCH_RETRY_SECONDS = 5.0
# Keys are fetched again after this long even when every kid is known, so a key the IdP withdrew
# (compromised, rotated out) stops verifying within the hour.
JWKS_MAX_AGE_SECONDS = 3600.0
MAX_TOKEN_CHARS = 16 * 1024  # no JWT an IdP issues comes near this; longer ones are not decoded at all
# A groups claim with more entries (or longer names) than this is not a list of teams: the token is refused.
MAX_GROUPS = 512
MAX_GROUP_CHARS = 256
MAX_EMAIL_CHARS = 320
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class InvalidToken(Exception):
    """A token that is not accepted. `reason` is short text safe to show a client (never token text)."""

    def __init__(self, reason: str, *, idp: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.idp = idp


class IdpUnavailable(Exception):
    """The IdP's discovery document or JWKS could not be fetched or made no sense (internal)."""


# PyJWT's exceptions → the reason a client sees. Order matters: subclasses before their bases.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidIssuedAtError, "malformed token"),
    (jwt.exceptions.InvalidSubjectError, "malformed token"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidKeyError, "unknown signing key"),
)


def _reason_for(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token has no '{error.claim}' claim"
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "invalid token"


def _unverified_part(token: str, index: int) -> dict[str, Any]:
    """Decode one base64url JSON segment without checking anything (routing and early refusals only)."""
    segment = token.split(".")[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    # UnicodeDecodeError, JSONDecodeError and too many digits are ValueErrors; nesting deeper than the
    # interpreter's recursion limit is a RecursionError.
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    value = claim_value(claims, name)
    return None if value is MISSING else value


def _groups(value: Any, idp_id: str) -> frozenset[str]:
    """The groups claim as team names: a space-separated string or a list of strings (absent: none).
    Anything else, or more than `MAX_GROUPS` names, is refused rather than read as no teams."""
    if value is None:
        return frozenset()
    names = value.split() if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or len(names) > MAX_GROUPS
        or not all(isinstance(n, str) and len(n) <= MAX_GROUP_CHARS for n in names)
    ):
        raise InvalidToken("malformed groups claim", idp=idp_id)
    return frozenset(n for n in names if n)


def _address(value: Any) -> str | None:
    """An email claim that is an address (`local@domain`), else None."""
    if isinstance(value, str) and len(value) <= MAX_EMAIL_CHARS and _EMAIL.fullmatch(value):
        return value
    return None


def subject_name(idp_id: str, subject: str) -> str:
    """The user name of an IdP subject no email names: `<idp>:<subject>`. `%` and `@` are escaped, so the
    name never contains `@` and cannot be taken for an email (by `user:*@corp.com` grants or by the
    `users:` section's email lookup); no local user is named with the IdP's prefix unless the config says so."""
    return f"{idp_id}:{subject.replace('%', '%25').replace('@', '%40')}"


def _key_fits(jwk_data: Mapping[str, Any], alg: str) -> bool:
    kty, curves = KEY_TYPES[alg]
    if jwk_data.get("kty") != kty:
        return False
    if curves is not None and jwk_data.get("crv") not in curves:
        return False
    declared = jwk_data.get("alg")
    return declared is None or declared == alg


class IdpVerifier:
    """Verifies one IdP's tokens. Create inside or outside a running loop; call `aclose()` when done."""

    def __init__(self, idp_id: str, config: IdpConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.idp_id = idp_id
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._algorithms = frozenset(config.algorithms)
        self._keys: dict[str, dict[str, Any]] = {}  # kid -> JWK (public, signing); "" for a key without kid
        self._prepared: dict[tuple[str, str], jwt.PyJWK] = {}  # (kid, alg) -> key bound to that algorithm
        self._jwks_uri: str | None = config.jwks_uri
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._next_fetch_at = 0.0  # monotonic time before which no fetch is started
        self._generation = 0  # bumped when a fetch ends, so callers queued behind it need not fetch again
        self._last_fetch_ok = False
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Principal:
        """The principal a token names, or `InvalidToken`: the one exception any token, however made, raises."""
        try:
            return await self._verify(token)
        except (InvalidToken, IdpUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 — a token must never become a 500; say what, not the token
            log.warning("identity provider %s: token refused: unexpected %s", self.idp_id, type(exc).__name__)
            raise InvalidToken("malformed token", idp=self.idp_id) from None

    async def _verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS or not _JWT_SHAPE.fullmatch(token):
            raise InvalidToken("malformed token", idp=self.idp_id)
        try:
            header = _unverified_part(token, 0)
        except InvalidToken as exc:
            exc.idp = self.idp_id
            raise
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken("algorithm not allowed", idp=self.idp_id)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token", idp=self.idp_id)
        key = await self._key_for(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.clock_skew_seconds,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason_for(exc), idp=self.idp_id) from None
        return self.principal_from_claims(claims, token)

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---- claims → principal -----------------------------------------------------------------------

    def principal_from_claims(self, claims: dict[str, Any], token: str) -> Principal:
        """The principal verified claims name (also used by the web sign-in with userinfo claims)."""
        mapping = self.config.claims
        subject = _claim(claims, mapping.subject)
        if isinstance(subject, int | float) and not isinstance(subject, bool):
            subject = str(subject)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token has no subject", idp=self.idp_id)
        email = _address(_claim(claims, mapping.email))
        # An address the IdP itself says it has not verified must not become a name grants are written for.
        # (Some IdPs, e.g. Cognito, send the flag as a string.)
        verified = claims.get("email_verified")
        if verified is False or (isinstance(verified, str) and verified.lower() == "false"):
            email = None
        domains = self.config.user_domains
        if email is not None and domains and email.rpartition("@")[2].lower() not in {d.lower() for d in domains}:
            email = None  # outside the domains this IdP may speak for
        groups = _groups(_claim(claims, mapping.groups), self.idp_id) if self.config.teams_from_groups else frozenset()
        credential = Credential(CredentialKind.IDP_JWT, self.idp_id)
        identity = self._external_identity(claims)
        if identity is not None:
            return Principal(
                kind=PrincipalKind.EXTERNAL,
                name=subject,
                credential=credential,
                email=email,
                teams=groups | frozenset(identity.teams),
                idp=self.idp_id,
                external_identity=identity.name,
                claims=claims,
                token=token,
            )
        if self.config.external_only:
            raise InvalidToken("token not admitted", idp=self.idp_id)
        # A user is named by an address the IdP may speak for, else by a name of this IdP's own: a token
        # never names a local user (the development key's owner `dev`, a key owner) by its subject.
        return Principal(
            kind=PrincipalKind.USER,
            name=email or subject_name(self.idp_id, subject),
            credential=credential,
            email=email,
            teams=groups,
            idp=self.idp_id,
            claims=claims,
            token=token,
        )

    def _external_identity(self, claims: Mapping[str, Any]) -> ExternalIdentity | None:
        for identity in self.config.external:  # first match wins, in configuration order
            if token_has_claims(claims, identity.match.items()):
                return identity
        return None

    # ---- keys ---------------------------------------------------------------------------------------

    async def _key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        now = time.monotonic()
        if self._fetched_at is None or now - self._fetched_at > JWKS_MAX_AGE_SECONDS:
            if now >= self._next_fetch_at:
                await self._refresh()
            if self._fetched_at is None:
                raise InvalidToken("identity provider unavailable", idp=self.idp_id)
        jwk_data = self._lookup(kid)
        if jwk_data is None and time.monotonic() >= self._next_fetch_at:
            await self._refresh()  # the IdP may have rotated keys since we last asked
            if not self._last_fetch_ok:
                raise InvalidToken("identity provider unavailable", idp=self.idp_id)
            jwk_data = self._lookup(kid)
        if jwk_data is None or not _key_fits(jwk_data, alg):
            raise InvalidToken("unknown signing key", idp=self.idp_id)
        lookup_kid = kid or ""
        prepared = self._prepared.get((lookup_kid, alg))
        if prepared is None:
            try:
                prepared = jwt.PyJWK(jwk_data, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # a key the IdP published badly
                raise InvalidToken("unknown signing key", idp=self.idp_id) from None
            self._prepared[(lookup_kid, alg)] = prepared
        return prepared

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid in the token: acceptable only when the IdP publishes exactly one signing key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        """Fetch the JWKS once; callers that arrive while a fetch runs wait for it instead of starting another."""
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return  # a fetch finished while we waited for the lock: its result is ours too
            try:
                keys = await self._fetch_keys()
            except IdpUnavailable as exc:
                self._generation += 1
                self._last_fetch_ok = False
                retry_s = min(self.config.jwks_min_refresh_seconds, FAILED_FETCH_RETRY_SECONDS)
                self._next_fetch_at = time.monotonic() + retry_s
                self._jwks_uri = self.config.jwks_uri  # discover again next time: the document may have moved
                log.warning("identity provider %s: cannot fetch signing keys: %s", self.idp_id, exc)
                return
            now = time.monotonic()
            self._generation += 1
            self._keys = keys
            self._prepared = {}
            self._fetched_at = now
            self._last_fetch_ok = True
            self._next_fetch_at = now + self.config.jwks_min_refresh_seconds
            log.info("identity provider %s: %d signing key(s) loaded", self.idp_id, len(keys))

    async def _fetch_keys(self) -> dict[str, dict[str, Any]]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover_jwks_uri()
        document = await self._get_json(self._jwks_uri)
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise IdpUnavailable(f"{self._jwks_uri} is not a JWKS (no 'keys' list)")
        keys: dict[str, dict[str, Any]] = {}
        for raw in raw_keys:
            if not isinstance(raw, dict) or raw.get("kty") not in {"RSA", "EC", "OKP"}:
                continue  # symmetric (`oct`) or unknown key types are never used to verify
            if raw.get("use", "sig") != "sig":
                continue  # encryption keys
            if any(field in raw for field in ("d", "p", "q", "dp", "dq", "qi", "k")):
                # A published private key is the IdP's mistake; keep only the public half.
                raw = {k: v for k, v in raw.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k", "oth")}
            kid = raw.get("kid", "")
            if not isinstance(kid, str):
                continue
            keys.setdefault(kid, raw)
        if not keys:
            raise IdpUnavailable(f"{self._jwks_uri} has no usable signing keys")
        return keys

    async def _discover_jwks_uri(self) -> str:
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        if document.get("issuer") != self.config.issuer:
            raise IdpUnavailable(f"{url} names a different issuer than the configured '{self.config.issuer}'")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not re.match(r"^https?://", jwks_uri):
            raise IdpUnavailable(f"{url} has no usable 'jwks_uri'")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=FETCH_TIMEOUT)
        try:
            async with self._session.get(url, timeout=FETCH_TIMEOUT, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise IdpUnavailable(f"GET {url} answered HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise IdpUnavailable(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdpUnavailable(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise IdpUnavailable(f"GET {url}: not JSON") from None
        if not isinstance(document, dict):
            raise IdpUnavailable(f"GET {url}: not a JSON object")
        return document


class IdpRegistry:
    """All configured IdPs; routes a token by its (unverified) `iss` to the one verifier that may check it."""

    def __init__(self, idps: Mapping[str, IdpConfig]) -> None:
        self._by_issuer: dict[str, IdpVerifier] = {}
        for idp_id, config in idps.items():
            other = self._by_issuer.get(config.issuer)
            if other is not None:
                raise ValueError(
                    f"identity providers '{other.idp_id}' and '{idp_id}' have the same issuer {config.issuer}; "
                    "a token could not be told apart"
                )
            self._by_issuer[config.issuer] = IdpVerifier(idp_id, config)

    @property
    def verifiers(self) -> Iterable[IdpVerifier]:
        return self._by_issuer.values()

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """Three base64url segments (the last may be empty): worth routing here rather than to the key store."""
        return len(token) <= MAX_TOKEN_CHARS and _JWT_SHAPE.fullmatch(token) is not None

    async def authenticate(self, token: str) -> Principal:
        """The principal a token names, or `InvalidToken` (see `IdpVerifier.verify`)."""
        if not self.looks_like_jwt(token):
            raise InvalidToken("malformed token")
        issuer = _unverified_part(token, 1).get("iss")
        verifier = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise InvalidToken("unknown issuer")
        return await verifier.verify(token)

    async def aclose(self) -> None:
        for verifier in self._by_issuer.values():
            await verifier.aclose()

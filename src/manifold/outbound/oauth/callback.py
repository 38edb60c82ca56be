"""The authorization callback: authorizations in flight, and what the browser brings back.

`start` records each attempt under a random single-use `state` for ~10 minutes: who started it, the PKCE
verifier, the endpoints, the RFC 8707 resource (encrypted; only the state's SHA-256 is kept). The callback
is accepted only for that state, once, before it expires, for the same principal, and from the same issuer
(RFC 9207 `iss`, required when the server advertises it).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.outbound.oauth.errors import AuthorizationDenied, InvalidState, IssuerMismatch, OAuthError, error_code
from manifold.outbound.oauth.tables import oauth_pending
from manifold.outbound.oauth.vault import EndpointPolicy
from manifold.security.crypto import Cipher

STATE_TTL_SECONDS = 600


@dataclass(frozen=True)
class PendingAuthorization:
    """What the callback needs of the authorization it answers (stored encrypted as JSON, these keys)."""

    verifier: str  # PKCE
    redirect_uri: str
    resource: str
    scopes: list[str]
    issuer: str | None
    iss_required: bool  # the server advertises RFC 9207 `iss`
    client_id: str
    token_endpoint: str
    revocation_endpoint: str | None
    policy: str  # EndpointPolicy value
    # The connect link this attempt came from (links.link_digest), spent when the tokens are stored; "" for
    # an attempt not started from a link (and for rows written before links were spent at that point).
    link: str = ""

    @property
    def endpoint_policy(self) -> EndpointPolicy:
        return EndpointPolicy(self.policy)


@dataclass(frozen=True)
class Returned:
    """An authorization the browser came back to, for the principal who started it."""

    upstream_id: str
    pending: PendingAuthorization


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class PendingAuthorizations:
    def __init__(
        self,
        engine: AsyncEngine,
        cipher: Cipher,
        *,
        ttl_seconds: float = STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._cipher = cipher
        self._ttl = ttl_seconds
        self._clock = clock

    async def open(self, principal_id: str, upstream_id: str, pending: PendingAuthorization) -> str:
        """Record an authorization about to start; returns its `state` (expired ones are pruned here)."""
        state = secrets.token_urlsafe(32)
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(delete(oauth_pending).where(oauth_pending.c.expires_at < now))
            await conn.execute(
                oauth_pending.insert().values(
                    state_hash=_hash_state(state),
                    user=principal_id,
                    upstream=upstream_id,
                    payload=self._cipher.encrypt_text(json.dumps(asdict(pending))),
                    expires_at=now + self._ttl,
                    created_at=now,
                )
            )
        return state

    async def take(self, state: str, principal_id: str) -> Returned:
        """The authorization `state` names, spent whatever happens next. Raises InvalidState."""
        key = _hash_state(state or "")
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(oauth_pending).where(oauth_pending.c.state_hash == key))).first()
            used = (
                (await conn.execute(delete(oauth_pending).where(oauth_pending.c.state_hash == key))).rowcount
                if row is not None
                else 0
            )
        if row is None or used != 1:
            raise InvalidState("this sign-in is unknown or was already used: start again from the connect link")
        if row.expires_at < self._clock():
            raise InvalidState("this sign-in took too long and has expired: start again from the connect link")
        if row.user != principal_id:
            raise InvalidState("this sign-in was started by another user: start again from your own connect link")
        return Returned(row.upstream, PendingAuthorization(**json.loads(self._cipher.decrypt_text(row.payload))))


def accepted_code(returned: Returned, code: str | None, iss: str | None, error: str | None) -> str:
    """The authorization code of a callback that passes the checks; raises AuthorizationDenied,
    IssuerMismatch or OAuthError."""
    upstream_id, pending = returned.upstream_id, returned.pending
    if error:
        raise AuthorizationDenied(
            f"upstream '{upstream_id}': the authorization server did not grant access ({error_code(error)})"
        )
    if iss is not None and pending.issuer and iss != pending.issuer:
        raise IssuerMismatch(
            f"upstream '{upstream_id}': the authorization response came from another issuer than the one "
            "the sign-in was sent to; refused (RFC 9207)"
        )
    if iss is None and pending.iss_required:
        raise IssuerMismatch(
            f"upstream '{upstream_id}': the authorization response does not name its issuer although the "
            "server promises to (RFC 9207); refused"
        )
    if not code:
        raise OAuthError(f"upstream '{upstream_id}': the authorization server sent no code")
    return code

"""Access tokens the gateway issued itself (authserver/, RFC 9068 JWTs), checked when a client presents one.

A token of ours is told by its header alone: its `kid` starts with `mfg-` (security/signing.py), so an IdP's
JWT never reaches this code and ours never reaches the IdPs. Checked here: the signature (ES256, one of the
gateway's signing keys), `typ: at+jwt`, `exp`, and that the sign-in it belongs to (its `fam` claim, a row of
`gw_oauth_grants`) is not revoked — revoking a client, or a rotated refresh token presented again, ends its
access tokens at once (the revocation bumps the "auth" revision, which empties the authenticator's cache).
The audience is checked by the endpoint (app.py): the token's `aud` is exactly the URL of the one MCP server
it was issued for, and the principal is restricted to that server.

The principal is the one the person's API key maps to (`user:…` or `sa:…`), with the credential
`gateway-oauth:<client id>` for audit.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import urlsplit

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from manifold.identity.directory import Snapshot as DirectorySnapshot
from manifold.identity.gateway_tables import gw_grants, gw_refresh_tokens
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.security.signing import ALGORITHM, KID_PREFIX, SigningKeys
from manifold.store.db import api_keys

ACCESS_TOKEN_TYPE = "at+jwt"
_MAX_HEADER_CHARS = 400


class InvalidGatewayToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def server_of_resource(resource: str) -> str | None:
    """The server id of a resource URL `<base>/mcp/<id>` or `<base>/sse/<id>`, else None."""
    parts = urlsplit(resource).path.strip("/").split("/")
    if len(parts) == 2 and parts[0] in ("mcp", "sse") and parts[1]:
        return parts[1]
    return None


class GatewayTokens:
    def __init__(self, signing: SigningKeys, engine: AsyncEngine) -> None:
        self.signing = signing
        self.engine = engine

    @staticmethod
    def is_ours(token: str) -> bool:
        """Whether the token names one of our key ids in its header (decoded, never verified, here)."""
        header, dot, _ = token.partition(".")
        if not dot or len(header) > _MAX_HEADER_CHARS:
            return False
        try:
            data = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return False
        kid = data.get("kid") if isinstance(data, dict) else None
        return isinstance(kid, str) and kid.startswith(KID_PREFIX)

    async def verify(self, token: str, snap: DirectorySnapshot, now: float | None = None) -> tuple[Principal, float]:
        """The principal and the token's expiry, or InvalidGatewayToken naming what is wrong."""
        now = time.time() if now is None else now
        try:
            decoded = jwt.decode(token, self.signing.verification_keys(), algorithms=[ALGORITHM])
        except (JoseError, ValueError):
            raise InvalidGatewayToken("invalid token") from None
        if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidGatewayToken("invalid token")
        claims = decoded.claims
        exp, sub, aud, fam, client_id = (claims.get(k) for k in ("exp", "sub", "aud", "fam", "client_id"))
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
            raise InvalidGatewayToken("token expired")
        if not (isinstance(sub, str) and isinstance(aud, str) and isinstance(fam, str) and isinstance(client_id, str)):
            raise InvalidGatewayToken("invalid token")
        server = server_of_resource(aud)
        if server is None:
            raise InvalidGatewayToken("invalid token")
        query = (
            select(
                gw_grants.c.revoked_at, gw_grants.c.key_id, api_keys.c.id, api_keys.c.revoked_at, api_keys.c.expires_at
            )
            .outerjoin(api_keys, api_keys.c.id == gw_grants.c.key_id)
            .where(gw_grants.c.id == fam)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row[0] is not None:
            raise InvalidGatewayToken("token revoked")
        _, key_id, found_key, key_revoked_at, key_expires_at = row
        if key_id is not None:
            # Signed in with an API key: the sign-in is only as good as that key (attack probe).
            if found_key is None or not sign_in_key_usable(key_revoked_at, key_expires_at, now):
                raise InvalidGatewayToken("token revoked")
            if key_expires_at is not None:
                exp = min(exp, key_expires_at)  # a verified token is remembered no longer than its key lasts
        principal = principal_for(sub, snap, Credential(CredentialKind.GATEWAY_OAUTH, client_id))
        if principal is None:
            raise InvalidGatewayToken("invalid token")  # the account is gone
        principal = Principal(
            kind=principal.kind,
            name=principal.name,
            credential=principal.credential,
            email=principal.email,
            teams=principal.teams,
            servers=frozenset({server}),
            claims={"aud": aud, "exp": exp, "client_id": client_id, "fam": fam},
            token=token,
        )
        return principal, float(exp)


def sign_in_key_usable(revoked_at: float | None, expires_at: float | None, now: float) -> bool:
    """Whether the API key a sign-in was made with may still be used (as `KeyRecord.usable`)."""
    return revoked_at is None and (expires_at is None or now < expires_at)


async def revoke_sign_ins(conn: AsyncConnection, principal_id: str, why: str) -> int:
    """End every gateway OAuth sign-in of a principal (its user or service account was deleted), in the caller's
    transaction, which must bump the "auth" revision: processes then drop the tokens they had verified."""
    live = gw_grants.c.principal == principal_id, gw_grants.c.revoked_at.is_(None)
    ids = [r[0] for r in await conn.execute(select(gw_grants.c.id).where(*live))]
    if not ids:
        return 0
    await conn.execute(update(gw_grants).where(gw_grants.c.id.in_(ids)).values(revoked_at=time.time(), revoked_why=why))
    await conn.execute(delete(gw_refresh_tokens).where(gw_refresh_tokens.c.grant_id.in_(ids)))
    return len(ids)


def principal_for(principal_id: str, snap: DirectorySnapshot, credential: Credential) -> Principal | None:
    """The principal an id of the web sign-in names (`user:…`, `sa:…`), as an API key of theirs would make
    it; None for any other kind (they cannot sign in a client) or a service account that no longer exists."""
    kind, _, name = principal_id.partition(":")
    if not name:
        return None
    if kind == PrincipalKind.USER.value:
        user = snap.users.get(name)
        email = user.email if user else (name if "@" in name else None)
        return Principal(
            kind=PrincipalKind.USER, name=name, credential=credential, email=email, teams=snap.user_teams(name)
        )
    if kind == PrincipalKind.SERVICE_ACCOUNT.value:
        sa = snap.service_accounts.get(name)
        if sa is None:
            return None
        return Principal(
            kind=PrincipalKind.SERVICE_ACCOUNT, name=sa.id, credential=credential, teams=frozenset(sa.teams)
        )
    return None

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
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.identity.directory import Snapshot as DirectorySnapshot
from manifold.identity.gateway_tables import gw_grants
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.security.signing import ALGORITHM, KID_PREFIX, SigningKeys

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
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(gw_grants.c.revoked_at).where(gw_grants.c.id == fam))).first()
        if row is None or row.revoked_at is not None:
            raise InvalidGatewayToken("token revoked")
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

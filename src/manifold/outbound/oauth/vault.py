"""The vault: each user's OAuth tokens for each upstream, encrypted at rest.

Every lookup is keyed by (user, upstream) and nothing else: a call can only ever get the tokens of the user
it runs for (the worst bug class in gateways is "any valid token for this server"). The access and refresh
tokens are one encrypted JSON blob; expiry, scopes, issuer and status stay readable for listings.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.outbound.oauth.tables import CONNECTIONS_SCOPE, oauth_connections, spent_links
from manifold.security.crypto import Cipher
from manifold.store import revisions


class ConnectionStatus(str, enum.Enum):
    OK = "ok"
    BROKEN = "broken"  # the refresh token was refused: the user must connect again


class EndpointPolicy(str, enum.Enum):
    """How the gateway may call a connection's token and revocation endpoints again."""

    TRUSTED = "trusted"  # from configuration, or a configured issuer's metadata
    INSECURE = "insecure"  # discovered, for an upstream with allow_insecure_discovery
    CHECKED = "checked"  # discovered: https and public addresses only


@dataclass(frozen=True)
class Connection:
    user: str  # the principal id
    upstream: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None  # Unix seconds; None when the authorization server gave no lifetime
    scopes: list[str]
    token_type: str
    issuer: str | None
    client_id: str | None
    created_at: float
    updated_at: float
    status: ConnectionStatus = ConnectionStatus.OK
    # Where to refresh and revoke, remembered from the authorization (discovery may not be repeated).
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    resource: str | None = None
    endpoint_policy: EndpointPolicy = EndpointPolicy.CHECKED

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (time.time() if now is None else now)

    def with_tokens(self, **changes: Any) -> Connection:
        return replace(self, **changes)


class Vault:
    def __init__(self, engine: AsyncEngine, cipher: Cipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def get(self, user: str, upstream: str) -> Connection | None:
        query = select(oauth_connections).where(
            oauth_connections.c.user == user, oauth_connections.c.upstream == upstream
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._connection(row)

    async def put(self, connection: Connection) -> None:
        """Store (insert or replace) the connection."""
        values = self._values(connection)
        key = (oauth_connections.c.user == connection.user, oauth_connections.c.upstream == connection.upstream)
        for _ in range(2):
            try:
                async with self._engine.begin() as conn:
                    result = await conn.execute(update(oauth_connections).where(*key).values(**values))
                    if result.rowcount == 0:
                        await conn.execute(
                            oauth_connections.insert().values(
                                user=connection.user, upstream=connection.upstream, **values
                            )
                        )
                return
            except IntegrityError:  # inserted concurrently by someone else: update theirs
                continue
        raise RuntimeError(f"could not store the connection of {connection.user} to {connection.upstream}")

    async def lock_refresh(self, user: str, upstream: str, lease_seconds: float) -> bool:
        """Take the turn to refresh this connection, once across every process sharing the database (replicas,
        the CLI): a row in `spent_links` keyed by (user, upstream), inserted by whoever comes first — a
        conditional insert, the same on SQLite and PostgreSQL. False while another process holds it; a turn
        whose holder let `lease_seconds` pass (it died) is taken over. Pair with `unlock_refresh`."""
        digest = _refresh_lock(user, upstream)
        for _ in range(2):
            now = time.time()
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(insert(spent_links).values(digest=digest, expires_at=now + lease_seconds))
                return True
            except IntegrityError:
                async with self._engine.begin() as conn:
                    stale = delete(spent_links).where(spent_links.c.digest == digest, spent_links.c.expires_at < now)
                    if not (await conn.execute(stale)).rowcount:
                        return False
        return False

    async def unlock_refresh(self, user: str, upstream: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(spent_links).where(spent_links.c.digest == _refresh_lock(user, upstream)))

    async def refresh_locked(self, user: str, upstream: str) -> bool:
        """Whether a process holds the turn to refresh this connection (and its lease has not run out)."""
        query = select(spent_links.c.digest).where(
            spent_links.c.digest == _refresh_lock(user, upstream), spent_links.c.expires_at >= time.time()
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def mark_broken(self, user: str, upstream: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(oauth_connections)
                .where(oauth_connections.c.user == user, oauth_connections.c.upstream == upstream)
                .values(status=ConnectionStatus.BROKEN.value, updated_at=time.time())
            )

    async def delete(self, user: str, upstream: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(oauth_connections).where(
                    oauth_connections.c.user == user, oauth_connections.c.upstream == upstream
                )
            )
            if result.rowcount:
                # A running gateway elsewhere may hold this token in memory: make it look again.
                await revisions.bump(conn, CONNECTIONS_SCOPE)
        return bool(result.rowcount)

    async def list(self, user: str | None = None) -> list[Connection]:
        query = select(oauth_connections).order_by(oauth_connections.c.user, oauth_connections.c.upstream)
        if user is not None:
            query = query.where(oauth_connections.c.user == user)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._connection(row) for row in rows]

    async def versions(self) -> dict[tuple[str, str], float]:
        """(user, upstream) → updated_at of every stored connection, without decrypting anything."""
        query = select(oauth_connections.c.user, oauth_connections.c.upstream, oauth_connections.c.updated_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(row.user, row.upstream): row.updated_at for row in rows}

    def _values(self, c: Connection) -> dict[str, Any]:
        tokens = json.dumps({"access_token": c.access_token, "refresh_token": c.refresh_token})
        return {
            "tokens": self._cipher.encrypt_text(tokens),
            "token_type": c.token_type,
            "expires_at": c.expires_at,
            "scopes": list(c.scopes),
            "issuer": c.issuer,
            "client_id": c.client_id,
            "token_endpoint": c.token_endpoint,
            "revocation_endpoint": c.revocation_endpoint,
            "resource": c.resource,
            "endpoint_policy": EndpointPolicy(c.endpoint_policy).value,
            "status": ConnectionStatus(c.status).value,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
        }

    def _connection(self, row: Any) -> Connection:
        tokens = json.loads(self._cipher.decrypt_text(row.tokens))
        return Connection(
            user=row.user,
            upstream=row.upstream,
            access_token=tokens["access_token"],
            refresh_token=tokens.get("refresh_token"),
            expires_at=row.expires_at,
            scopes=list(row.scopes or []),
            token_type=row.token_type,
            issuer=row.issuer,
            client_id=row.client_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            status=ConnectionStatus(row.status),
            token_endpoint=row.token_endpoint,
            revocation_endpoint=row.revocation_endpoint,
            resource=row.resource,
            endpoint_policy=EndpointPolicy(row.endpoint_policy),
        )


def _refresh_lock(user: str, upstream: str) -> str:
    """The `spent_links` key of the turn to refresh (user, upstream): "r-" and 62 hex digits of a SHA-256."""
    return "r-" + hashlib.sha256(f"{user}\n{upstream}".encode()).hexdigest()[:62]

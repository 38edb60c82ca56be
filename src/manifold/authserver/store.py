"""What the gateway's authorization server keeps in the database (identity/gateway_tables.py): clients that
registered, codes in flight, grants (one per exchanged code: the family of its refresh tokens and access
tokens), refresh tokens, and consents. Every revocation bumps the "auth" revision in the same transaction,
so every gateway process drops the access tokens it had verified (store/revisions.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.identity.gateway_tables import gw_clients, gw_codes, gw_consents, gw_grants, gw_refresh_tokens
from manifold.identity.gateway_tokens import sign_in_key_usable
from manifold.store import revisions
from manifold.store.db import api_keys, write_transaction

CLIENT_NAME_LENGTH = 200  # gw_oauth_consents.client_name

UNUSED_CLIENT_SECONDS = 86_400.0
# How far `live_successor` follows a chain of rotations made within one reuse window.
MAX_SUCCESSOR_STEPS = 16


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class CodeRow:
    client_id: str
    principal: str
    redirect_uri: str
    scope: str
    resource: str
    code_challenge: str
    code_challenge_method: str
    expires_at: float
    grant_id: str | None = None  # set once exchanged
    key_id: str | None = None  # the API key the person signed in with (None: through the IdP)


@dataclass(frozen=True)
class RefreshRow:
    grant_id: str
    client_id: str
    principal: str
    resource: str
    scope: str
    expires_at: float
    used_at: float | None
    revoked: bool
    key_usable: bool = True  # False: the API key the sign-in was made with is revoked, expired or gone


@dataclass(frozen=True)
class Consent:
    principal: str
    client_id: str
    client_name: str | None
    resources: tuple[str, ...]
    updated_at: float


class AuthStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- clients (RFC 7591) ----

    async def registered_client(self, client_id: str) -> tuple[dict[str, Any], str | None] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(gw_clients).where(gw_clients.c.client_id == client_id))).first()
        return None if row is None else (dict(row.metadata), row.secret_hash)

    async def register_client(self, client_id: str, metadata: dict[str, Any], secret_hash: str | None) -> None:
        """Store a registered client, forgetting those that registered over a day ago and never got as far
        as a code (registration is open: what nobody used must not pile up)."""
        now = time.time()
        unused = (
            gw_clients.c.created_at < now - UNUSED_CLIENT_SECONDS,
            ~exists().where(gw_codes.c.client_id == gw_clients.c.client_id),
            ~exists().where(gw_grants.c.client_id == gw_clients.c.client_id),
            ~exists().where(gw_consents.c.client_id == gw_clients.c.client_id),
        )
        async with self.engine.begin() as conn:
            await conn.execute(delete(gw_clients).where(*unused))
            await conn.execute(
                gw_clients.insert().values(
                    client_id=client_id, metadata=metadata, secret_hash=secret_hash, created_at=time.time()
                )
            )

    # ---- codes ----

    async def save_code(self, code: str, row: CodeRow) -> None:
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(delete(gw_codes).where(gw_codes.c.expires_at < now))  # prune as we go
            await conn.execute(gw_codes.insert().values(code_hash=digest(code), **row.__dict__))

    async def code(self, code: str) -> CodeRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(gw_codes).where(gw_codes.c.code_hash == digest(code)))).first()
        if row is None:
            return None
        return CodeRow(
            client_id=row.client_id,
            principal=row.principal,
            redirect_uri=row.redirect_uri,
            scope=row.scope,
            resource=row.resource,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
            expires_at=row.expires_at,
            grant_id=row.grant_id,
            key_id=row.key_id,
        )

    async def exchange_code(
        self, code: str, grant_id: str, row: CodeRow, refresh_token: str | None, refresh_expires_at: float
    ) -> bool:
        """Spend the code and start its grant, in one transaction. False: the code was spent already (two
        exchanges raced, or it was used before), and nothing is written."""
        async with write_transaction(self.engine) as conn:
            spent = await conn.execute(
                update(gw_codes)
                .where(gw_codes.c.code_hash == digest(code), gw_codes.c.grant_id.is_(None))
                .values(grant_id=grant_id)
            )
            if spent.rowcount != 1:
                return False
            await conn.execute(
                gw_grants.insert().values(
                    id=grant_id,
                    client_id=row.client_id,
                    principal=row.principal,
                    resource=row.resource,
                    scope=row.scope,
                    created_at=time.time(),
                    key_id=row.key_id,
                )
            )
            if refresh_token is not None:
                await conn.execute(
                    gw_refresh_tokens.insert().values(
                        token_hash=digest(refresh_token), grant_id=grant_id, expires_at=refresh_expires_at
                    )
                )
        return True

    # ---- refresh tokens ----

    async def refresh(self, token: str) -> RefreshRow | None:
        query = (
            select(
                gw_refresh_tokens,
                gw_grants,
                api_keys.c.id.label("signing_key"),
                api_keys.c.revoked_at.label("key_revoked_at"),
                api_keys.c.expires_at.label("key_expires_at"),
            )
            .join(gw_grants, gw_grants.c.id == gw_refresh_tokens.c.grant_id)
            .outerjoin(api_keys, api_keys.c.id == gw_grants.c.key_id)
            .where(gw_refresh_tokens.c.token_hash == digest(token))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        key_usable = row.key_id is None or (
            row.signing_key is not None and sign_in_key_usable(row.key_revoked_at, row.key_expires_at, time.time())
        )
        return RefreshRow(
            grant_id=row.grant_id,
            client_id=row.client_id,
            principal=row.principal,
            resource=row.resource,
            scope=row.scope,
            expires_at=row.expires_at,
            used_at=row.used_at,
            revoked=row.revoked_at is not None,
            key_usable=key_usable,
        )

    async def rotate(self, old: str, grant_id: str, new: str, expires_at: float) -> bool:
        """Mark `old` used and store `new` in its family. False: `old` was used meanwhile (a race or a replay)."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            used = await conn.execute(
                update(gw_refresh_tokens)
                .where(gw_refresh_tokens.c.token_hash == digest(old), gw_refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
            )
            if used.rowcount != 1:
                return False
            await conn.execute(
                delete(gw_refresh_tokens).where(
                    gw_refresh_tokens.c.grant_id == grant_id, gw_refresh_tokens.c.expires_at < now
                )
            )
            await conn.execute(
                gw_refresh_tokens.insert().values(token_hash=digest(new), grant_id=grant_id, expires_at=expires_at)
            )
        return True

    async def live_successor(self, grant_id: str, token: str, successors: Callable[[str], list[str]]) -> str | None:
        """The refresh token a reuse of rotated `token` within the window hands out again (nothing is stored):
        its successor as its rotation stored it (`successors(token)`: the candidates, one per secret key), and if
        that one was rotated too meanwhile (a third connection of the same application), its successor, and so
        on to the one not yet used, so that the client is not handed a token that signs it out when it is
        presented after the window. None: the sign-in `grant_id` was revoked, or a rotation used a secret key
        this process does not have."""
        query = (
            select(gw_refresh_tokens.c.token_hash, gw_refresh_tokens.c.used_at)
            .join(gw_grants, gw_grants.c.id == gw_refresh_tokens.c.grant_id)
            .where(gw_refresh_tokens.c.grant_id == grant_id, gw_grants.c.revoked_at.is_(None))
        )
        async with self.engine.connect() as conn:
            for _ in range(MAX_SUCCESSOR_STEPS):
                by_hash = {digest(candidate): candidate for candidate in successors(token)}
                row = (await conn.execute(query.where(gw_refresh_tokens.c.token_hash.in_(list(by_hash))))).first()
                if row is None:
                    return None
                token = by_hash[row.token_hash]
                if row.used_at is None:
                    return token
        return None  # a chain this long within one reuse window is no application's own connections

    # ---- revocation ----

    async def revoke_grant(self, grant_id: str, why: str) -> bool:
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                update(gw_grants)
                .where(gw_grants.c.id == grant_id, gw_grants.c.revoked_at.is_(None))
                .values(revoked_at=time.time(), revoked_why=why)
            )
            if done.rowcount:
                await conn.execute(delete(gw_refresh_tokens).where(gw_refresh_tokens.c.grant_id == grant_id))
                await revisions.bump(conn, revisions.AUTH)
        return bool(done.rowcount)

    # ---- consents ----

    async def consent(self, principal: str, client_id: str) -> Consent | None:
        query = select(gw_consents).where(gw_consents.c.principal == principal, gw_consents.c.client_id == client_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _consent(row)

    async def consents(self, principal: str | None = None) -> list[Consent]:
        query = select(gw_consents).order_by(gw_consents.c.principal, gw_consents.c.client_id)
        if principal is not None:
            query = query.where(gw_consents.c.principal == principal)
        async with self.engine.connect() as conn:
            return [_consent(row) for row in await conn.execute(query)]

    async def give_consent(self, principal: str, client_id: str, client_name: str | None, resource: str) -> None:
        now = time.time()
        if client_name is not None:  # a label the client chose: clipped to its column (PostgreSQL enforces it)
            client_name = client_name[:CLIENT_NAME_LENGTH]
        async with write_transaction(self.engine) as conn:
            where = (gw_consents.c.principal == principal, gw_consents.c.client_id == client_id)
            row = (await conn.execute(select(gw_consents.c.resources).where(*where))).first()
            if row is None:
                await conn.execute(
                    gw_consents.insert().values(
                        principal=principal,
                        client_id=client_id,
                        client_name=client_name,
                        resources=[resource],
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                resources = sorted({*row.resources, resource})
                await conn.execute(
                    update(gw_consents)
                    .where(*where)
                    .values(resources=resources, client_name=client_name, updated_at=now)
                )

    async def revoke_client(self, principal: str, client_id: str) -> bool:
        """Forget the consent and revoke every grant of this client for this person, at once."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            forgot = await conn.execute(
                delete(gw_consents).where(gw_consents.c.principal == principal, gw_consents.c.client_id == client_id)
            )
            grants = [
                row.id
                for row in await conn.execute(
                    select(gw_grants.c.id).where(
                        gw_grants.c.principal == principal,
                        gw_grants.c.client_id == client_id,
                        gw_grants.c.revoked_at.is_(None),
                    )
                )
            ]
            if grants:
                await conn.execute(
                    update(gw_grants)
                    .where(gw_grants.c.id.in_(grants))
                    .values(revoked_at=now, revoked_why="client revoked")
                )
                await conn.execute(delete(gw_refresh_tokens).where(gw_refresh_tokens.c.grant_id.in_(grants)))
            await conn.execute(
                delete(gw_codes).where(gw_codes.c.principal == principal, gw_codes.c.client_id == client_id)
            )
            if forgot.rowcount or grants:
                await revisions.bump(conn, revisions.AUTH)
        return bool(forgot.rowcount or grants)


def _consent(row: Any) -> Consent:
    return Consent(row.principal, row.client_id, row.client_name, tuple(row.resources), row.updated_at)

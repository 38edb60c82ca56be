"""Gateway API keys (personal access tokens) and service-account tokens.

A token is `mfk_<id>_<secret>` (user key) or `mfs_<id>_<secret>` (service-account token): the prefix makes a
leaked token recognisable to secret scanners, the id finds the row without a hash index scan and names the
key in lists and audit rows, and the secret is 256 random bits. Only SHA-256 of the whole token is stored;
verification compares hashes in constant time. The development key (`mfd_…`, from the embedded default) is
a user key with the fixed id `dev`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.store import revisions
from manifold.store.db import api_keys


class OwnerKind(str, enum.Enum):
    USER = "user"
    SERVICE_ACCOUNT = "sa"


PREFIX = {OwnerKind.USER: "mfk", OwnerKind.SERVICE_ACCOUNT: "mfs"}
DEV_PREFIX = "mfd_"
DEV_KEY_ID = "dev"
DEV_USER = "dev"
_TOKEN = re.compile(r"^(mfk|mfs)_([a-z0-9]{12})_([A-Za-z0-9_-]{20,})$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id a token claims to be, or None when it is not shaped like one of ours."""
    if token.startswith(DEV_PREFIX):
        return DEV_KEY_ID
    m = _TOKEN.match(token)
    return m.group(2) if m else None


def new_token(kind: OwnerKind) -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX[kind]}_{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    owner_kind: OwnerKind
    owner_id: str
    key_hash: str
    servers: tuple[str, ...] | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.key_hash.encode(), hash_token(token).encode())

    def usable(self, now: float) -> str | None:
        """None when the key may be used now, else why not (shown to nobody but the log and `keys list`)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def public(self) -> dict:
        """What `keys list` and the admin API show: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": f"{self.owner_kind.value}:{self.owner_id}",
            "servers": list(self.servers) if self.servers is not None else None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "state": self.usable(time.time()) or "active",
        }


def _record(row) -> KeyRecord:  # type: ignore[no-untyped-def]
    return KeyRecord(
        id=row.id,
        name=row.name,
        owner_kind=OwnerKind(row.owner_kind),
        owner_id=row.owner_id,
        key_hash=row.key_hash,
        servers=tuple(row.servers) if row.servers is not None else None,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def parse_duration(text: str) -> float:
    """`90d`, `12h`, `30m`, `3600s` → seconds. Zero is refused: a key that expires at once is a mistake, and
    treating it as "never" would be a dangerous one."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not a duration; use e.g. 90d, 12h, 30m")
    seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"'{text}' is no lifetime; give a duration longer than zero, e.g. 90d")
    return seconds


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        kind: OwnerKind,
        owner_id: str,
        name: str,
        *,
        expires_in: float | None = None,
        servers: list[str] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key; the token is returned once and never stored."""
        key_id, token = new_token(kind)
        now = time.time()
        values = dict(
            id=key_id,
            name=name,
            owner_kind=kind.value,
            owner_id=owner_id,
            key_hash=hash_token(token),
            servers=servers,
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**values))
            await revisions.bump(conn, revisions.AUTH)
        return await self.get(key_id), token  # type: ignore[return-value]

    async def register_dev_key(self, token: str) -> None:
        """(Re)register the development key of the embedded default under the fixed id `dev`."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(api_keys.c.key_hash).where(api_keys.c.id == DEV_KEY_ID))).first()
            if row is not None and row.key_hash == hash_token(token):
                return
            await conn.execute(api_keys.delete().where(api_keys.c.id == DEV_KEY_ID))
            await conn.execute(
                insert(api_keys).values(
                    id=DEV_KEY_ID,
                    name="development key",
                    owner_kind=OwnerKind.USER.value,
                    owner_id=DEV_USER,
                    key_hash=hash_token(token),
                    created_at=time.time(),
                )
            )
            await revisions.bump(conn, revisions.AUTH)

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _record(row) if row else None

    async def list(self, *, owner: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        q = select(api_keys).order_by(api_keys.c.created_at)
        if owner is not None:
            kind, _, owner_id = owner.partition(":")
            q = q.where(api_keys.c.owner_kind == kind, api_keys.c.owner_id == owner_id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(q)]

    async def revoke(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            if result.rowcount:
                await revisions.bump(conn, revisions.AUTH)
        return bool(result.rowcount)

    async def revoke_all_of(self, kind: OwnerKind, owner_id: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.owner_kind == kind.value, api_keys.c.owner_id == owner_id)
                .where(api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            if result.rowcount:
                await revisions.bump(conn, revisions.AUTH)
        return result.rowcount

    async def touch(self, used: dict[str, float]) -> None:
        """Write last-used times collected in memory (not an auth change: no revision bump)."""
        if not used:
            return
        async with self.engine.begin() as conn:
            for key_id, at in used.items():
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))

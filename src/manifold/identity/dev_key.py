"""The single development key that stands in for real identity until API keys and IdPs land.

The key is generated once per state dir and kept in `<state_dir>/dev-key` (mode 0600) so that `make run`
can print it again and client configs survive a restart; the database holds only its SHA-256.
`MANIFOLD_DEV_KEY` overrides it (tests use that). A request is admitted when the bearer's hash matches,
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.store.db import api_keys

KEY_PREFIX = "mfd_"
ENV_VAR = "MANIFOLD_DEV_KEY"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_or_create(state_dir: Path) -> str:
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return from_env
    path = state_dir / "dev-key"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


async def register(engine: AsyncEngine, key: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(api_keys).where(api_keys.c.id == "dev"))
        await conn.execute(
            insert(api_keys).values(id="dev", name="development key", principal="dev", key_hash=hash_key(key))
        )


@dataclass(frozen=True)
class Principal:
    id: str
    source: str


class DevKeyAuth:
    def __init__(self, key_hash: str | None) -> None:
        self._hash = key_hash.encode() if key_hash else None

    def authenticate(self, authorization: str | None) -> Principal | None:
        if self._hash is None:
            return Principal(id="anonymous", source="none")
        if not authorization or not authorization[:7].lower() == "bearer ":
            return None
        presented = hashlib.sha256(authorization[7:].strip().encode()).hexdigest().encode()
        if hmac.compare_digest(presented, self._hash):
            return Principal(id="dev", source="dev-key")
        return None

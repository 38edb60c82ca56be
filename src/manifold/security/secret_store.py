"""The gateway's encrypted secret store: the `secret:NAME` values in upstream auth (static headers and
bearers, OAuth client secrets), set with `manifold secrets set NAME`.

Values are encrypted with the gateway's `Cipher` in the database. The gateway loads them all into memory at
startup (`load`), so the credential resolver looks them up synchronously (`lookup`) without a query per call;
a change made by the CLI bumps the `secrets` revision so a running gateway loads them again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.security.crypto import Cipher
from manifold.security.tables import SECRETS_SCOPE, stored_secrets
from manifold.store import revisions

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class UnknownSecret(LookupError):
    """`secret:NAME` names nothing in the store."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret '{name}' is not in the secret store (add it with `manifold secrets set {name}`)")
        self.name = name


class InvalidSecretName(ValueError):
    pass


@dataclass(frozen=True)
class SecretInfo:
    name: str
    created_at: float
    updated_at: float


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidSecretName(
            f"secret name '{name[:64]}' is not valid: use 1-128 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
        )
    return name


class SecretStore:
    def __init__(self, engine: AsyncEngine, cipher: Cipher) -> None:
        self._engine = engine
        self._cipher = cipher
        self._values: dict[str, str] = {}

    async def set(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            raise ValueError(f"secret '{name}': the value is empty")
        now = time.time()
        token = self._cipher.encrypt_text(value)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(stored_secrets).where(stored_secrets.c.name == name).values(value=token, updated_at=now)
            )
            if result.rowcount == 0:
                await conn.execute(
                    stored_secrets.insert().values(name=name, value=token, created_at=now, updated_at=now)
                )
            await revisions.bump(conn, SECRETS_SCOPE)
        self._values[name] = value

    async def get_all(self) -> dict[str, str]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(stored_secrets.c.name, stored_secrets.c.value))).all()
        return {row.name: self._cipher.decrypt_text(row.value) for row in rows}

    async def delete(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(stored_secrets).where(stored_secrets.c.name == name))
            if result.rowcount:
                await revisions.bump(conn, SECRETS_SCOPE)
        self._values.pop(name, None)
        return bool(result.rowcount)

    async def list(self) -> list[SecretInfo]:
        """Names and dates only: listing never decrypts."""
        query = select(stored_secrets.c.name, stored_secrets.c.created_at, stored_secrets.c.updated_at).order_by(
            stored_secrets.c.name
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [SecretInfo(row.name, row.created_at, row.updated_at) for row in rows]

    async def load(self) -> None:
        """Read every secret into memory for `lookup` (at startup, and when the `secrets` revision moves)."""
        self._values = await self.get_all()

    def lookup(self, name: str) -> str:
        """The value of `secret:NAME`, from memory (call `load` first). Raises UnknownSecret."""
        try:
            return self._values[name]
        except KeyError:
            raise UnknownSecret(name) from None

"""Grants created at run time (CLI, admin API), kept in the database next to those in `manifold.yaml`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import GrantConfig
from manifold.store import revisions
from manifold.store.db import grants


@dataclass(frozen=True)
class StoredGrant:
    id: str
    config: GrantConfig
    source: str  # "manifold.yaml" | "api"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, **self.config.model_dump(exclude_none=True)}


def file_grants(configs: list[GrantConfig]) -> list[StoredGrant]:
    """File grants are named by position (`grants[0]`, ...), as `manifold check` and `explain` show them."""
    return [StoredGrant(f"grants[{i}]", g, "manifold.yaml") for i, g in enumerate(configs)]


class GrantRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list(self) -> list[StoredGrant]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(grants).order_by(grants.c.created_at, grants.c.id))
            return [
                StoredGrant(
                    r.id,
                    GrantConfig(who=r.who, claims=r.claims or {}, what=list(r.what), description=r.description),
                    "api",
                )
                for r in rows
            ]

    async def add(self, grant: GrantConfig) -> StoredGrant:
        grant_id = "g-" + secrets.token_hex(4)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(grants).values(
                    id=grant_id,
                    who=grant.who,
                    claims=dict(grant.claims),
                    what=list(grant.what),
                    description=grant.description,
                )
            )
            await revisions.bump(conn, revisions.AUTH)
        return StoredGrant(grant_id, grant, "api")

    async def remove(self, grant_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(grants).where(grants.c.id == grant_id))
            if result.rowcount:
                await revisions.bump(conn, revisions.AUTH)
        return bool(result.rowcount)

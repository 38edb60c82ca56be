"""Grants created at run time (CLI, admin API), kept in the database next to those in `manifold.yaml`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
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


_DEFAULTS = GrantConfig(who="-", what=[])


def _values(grant: GrantConfig) -> dict[str, object]:
    """A grant's columns. The approval gate's are null when they hold the default, so a grant without a gate
    stores exactly what it did before the gate had columns (migration 0005)."""
    defaults = _DEFAULTS
    return {
        "who": grant.who,
        "claims": dict(grant.claims),
        "what": list(grant.what),
        "description": grant.description,
        "require_approval": list(grant.require_approval) or None,
        "approvers": grant.approvers,
        "approval_timeout_seconds": _unless(grant.approval_timeout_seconds, defaults.approval_timeout_seconds),
        "approval_valid_seconds": _unless(grant.approval_valid_seconds, defaults.approval_valid_seconds),
        "self_approval": grant.self_approval or None,
    }


def _unless(value: float, default: float) -> float | None:
    return None if value == default else value


def _config(r: Row[Any]) -> GrantConfig:
    gate: dict[str, Any] = {
        "require_approval": r.require_approval,
        "approvers": r.approvers,
        "approval_timeout_seconds": r.approval_timeout_seconds,
        "approval_valid_seconds": r.approval_valid_seconds,
        "self_approval": r.self_approval,
    }
    return GrantConfig(
        who=r.who,
        claims=r.claims or {},
        what=list(r.what),
        description=r.description,
        **{k: v for k, v in gate.items() if v is not None},
    )


class GrantRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list(self) -> list[StoredGrant]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(grants).order_by(grants.c.created_at, grants.c.id))
            return [StoredGrant(r.id, _config(r), "api") for r in rows]

    async def get(self, grant_id: str) -> StoredGrant | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(grants).where(grants.c.id == grant_id))).first()
        return None if row is None else StoredGrant(row.id, _config(row), "api")

    async def add(self, grant: GrantConfig) -> StoredGrant:
        grant_id = "g-" + secrets.token_hex(4)
        async with self.engine.begin() as conn:
            await conn.execute(insert(grants).values(id=grant_id, **_values(grant)))
            await revisions.bump(conn, revisions.AUTH)
        return StoredGrant(grant_id, grant, "api")

    async def replace(self, grant_id: str, grant: GrantConfig) -> StoredGrant | None:
        """Store `grant` (already checked) in place of the grant `grant_id`; None when there is none."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(grants).where(grants.c.id == grant_id).values(**_values(grant)))
            if not result.rowcount:
                return None
            await revisions.bump(conn, revisions.AUTH)
        return StoredGrant(grant_id, grant, "api")

    async def remove(self, grant_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(grants).where(grants.c.id == grant_id))
            if result.rowcount:
                await revisions.bump(conn, revisions.AUTH)
        return bool(result.rowcount)

"""Where rate limits live in the database (docs/rate-limits.md): the rules made through the admin API, and on
PostgreSQL the buckets every replica draws from.

Rules: `rate_limit_rules`, one row per rule, its body the `RateLimitConfig` as JSON; every write bumps the
`rate_limits` revision scope in its transaction, so every replica reloads them (runtime/changes.py).

Buckets (PostgreSQL only): `rate_limit_buckets`, one row per bucket, keyed by a hash of (rule, principal /
server / tool). A call takes a token with one INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING per bucket
it draws from, in one transaction with the database's clock (`now()`), so replicas share one budget and their
clocks do not matter; a refusal rolls the transaction back (nothing taken). Cost: one transaction (BEGIN,
one statement per matching rule, COMMIT) per limited call; calls no rule matches touch nothing. Buckets
full again (`full_at` passed) are deleted at most once a minute, so the table holds only the recently used.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Float, String, Table, TextClause, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import RateLimitConfig
from manifold.store import revisions
from manifold.store.db import metadata

log = logging.getLogger(__name__)
SCOPE = "rate_limits"  # the revision scope bumped by every rule change
PRUNE_SECONDS = 60.0

rate_limit_rules = Table(
    "rate_limit_rules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("body", JSON, nullable=False),  # the RateLimitConfig without its id
    Column("created_at", Float, nullable=False),
)

rate_limit_buckets = Table(
    "rate_limit_buckets",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 hex of the rule's identity and the counted values
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # the database's clock, Unix seconds
    Column("full_at", Float, nullable=False),  # when the bucket is full again: the row can go
)


@dataclass(frozen=True)
class StoredRule:
    id: str
    config: RateLimitConfig
    source: str  # "manifold.yaml" | "api"


def file_rules(configs: list[RateLimitConfig]) -> list[StoredRule]:
    """Rules of manifold.yaml: their own `id`, else named by position (`rate_limits[0]`)."""
    return [StoredRule(c.id or f"rate_limits[{i}]", c, "manifold.yaml") for i, c in enumerate(configs)]


class RateLimitRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list(self) -> list[StoredRule]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(rate_limit_rules).order_by(rate_limit_rules.c.created_at))
            return [StoredRule(r.id, RateLimitConfig.model_validate({**r.body, "id": r.id}), "api") for r in rows]

    async def add(self, config: RateLimitConfig) -> StoredRule | None:
        """The stored rule; None when a rule with its id exists (also one stored a moment ago by a concurrent
        request, which a check before the insert cannot see)."""
        rule_id = config.id or "rl-" + secrets.token_hex(4)
        body = config.model_dump(exclude_none=True, exclude={"id"})
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(rate_limit_rules).values(id=rule_id, body=body, created_at=time.time()))
                await revisions.bump(conn, SCOPE)
        except IntegrityError:
            return None
        return StoredRule(rule_id, config.model_copy(update={"id": rule_id}), "api")

    async def exists(self, rule_id: str) -> bool:
        async with self.engine.connect() as conn:
            row = await conn.execute(select(rate_limit_rules.c.id).where(rate_limit_rules.c.id == rule_id))
            return row.first() is not None

    async def update(self, rule_id: str, config: RateLimitConfig) -> bool:
        body = config.model_dump(exclude_none=True, exclude={"id"})
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(rate_limit_rules).where(rate_limit_rules.c.id == rule_id).values(body=body)
            )
            if result.rowcount:
                await revisions.bump(conn, SCOPE)
        return bool(result.rowcount)

    async def remove(self, rule_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(rate_limit_rules).where(rate_limit_rules.c.id == rule_id))
            if result.rowcount:
                await revisions.bump(conn, SCOPE)
        return bool(result.rowcount)


def _typed(sql: str) -> TextClause:
    """asyncpg wants the numbers' type where PostgreSQL cannot infer it (`:burst - 1`)."""
    for name in ("burst", "refill"):
        sql = sql.replace(f":{name}", f"CAST(:{name} AS DOUBLE PRECISION)")
    return text(sql)


# One bucket: take a token if there is one. `now()` is the transaction's time on the database's clock.
_TAKE = _typed(
    """
    INSERT INTO rate_limit_buckets AS b (key, tokens, updated_at, full_at)
    VALUES (:key, :burst - 1, EXTRACT(EPOCH FROM now()), EXTRACT(EPOCH FROM now()) + 1 / :refill)
    ON CONFLICT (key) DO UPDATE
    SET tokens = LEAST(:burst, b.tokens + (EXTRACT(EPOCH FROM now()) - b.updated_at) * :refill) - 1,
        updated_at = EXTRACT(EPOCH FROM now()),
        full_at = EXTRACT(EPOCH FROM now())
            + (:burst - LEAST(:burst, b.tokens + (EXTRACT(EPOCH FROM now()) - b.updated_at) * :refill) + 1) / :refill
    WHERE LEAST(:burst, b.tokens + (EXTRACT(EPOCH FROM now()) - b.updated_at) * :refill) >= 1
    RETURNING b.tokens
    """
)
_LEVEL = _typed(
    "SELECT LEAST(:burst, tokens + (EXTRACT(EPOCH FROM now()) - updated_at) * :refill) "
    "FROM rate_limit_buckets WHERE key = :key"
)
_PRUNE = text("DELETE FROM rate_limit_buckets WHERE full_at < EXTRACT(EPOCH FROM now())")


class _Refused(Exception):
    def __init__(self, index: int, wait: float) -> None:
        self.index = index
        self.wait = wait


class SharedBuckets:
    """The buckets of every replica, in PostgreSQL. `take` answers None (every bucket gave a token) or
    (index of the first empty bucket, seconds until it has one)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pruned = 0.0
        self._warned = -PRUNE_SECONDS

    async def take(self, buckets: tuple[tuple[str, float, float], ...]) -> tuple[int, float] | None:
        """`buckets`: (key, burst, refill per second) for each bucket the call draws from. While the database
        cannot be reached calls pass (logged at most once a minute): a limit is not worth refusing everyone."""
        try:
            return await self._take(buckets)
        except (SQLAlchemyError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned > PRUNE_SECONDS:
                self._warned = now
                log.warning("rate limits not applied: the database did not answer (%s)", type(exc).__name__)
            return None

    async def _take(self, buckets: tuple[tuple[str, float, float], ...]) -> tuple[int, float] | None:
        try:
            async with self.engine.begin() as conn:
                for i, (key, burst, refill) in enumerate(buckets):
                    params: dict[str, Any] = {"key": key, "burst": burst, "refill": refill}
                    if (await conn.execute(_TAKE, params)).first() is None:
                        level = (await conn.execute(_LEVEL, params)).scalar()
                        tokens = float(level) if level is not None else 0.0
                        raise _Refused(i, max(0.0, (1.0 - tokens) / refill))
                now = time.monotonic()
                if now - self._pruned > PRUNE_SECONDS:
                    self._pruned = now
                    await conn.execute(_PRUNE)
        except _Refused as refused:  # the transaction is rolled back: nothing was taken
            return refused.index, refused.wait
        return None


def retry_seconds(wait: float) -> int:
    """The whole seconds a client is told to wait (at least 1: a Retry-After of 0 invites a busy loop)."""
    return max(1, math.ceil(wait))

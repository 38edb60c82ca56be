"""Approval requests (docs/approvals.md) in the database, so every replica sees the same request: the one the
caller's retry lands on may not be the one that held the call, nor the one the approver's browser reached.

One row per held call. Its life: `pending` → `approved` | `denied` (an approver decided) or `expired` (nobody
did in time); an approved row valid for one call becomes `used` when that call proceeds, and a denied or
expired row becomes `closed` once the caller has been told. Every change is one conditional UPDATE, so two
replicas (or two approvers) can never both win: a row is decided once and a one-call approval used once.
Times are Unix seconds (floats). Finished rows are deleted a day after they stopped mattering.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Float, Index, String, Table, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.store.db import metadata

KEEP_FINISHED_SECONDS = 86400.0


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"  # a one-call approval, spent
    CLOSED = "closed"  # a denial or expiry the caller has been told about


approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),  # random, in the approval page's URL
    Column("principal", String(400), nullable=False),  # the caller
    Column("server", String(64), nullable=False),
    Column("member", String(64), nullable=False),
    Column("upstream", String(64), nullable=False),
    Column("tool", String(400), nullable=False),  # as the caller named it
    Column("arguments", JSON, nullable=False),  # redacted (audit/redaction.py): what the approver sees
    Column("arguments_hash", String(64), nullable=False),  # SHA-256 of the real arguments: approves this call only
    Column("grant_label", String(400), nullable=False),  # the grant that asked for approval
    Column("approvers", String(400), nullable=False),  # its `approvers` selector
    Column("self_approval", Boolean, nullable=False),
    Column("valid_seconds", Float, nullable=False),  # 0: one call
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # a pending request expires then
    Column("decided_by", String(400)),
    Column("decided_at", Float),
    Column("valid_until", Float),  # an approval may be used until then
    Index("ix_approvals_call", "principal", "server", "tool", "arguments_hash"),
    Index("ix_approvals_expires", "expires_at"),
)


@dataclass(frozen=True)
class Approval:
    id: str
    principal: str
    server: str
    member: str
    upstream: str
    tool: str
    arguments: Mapping[str, Any]
    arguments_hash: str
    grant_label: str
    approvers: str
    self_approval: bool
    valid_seconds: float
    status: Status
    created_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    valid_until: float | None

    def current_status(self, now: float) -> Status:
        """The status as of `now`: a pending request past its expiry is expired (before anyone wrote so)."""
        if self.status is Status.PENDING and now >= self.expires_at:
            return Status.EXPIRED
        return self.status


@dataclass(frozen=True)
class NewApproval:
    principal: str
    server: str
    member: str
    upstream: str
    tool: str
    arguments: Mapping[str, Any]
    arguments_hash: str
    grant_label: str
    approvers: str
    self_approval: bool
    valid_seconds: float
    timeout_seconds: float


def _approval(row: Row[Any]) -> Approval:
    return Approval(
        id=row.id,
        principal=row.principal,
        server=row.server,
        member=row.member,
        upstream=row.upstream,
        tool=row.tool,
        arguments=row.arguments if isinstance(row.arguments, dict) else {},
        arguments_hash=row.arguments_hash,
        grant_label=row.grant_label,
        approvers=row.approvers,
        self_approval=bool(row.self_approval),
        valid_seconds=float(row.valid_seconds),
        status=Status(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        valid_until=row.valid_until,
    )


class ApprovalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, new: NewApproval, now: float | None = None) -> Approval:
        now = time.time() if now is None else now
        approval_id = secrets.token_urlsafe(24)
        values = {
            "id": approval_id,
            "principal": new.principal[:400],
            "server": new.server,
            "member": new.member,
            "upstream": new.upstream,
            "tool": new.tool[:400],
            "arguments": dict(new.arguments),
            "arguments_hash": new.arguments_hash,
            "grant_label": new.grant_label[:400],
            "approvers": new.approvers[:400],
            "self_approval": new.self_approval,
            "valid_seconds": new.valid_seconds,
            "status": Status.PENDING.value,
            "created_at": now,
            "expires_at": now + new.timeout_seconds,
        }
        async with self.engine.begin() as conn:
            # Bounded: what stopped mattering a day ago goes (the ix_approvals_expires index finds it).
            gone = now - KEEP_FINISHED_SECONDS
            await conn.execute(
                delete(approvals).where(
                    approvals.c.expires_at < gone,
                    or_(approvals.c.valid_until.is_(None), approvals.c.valid_until < gone),
                )
            )
            await conn.execute(insert(approvals).values(**values))
        return Approval(
            **{k: v for k, v in values.items() if k != "status"},
            status=Status.PENDING,
            decided_by=None,
            decided_at=None,
            valid_until=None,
        )

    async def pending(self, principal: str, now: float | None = None) -> int:
        """How many of this caller's requests wait for a decision now."""
        now = time.time() if now is None else now
        query = select(func.count()).where(
            approvals.c.principal == principal[:400],
            approvals.c.status == Status.PENDING.value,
            approvals.c.expires_at > now,
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def waiting(self, limit: int, now: float | None = None) -> list[Approval]:
        """The newest `limit` requests that wait for a decision now (the approvers' list)."""
        now = time.time() if now is None else now
        query = (
            select(approvals)
            .where(approvals.c.status == Status.PENDING.value, approvals.c.expires_at > now)
            .order_by(approvals.c.created_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_approval(row) for row in await conn.execute(query)]

    async def get(self, approval_id: str) -> Approval | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id[:64]))).first()
        return None if row is None else _approval(row)

    async def latest(self, principal: str, server: str, tool: str, arguments_hash: str) -> Approval | None:
        """The newest request for this very call (same caller, server, tool and arguments) that still says
        something: pending, approved, or decided but not yet told (used and closed ones do not)."""
        live = [Status.PENDING.value, Status.APPROVED.value, Status.DENIED.value, Status.EXPIRED.value]
        query = (
            select(approvals)
            .where(
                approvals.c.principal == principal[:400],
                approvals.c.server == server,
                approvals.c.tool == tool[:400],
                approvals.c.arguments_hash == arguments_hash,
                approvals.c.status.in_(live),
            )
            .order_by(approvals.c.created_at.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _approval(row)

    async def decide(self, approval_id: str, approver: str, approve: bool, now: float | None = None) -> Approval | None:
        """Approve or deny a pending, unexpired request; None when it is not (any longer) pending."""
        now = time.time() if now is None else now
        status = Status.APPROVED if approve else Status.DENIED
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id[:64]))).first()
            if row is None:
                return None
            # One approval, one call: usable until the request would have expired, at least a minute.
            window = row.valid_seconds if row.valid_seconds > 0 else max(row.expires_at - now, 60.0)
            changed = await conn.execute(
                update(approvals)
                .where(
                    approvals.c.id == approval_id[:64],
                    approvals.c.status == Status.PENDING.value,
                    approvals.c.expires_at > now,
                )
                # A denial holds nothing: no window (so a closed request still tells a denial from an approval).
                .values(
                    status=status.value,
                    decided_by=approver[:400],
                    decided_at=now,
                    valid_until=now + window if approve else None,
                )
            )
            if changed.rowcount != 1:
                return None
            row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id[:64]))).first()
        return None if row is None else _approval(row)

    async def use(self, approval: Approval, now: float | None = None) -> bool:
        """Whether an approved request lets this call through now; a one-call approval is spent by it (only
        one of two concurrent calls wins)."""
        now = time.time() if now is None else now
        if approval.status is not Status.APPROVED or approval.valid_until is None or approval.valid_until <= now:
            return False
        if approval.valid_seconds > 0:
            return True  # a window: any number of these calls until it ends
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval.id, approvals.c.status == Status.APPROVED.value)
                .values(status=Status.USED.value)
            )
        return changed.rowcount == 1

    async def close(self, approval: Approval) -> bool:
        """The caller has been told of a denial, an expiry or a spent window: the next such call asks anew.
        False when another replica told them first."""
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval.id, approvals.c.status == approval.status.value)
                .values(status=Status.CLOSED.value)
            )
        return changed.rowcount == 1

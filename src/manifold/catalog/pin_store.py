"""The `tool_pins` table (docs/pinning.md): per (upstream, tool) the approved definition and, while one is
waiting, the changed definition last seen. Shared by every replica and the CLI; declared on
`manifold.store.db.metadata` and created by migration 0002.

Approving bumps the `pins` revision (store/revisions.py), so every running gateway fetches its tool lists
again and serves the approved tools on its next request (runtime/changes.py); each approval is written to
`audit_events` in the same transaction, whoever approved (API, console or CLI).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import JSON, Column, Float, String, Table, and_, bindparam, delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from manifold.store import revisions
from manifold.store.db import audit_events, metadata, write_transaction

PINS_SCOPE = "pins"  # the revision bumped by an approval
FIRST_USE = "first use"  # approved_by of a tool approved the first time it was seen
KEEP_ABSENT = 10_000  # pins kept per upstream of tools it no longer lists (beyond: the newest first-use ones go)

tool_pins = Table(
    "tool_pins",
    metadata,
    Column("upstream", String(64), primary_key=True),
    Column("tool", String(400), primary_key=True),
    Column("approved_hash", String(64), nullable=False),  # sha256 hex of the canonical definition
    Column("approved", JSON, nullable=False),  # the approved definition (catalog/pinning.py `definition`)
    Column("approved_at", Float, nullable=False),  # unix time
    Column("approved_by", String(400), nullable=False),  # a principal id, or "first use"
    Column("pending_hash", String(64)),  # a changed definition waiting for approval (null: none)
    Column("pending", JSON),
    Column("seen_at", Float),  # when the pending definition was first seen
)


@dataclass(frozen=True, slots=True)
class StoredPin:
    upstream: str
    tool: str
    approved_hash: str
    approved: dict[str, Any]
    approved_at: float
    approved_by: str
    pending_hash: str | None
    pending: dict[str, Any] | None
    seen_at: float | None

    @property
    def changed(self) -> bool:
        return self.pending_hash is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "tool": self.tool,
            "status": "changed" if self.changed else "approved",
            "approved_hash": self.approved_hash,
            "approved_at": self.approved_at,
            "approved_by": self.approved_by,
            "pending_hash": self.pending_hash,
            "seen_at": self.seen_at,
        }


@dataclass(slots=True)
class Reconciled:
    pins: dict[str, StoredPin]  # tool name -> its pin after the review
    newly_changed: list[StoredPin] = field(default_factory=list)  # changes this review recorded first
    forgotten: int = 0  # pins of tools the upstream no longer lists, dropped beyond `keep_absent`


def _pin(row: RowMapping) -> StoredPin:
    return StoredPin(
        upstream=row["upstream"],
        tool=row["tool"],
        approved_hash=row["approved_hash"],
        approved=row["approved"],
        approved_at=row["approved_at"],
        approved_by=row["approved_by"],
        pending_hash=row["pending_hash"],
        pending=row["pending"],
        seen_at=row["seen_at"],
    )


class PinStore:
    def __init__(self, engine: AsyncEngine, *, audit: bool = True, keep_absent: int = KEEP_ABSENT) -> None:
        self._engine = engine
        self._audit = audit  # write approvals to audit_events (audit.enabled)
        self._keep_absent = keep_absent

    async def _read(self, conn: AsyncConnection, upstream_id: str) -> dict[str, StoredPin]:
        rows = (await conn.execute(select(tool_pins).where(tool_pins.c.upstream == upstream_id))).mappings()
        return {row["tool"]: _pin(row) for row in rows}

    async def reconcile(
        self, upstream_id: str, seen: dict[str, tuple[str, dict[str, Any]]], *, now: float
    ) -> Reconciled:
        """Compare what an upstream lists now (`seen`: tool name → (fingerprint, definition)) with its pins:
        a new tool is approved as it is (first use), a changed one recorded as pending, one changed back to
        its approved definition cleared. One read; a write transaction only when something is to be written
        (then read again inside it, so two replicas reviewing at once record each change once)."""
        async with self._engine.connect() as conn:
            pins = await self._read(conn, upstream_id)
        if not _work(pins, seen):
            return Reconciled(pins)
        newly_changed: list[StoredPin] = []
        # Written in bulk, a statement per kind of change: one statement per tool held the database's write
        # lock for ~45 s while an upstream's 100,000 tools were first approved, and every other writer waited.
        added: list[dict[str, Any]] = []
        cleared: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        async with write_transaction(self._engine) as conn:
            pins = await self._read(conn, upstream_id)
            for name, (digest, defn) in seen.items():
                pin = pins.get(name)
                if pin is None:
                    values = {
                        "upstream": upstream_id,
                        "tool": name,
                        "approved_hash": digest,
                        "approved": defn,
                        "approved_at": now,
                        "approved_by": FIRST_USE,
                        "pending_hash": None,
                        "pending": None,
                        "seen_at": None,
                    }
                    added.append(values)
                    pins[name] = StoredPin(**values)
                elif digest == pin.approved_hash:
                    if pin.pending_hash is not None:  # changed back: nothing waits any more
                        cleared.append({"k_upstream": upstream_id, "k_tool": name})
                        pins[name] = replace(pin, pending_hash=None, pending=None, seen_at=None)
                elif digest != pin.pending_hash:
                    changed.append(
                        {"k_upstream": upstream_id, "k_tool": name, "v_hash": digest, "v_defn": defn, "v_seen": now}
                    )
                    pins[name] = replace(pin, pending_hash=digest, pending=defn, seen_at=now)
                    newly_changed.append(pins[name])
            forgotten = 0
            if added:
                await conn.execute(tool_pins.insert(), added)
                forgotten = await self._forget_absent(conn, upstream_id, pins, seen)
            if cleared:
                await conn.execute(_BY_KEY.values(pending_hash=None, pending=None, seen_at=None), cleared)
            if changed:
                values = {
                    "pending_hash": bindparam("v_hash"),
                    "pending": bindparam("v_defn"),
                    "seen_at": bindparam("v_seen"),
                }
                await conn.execute(_BY_KEY.values(**values), changed)
        return Reconciled(pins, newly_changed, forgotten)

    async def _forget_absent(
        self, conn: AsyncConnection, upstream_id: str, pins: dict[str, StoredPin], seen: dict[str, Any]
    ) -> int:
        """Drop pins of tools the upstream no longer lists beyond `keep_absent` of them: the newest ones that
        were approved on first sight. They are kept so that a tool removed and brought back
        changed is still held; without a bound an upstream whose tool names change with every list (generated
        names, or a hostile one) grew the table forever. Newest first, never an admin's approval, a waiting
        change only when no other will do: dropping the oldest let an upstream push a trusted tool's pin out
        with 10,000 made-up names and bring the tool back changed, approved as new."""
        absent = [pin for name, pin in pins.items() if name not in seen]
        excess = len(absent) - self._keep_absent
        if excess <= 0:
            return 0
        # First-use pins only (an admin's approval stays), those with no waiting change first, newest first:
        # a hostile upstream that also changes its made-up tools cannot grow the table either.
        droppable = [pin for pin in absent if pin.approved_by == FIRST_USE]
        droppable.sort(key=lambda pin: (pin.pending_hash is None, pin.approved_at, pin.tool), reverse=True)
        dropped = droppable[:excess]
        if not dropped:
            return 0
        await conn.execute(_DELETE_BY_KEY, [{"k_upstream": upstream_id, "k_tool": pin.tool} for pin in dropped])
        for pin in dropped:
            del pins[pin.tool]
        return len(dropped)

    async def list(self, upstream_id: str | None = None, *, changed_only: bool = False) -> list[StoredPin]:
        query = select(tool_pins).order_by(tool_pins.c.upstream, tool_pins.c.tool)
        if upstream_id is not None:
            query = query.where(tool_pins.c.upstream == upstream_id)
        if changed_only:
            query = query.where(tool_pins.c.pending_hash.is_not(None))
        async with self._engine.connect() as conn:
            return [_pin(row) for row in (await conn.execute(query)).mappings()]

    async def get(self, upstream_id: str, tool: str) -> StoredPin | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(tool_pins).where(_key(upstream_id, tool)))).mappings().first()
        return None if row is None else _pin(row)

    async def approve(
        self,
        by: str,
        credential: str,
        *,
        upstream_id: str | None = None,
        tool: str | None = None,
        expected: str | None = None,
        now: float,
    ) -> list[StoredPin]:
        """Approve the waiting definitions (all, one upstream's, or one tool's); returns the pins as they were
        before (what was approved). `expected`: approve only a waiting definition with this fingerprint (the
        one the approver looked at; the upstream may have changed it again since). Each approval is an audit
        row; running gateways hear of it (PINS_SCOPE)."""
        query = select(tool_pins).where(tool_pins.c.pending_hash.is_not(None))
        if expected is not None:
            query = query.where(tool_pins.c.pending_hash == expected)
        if upstream_id is not None:
            query = query.where(tool_pins.c.upstream == upstream_id)
        if tool is not None:
            query = query.where(tool_pins.c.tool == tool)
        async with write_transaction(self._engine) as conn:
            waiting = [_pin(row) for row in (await conn.execute(query)).mappings()]
            if waiting:
                approved = _BY_KEY.values(
                    approved_hash=bindparam("v_hash"),
                    approved=bindparam("v_defn"),
                    approved_at=now,
                    approved_by=by[:400],
                    pending_hash=None,
                    pending=None,
                    seen_at=None,
                )
                rows = [
                    {"k_upstream": p.upstream, "k_tool": p.tool, "v_hash": p.pending_hash, "v_defn": p.pending}
                    for p in waiting
                ]
                await conn.execute(approved, rows)
                if self._audit:
                    await conn.execute(audit_events.insert(), list(_approval_rows(waiting, by, credential, now)))
                await revisions.bump(conn, PINS_SCOPE)
        return waiting


def _work(pins: dict[str, StoredPin], seen: dict[str, tuple[str, dict[str, Any]]]) -> bool:
    """Whether reconciling `seen` with `pins` writes anything."""
    for name, (digest, _defn) in seen.items():
        pin = pins.get(name)
        if pin is None:
            return True
        if digest == pin.approved_hash:
            if pin.pending_hash is not None:
                return True
        elif digest != pin.pending_hash:
            return True
    return False


def _key(upstream_id: str, tool: str) -> ColumnElement[bool]:
    return and_(tool_pins.c.upstream == upstream_id, tool_pins.c.tool == tool)


# Many rows at once (executemany): each parameter set names its row by k_upstream and k_tool.
_ROW = and_(tool_pins.c.upstream == bindparam("k_upstream"), tool_pins.c.tool == bindparam("k_tool"))
_BY_KEY = update(tool_pins).where(_ROW)
_DELETE_BY_KEY = delete(tool_pins).where(_ROW)


def _approval_rows(pins: Iterable[StoredPin], by: str, credential: str, now: float) -> Iterable[dict[str, Any]]:
    for pin in pins:
        yield {
            "at": now,
            "request_id": None,
            "principal": by[:400],
            "credential": credential[:100],
            "server": "admin",
            "member": None,
            "upstream": pin.upstream,
            "method": "tool approved",
            "target": pin.tool[:400],
            "outcome": "ok",
            "detail": f"sha256 {pin.approved_hash[:12]} → {(pin.pending_hash or '')[:12]}",
            "latency_ms": None,
            "arguments": None,
        }

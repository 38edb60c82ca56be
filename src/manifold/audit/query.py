"""Reading the audit table back: the filters `manifold audit` offers, and the time expressions it accepts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.audit.model import AuditEvent, Outcome
from manifold.store.db import audit_events

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Principal-id prefixes (manifold.principal.Principal.id); anything else given to --user is an email.
_PRINCIPAL_PREFIXES = ("user:", "sa:", "ext:")


def principal_filter(user: str) -> str:
    """`alice@corp.com` means `user:alice@corp.com`; a full principal id (`sa:ci-bot`, `ext:…`,
    `anonymous`) is used as given."""
    user = user.strip()
    if user == "anonymous" or user.startswith(_PRINCIPAL_PREFIXES):
        return user
    return f"user:{user}"


def _filtered(
    stmt: Select[Any],
    *,
    user: str | None,
    since: float | None,
    until: float | None,
    server: str | None,
    outcome: Outcome | None,
    tool: str | None = None,
) -> Select[Any]:
    t = audit_events.c
    if user is not None:
        stmt = stmt.where(t.principal == principal_filter(user))
    if since is not None:
        stmt = stmt.where(t.at >= since)
    if until is not None:
        stmt = stmt.where(t.at < until)
    if server is not None:
        stmt = stmt.where(t.server == server)
    if outcome is not None:
        stmt = stmt.where(t.outcome == Outcome(outcome).value)
    if tool is not None:
        if "*" in tool:  # a glob: `gh__*`
            escaped = tool.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
            stmt = stmt.where(t.target.like(escaped, escape="\\"))
        else:
            stmt = stmt.where(t.target == tool)
    return stmt


def _event(r: RowMapping) -> AuditEvent:
    return AuditEvent(
        at=r["at"],
        request_id=r["request_id"],
        principal=r["principal"],
        credential=r["credential"],
        server=r["server"],
        member=r["member"],
        upstream=r["upstream"],
        method=r["method"],
        target=r["target"],
        outcome=Outcome(r["outcome"]),
        detail=r["detail"],
        latency_ms=r["latency_ms"],
        arguments=r["arguments"],
    )


async def query(
    engine: AsyncEngine,
    *,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    server: str | None = None,
    outcome: Outcome | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The newest `limit` events matching every given filter, newest first."""
    rows = await page(engine, user=user, since=since, until=until, server=server, outcome=outcome, limit=limit)
    return [event for _, event in rows]


async def page(
    engine: AsyncEngine,
    *,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    server: str | None = None,
    outcome: Outcome | None = None,
    tool: str | None = None,
    before: tuple[float, int] | None = None,
    limit: int = 100,
) -> list[tuple[int, AuditEvent]]:
    """(row id, event) of the newest `limit` events matching every given filter, newest first, older than
    `before` = (at, id) of the last row of the previous page when given (keyset paging: each page costs the
    same however far back it is). `tool` is the name the client called (`target`), `*` a wildcard."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    t = audit_events.c
    stmt = select(audit_events).order_by(t.at.desc(), t.id.desc()).limit(limit)
    stmt = _filtered(stmt, user=user, since=since, until=until, server=server, outcome=outcome, tool=tool)
    if before is not None:
        at, row_id = before
        stmt = stmt.where(or_(t.at < at, and_(t.at == at, t.id < row_id)))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [(r["id"], _event(r)) for r in rows]


async def one(engine: AsyncEngine, event_id: int) -> AuditEvent | None:
    """The event stored under row `event_id`, as stored (arguments redacted when written)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).mappings().first()
    return None if row is None else _event(row)


def parse_since(text: str, now: float) -> float:
    """A point in time as unix time: a duration back from `now` ("30s", "15m", "2h", "7d", "2w") or an
    ISO-8601 date or date-time ("2025-01-31", "2025-01-31T09:00", "2025-01-31T09:00:00Z"). A date-time
    without an offset is local time, as `date` prints it."""
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"'{text}' is neither a duration (such as 30s, 15m, 2h, 7d, 2w) nor an ISO-8601 date/time "
            "(such as 2025-01-31 or 2025-01-31T09:00:00Z)"
        ) from None
    return when.timestamp()  # naive datetimes are taken as local time

"""The audit writer: `AuditLog.record` on the request path, a background task that writes the rows.

Every `tools/call`, `resources/read` and `prompts/get` becomes one `AuditEvent`. The request path only calls
`AuditLog.record`, which appends to an in-memory deque and returns: no await, no I/O, no serialisation. A
background task (`AuditLog.start`) drains the deque every `BATCH_INTERVAL` seconds, or sooner once
`BATCH_SIZE` events are waiting, and writes each drain as one transaction, so SQLite sees a handful of
commits per second however busy the gateway is. The same task appends the optional JSON-lines mirror and
prunes rows older than `audit.retention_days` once an hour.

Tool arguments are stored only with `audit.include_arguments`, and then redacted (redaction.py).

Failures: a database write that fails keeps its rows for the next attempt (bounded by `MAX_UNWRITTEN`) and
logs one warning per burst of failures, naming only the error's type and the driver's first message line
(errors.py), since SQLAlchemy's full message quotes the statement's parameters, which are event content.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.audit.errors import describe_error
from manifold.audit.model import AuditEvent, Outcome, event_to_json
from manifold.audit.redaction import redact
from manifold.config.models import AuditSettings
from manifold.store.db import audit_events

log = logging.getLogger(__name__)

BATCH_INTERVAL = 0.2  # seconds between writes when traffic is light
BATCH_SIZE = 200  # events that wake the writer early
MAX_ROWS_PER_TRANSACTION = 5000  # a drain larger than this is split, so no one transaction holds the lock long
PRUNE_INTERVAL = 3600.0
PRUNE_CHUNK = 5000  # rows deleted per transaction: a large backlog never blocks other writers for long
MAX_PENDING = 100_000  # events waiting for the writer; beyond this the oldest are dropped (and counted)
MAX_UNWRITTEN = 100_000  # rows the database refused, kept for the next attempt
RETRY_AFTER_FAILURE = 1.0  # seconds before retrying a failed database write
MAX_DETAIL = 2000


class AuditLog:
    """The audit trail of one gateway: `record` queues, the task started by `start` writes."""

    def __init__(self, engine: AsyncEngine | None, settings: AuditSettings, state_dir: Path) -> None:
        self._engine = engine
        self._settings = settings
        self._enabled = settings.enabled
        self._jsonl_path = _resolve(settings.jsonl_path, state_dir)
        self._pending: deque[AuditEvent] = deque()
        # Rows mirrored but not yet in the database: at most MAX_ROWS_PER_TRANSACTION go per transaction, and
        # rows the database refused wait here, in order, for the next attempt.
        self._to_insert: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one drain at a time: the writer task and flush() never interleave
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropped = 0
        self._db_failing = False
        self._jsonl_failing = False

    @property
    def jsonl_path(self) -> Path | None:
        return self._jsonl_path

    def record(self, event: AuditEvent) -> None:
        """Queue one event. Synchronous and O(1); call it from the event loop's thread."""
        if not self._enabled:
            return
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            pending.popleft()
            self._dropped += 1
        pending.append(event)
        if len(pending) >= BATCH_SIZE and self._task is not None:
            self._wake.set()

    async def start(self) -> None:
        """Start the background writer (idempotent). Old rows are pruned right away, then hourly."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="manifold-audit-writer")

    async def flush(self) -> None:
        """Write everything queued now (and retry rows the database refused before)."""
        async with self._lock:
            try_db = True
            while True:
                await self._write_batch(try_db=try_db)
                try_db = not self._db_failing  # one refusal per flush: a locked database costs its busy timeout
                if not self._pending and (not self._to_insert or self._db_failing):
                    return  # all written, or the database refuses and the rows wait for the next attempt

    async def aclose(self) -> None:
        """Stop the writer and write what is still queued. Events the database still refuses are reported
        (as a count) and dropped."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await task
            except Exception:  # the loop catches its own errors; this is only belt and braces
                log.warning("audit: the writer task ended with an error")
        await self.flush()
        lost = len(self._pending) + len(self._to_insert)
        if lost:
            log.warning("audit: %d events could not be written to the database before shutdown", lost)
        if self._dropped:
            log.warning("audit: %d events were dropped because the queue was full", self._dropped)
            self._dropped = 0

    async def prune(self, now: float | None = None) -> int:
        """Delete rows older than `retention_days`; returns how many. In chunks, each its own transaction."""
        if self._engine is None:
            return 0
        cutoff = (time.time() if now is None else now) - self._settings.retention_days * 86400
        old_ids = select(audit_events.c.id).where(audit_events.c.at < cutoff).limit(PRUNE_CHUNK)
        deleted = 0
        while True:
            async with self._engine.begin() as conn:
                result = await conn.execute(audit_events.delete().where(audit_events.c.id.in_(old_ids)))
            deleted += result.rowcount
            if result.rowcount < PRUNE_CHUNK:
                return deleted

    # -- inside the writer task --

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not self._stopping:
            backlog = not self._db_failing and (len(self._pending) + len(self._to_insert)) >= BATCH_SIZE
            if not backlog:  # with a backlog, go straight on: a busy gateway must not outrun its writer
                try:
                    async with asyncio.timeout(RETRY_AFTER_FAILURE if self._db_failing else BATCH_INTERVAL):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                async with self._lock:
                    if self._pending or self._to_insert:
                        await self._write_batch()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_INTERVAL
                    await self._prune_logged()
            except Exception as exc:  # never let the writer die: the next round tries again
                log.warning("audit: writer error (%s)", describe_error(exc))

    async def _prune_logged(self) -> None:
        try:
            deleted = await self.prune()
        except Exception as exc:
            log.warning("audit: pruning old events failed (%s)", describe_error(exc))
            return
        if deleted:
            log.info("audit: pruned %d events older than %g days", deleted, self._settings.retention_days)

    async def _write_batch(self, *, try_db: bool = True) -> None:
        """Drain up to MAX_ROWS_PER_TRANSACTION events and mirror them; then insert the oldest rows not yet
        in the database (these, or earlier ones it refused), up to MAX_ROWS_PER_TRANSACTION, in one transaction."""
        rows = []
        for _ in range(min(len(self._pending), MAX_ROWS_PER_TRANSACTION)):
            event = self._pending.popleft()
            try:
                rows.append(self._row(event))
            except Exception as exc:  # a malformed event (wrong types from a caller) is skipped, not retried
                log.warning("audit: skipped an event that cannot be stored (%s)", type(exc).__name__)
        if self._dropped:
            log.warning("audit: %d events were dropped because the queue was full", self._dropped)
            self._dropped = 0
        if rows and self._jsonl_path is not None:
            await self._mirror(rows)
        if self._engine is None:
            return
        self._to_insert.extend(rows)
        overflow = len(self._to_insert) - MAX_UNWRITTEN
        if overflow > 0:
            log.warning("audit: dropping %d events the database refused (retry buffer full)", overflow)
            for _ in range(overflow):
                self._to_insert.popleft()
        if not try_db:
            return
        batch = [self._to_insert.popleft() for _ in range(min(len(self._to_insert), MAX_ROWS_PER_TRANSACTION))]
        if not batch:
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(audit_events.insert(), batch)
        except Exception as exc:
            self._to_insert.extendleft(reversed(batch))  # back in front, in order, for the next attempt
            if not self._db_failing:
                self._db_failing = True
                log.warning("audit: cannot write events to the database, will retry (%s)", describe_error(exc))
            return
        if self._db_failing:
            self._db_failing = False
            log.warning("audit: writing events to the database works again")

    async def _mirror(self, rows: list[dict[str, Any]]) -> None:
        assert self._jsonl_path is not None
        data = b"".join(_json_line(row) for row in rows)
        try:
            await asyncio.to_thread(_append, self._jsonl_path, data)
        except OSError as exc:
            if not self._jsonl_failing:
                self._jsonl_failing = True
                log.warning("audit: cannot append to %s (%s)", self._jsonl_path, type(exc).__name__)
            return
        if self._jsonl_failing:
            self._jsonl_failing = False
            log.warning("audit: appending to %s works again", self._jsonl_path)

    def _row(self, e: AuditEvent) -> dict[str, Any]:
        """The table row: text columns as text clipped to the column sizes (PostgreSQL refuses longer ones),
        arguments redacted or left out. A row must never be refused by the database, or it would be retried
        forever, so a missing required text becomes ""."""
        arguments = None
        if self._settings.include_arguments and e.arguments is not None:
            arguments = redact(e.arguments)
        row: dict[str, Any] = {
            "at": float(e.at),
            "request_id": e.request_id,
            "principal": e.principal,
            "credential": e.credential,
            "server": e.server,
            "member": e.member,
            "upstream": e.upstream,
            "method": e.method,
            "target": e.target,
            "outcome": Outcome(e.outcome).value,  # a value outside the closed set is refused here, not stored
            "detail": None if e.detail is None else e.detail[:MAX_DETAIL],
            "latency_ms": None if e.latency_ms is None else float(e.latency_ms),
            "arguments": arguments,
        }
        for name, (limit, nullable) in _TEXT_COLUMNS.items():
            value = row[name]
            if value is None:
                if not nullable:
                    row[name] = ""
                continue
            value = value if isinstance(value, str) else str(value)
            row[name] = value[:limit] if limit is not None else value
        return row


# name -> (maximum length or None, nullable), from the table itself.
_TEXT_COLUMNS = {c.name: (c.type.length, bool(c.nullable)) for c in audit_events.columns if isinstance(c.type, String)}


def _resolve(path: Path | None, state_dir: Path) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else state_dir / path


def _append(path: Path, data: bytes) -> None:
    """Append in one write; opened per batch so an external log rotation (rename) is followed. 0600: the
    mirror may hold arguments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _json_line(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event_to_json(row), default=str) + b"\n"

"""The audit writer: `AuditLog.record` on the request path, a background task that writes the rows.

Every `tools/call`, `resources/read` and `prompts/get` becomes one `AuditEvent`. The request path only calls
`AuditLog.record`, which turns the event into its row, appends the row as one line to the journal
(journal.py: one `os.write`, no fsync, no await) and to an in-memory deque, and returns. The relay calls it
before the answer goes out, so an answered call's row survives a SIGKILL of the gateway. A background task
(`AuditLog.start`) drains the deque every `BATCH_INTERVAL` seconds, or sooner once `BATCH_SIZE` events are
waiting, and writes each drain as one transaction together with the journal's mark (the position of its
last row), so SQLite sees a handful of commits per second however busy the gateway is. `start` first
replays the journals of runs that died (the lines after their mark). The same task appends the optional
JSON-lines mirror and prunes rows older than `audit.retention_days` once an hour.

Tool arguments are stored only with `audit.include_arguments`, and then redacted (redaction.py).

Failures: a database write that fails keeps its rows for the next attempt (bounded by `MAX_UNWRITTEN`) and
logs one warning per burst of failures, naming only the error's type and the driver's first message line
(errors.py), since SQLAlchemy's full message quotes the statement's parameters, which are event content.
Rows still refused at shutdown stay in the journal and are written at the next start. A journal that cannot
be written (disk full) is reported once; rows then live in memory only until written, as without a journal.
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
from sqlalchemy import JSON, Float, String, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from manifold.audit.errors import describe_error
from manifold.audit.journal import Journal, Orphan, format_mark, orphans, parse_mark
from manifold.audit.model import AuditEvent, Outcome, event_to_json
from manifold.audit.redaction import redact
from manifold.config.models import AuditSettings
from manifold.store.db import audit_events, meta

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

# A queued row and its journal position (0: not in the journal).
Queued = tuple[dict[str, Any], int]


class AuditLog:
    """The audit trail of one gateway: `record` queues, the task started by `start` writes."""

    def __init__(self, engine: AsyncEngine | None, settings: AuditSettings, state_dir: Path) -> None:
        self._engine = engine
        self._settings = settings
        self._enabled = settings.enabled
        self._jsonl_path = _resolve(settings.jsonl_path, state_dir)
        self._state_dir = state_dir
        # The journal exists only for the database: without one, the rows go to the mirror alone.
        self._journal = Journal(state_dir) if engine is not None and settings.enabled else None
        self._journal_failing = False
        self._pending: deque[Queued] = deque()
        # Rows mirrored but not yet in the database: at most MAX_ROWS_PER_TRANSACTION go per transaction, and
        # rows the database refused wait here, in order, for the next attempt.
        self._to_insert: deque[Queued] = deque()
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

    @property
    def queued(self) -> int:
        """Events recorded but not yet in the database (the metrics' audit queue depth)."""
        return len(self._pending) + len(self._to_insert)

    def record(self, event: AuditEvent) -> None:
        """Journal one event and queue it. Synchronous: one write to a file, no await; call it from the
        event loop's thread, before the answer it records is sent."""
        if not self._enabled:
            return
        try:
            row = self._row(event)
        except Exception as exc:  # a malformed event (wrong types from a caller) is skipped
            log.warning("audit: skipped an event that cannot be stored (%s)", type(exc).__name__)
            return
        pos = 0
        journal = self._journal
        if journal is not None:
            try:
                pos = journal.append(orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE))
            except (OSError, TypeError) as exc:  # orjson.JSONEncodeError is a TypeError
                self._journal_trouble(exc)
            else:
                if self._journal_failing:
                    self._journal_failing = False
                    log.warning("audit: appending to the journal works again")
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            pending.popleft()
            self._dropped += 1
        pending.append((row, pos))
        if len(pending) >= BATCH_SIZE and self._task is not None:
            self._wake.set()

    def _journal_trouble(self, exc: Exception) -> None:
        if not self._journal_failing:
            self._journal_failing = True
            where = self._journal.directory if self._journal is not None else None
            log.warning("audit: cannot append to the journal in %s (%s)", where, describe_error(exc))

    async def start(self) -> None:
        """Write what the journals of runs that died hold, then start the background writer (idempotent).
        Old rows are pruned right away, then hourly."""
        if self._task is None:
            await self._replay()
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
        """Stop the writer and write what is still queued. Events the database still refuses stay in the
        journal for the next start; the journal goes once everything is written."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await task
            except Exception:  # the loop catches its own errors; this is only belt and braces
                log.warning("audit: the writer task ended with an error")
        await self.flush()
        left = len(self._pending) + len(self._to_insert)
        journal = self._journal
        if journal is not None and journal.opened:
            if left:
                kept = sum(1 for _, pos in (*self._pending, *self._to_insert) if pos)
                log.warning(
                    "audit: %d events could not be written to the database before shutdown; they stay in the "
                    "journal and are written at the next start",
                    kept,
                )
                left -= kept
                self._pending.clear()
                self._to_insert.clear()
                journal.close(remove_lock=False)
            else:
                await self._remove_journal(journal)
        if left:
            log.warning("audit: %d events could not be written to the database before shutdown", left)
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
        in the database (these, or earlier ones it refused), up to MAX_ROWS_PER_TRANSACTION, in one
        transaction that also moves the journal's mark past them."""
        pending = self._pending
        queued = [pending.popleft() for _ in range(min(len(pending), MAX_ROWS_PER_TRANSACTION))]
        if self._dropped:
            log.warning("audit: %d events were dropped because the queue was full", self._dropped)
            self._dropped = 0
        if queued and self._jsonl_path is not None:
            await self._mirror([row for row, _ in queued])
        if self._engine is None:
            return
        self._to_insert.extend(queued)
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
        mark = max(pos for _, pos in batch)  # positions grow in queue order; 0: none of these is journaled
        journal = self._journal
        try:
            async with self._engine.begin() as conn:
                await _insert_rows(conn, [row for row, _ in batch])
                if mark and journal is not None:
                    await _store_mark(conn, journal.mark_key, mark)
        except Exception as exc:
            self._to_insert.extendleft(reversed(batch))  # back in front, in order, for the next attempt
            if not self._db_failing:
                self._db_failing = True
                log.warning("audit: cannot write events to the database, will retry (%s)", describe_error(exc))
            return
        if self._db_failing:
            self._db_failing = False
            log.warning("audit: writing events to the database works again")
        if mark and journal is not None:
            try:
                journal.committed(mark)
            except OSError as exc:
                self._journal_trouble(exc)

    # -- the journal at start and stop --

    async def _replay(self) -> None:
        """Write the rows the journals of dead runs hold after their marks, then delete those journals. One
        that cannot be written now (the database refuses) is kept for the next start."""
        if self._engine is None or self._journal is None:
            return
        try:
            found = orphans(self._state_dir)
        except OSError as exc:
            log.warning("audit: cannot read the journal directory (%s)", describe_error(exc))
            return
        for orphan in found:
            try:
                written, skipped = await self._replay_one(orphan)
            except Exception as exc:
                orphan.close(remove_lock=False)
                log.warning("audit: cannot replay a journal now, trying at the next start (%s)", describe_error(exc))
                continue
            if written:
                log.warning("audit: wrote %d events the previous run had journaled but not stored", written)
            if skipped:
                log.warning("audit: skipped %d unreadable journal lines", skipped)

    async def _replay_one(self, orphan: Orphan) -> tuple[int, int]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            stored = (await conn.execute(select(meta.c.value).where(meta.c.key == orphan.mark_key))).scalar()
        after = parse_mark(stored)
        written = skipped = 0
        chunk: list[dict[str, Any]] = []
        last = after
        for line, pos in orphan.lines(after):
            row = _parse_row(line)
            if row is None:
                skipped += 1
            else:
                chunk.append(row)
            last = pos
            if len(chunk) >= MAX_ROWS_PER_TRANSACTION:
                await self._replay_chunk(orphan, chunk, last)
                written += len(chunk)
                chunk = []
        if last != after:
            await self._replay_chunk(orphan, chunk, last)
            written += len(chunk)
        orphan.drop_segments()  # then the mark, then the lock: a crash in between finds nothing to replay
        async with self._engine.begin() as conn:
            await conn.execute(meta.delete().where(meta.c.key == orphan.mark_key))
        orphan.close(remove_lock=True)
        return written, skipped

    async def _replay_chunk(self, orphan: Orphan, rows: list[dict[str, Any]], last: int) -> None:
        assert self._engine is not None
        if rows and self._jsonl_path is not None:
            await self._mirror(rows)
        async with self._engine.begin() as conn:
            if rows:
                await conn.execute(audit_events.insert(), rows)
            await _store_mark(conn, orphan.mark_key, last)

    async def _remove_journal(self, journal: Journal) -> None:
        """Everything is in the database: the segments go, then the mark, then the lock."""
        assert self._engine is not None
        try:
            journal.drop_segments()
            async with self._engine.begin() as conn:
                await conn.execute(meta.delete().where(meta.c.key == journal.mark_key))
        except Exception as exc:  # the lock file stays: the next start finds nothing to replay and tidies up
            log.warning("audit: cannot remove the journal (%s)", describe_error(exc))
            journal.close(remove_lock=False)
            return
        journal.close(remove_lock=True)

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
        forever, so a missing required text becomes "". On the request path: one pass, no copies of what
        already fits."""
        outcome = e.outcome
        # a value outside the closed set is refused here, not stored
        outcome_value: str = outcome._value_ if type(outcome) is Outcome else Outcome(outcome).value
        detail = e.detail
        if detail is not None:
            detail = (detail if type(detail) is str else str(detail))[:MAX_DETAIL]
        latency = e.latency_ms
        arguments = None
        if self._settings.include_arguments and e.arguments is not None:
            arguments = redact(e.arguments)
        row: dict[str, Any] = {
            "at": float(e.at),
            "outcome": outcome_value,
            "detail": detail,
            "latency_ms": None if latency is None else float(latency),
            "arguments": arguments,
        }
        for name, limit, nullable in _CLIPPED:
            value = getattr(e, name)
            if value is None:
                row[name] = None if nullable else ""
            elif type(value) is str:
                row[name] = value if len(value) <= limit else value[:limit]
            else:
                row[name] = str(value)[:limit]
        return row


# name -> (maximum length or None, nullable), from the table itself.
_TEXT_COLUMNS = {c.name: (c.type.length, bool(c.nullable)) for c in audit_events.columns if isinstance(c.type, String)}
# The event's text fields clipped to their column: (name, maximum length, nullable). `outcome` (a closed set of
# short values) and `detail` (MAX_DETAIL) are done apart.
_CLIPPED = tuple(
    (str(name), limit, nullable)  # str(): a column name is a str subclass, and orjson takes only str keys
    for name, (limit, nullable) in _TEXT_COLUMNS.items()
    if name not in ("outcome", "detail") and limit is not None
)
assert {name for name, _, _ in _CLIPPED} | {"outcome", "detail"} == set(_TEXT_COLUMNS)
# What a journal line must hold to become a row again: column -> (accepted types, nullable).
_ROW_COLUMNS: dict[str, tuple[tuple[type, ...], bool]] = {
    str(c.name): (
        (str,) if isinstance(c.type, String) else (int, float) if isinstance(c.type, Float) else (object,),
        bool(c.nullable),
    )
    for c in audit_events.columns
    if not c.primary_key
}


def _parse_row(line: bytes) -> dict[str, Any] | None:
    """The row a journal line holds, or None when the line is not one (cut or garbled)."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    row: dict[str, Any] = {}
    for name, (types, nullable) in _ROW_COLUMNS.items():
        value = data.get(name)
        if value is None:
            if not nullable:
                return None
        elif not isinstance(value, types) or isinstance(value, bool):
            return None
        row[name] = value
    return row


# The batch INSERT, by column name; its SQL is built once per paramstyle (`_insert_sql`).
_INSERT_COLUMNS = tuple(_ROW_COLUMNS)
_JSON_COLUMNS = frozenset(str(c.name) for c in audit_events.columns if isinstance(c.type, JSON))
_insert_sql_by_style: dict[str, str] = {}


def _insert_sql(paramstyle: str) -> str:
    sql = _insert_sql_by_style.get(paramstyle)
    if sql is None:
        n = len(_INSERT_COLUMNS)
        match paramstyle:
            case "qmark":
                marks = ["?"] * n
            case "numeric_dollar":
                marks = [f"${i}" for i in range(1, n + 1)]
            case "numeric":
                marks = [f":{i}" for i in range(1, n + 1)]
            case "format":
                marks = ["%s"] * n
            case "pyformat":
                marks = [f"%({name})s" for name in _INSERT_COLUMNS]
            case "named":
                marks = [f":{name}" for name in _INSERT_COLUMNS]
            case _:
                raise ValueError(f"unsupported paramstyle {paramstyle!r}")
        sql = f"INSERT INTO {audit_events.name} ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join(marks)})"
        _insert_sql_by_style[paramstyle] = sql
    return sql


async def _insert_rows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows as one driver-level executemany of plain tuples. SQLAlchemy's Core insert of a list of
    dicts processes every row in Python (parameters, bind processors, json.dumps of the JSON column), which was
    most of the writer's CPU per row; the rows here are already the column values (`AuditLog._row`), so only the
    JSON column is serialised (orjson; None stays SQL NULL, which reads back as None like JSON null)."""
    style = conn.dialect.paramstyle
    keyed = style in ("pyformat", "named")
    params: list[Any] = []
    for row in rows:
        values = [row.get(name) for name in _INSERT_COLUMNS]
        for i, name in enumerate(_INSERT_COLUMNS):
            if name in _JSON_COLUMNS and values[i] is not None:
                values[i] = orjson.dumps(values[i], default=str).decode()
        params.append(dict(zip(_INSERT_COLUMNS, values, strict=True)) if keyed else tuple(values))
    await conn.exec_driver_sql(_insert_sql(style), params)


async def _store_mark(conn: AsyncConnection, key: str, pos: int) -> None:
    """Record in the database, in the caller's transaction, that the journal `key` is written up to `pos`."""
    value = format_mark(pos)
    result = await conn.execute(meta.update().where(meta.c.key == key).values(value=value))
    if result.rowcount == 0:
        await conn.execute(meta.insert().values(key=key, value=value))


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

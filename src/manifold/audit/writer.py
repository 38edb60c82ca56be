"""The audit trail: who called which tool, resource or prompt, through which server, with what outcome.

Every `tools/call`, `resources/read` and `prompts/get` becomes one `AuditEvent`. The request path only calls
`AuditLog.record`, which appends to an in-memory deque and returns: no await, no I/O, no serialisation. A
background task (`AuditLog.start`) drains the deque every `BATCH_INTERVAL` seconds, or sooner once
`BATCH_SIZE` events are waiting, and writes each drain as one transaction, so SQLite sees a handful of
commits per second however busy the gateway is. The same task appends the optional JSON-lines mirror and
prunes rows older than `audit.retention_days` once an hour.

What is never stored: tokens (the event holds the principal id and the credential's *reference*, a key id
or IdP id), and tool arguments unless `audit.include_arguments` is on; even then values under keys that
look like secrets are replaced by `REDACTED`, at any depth.

Failures: a database write that fails keeps its rows for the next attempt (bounded by `MAX_UNWRITTEN`) and
logs one warning per burst of failures, naming only the error's type and the driver's first message line,
since SQLAlchemy's full message quotes the statement's parameters, which are event content.

`manifold audit` (see `add_cli` / `run_audit_cli`) reads the table back.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import String, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import AuditSettings
from manifold.store.db import audit_events

if TYPE_CHECKING:
    from manifold.config.loader import LoadedConfig

log = logging.getLogger(__name__)

BATCH_INTERVAL = 0.2  # seconds between writes when traffic is light
BATCH_SIZE = 200  # events that wake the writer early
MAX_ROWS_PER_TRANSACTION = 5000  # a drain larger than this is split, so no one transaction holds the lock long
PRUNE_INTERVAL = 3600.0
PRUNE_CHUNK = 5000  # rows deleted per transaction: a large backlog never blocks other writers for long
MAX_PENDING = 100_000  # events waiting for the writer; beyond this the oldest are dropped (and counted)
MAX_UNWRITTEN = 100_000  # rows the database refused, kept for the next attempt
RETRY_AFTER_FAILURE = 1.0  # seconds before retrying a failed database write
REDACTED = "[redacted]"
MAX_ARGUMENT_DEPTH = 32  # deeper structures are cut, so a hostile payload cannot exhaust the stack
MAX_ARGUMENT_STRING = 4096  # longer argument strings are clipped: the audit table is not a file store
MAX_DETAIL = 2000

# Keys whose values are credentials. Matched anywhere in the key, case-insensitively: `client_secret`,
# `X-Api-Key`, `db_password`, `refreshToken` are all caught. Over-redacting a harmless field is the price.
_SECRET_KEY = re.compile(
    r"token|passw|passphrase|pwd|secret|authori[sz]ation|^auth$|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credential|cookie|session[-_]?id|signature",
    re.IGNORECASE,
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Principal-id prefixes (manifold.principal.Principal.id); anything else given to --user is an email.
_PRINCIPAL_PREFIXES = ("user:", "sa:", "ext:")
# Control characters (C0, DEL, C1): a client-chosen tool name must not drive the admin's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Outcome(str, enum.Enum):
    OK = "ok"
    ERROR = "error"  # JSON-RPC error, upstream unreachable, timeout
    TOOL_ERROR = "tool_error"  # the tool ran and answered isError: true
    DENIED = "denied"  # no grant (or the key is restricted to other servers)
    UNKNOWN = "unknown"  # no such tool / prompt / resource on this server


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audited request. `principal` is `Principal.id`; `credential` is `str(Principal.credential)`
    (a kind and a key or IdP id, never a secret). `arguments` may be the request's own dict: it is read by
    the background writer later, so it must not be mutated after `record`."""

    at: float  # unix time the request arrived
    request_id: str | int | None
    principal: str
    credential: str
    server: str
    member: str | None
    upstream: str | None
    method: str  # tools/call | resources/read | prompts/get
    target: str | None  # tool / prompt name or resource URI, as the client named it
    outcome: Outcome | str
    detail: str | None = None  # why it failed; must not hold secrets
    latency_ms: float | None = None
    arguments: Mapping[str, Any] | None = None  # kept only with audit.include_arguments


# ---- the writer ---------------------------------------------------------------------------------


class AuditLog:
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
                log.warning("audit: writer error (%s)", _describe(exc))

    async def _prune_logged(self) -> None:
        try:
            deleted = await self.prune()
        except Exception as exc:
            log.warning("audit: pruning old events failed (%s)", _describe(exc))
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
                log.warning("audit: cannot write events to the database, will retry (%s)", _describe(exc))
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
        row = {
            "at": float(e.at),
            "request_id": e.request_id,
            "principal": e.principal,
            "credential": e.credential,
            "server": e.server,
            "member": e.member,
            "upstream": e.upstream,
            "method": e.method,
            "target": e.target,
            "outcome": e.outcome.value if isinstance(e.outcome, Outcome) else str(e.outcome),
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


def _describe(exc: BaseException) -> str:
    """An error, without event content: SQLAlchemy's message quotes the statement's parameters, so only the
    driver's own first line (e.g. "no such table: audit_events", "database is locked") is kept."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first_line = str(exc.orig).splitlines()[0] if str(exc.orig) else ""
        return f"{type(exc.orig).__name__}: {first_line[:200]}" if first_line else type(exc.orig).__name__
    return type(exc).__name__


# ---- redaction ----------------------------------------------------------------------------------


def redact(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy of `value` with every value under a secret-looking key replaced by REDACTED, at any
    depth (in objects and in lists). Long strings are clipped; anything not JSON becomes its str()."""
    if _depth > MAX_ARGUMENT_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _SECRET_KEY.search(str(k)) else redact(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        if len(value) > MAX_ARGUMENT_STRING:
            return value[:MAX_ARGUMENT_STRING] + f"...[{len(value) - MAX_ARGUMENT_STRING} more characters]"
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


# ---- reading back -------------------------------------------------------------------------------


def principal_filter(user: str) -> str:
    """`alice@corp.com` means `user:alice@corp.com`; a full principal id (`sa:ci-bot`, `ext:…`,
    `anonymous`) is used as given."""
    user = user.strip()
    if user == "anonymous" or user.startswith(_PRINCIPAL_PREFIXES):
        return user
    return f"user:{user}"


async def query(
    engine: AsyncEngine,
    *,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    server: str | None = None,
    outcome: Outcome | str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The newest `limit` events matching every given filter, newest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    t = audit_events.c
    stmt = select(audit_events).order_by(t.at.desc(), t.id.desc()).limit(limit)
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
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [
        AuditEvent(
            at=r["at"],
            request_id=r["request_id"],
            principal=r["principal"],
            credential=r["credential"],
            server=r["server"],
            member=r["member"],
            upstream=r["upstream"],
            method=r["method"],
            target=r["target"],
            outcome=r["outcome"],
            detail=r["detail"],
            latency_ms=r["latency_ms"],
            arguments=r["arguments"],
        )
        for r in rows
    ]


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


# ---- output -------------------------------------------------------------------------------------


def event_to_json(event: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form used by `--json` and the JSON-lines mirror: every field, plus `time` in ISO-8601 UTC."""
    fields = event if isinstance(event, Mapping) else {name: getattr(event, name) for name in _FIELDS}
    out: dict[str, Any] = {"time": datetime.fromtimestamp(fields["at"], UTC).isoformat(timespec="milliseconds")}
    for name in _FIELDS:
        value = fields.get(name)
        out[name] = value.value if isinstance(value, Outcome) else value
    return out


_FIELDS = tuple(AuditEvent.__dataclass_fields__)


def _json_line(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event_to_json(row), default=str) + b"\n"


_TABLE_COLUMNS = ("TIME", "PRINCIPAL", "CREDENTIAL", "SERVER", "UPSTREAM", "METHOD", "TARGET", "OUTCOME", "MS",
                  "REQUEST", "DETAIL")  # fmt: skip
_TABLE_DETAIL = 80


def format_events(events: Sequence[AuditEvent], *, as_json: bool) -> str:
    """A table for people (local time, long details cut, control characters escaped) or JSON lines."""
    if as_json:
        return "\n".join(orjson.dumps(event_to_json(e), default=str).decode() for e in events)
    if not events:
        return ""
    rows = [_TABLE_COLUMNS, *(_table_row(e) for e in events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _table_row(e: AuditEvent) -> tuple[str, ...]:
    detail = _cell(e.detail)
    if len(detail) > _TABLE_DETAIL:
        detail = detail[: _TABLE_DETAIL - 3] + "..."
    return (
        datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S"),
        _cell(e.principal),
        _cell(e.credential),
        _cell(e.server),
        _cell(e.upstream),
        _cell(e.method),
        _cell(e.target),
        _cell(e.outcome.value if isinstance(e.outcome, Outcome) else e.outcome),
        "-" if e.latency_ms is None else f"{e.latency_ms:.1f}",
        _cell(e.request_id),
        detail,
    )


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


# ---- `manifold audit` ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add `manifold audit` to the CLI's subparsers; the caller sets `func` (it owns config loading)."""
    p = subparsers.add_parser(
        "audit",
        help="show audit events: who called which tool, resource or prompt, and the outcome",
        description="Show audit events, newest first.",
    )
    p.add_argument("--user", help="an email (alice@corp.com) or a principal id (user:…, sa:ci-bot, ext:…)")
    p.add_argument("--since", help="how far back: 15m, 2h, 7d, or an ISO-8601 date/time")
    p.add_argument("--until", help="up to (not including): 15m, 2h, 7d, or an ISO-8601 date/time")
    p.add_argument("--server", help="only requests to this server id")
    p.add_argument("--outcome", choices=[o.value for o in Outcome], help="only this outcome")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many events (default 100)")
    p.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per line")
    return p


def run_audit_cli(args: argparse.Namespace, config: LoadedConfig) -> int:
    now = time.time()
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        print(f"manifold audit: --since: {exc}", file=sys.stderr)
        return 2
    try:
        until = parse_since(args.until, now) if getattr(args, "until", None) else None
    except ValueError as exc:
        print(f"manifold audit: --until: {exc}", file=sys.stderr)
        return 2
    url = config.database_url
    db_file = _sqlite_file(url)
    if db_file is not None and not db_file.exists():
        # open_database would create an empty one; say instead where we looked.
        print(f"manifold audit: no database at {db_file} (has the gateway run with this state_dir?)", file=sys.stderr)
        return 1
    try:
        events = asyncio.run(
            _query_once(
                url,
                user=args.user,
                since=since,
                until=until,
                server=args.server,
                outcome=args.outcome,
                limit=args.limit,
            )
        )
    except Exception as exc:  # the URL may hold a password: name the error, not the URL
        print(f"manifold audit: cannot read the audit events ({_describe(exc)})", file=sys.stderr)
        return 1
    if not events:
        print("manifold audit: no events match", file=sys.stderr)
        return 0
    print(format_events(events, as_json=args.as_json))
    return 0


async def _query_once(url: str, **filters: Any) -> list[AuditEvent]:
    from manifold.store.db import open_database

    engine = await open_database(url)
    try:
        return await query(engine, **filters)
    finally:
        await engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)

"""The audit trail against a real SQLite file: what is recorded, what is never recorded, how it is read back."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.audit import REDACTED, AuditEvent, AuditLog, Outcome, format_events, parse_since, query
from manifold.cli import main
from manifold.config.loader import load_config
from manifold.config.models import AuditSettings
from manifold.store.db import default_url, metadata, open_database

NOW = time.time()


def event(
    *,
    at: float = NOW,
    principal: str = "user:alice@corp.com",
    server: str = "eng",
    target: str = "gh__create_issue",
    outcome: Outcome | str = Outcome.OK,
    request_id: str | int | None = 1,
    arguments: dict | None = None,
    detail: str | None = None,
) -> AuditEvent:
    return AuditEvent(
        at=at,
        request_id=request_id,
        principal=principal,
        credential="api_key:k1",
        server=server,
        member="gh",
        upstream="github",
        method="tools/call",
        target=target,
        outcome=outcome,
        detail=detail,
        latency_ms=12.5,
        arguments=arguments,
    )


@pytest.fixture
async def engine(tmp_path: Path):
    engine = await open_database(default_url(tmp_path))
    yield engine
    await engine.dispose()


async def wait_until(predicate, *, timeout: float = 5.0) -> None:
    """Poll an async condition with a deadline (the writer works on its own schedule)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


# ---- recording and querying ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_recorded_events_are_queryable_by_user_since_server_and_outcome(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    audit.record(event(at=NOW - 3 * 3600, request_id="old"))
    audit.record(event(at=NOW - 60, request_id="recent", server="ops"))
    audit.record(event(at=NOW - 30, request_id="denied", outcome=Outcome.DENIED))
    audit.record(event(at=NOW - 10, request_id="bot", principal="sa:ci-bot"))
    assert await query(engine) == []  # nothing is written until the writer (here: flush) runs

    await audit.flush()

    everything = await query(engine)
    assert [e.request_id for e in everything] == ["bot", "denied", "recent", "old"]  # newest first
    alice = await query(engine, user="alice@corp.com")
    assert {e.request_id for e in alice} == {"old", "recent", "denied"}
    assert await query(engine, user="user:alice@corp.com") == alice
    assert [e.request_id for e in await query(engine, user="sa:ci-bot")] == ["bot"]
    assert [e.request_id for e in await query(engine, user="alice@corp.com", since=NOW - 3600)] == [
        "denied",
        "recent",
    ]
    assert [e.request_id for e in await query(engine, server="ops")] == ["recent"]
    assert [e.request_id for e in await query(engine, outcome="denied")] == ["denied"]
    assert [e.request_id for e in await query(engine, until=NOW - 3600)] == ["old"]
    assert len(await query(engine, limit=2)) == 2

    row = (await query(engine, server="ops"))[0]
    assert (row.principal, row.credential, row.server, row.member, row.upstream) == (
        "user:alice@corp.com",
        "api_key:k1",
        "ops",
        "gh",
        "github",
    )
    assert (row.method, row.target, row.outcome, row.latency_ms) == ("tools/call", "gh__create_issue", "ok", 12.5)
    assert row.at == pytest.approx(NOW - 60)


@pytest.mark.anyio
async def test_numeric_request_ids_and_over_long_values_are_stored(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    audit.record(event(request_id=42, target="x" * 1000))
    await audit.flush()
    (row,) = await query(engine)
    assert row.request_id == "42"
    assert row.target == "x" * 400  # clipped to the column, not refused


@pytest.mark.anyio
async def test_disabled_audit_records_nothing(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(enabled=False, jsonl_path=Path("audit.jsonl")), tmp_path)
    audit.record(event())
    await audit.aclose()
    assert await query(engine) == []
    assert not (tmp_path / "audit.jsonl").exists()


# ---- retention ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retention_prunes_rows_older_than_the_setting(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(retention_days=7), tmp_path)
    audit.record(event(at=NOW - 10 * 86400, request_id="ten-days"))
    audit.record(event(at=NOW - 8 * 86400, request_id="eight-days"))
    audit.record(event(at=NOW - 6 * 86400, request_id="six-days"))
    audit.record(event(at=NOW, request_id="today"))
    await audit.flush()

    assert await audit.prune() == 2
    assert [e.request_id for e in await query(engine)] == ["today", "six-days"]
    assert await audit.prune() == 0


@pytest.mark.anyio
async def test_the_writer_prunes_when_it_starts(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(retention_days=1), tmp_path)
    audit.record(event(at=NOW - 2 * 86400, request_id="stale"))
    audit.record(event(at=NOW, request_id="fresh"))
    await audit.flush()
    await audit.start()
    try:

        async def stale_gone() -> bool:
            return [e.request_id for e in await query(engine)] == ["fresh"]

        await wait_until(stale_gone)
    finally:
        await audit.aclose()


# ---- the JSON-lines mirror ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_jsonl_mirror_gets_one_line_per_event(engine: AsyncEngine, tmp_path: Path):
    state_dir = tmp_path / "state"
    audit = AuditLog(engine, AuditSettings(jsonl_path=Path("audit/events.jsonl")), state_dir)
    for i in range(3):
        audit.record(event(request_id=f"r{i}", at=NOW + i))
    await audit.flush()
    audit.record(event(request_id="r3", outcome=Outcome.TOOL_ERROR, detail="the tool said no"))
    await audit.flush()

    path = state_dir / "audit" / "events.jsonl"  # relative to the state dir, folder created
    assert audit.jsonl_path == path
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2", "r3"]
    assert lines[0]["principal"] == "user:alice@corp.com"
    assert lines[0]["time"] == datetime.fromtimestamp(NOW, UTC).isoformat(timespec="milliseconds")
    assert lines[3]["outcome"] == "tool_error" and lines[3]["detail"] == "the tool said no"
    assert lines[0]["arguments"] is None
    assert path.stat().st_mode & 0o077 == 0  # may hold arguments: owner only


@pytest.mark.anyio
async def test_jsonl_mirror_works_without_a_database(tmp_path: Path):
    audit = AuditLog(None, AuditSettings(jsonl_path=tmp_path / "only.jsonl"), tmp_path / "state")
    audit.record(event(request_id="a"))
    audit.record(event(request_id="b"))
    await audit.aclose()
    assert [json.loads(x)["request_id"] for x in (tmp_path / "only.jsonl").read_text().splitlines()] == ["a", "b"]


# ---- arguments ----------------------------------------------------------------------------------

SECRET_ARGUMENTS = {
    "query": "open bugs",
    "Authorization": "Bearer s3cr3t-bearer",
    "config": {
        "db_password": "s3cr3t-password",
        "items": [{"API_KEY": "s3cr3t-key", "name": "kept"}, {"refreshToken": "s3cr3t-refresh"}],
        "client_secret": {"nested": "s3cr3t-nested"},
    },
    "limit": 5,
}


@pytest.mark.anyio
async def test_arguments_are_not_stored_by_default(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(jsonl_path=Path("a.jsonl")), tmp_path)
    audit.record(event(arguments=SECRET_ARGUMENTS))
    await audit.flush()
    (row,) = await query(engine)
    assert row.arguments is None
    mirrored = (tmp_path / "a.jsonl").read_text()
    assert "open bugs" not in mirrored and "s3cr3t" not in mirrored


@pytest.mark.anyio
async def test_arguments_when_enabled_are_stored_with_secret_values_redacted(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(include_arguments=True, jsonl_path=Path("a.jsonl")), tmp_path)
    audit.record(event(arguments=SECRET_ARGUMENTS))
    await audit.flush()

    expected = {
        "query": "open bugs",
        "Authorization": REDACTED,
        "config": {
            "db_password": REDACTED,
            "items": [{"API_KEY": REDACTED, "name": "kept"}, {"refreshToken": REDACTED}],
            "client_secret": REDACTED,
        },
        "limit": 5,
    }
    (row,) = await query(engine)
    assert row.arguments == expected
    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    assert json.loads(line)["arguments"] == expected
    assert "s3cr3t" not in line
    with sqlite3.connect(tmp_path / "manifold.db") as db:  # nowhere in the table either
        stored = db.execute("SELECT arguments FROM audit_events").fetchall()
    assert "s3cr3t" not in repr(stored)
    assert SECRET_ARGUMENTS["config"]["db_password"] == "s3cr3t-password"  # the caller's dict is untouched


# ---- never blocking the request path ------------------------------------------------------------


def test_record_is_a_plain_function_that_needs_no_event_loop(tmp_path: Path):
    assert not inspect.iscoroutinefunction(AuditLog.record)
    audit = AuditLog(None, AuditSettings(), tmp_path)
    assert audit.record(event()) is None  # no running loop here: nothing could be awaited


@pytest.mark.anyio
async def test_record_returns_while_the_database_is_locked_and_events_land_after(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    await audit.start()
    locker = sqlite3.connect(tmp_path / "manifold.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        for i in range(500):  # more than one batch: the writer is woken and blocks on the lock (in its thread)
            audit.record(event(request_id=str(i)))
        # The event loop stays free while the writer waits for the lock: other coroutines keep running.
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20
        assert locker.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    async def all_written() -> bool:
        return len(await query(engine, limit=1000)) == 500

    await wait_until(all_written, timeout=10)
    await audit.aclose()


@pytest.mark.anyio
async def test_aclose_writes_pending_events(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    await audit.start()
    for i in range(5):
        audit.record(event(request_id=str(i)))
    await audit.aclose()
    assert sorted(e.request_id for e in await query(engine)) == ["0", "1", "2", "3", "4"]


@pytest.mark.anyio
async def test_a_failing_database_warns_once_without_event_content_and_recovers(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    audit = AuditLog(engine, AuditSettings(include_arguments=True), tmp_path)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_events"))
    caplog.set_level(logging.WARNING, logger="manifold.audit")

    audit.record(event(request_id="first", arguments={"note": "private-note"}))
    await audit.flush()
    audit.record(event(request_id="second"))
    await audit.flush()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one per burst, not one per attempt
    assert "no such table" in warnings[0].getMessage()
    assert "private-note" not in caplog.text and "alice" not in caplog.text and "create_issue" not in caplog.text

    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await audit.flush()
    assert sorted(e.request_id for e in await query(engine)) == ["first", "second"]
    assert "works again" in caplog.records[-1].getMessage()


# ---- parse_since --------------------------------------------------------------------------------


def test_parse_since_durations():
    now = 1_700_000_000.0
    assert parse_since("30s", now) == now - 30
    assert parse_since("15m", now) == now - 900
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("1w", now) == now - 7 * 86400
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2H", now) == now - 7200


def test_parse_since_iso_dates_and_times():
    now = 1_700_000_000.0
    assert parse_since("2025-01-31T09:00:00Z", now) == datetime(2025, 1, 31, 9, tzinfo=UTC).timestamp()
    assert parse_since("2025-01-31T10:00:00+01:00", now) == datetime(2025, 1, 31, 9, tzinfo=UTC).timestamp()
    assert parse_since("2025-01-31", now) == datetime(2025, 1, 31).timestamp()  # local midnight
    assert parse_since("2025-01-31 09:30", now) == datetime(2025, 1, 31, 9, 30).timestamp()


@pytest.mark.parametrize("bad", ["yesterday", "15", "m", "-5m", "3x", ""])
def test_parse_since_rejects_other_text_naming_it(bad: str):
    with pytest.raises(ValueError, match="neither a duration") as info:
        parse_since(bad, 0.0)
    assert f"'{bad}'" in str(info.value)


# ---- output and the CLI -------------------------------------------------------------------------


def test_table_escapes_control_characters_from_client_chosen_names():
    table = format_events([event(target="evil\x1b[2J\nname")], as_json=False)
    assert "\x1b" not in table and "\\x1b[2J\\x0aname" in table
    assert len(table.splitlines()) == 2  # header and one row


def manifold_audit(config: Path, *argv: str) -> int:
    """`manifold --config CONFIG audit ARGV...`, run in this process."""
    return main(["--config", str(config), "audit", *argv])


def write_config(directory: Path) -> Path:
    (directory / "manifold.yaml").write_text("gateway:\n  state_dir: state\n")
    return directory / "manifold.yaml"


def record_events(config_path: Path, *events: AuditEvent) -> None:
    """Write events the way the gateway does, into the database `config_path` names."""
    config = load_config(config_path)

    async def populate() -> None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        engine = await open_database(config.database_url)
        audit = AuditLog(engine, config.gateway.audit, config.state_dir)
        for e in events:
            audit.record(e)
        await audit.aclose()
        await engine.dispose()

    asyncio.run(populate())


@pytest.fixture
def config_with_events(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    now = time.time()
    record_events(
        config,
        event(at=now - 600, target="gh__list_issues", request_id="a1"),
        event(at=now - 60, target="gh__create_issue", outcome=Outcome.DENIED, request_id="a2"),
        event(at=now - 5 * 3600, target="gh__ancient", request_id="a0"),
        event(at=now - 30, principal="user:bob@corp.com", target="gh__bobs_tool", request_id="b1"),
    )
    return config


def test_cli_prints_a_users_recent_events_as_a_table(config_with_events: Path, capsys: pytest.CaptureFixture[str]):
    assert manifold_audit(config_with_events, "--user", "alice@corp.com", "--since", "1h") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["TIME", "PRINCIPAL", "CREDENTIAL"]
    assert len(out) == 3
    assert "gh__create_issue" in out[1] and "denied" in out[1]  # newest first
    assert "gh__list_issues" in out[2] and "user:alice@corp.com" in out[2]
    assert "bobs_tool" not in "\n".join(out) and "ancient" not in "\n".join(out)


def test_cli_filters_by_outcome_and_prints_json_lines(config_with_events: Path, capsys: pytest.CaptureFixture[str]):
    assert manifold_audit(config_with_events, "--outcome", "denied", "--json") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["target"] == "gh__create_issue"

    assert (
        manifold_audit(config_with_events, "--user", "bob@corp.com", "--server", "eng", "--limit", "5", "--json") == 0
    )
    assert [json.loads(x)["request_id"] for x in capsys.readouterr().out.splitlines()] == ["b1"]


def test_auth_required_rows_are_written_and_listed_by_outcome(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = write_config(tmp_path)
    record_events(
        config,
        event(request_id="connect-first", outcome=Outcome.AUTH_REQUIRED, detail="connect your GitHub account"),
        event(request_id="fine", at=NOW + 1),
    )
    assert manifold_audit(config, "--outcome", "auth_required", "--json") == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert (row["request_id"], row["outcome"], row["detail"]) == (
        "connect-first",
        "auth_required",
        "connect your GitHub account",
    )


def test_cli_offers_every_outcome_and_refuses_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = write_config(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        manifold_audit(config, "--outcome", "exploded")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'exploded'" in err
    assert all(f"'{o.value}'" in err for o in Outcome)


def test_cli_reports_bad_since_and_no_matches(config_with_events: Path, capsys: pytest.CaptureFixture[str]):
    assert manifold_audit(config_with_events, "--since", "last tuesday") == 2
    assert "--since: 'last tuesday' is neither a duration" in capsys.readouterr().err

    assert manifold_audit(config_with_events, "--user", "nobody@corp.com") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no events match" in captured.err


def test_cli_without_a_database_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = load_config(write_config(tmp_path))
    assert manifold_audit(tmp_path / "manifold.yaml") == 1
    assert f"no database at {config.state_dir / 'manifold.db'}" in capsys.readouterr().err
    assert not (config.state_dir / "manifold.db").exists()  # reading never creates one

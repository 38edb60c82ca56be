"""The audit journal against a real SQLite file and real files: a row is on disk when `record` returns, a run
that dies leaves rows the next start writes exactly once (also when it died between the database commit and
the journal's cleanup), a live gateway's journal is left alone, the journal stays bounded, and `record`
stays cheap.

A run "dies" here the way a SIGKILL leaves things: its journal's files and lock file stay, its lock is
released (the kernel drops a dead process's flock), and what it held in memory is gone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.audit import AuditEvent, AuditLog, Outcome, query
from manifold.audit import journal as journal_module
from manifold.config.models import AuditSettings
from manifold.store.db import default_url, meta, metadata, open_database

NOW = time.time()
JOURNAL = "audit-journal"


def event(request_id: str, **changes: object) -> AuditEvent:
    fields: dict[str, object] = {
        "at": NOW,
        "request_id": request_id,
        "principal": "user:alice@corp.com",
        "credential": "api_key:k1",
        "server": "eng",
        "member": "gh",
        "upstream": "github",
        "method": "tools/call",
        "target": "gh__create_issue",
        "outcome": Outcome.OK,
        "latency_ms": 1.5,
    }
    fields.update(changes)
    return AuditEvent(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def engine(tmp_path: Path):
    engine = await open_database(default_url(tmp_path))
    yield engine
    await engine.dispose()


def die(audit: AuditLog) -> None:
    """What SIGKILL leaves of a run: files on disk, no lock, nothing of what was in memory."""
    journal = audit._journal  # noqa: SLF001 - the test plays the kernel
    assert journal is not None
    journal.close(remove_lock=False)


def journal_files(state_dir: Path) -> list[str]:
    directory = state_dir / JOURNAL
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def journal_lines(state_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((state_dir / JOURNAL).glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


async def stored_ids(engine: AsyncEngine) -> list[str]:
    return sorted(str(e.request_id) for e in await query(engine, limit=100_000))


async def marks(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        keys = (await conn.execute(select(meta.c.key))).scalars().all()
    return [k for k in keys if k.startswith(journal_module.MARK_PREFIX)]


@pytest.mark.anyio
async def test_a_recorded_row_is_in_the_journal_when_record_returns(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    audit.record(event("r1", target="x" * 1000))
    (line,) = journal_lines(tmp_path)  # on disk already: no flush, no await
    assert (line["request_id"], line["outcome"], line["target"]) == ("r1", "ok", "x" * 400)
    assert line["arguments"] is None
    assert (tmp_path / JOURNAL).stat().st_mode & 0o077 == 0
    assert all((tmp_path / JOURNAL / name).stat().st_mode & 0o077 == 0 for name in journal_files(tmp_path))
    await audit.aclose()


@pytest.mark.anyio
async def test_rows_of_a_run_that_died_are_written_once_at_the_next_start(engine: AsyncEngine, tmp_path: Path):
    first = AuditLog(engine, AuditSettings(jsonl_path=Path("audit.jsonl")), tmp_path)
    for i in range(3):
        first.record(event(f"stored-{i}"))
    await first.flush()  # in the database, with the journal's mark
    for i in range(4):
        first.record(event(f"journaled-{i}"))  # answered, then the process dies before the next batch
    die(first)
    assert await stored_ids(engine) == ["stored-0", "stored-1", "stored-2"]

    second = AuditLog(engine, AuditSettings(jsonl_path=Path("audit.jsonl")), tmp_path)
    await second.start()
    expected = sorted([f"stored-{i}" for i in range(3)] + [f"journaled-{i}" for i in range(4)])
    assert await stored_ids(engine) == expected
    assert journal_files(tmp_path) == []  # the dead run's journal is gone, and its mark
    assert await marks(engine) == []
    mirrored = [json.loads(x)["request_id"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sorted(mirrored) == expected  # the mirror gets the replayed rows too
    await second.aclose()

    third = AuditLog(engine, AuditSettings(), tmp_path)  # and a further start writes nothing twice
    await third.start()
    await third.aclose()
    assert await stored_ids(engine) == expected


@pytest.mark.anyio
async def test_a_death_between_the_commit_and_the_journal_cleanup_duplicates_nothing(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 600)  # a few rows per segment: several segments
    first = AuditLog(engine, AuditSettings(), tmp_path)
    monkeypatch.setattr(journal_module.Journal, "committed", lambda self, pos: None)  # dies before cleanup
    for i in range(10):
        first.record(event(f"r{i}"))
    await first.flush()
    die(first)
    assert len([n for n in journal_files(tmp_path) if n.endswith(".jsonl")]) > 2  # every segment still there
    assert len(journal_lines(tmp_path)) == 10

    second = AuditLog(engine, AuditSettings(), tmp_path)
    await second.start()
    assert await stored_ids(engine) == sorted(f"r{i}" for i in range(10))  # each once: the mark said so
    assert journal_files(tmp_path) == []
    await second.aclose()


@pytest.mark.anyio
async def test_a_line_cut_by_power_loss_or_garbled_is_skipped_and_the_rest_written(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    first = AuditLog(engine, AuditSettings(), tmp_path)
    first.record(event("before"))
    first.record(event("after"))
    die(first)
    (segment,) = (tmp_path / JOURNAL).glob("*.jsonl")
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b'{"not": "a row"}\n[1, 2]\n' + lines[1] + lines[1][:40])  # cut last line

    caplog.set_level(logging.WARNING, logger="manifold.audit")
    second = AuditLog(engine, AuditSettings(), tmp_path)
    await second.start()
    assert await stored_ids(engine) == ["after", "before"]
    assert "skipped 2 unreadable journal lines" in caplog.text
    assert "alice" not in caplog.text
    await second.aclose()


@pytest.mark.anyio
async def test_the_journal_of_a_live_gateway_is_left_alone(engine: AsyncEngine, tmp_path: Path):
    live = AuditLog(engine, AuditSettings(), tmp_path)
    live.record(event("live-1"))  # journaled, holding its lock, not yet in the database
    other = AuditLog(engine, AuditSettings(), tmp_path)  # a second gateway on the same state dir
    await other.start()
    assert await stored_ids(engine) == []  # not replayed: its owner is alive and will write it
    assert len(journal_lines(tmp_path)) == 1
    await other.aclose()
    await live.aclose()
    assert await stored_ids(engine) == ["live-1"]  # written once, by its owner
    assert journal_files(tmp_path) == []


@pytest.mark.anyio
async def test_committed_segments_are_deleted_and_a_clean_stop_leaves_nothing(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 600)
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    for i in range(20):
        audit.record(event(f"r{i}"))
    assert len([n for n in journal_files(tmp_path) if n.endswith(".jsonl")]) > 3
    await audit.flush()
    assert len([n for n in journal_files(tmp_path) if n.endswith(".jsonl")]) == 1  # only the current one
    assert len(await marks(engine)) == 1
    await audit.aclose()
    assert journal_files(tmp_path) == []
    assert await marks(engine) == []
    assert len(await stored_ids(engine)) == 20


@pytest.mark.anyio
async def test_the_journal_stays_bounded_while_the_database_refuses_rows(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 600)
    monkeypatch.setattr(journal_module, "MAX_SEGMENTS", 4)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_events"))
    caplog.set_level(logging.WARNING, logger="manifold.audit")
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    for i in range(200):
        audit.record(event(f"r{i}"))
        await audit.flush()
    segments = [n for n in journal_files(tmp_path) if n.endswith(".jsonl")]
    assert len(segments) <= 4
    assert sum((tmp_path / JOURNAL / n).stat().st_size for n in segments) <= 4 * 600 + 4 * 400
    assert "the journal is full" in caplog.text
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await audit.aclose()
    assert len(await stored_ids(engine)) == 200  # memory still had them all


@pytest.mark.anyio
async def test_rows_the_database_refuses_at_shutdown_are_written_at_the_next_start(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_events"))
    caplog.set_level(logging.WARNING, logger="manifold.audit")
    first = AuditLog(engine, AuditSettings(), tmp_path)
    first.record(event("late-1"))
    first.record(event("late-2"))
    await first.aclose()
    assert "2 events could not be written to the database before shutdown; they stay in the journal" in caplog.text

    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    second = AuditLog(engine, AuditSettings(), tmp_path)
    await second.start()
    await second.aclose()
    assert await stored_ids(engine) == ["late-1", "late-2"]


@pytest.mark.anyio
async def test_with_arguments_on_the_journal_holds_them_redacted(engine: AsyncEngine, tmp_path: Path):
    audit = AuditLog(engine, AuditSettings(include_arguments=True), tmp_path)
    arguments = {"query": "open bugs", "password": "s3cr3t-password"}
    audit.record(event("r1", arguments=arguments))
    raw = b"".join(p.read_bytes() for p in (tmp_path / JOURNAL).glob("*.jsonl"))
    assert b"open bugs" in raw and b"s3cr3t" not in raw
    await audit.aclose()


@pytest.mark.anyio
async def test_an_unwritable_journal_is_reported_once_and_rows_still_reach_the_database(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / JOURNAL).write_text("a file where the journal's folder should be")
    caplog.set_level(logging.WARNING, logger="manifold.audit")
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    audit.record(event("r1"))
    audit.record(event("r2"))
    assert caplog.text.count("cannot append to the journal") == 1
    await audit.aclose()
    assert await stored_ids(engine) == ["r1", "r2"]


@pytest.mark.anyio
async def test_record_costs_a_few_microseconds(engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture):
    """The journal adds one write per call, no fsync: `record` stays in the microseconds (the bound here is
    loose, for a shared machine; an fsync per call would cost milliseconds)."""
    audit = AuditLog(engine, AuditSettings(), tmp_path)
    events = [event(str(i)) for i in range(3000)]
    best = float("inf")
    for round_ in range(3):
        start = time.perf_counter()
        for e in events[round_ * 1000 : (round_ + 1) * 1000]:
            audit.record(e)
        best = min(best, (time.perf_counter() - start) / 1000 * 1e6)
        await audit.flush()
    with capsys.disabled():
        print(f"\naudit record(): {best:.2f} µs per call")
    assert best < 200
    await audit.aclose()

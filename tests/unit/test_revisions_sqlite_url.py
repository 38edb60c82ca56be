"""A SQLite database named by a plain `sqlite:///` URL (docs/replicas.md) is watched like the default
`sqlite+aiosqlite:///` one: a change another process commits is seen at the very next request (SQLite's
data_version), not at the next poll. Was: only the aiosqlite spelling was recognised."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from manifold.store.db import connect
from manifold.store.revisions import RevisionWatcher, sqlite_path


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+aiosqlite"])
def test_both_spellings_name_the_file(scheme: str, tmp_path: Path) -> None:
    assert sqlite_path(f"{scheme}:///{tmp_path / 'm.db'}") == tmp_path / "m.db"
    assert sqlite_path(f"{scheme}:///:memory:") is None


@pytest.mark.anyio
async def test_a_change_made_elsewhere_is_seen_at_once_with_a_plain_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    engine = connect(url)
    watcher = RevisionWatcher(engine, url)
    try:
        watcher.maybe_changed()  # where it starts from
        assert not watcher.maybe_changed()
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE made_elsewhere (x)")
        other.commit()
        other.close()
        assert watcher.maybe_changed()  # the next request sees it, not the next poll
    finally:
        await engine.dispose()

"""Catalog writes from two writers at once (the gateway's admin API and the CLI in another process) must
both succeed: each is a read (checks against the current catalog) followed by a write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from manifold.admin.catalog import CatalogOperations, Kind
from manifold.config.loader import load_config
from manifold.store.db import default_url, open_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp_path: Path):
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\nupstreams:\n  up:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
    )
    return load_config(tmp_path / "manifold.yaml")


async def test_two_writers_at_once_both_succeed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "state").mkdir()
    url = default_url(tmp_path / "state")
    # Two engines on one file: two processes as far as SQLite's locks are concerned.
    first, second = await open_database(url), await open_database(url)
    try:
        writers = [CatalogOperations(engine, config, env={}) for engine in (first, second)]
        bodies = [{"id": f"g{i}", "upstreams": ["up"]} for i in range(24)]
        results = await asyncio.gather(
            *(writers[i % 2].create(Kind.GROUP, body) for i, body in enumerate(bodies)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        listed = await writers[0].list(Kind.GROUP)
        assert {e["id"] for e in listed} == {b["id"] for b in bodies}
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_same_object_created_twice_at_once_is_one_create_and_one_conflict(tmp_path: Path) -> None:
    from manifold.admin.ops import Conflict

    config = _config(tmp_path)
    (tmp_path / "state").mkdir()
    url = default_url(tmp_path / "state")
    first, second = await open_database(url), await open_database(url)
    try:
        writers = [CatalogOperations(engine, config, env={}) for engine in (first, second)]
        for round_ in range(8):
            body = {"id": f"same{round_}", "upstreams": ["up"]}
            results = await asyncio.gather(*(w.create(Kind.GROUP, dict(body)) for w in writers), return_exceptions=True)
            kinds = sorted(type(r).__name__ for r in results)
            assert kinds == sorted(["dict", Conflict.__name__]), results
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_database_opens_where_no_state_folder_exists_yet(tmp_path: Path) -> None:
    """`manifold explain` or `keys list` before the gateway ever ran: the folder is made, not a traceback."""
    engine = await open_database(default_url(tmp_path / "never" / "made"))
    try:
        assert (tmp_path / "never" / "made" / "manifold.db").exists()
    finally:
        await engine.dispose()

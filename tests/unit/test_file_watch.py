"""runtime/file_watch.py on real files: a change is applied once it has settled (seen the same on two looks),
never half-way through a save, and an edit that keeps the file's size is seen. The gateway applying what it is
given: tests/e2e/test_file_watch.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.runtime.file_watch import ConfigFileWatch

pytestmark = pytest.mark.anyio

MAIN = "upstreams:\n  notes:\n    transport: stdio\n    command: python3\n"


async def watch(tmp_path: Path) -> tuple[ConfigFileWatch, list[LoadedConfig], Path]:
    path = tmp_path / "manifold.yaml"
    path.write_text(MAIN)
    applied: list[LoadedConfig] = []

    async def apply(config: LoadedConfig) -> None:
        applied.append(config)

    return ConfigFileWatch(load_config(path), load_config, apply), applied, path


async def test_a_change_is_applied_once_it_looks_the_same_twice(tmp_path: Path) -> None:
    watcher, applied, path = await watch(tmp_path)
    assert not await watcher.check()  # nothing changed
    path.write_text(MAIN.replace("notes", "diary"))
    assert not await watcher.check() and applied == []  # changed: wait one look for the save to settle
    assert await watcher.check()
    assert list(applied[0].upstreams) == ["diary"]
    assert not await watcher.check()  # applied once


async def test_a_save_caught_half_way_is_never_applied(tmp_path: Path) -> None:
    """Was (review): an in-place save (truncate, then write) seen between the two applied "no upstreams": every
    stdio upstream stopped and every stream closed, to come back a second later."""
    watcher, applied, path = await watch(tmp_path)
    path.write_text("")  # the truncate
    assert not await watcher.check()
    path.write_text(MAIN + "    cwd: /tmp\n")  # the write, before the next look
    assert not await watcher.check()
    assert await watcher.check()
    assert [list(config.upstreams) for config in applied] == [["notes"]]


async def test_an_edit_that_keeps_the_size_is_seen(tmp_path: Path) -> None:
    watcher, applied, path = await watch(tmp_path)
    path.write_text(MAIN.replace("notes", "notez"))  # same size, likely the same modification-time tick
    assert not await watcher.check()
    assert await watcher.check() and list(applied[0].upstreams) == ["notez"]


async def test_what_is_applied_is_what_settled_even_if_the_file_is_rewritten_during_the_load(tmp_path: Path) -> None:
    """Was (second review): the load read the files again after the looks had settled, so a file truncated in
    between (an editor's autosave of the same content) was read empty and applied: no upstreams, and since its
    content then came back to what had been seen, no later look applied it again."""
    path = tmp_path / "manifold.yaml"
    path.write_text(MAIN)
    applied: list[LoadedConfig] = []

    async def apply(config: LoadedConfig) -> None:
        applied.append(config)

    def load_during_a_save(config_path: Path) -> LoadedConfig:
        config_path.write_text("")  # the save's truncate, just as the load reads
        try:
            return load_config(config_path)
        finally:
            config_path.write_text(MAIN.replace("notes", "diary"))  # ... and its write

    watcher = ConfigFileWatch(load_config(path), load_during_a_save, apply)
    path.write_text(MAIN.replace("notes", "diary"))
    assert not await watcher.check()
    assert await watcher.check()
    assert [list(config.upstreams) for config in applied] == [["diary"]]

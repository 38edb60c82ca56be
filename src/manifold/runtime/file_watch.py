"""Configuration files changed while the gateway runs: what can be applied live is applied, the rest is said.

A user who adds `virtual_servers/eng.yaml` or an upstream to `manifold.yaml` expects the running gateway to
serve it, as it serves what `manifold vservers create` makes. So the files are read every `FILE_WATCH_SECONDS`
(a digest of each: an edit that keeps the size within one modification-time tick is seen too) and, when they
changed and then stayed the same for one more look (an editor's save caught half-way, an empty file between
truncate and write, is never applied), loaded and checked whole, as at start-up:

- with problems: nothing is applied; each problem is logged (file, field, line) and the gateway goes on
  serving what it served;
- without: `upstreams`, `groups`, `grants` and the virtual-server files are applied through the same path as
  an admin API change (`CatalogSwap`); a change to any other section (`gateway`, `identity`, users, teams,
  service accounts, rate limits, audit, telemetry) applies at the next start, and the log says which.

Polling rather than inotify: reading a few small files a second costs nothing, works on every filesystem (bind
mounts, network volumes, editors that replace a file instead of writing it), and needs no library. The first
digest is taken when the configuration is loaded (compose.py), so a save during start-up is not missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from manifold.config.loaded import LoadedConfig
from manifold.config.problems import ConfigError
from manifold.config.sources import FILE_BYTES

log = logging.getLogger(__name__)

FILE_WATCH_SECONDS = 1.0
# The sections of manifold.yaml a running gateway takes over; the others apply at the next start.
LIVE_SECTIONS = ("upstreams", "groups", "grants")

Fingerprint = tuple[tuple[str, str], ...]


class ConfigFileWatch:
    def __init__(
        self,
        config: LoadedConfig,
        load: Callable[[Path], LoadedConfig],
        apply: Callable[[LoadedConfig], Awaitable[None]],
    ) -> None:
        self._config = config  # the files as applied (sections needing a restart: as at start-up)
        self._load = load
        self._apply = apply
        self._seen = self.fingerprint()
        self._changing: Fingerprint | None = None  # a change seen once: applied if the next look sees it again

    def fingerprint(self) -> Fingerprint:
        """A digest of manifold.yaml and of each YAML file in the virtual-server folder."""
        return self._read()[0]

    def _read(self) -> tuple[Fingerprint, dict[str, bytes]]:
        """The files' digests, and their bytes (what a load then reads: sources.FILE_BYTES)."""
        paths = [self._config.path]
        try:
            paths += sorted(
                p
                for p in self._config.virtual_servers_dir.iterdir()
                if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
            )
        except OSError:
            pass  # no folder (yet): no virtual-server files
        seen = []
        contents: dict[str, bytes] = {}
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            contents[str(path)] = data
            seen.append((str(path), hashlib.sha256(data).hexdigest()))
        return tuple(seen), contents

    def _load_these(self, contents: dict[str, bytes]) -> LoadedConfig | ConfigError:
        token = FILE_BYTES.set(contents)
        try:
            return self._load(self._config.path)
        except ConfigError as exc:
            return exc
        finally:
            FILE_BYTES.reset(token)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FILE_WATCH_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 — never let the watcher die; the next change tries again
                log.warning("configuration files: not applied (%s: %s)", type(exc).__name__, exc)

    async def check(self) -> bool:
        """Apply the files if they changed since last seen; True when something was applied."""
        now, contents = await asyncio.to_thread(self._read)
        if now == self._seen:
            self._changing = None
            return False
        if now != self._changing:  # changed since the last look: wait for it to settle
            self._changing = now
            return False
        # Loaded from the very bytes that settled (review: a file truncated again between the look and the load
        # was read empty and applied: no upstreams, and no later look told it apart).
        loaded = await asyncio.to_thread(self._load_these, contents)
        self._seen, self._changing = now, None
        if isinstance(loaded, ConfigError):
            for problem in loaded.problems:
                log.error("configuration files changed, not applied: %s", problem)
            log.error("configuration files: still serving what they said before (fix, and save again)")
            return False
        old, new = self._config.gateway, loaded.gateway
        waiting = [
            name
            for name in type(new).model_fields
            if name not in LIVE_SECTIONS and getattr(old, name) != getattr(new, name)
        ]
        applied = replace(
            self._config,
            gateway=old.model_copy(update={name: getattr(new, name) for name in LIVE_SECTIONS}),
            virtual_servers=loaded.virtual_servers,
            virtual_server_files=loaded.virtual_server_files,
            env_sourced=loaded.env_sourced,
        )
        await self._apply(applied)
        self._config = applied
        log.info(
            "configuration files changed: upstreams, groups, grants and virtual servers applied (%d upstreams, "
            "%d virtual servers from files)",
            len(applied.upstreams),
            len(applied.virtual_servers),
        )
        if waiting:
            log.warning("%s: changes to %s apply at the next start", self._config.path.name, ", ".join(sorted(waiting)))
        return True

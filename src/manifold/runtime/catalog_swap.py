"""Applies the effective catalog (files + objects created through the admin API or the CLI) to the running
gateway: the pool's upstreams, the served views, the policy's catalog, and open notification streams.

The core's job, not the admin API's: the admin API calls it right after it wrote, the change watcher
(runtime/changes.py) after another process wrote, and the runtime at startup. Idempotent: objects that did
not change keep their view (and its built lists) and their upstream session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from manifold.admin.catalog import Catalog, CatalogOperations, file_catalog
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.served import ServedServers
from manifold.catalog.view import VirtualServerView
from manifold.config.loader import LoadedConfig
from manifold.config.models import Transport, UpstreamConfig
from manifold.policy.access import PolicyAccess
from manifold.policy.store import StoredGrant
from manifold.protocol import LIST_CHANGED
from manifold.relay.hub import Hub, Listener
from manifold.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)


def pool_config(config: LoadedConfig, upstream_id: str, u: UpstreamConfig) -> UpstreamConfig:
    """A stdio upstream runs in its `cwd` relative to the config file's folder, not wherever we started."""
    if u.transport is Transport.STDIO:
        return u.model_copy(update={"cwd": config.stdio_cwd(upstream_id)})
    if u.transport is Transport.OPENAPI and u.spec is not None:  # its document, relative to the same folder
        return u.model_copy(update={"spec": config.openapi_spec(u.spec)})
    return u


class CatalogSwap:
    def __init__(
        self,
        config: LoadedConfig,
        operations: CatalogOperations,
        stored_grants: Callable[[], Awaitable[list[StoredGrant]]],
        pool: UpstreamPool,
        lists: UpstreamLists,
        served: ServedServers,
        access: PolicyAccess,
        hub: Hub,
    ) -> None:
        self._files = config
        self._operations = operations
        self._stored_grants = stored_grants
        self._pool = pool
        self._lists = lists
        self._served = served
        self._access = access
        self._hub = hub
        self.catalog: Catalog = file_catalog(config)
        self.config: LoadedConfig = config  # the effective configuration (files + applied API objects)
        self._lock = asyncio.Lock()
        # Told the files' new configuration when they change: what reads them besides the catalog (the admin
        # API's and the console's lists of file grants).
        self.on_files: list[Callable[[LoadedConfig], None]] = []

    @property
    def files(self) -> LoadedConfig:
        """The configuration files as last applied."""
        return self._files

    async def use_files(self, config: LoadedConfig) -> None:
        """The configuration files changed (runtime/file_watch.py): serve what they declare now, with what the
        database declares, and check what the admin API makes against them from now on."""
        async with self._lock:
            self._files = config
            self._operations.config = config
            for listener in self.on_files:
                listener(config)
            catalog = await self._operations.current()
            await self._apply(catalog, await self._stored_grants())

    async def reload(self) -> None:
        """Serve what the database and the files declare now."""
        async with self._lock:  # the admin API and the change watcher may both ask at once
            catalog = await self._operations.current()
            await self._apply(catalog, await self._stored_grants())

    async def _apply(self, catalog: Catalog, stored_grants: list[StoredGrant]) -> None:
        pool, hub, served = self._pool, self._hub, self._served
        effective = catalog.effective_config(self._files)

        # 1. Upstreams first (added or replaced), so the views about to appear find them in the pool.
        before = set(pool.upstream_ids)
        wanted = {uid: pool_config(effective, uid, u) for uid, u in effective.upstreams.items()}
        replaced_upstreams = [uid for uid, u in wanted.items() if await pool.put_upstream(uid, u) and uid in before]

        # 2. Views and the policy: swapped together, with no await in between.
        current = dict(served.items())
        new_views: dict[str, VirtualServerView] = {}
        for sid, vs in effective.served_servers().items():
            old = current.get(sid)
            sep = effective.separator_for(vs)
            if old is not None and old.config == vs and old.sep == sep:
                new_views[sid] = old
            else:
                new_views[sid] = VirtualServerView(sid, vs, self._lists, sep)
        replaced = [(old, new_views[sid]) for sid, old in current.items() if new_views.get(sid, old) is not old]
        removed = [old for sid, old in current.items() if sid not in new_views]
        added = [sid for sid in new_views if sid not in current]
        served.replace(new_views)
        self._access.set_catalog(effective)
        self._access.load(stored_grants)
        for key, entry in catalog.left_out.items():  # said once, not on every reload
            if self.catalog.left_out.get(key) != entry:
                log.error(
                    "%s '%s' (created through the API) is left out: %s", entry.kind.label, entry.id, entry.problem
                )
        self.catalog, self.config = catalog, effective

        # 3. Open notification streams: a replaced server's listeners move to the new view and hear that
        #    its lists changed; a removed server's streams end.
        for old, new in replaced:
            for listener in _listeners_of(hub, old):
                listener.view = new
                for method, kind in LIST_CHANGED.items():
                    if kind in listener.kinds:
                        listener.push({"jsonrpc": "2.0", "method": method, "params": {}})
        for old in removed:
            for listener in _listeners_of(hub, old):
                hub.remove(listener)
                listener.close()
        # Same id, new configuration: its cached lists are the old server's (made stale, and those of the other
        # sharing dropped, by the pool's put_upstream the moment the configuration changed: lists.reconfigured).
        for uid in replaced_upstreams:
            for method in LIST_CHANGED:
                await hub.on_upstream_notification(uid, {"jsonrpc": "2.0", "method": method, "params": {}})

        # 4. Upstreams no longer wanted: close their sessions (a stdio upstream's process ends).
        gone = sorted(before - set(wanted))
        for uid in gone:
            await pool.remove_upstream(uid)  # its lists: lists.reconfigured, from the pool
        if added or removed or replaced or gone:
            log.info(
                "catalog applied: %d servers (added %s; removed %s; changed %s)",
                len(served),
                ", ".join(added) or "none",
                ", ".join(v.id for v in removed) or "none",
                ", ".join(old.id for old, _ in replaced) or "none",
            )


def _listeners_of(hub: Hub, view: VirtualServerView) -> list[Listener]:
    return [listener for listener in hub.listeners() if listener.view is view]

"""The state that changes while the gateway runs: who may call (keys, principals, grants) and, through the
admin API, what is served. Opened at startup (the database needs the running event loop), consulted on
every request, and kept in step with changes made by other processes (store/revisions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from manifold.config.loaded import LoadedConfig
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.policy.access import PolicyAccess
from manifold.policy.store import GrantRepository, file_grants
from manifold.principal import Principal
from manifold.store import revisions
from manifold.store.db import open_database
from manifold.store.revisions import RevisionWatcher

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from manifold.catalog.lists import UpstreamLists
    from manifold.catalog.view import VirtualServerView
    from manifold.relay.handlers import Gateway

log = logging.getLogger(__name__)
LAST_USED_FLUSH_SECONDS = 15.0
WATCH_SECONDS = 1.0


class Live:
    def __init__(
        self,
        config: LoadedConfig,
        gateway: Gateway,
        views: dict[str, VirtualServerView],
        *,
        dev_key: str | None,
        lists: UpstreamLists | None = None,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.views = views
        self.lists = lists  # for views of servers created at run time (admin/catalog.py)
        self.dev_key = dev_key
        self.access = PolicyAccess(config)
        self.engine: AsyncEngine | None = None
        self.authenticator: Authenticator = None  # type: ignore[assignment]  # set in start()
        self._tasks: list[asyncio.Task[None]] = []
        self.admin_api: Any = None
        # The origin clients reach us at, for absolute URLs the gateway hands out (connect links). The CLI
        # sets it from `public_url` or the address it binds.
        self.public_base = config.settings.public_url or f"http://127.0.0.1:{config.settings.port}"
        self.outbound_credentials: Any = None
        self.sessions: Any = None  # relay.sessions.SessionStore, set by app.build_services
        self._deferred: set[str] = set()  # changed scopes seen by the background tick, applied on a request
        self._sync_lock = asyncio.Lock()

    async def start(self) -> None:
        from manifold.audit import AuditLog

        config = self.config
        identity = config.gateway.identity
        config.state_dir.mkdir(parents=True, exist_ok=True)
        from manifold.outbound.oauth import open_outbound_credentials  # registers its tables before create_all

        self.engine = engine = await open_database(config.database_url)
        # A wrong encryption key stops startup here with a clear message; nothing is read or written first.
        self.outbound_credentials = await open_outbound_credentials(
            engine, config.state_dir, lambda: self.public_base
        )
        self.keys = KeyRepository(engine)
        if self.dev_key:
            await self.keys.register_dev_key(self.dev_key)
        self.directory = Directory(engine, config.gateway)
        await self.directory.load()
        idps = None
        if identity.idps:
            from manifold.identity.idp_jwt import IdpRegistry

            idps = IdpRegistry(dict(identity.idps))
        self.idps = idps
        self.authenticator = Authenticator(
            self.keys,
            self.directory,
            idps,
            cache_seconds=identity.cache_seconds,
            allow_unauthenticated=config.settings.allow_unauthenticated,
        )
        self.grants = GrantRepository(engine)
        await self._load_policy()
        self.watcher = RevisionWatcher(engine, config.database_url)
        await self.watcher.prime()
        self.audit_log = AuditLog(
            engine if config.gateway.audit.enabled else None, config.gateway.audit, config.state_dir
        )
        await self.audit_log.start()
        self.gateway.access = self.access
        self.gateway.hub.may_see = self._may_see
        self.gateway.audit = AuditRecorder(self.audit_log)
        from manifold.outbound.exchange import TokenExchanger
        from manifold.outbound.resolver import CredentialResolver

        creds = self.outbound_credentials
        self.exchanger = TokenExchanger(secret=creds.secrets.lookup)
        self.gateway.credentials = CredentialResolver(
            secret=creds.secrets.lookup, oauth=creds.broker, exchange=self.exchanger
        )
        self._tasks.append(asyncio.create_task(self._flush_last_used()))
        self._tasks.append(asyncio.create_task(self._watch()))
        from manifold.admin.api import AdminApi

        self.admin_api = AdminApi(self)
        await self.admin_api.reload_catalog()  # upstreams, groups, virtual servers created through the API

    async def _load_policy(self) -> None:
        stored = file_grants(self.config.gateway.grants) + await self.grants.list()
        self.access.load(stored)

    async def sync(self, *, background: bool = False) -> None:
        """Apply changes committed by anyone (this process's admin API, the CLI) since the last request.

        One at a time: a request arriving while another applies a change waits for it, rather than being
        decided on the old state (a key revoked a moment ago must fail for every request after the change).
        The background tick applies only what must not wait for traffic (revoked keys, connections,
        secrets). Catalog changes wait for the next request, so a redefinition made as delete + create by
        the CLI reaches clients as one change rather than as a server that disappears."""
        async with self._sync_lock:  # uncontended almost always: no suspension
            await self._sync(background=background)

    async def _sync(self, *, background: bool) -> None:
        scopes = await self.watcher.changed_scopes() | self._deferred
        self._deferred = set()
        if background and revisions.CATALOG in scopes:
            self._deferred.add(revisions.CATALOG)
            scopes = scopes - {revisions.CATALOG}
        if not scopes:
            return
        if revisions.AUTH in scopes:
            await self.directory.load()
            self.authenticator.invalidate()
            await self._load_policy()
            log.info("keys, principals or grants changed: reloaded")
            task = asyncio.create_task(self._revalidate_streams())
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        if revisions.CATALOG in scopes and self.admin_api is not None:
            await self.admin_api.reload_catalog()
        from manifold.outbound.oauth.tables import CONNECTIONS_SCOPE
        from manifold.security.tables import SECRETS_SCOPE

        if CONNECTIONS_SCOPE in scopes:
            await self.outbound_credentials.broker.sync()
        if SECRETS_SCOPE in scopes:
            await self.outbound_credentials.secrets.load()
            self.gateway.credentials.secrets_changed()

    def _may_see(self, listener: Any, upstream_id: str) -> bool:
        principal = listener.principal
        if principal is None:
            return True
        view = listener.view
        return any(
            self.access.member_visible(principal, view, m.member_id) for m in view.members if m.upstream == upstream_id
        )

    async def _revalidate_streams(self) -> None:
        """Close open notification streams (and their sessions) whose caller's credential was revoked or
        expired, or who may no longer use the server. Requests are checked anyway; streams hold no request."""
        from manifold.identity.authenticator import Unauthenticated

        closed = 0
        for listener in self.gateway.hub.listeners():
            principal = listener.principal
            if principal is None or principal.token is None:
                continue
            try:
                fresh = await self.authenticator.authenticate(f"Bearer {principal.token}")
            except Unauthenticated:
                fresh = None
            if fresh is not None and self.access.server_allowed(fresh, listener.view):
                continue
            closed += 1
            if listener.session_id is not None and self.sessions is not None:
                self.sessions.close(listener.session_id)
            else:
                self.gateway.hub.remove(listener)
                listener.close()
        if closed:
            log.info("closed %d notification stream(s) whose caller may no longer use them", closed)

    def audit_refusal(self, principal: Principal, server_id: str, headers: dict[str, str]) -> None:
        from manifold.audit import AuditEvent

        self.audit_log.record(
            AuditEvent(
                at=time.time(),
                request_id=None,
                principal=principal.id,
                credential=str(principal.credential),
                server=server_id,
                member=None,
                upstream=None,
                method="connect",
                target=None,
                outcome="denied",
                detail="may not use this server",
                latency_ms=None,
                arguments=None,
            )
        )

    async def admin(self, scope: dict[str, Any], receive: Any, send: Any, read_body: Any) -> None:
        await self.admin_api(scope, receive, send, read_body)

    async def _watch(self) -> None:
        """Apply changes made elsewhere within a second even when no request comes (open streams of a
        revoked key are closed without waiting for traffic)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                await self.sync(background=True)
            except Exception as exc:  # noqa: BLE001 — the next tick tries again; serving must go on
                log.warning("could not apply changes from the database: %s", type(exc).__name__)

    async def _flush_last_used(self) -> None:
        while True:
            await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
            await self.authenticator.flush_last_used()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.authenticator is not None:
            await self.authenticator.flush_last_used()
        if getattr(self, "audit_log", None) is not None:
            await self.audit_log.aclose()
        if getattr(self, "exchanger", None) is not None:
            await self.exchanger.aclose()
        if self.outbound_credentials is not None:
            await self.outbound_credentials.aclose()
        if getattr(self, "idps", None) is not None:
            await self.idps.aclose()
        if getattr(self, "watcher", None) is not None:
            self.watcher.close()
        if self.engine is not None:
            await self.engine.dispose()


class AuditRecorder:
    """`relay.access.Auditor` over the audit log: turns a handler's view of a call into an `AuditEvent`."""

    def __init__(self, audit_log: Any) -> None:
        self.log = audit_log  # it keeps arguments only when audit.include_arguments is on, redacted

    def call(
        self,
        call: Any,
        method: str,
        label: str,
        target: Any,
        outcome: str,
        started: float,
        detail: str | None,
        arguments: Any = None,
    ) -> None:
        from manifold.audit import AuditEvent

        principal = call.principal
        self.log.record(
            AuditEvent(
                at=time.time(),
                request_id=None if call.request_id is None else str(call.request_id),
                principal=principal.id,
                credential=str(principal.credential),
                server=call.view.id,
                member=target.member_id if target is not None else None,
                upstream=target.upstream_id if target is not None else None,
                method=method,
                target=label,
                outcome=outcome,
                detail=detail,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                arguments=arguments if isinstance(arguments, dict) else None,
            )
        )

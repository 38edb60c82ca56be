"""Keeps the running gateway in step with the database: changes committed by anyone (this process's admin
API, the CLI in another process) since the last request are applied before that request is decided.

`store/revisions.py` says which scopes moved (a few microseconds on SQLite: `PRAGMA data_version`; on
PostgreSQL a LISTEN connection hears the NOTIFY every change sends); this applies each: keys, principals and
grants; the catalog; OAuth connections; secrets. A background task applies what must not wait for traffic (a
revoked key's open streams are closed): at once on a PostgreSQL notification, within a second otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from manifold.catalog.pin_store import PINS_SCOPE
from manifold.catalog.served import ServedServers
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.identity.directory import Directory
from manifold.outbound.oauth.broker import OAuthBroker
from manifold.outbound.oauth.tables import CONNECTIONS_SCOPE
from manifold.outbound.resolver import CredentialResolver
from manifold.policy.access import PolicyAccess
from manifold.policy.rate_limit_store import SCOPE as RATE_LIMITS_SCOPE
from manifold.policy.rate_limits import RateLimits
from manifold.policy.store import StoredGrant
from manifold.protocol import TOOLS_LIST_CHANGED
from manifold.relay.hub import Hub
from manifold.relay.sessions import SESSIONS_SCOPE, SessionStore
from manifold.runtime.catalog_swap import CatalogSwap
from manifold.security.crypto import ENV_VAR, KEY_FILE, DecryptError
from manifold.security.secret_store import SecretStore
from manifold.security.tables import SECRETS_SCOPE
from manifold.store import revisions
from manifold.store.revisions import RevisionWatcher

log = logging.getLogger(__name__)
WATCH_SECONDS = 1.0
# A catalog change seen by the background watch is applied by it once the catalog has not moved again for this
# long (a redefinition made as delete + create then lands as one change); a request applies it at once.
CATALOG_SETTLE_SECONDS = 1.0


class ChangeSync:
    def __init__(
        self,
        watcher: RevisionWatcher,
        directory: Directory,
        authenticator: Authenticator,
        stored_grants: Callable[[], Awaitable[list[StoredGrant]]],
        access: PolicyAccess,
        catalog: CatalogSwap,
        broker: OAuthBroker,
        secrets: SecretStore,
        credentials: CredentialResolver,
        hub: Hub,
        sessions: SessionStore,
        served: ServedServers,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._watcher = watcher
        self._directory = directory
        self._authenticator = authenticator
        self._stored_grants = stored_grants
        self._access = access
        self._catalog = catalog
        self._broker = broker
        self._secrets = secrets
        self._credentials = credentials
        self._hub = hub
        self._sessions = sessions
        self._served = served
        self._rate_limits = rate_limits
        self._deferred: set[str] = set()  # a catalog change seen by the background watch, settling
        # Scopes whose apply failed: tried again by the background watch (each tick), not by every request (a
        # lasting failure, a replica left with the old secret key, made every request fail: review).
        self._failed: set[str] = set()
        self._secrets_unreadable: str | None = None  # for /readyz, until the secrets load again
        self._catalog_moved_at = 0.0  # when the background watch last saw the catalog change
        self._lock = asyncio.Lock()
        self._revalidations: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # set by the database's change notifications (PostgreSQL)

    async def sync(self) -> None:
        """Apply what changed since the last request. One at a time: a request arriving while another
        applies a change waits for it rather than being decided on the old state (a key revoked a moment
        ago must fail for every request after the change)."""
        async with self._lock:  # uncontended almost always: no suspension
            try:
                await self._sync(background=False)
            except DecryptError:
                # The stored secrets need a key this replica lacks: requests go on with the secrets it has
                # (/readyz says so, the background watch logs it and tries again).
                pass

    async def watch(self) -> None:
        """Apply changes made elsewhere even when no request comes: at once when the database notifies
        (PostgreSQL: store/revisions.py holds the LISTEN connection alongside), within a second otherwise
        (every 25 ms while a PostgreSQL gateway's LISTEN connection is down).
        Catalog changes wait until the catalog has been still for CATALOG_SETTLE_SECONDS (or the next request),
        so a redefinition made as delete + create by the CLI reaches clients as one change rather than as a
        server that disappears."""
        listener = asyncio.create_task(self._watcher.listen(self._wake.set))
        said_decrypt_until = 0.0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._watcher.tick_seconds(WATCH_SECONDS)):
                        await self._wake.wait()
                self._wake.clear()
                if self._watcher.file_problem is None and (problem := self._watcher.check_file()) is not None:
                    log.error(
                        "%s: what it writes from now on (audit rows, keys, sessions) is lost at the next start; "
                        "stop it and put the file back (/readyz answers 503 until then)",
                        problem,
                    )
                try:
                    async with self._lock:
                        await self._sync(background=True)
                except DecryptError:
                    # Tried again at every tick, said once a minute: this does not heal by itself.
                    now = asyncio.get_running_loop().time()
                    if now < said_decrypt_until:
                        continue
                    said_decrypt_until = now + 60.0
                    log.error(
                        "could not apply changes from the database: its secrets were encrypted with a key this "
                        "replica does not have (`manifold secrets rotate-key` run on another replica?). Give this "
                        "replica the new key (its state dir's %s or %s; docs/replicas.md) and restart it",
                        KEY_FILE,
                        ENV_VAR,
                    )
                except Exception as exc:  # noqa: BLE001 — the next tick tries again; serving must go on
                    log.warning("could not apply changes from the database: %s", type(exc).__name__)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def database_problem(self, *, read: bool) -> str | None:
        """What is wrong with the database (its SQLite file removed; secrets it holds that this replica's key
        cannot read; with `read`, for /readyz, also a read that fails or takes too long now)."""
        if self._watcher.file_problem is not None or not read:
            return self._watcher.file_problem
        return self._secrets_unreadable or await self._watcher.unreachable()

    async def reload_policy(self) -> None:
        self._access.load(await self._stored_grants())

    async def _sync(self, *, background: bool) -> None:
        fresh = await self._watcher.changed_scopes()
        scopes = fresh | self._deferred
        self._deferred = set()
        if background and self._failed:
            scopes |= self._failed
            self._failed = set()
        if background and revisions.CATALOG in scopes:
            now = asyncio.get_running_loop().time()
            if revisions.CATALOG in fresh:
                self._catalog_moved_at = now
            if now - self._catalog_moved_at < CATALOG_SETTLE_SECONDS:
                # Not yet: idle clients hear of it within a tick or two, not at the next request, which may be
                # never (replica probe: a GET stream on another replica heard nothing until some request came).
                self._deferred.add(revisions.CATALOG)
                scopes = scopes - {revisions.CATALOG}
        if not scopes:
            return
        # The watcher counts these as seen: one that fails to apply (a statement timeout, a failover) is kept
        # and tried again by the background watch at its next tick (replica probe: a key revoked on one replica
        # stayed accepted on another for good after one failed read there).
        unapplied = set(scopes)
        try:
            await self._apply(scopes, unapplied)
        finally:
            self._failed |= unapplied

    async def _apply(self, scopes: set[str], unapplied: set[str]) -> None:
        """Apply each changed scope, discarding it from `unapplied` once done. One that fails does not keep the
        others from applying (review: secrets this replica cannot decrypt held back every scope after them, for
        good); the first failure is raised once all were tried."""
        appliers: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (revisions.AUTH, self._apply_auth),
            (revisions.CATALOG, self._catalog.reload),
            (CONNECTIONS_SCOPE, self._broker.sync),
            (SECRETS_SCOPE, self._apply_secrets),
            (SESSIONS_SCOPE, self._sessions.sync_ended),  # a 2025-11-25 session ended (DELETE) on another replica
            (RATE_LIMITS_SCOPE, self._apply_rate_limits),  # rules changed (policy/rate_limits.py)
            (PINS_SCOPE, self._apply_pins),  # last: announced once the rest is in place
        ]
        failure: BaseException | None = None
        for scope, apply in appliers:
            if scope not in scopes:
                continue
            try:
                await apply()
            except Exception as exc:  # noqa: BLE001 — kept for the next try; raised below
                failure = failure or exc
                continue
            unapplied.discard(scope)
        unapplied &= {scope for scope, _ in appliers}  # a scope nobody applies is not kept for ever
        if failure is not None:
            raise failure

    async def _apply_auth(self) -> None:
        await asyncio.gather(self._directory.load(), self.reload_policy())  # side by side: independent
        self._authenticator.invalidate()
        log.info("keys, principals or grants changed: reloaded")
        task = asyncio.create_task(self._revalidate_streams())
        self._revalidations.add(task)
        task.add_done_callback(self._revalidations.discard)

    async def _apply_secrets(self) -> None:
        try:
            await self._secrets.load()
        except DecryptError:
            self._secrets_unreadable = (
                f"the stored secrets need a secret key this replica does not have ({ENV_VAR} or {KEY_FILE})"
            )
            raise
        self._secrets_unreadable = None
        self._credentials.secrets_changed()

    async def _apply_rate_limits(self) -> None:
        if self._rate_limits is not None:
            await self._rate_limits.reload()

    async def _apply_pins(self) -> None:
        """Tool definitions approved (docs/pinning.md): fetched again and announced."""
        for upstream_id in self._catalog.config.upstreams:
            await self._hub.on_upstream_notification(upstream_id, {"method": TOOLS_LIST_CHANGED})

    async def _revalidate_streams(self) -> None:
        """Close open notification streams (and their sessions) whose caller's credential was revoked or
        expired, or who may no longer use the server. Requests are checked anyway; streams hold no request."""
        closed = 0
        for listener in self._hub.listeners():
            principal = listener.principal
            if principal is None or principal.token is None:
                continue
            try:
                fresh = await self._authenticator.authenticate(f"Bearer {principal.token}", accept_gateway_tokens=True)
            except Unauthenticated:
                fresh = None
            if fresh is not None and self._access.server_allowed(fresh, listener.view):
                continue
            closed += 1
            if listener.session_id is not None:
                self._sessions.close(listener.session_id)
            else:
                self._hub.remove(listener)
                listener.close()
        if closed:
            log.info("closed %d notification stream(s) whose caller may no longer use them", closed)

    async def aclose(self) -> None:
        for task in list(self._revalidations):
            task.cancel()
        await asyncio.gather(*self._revalidations, return_exceptions=True)

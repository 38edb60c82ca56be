"""`OAuthTokens` for the credential resolver: the user's access token for an upstream, on every call.

The hot path is one dictionary lookup and a float comparison: decrypted access tokens are kept in memory per
(user, upstream) until `refresh_margin_seconds` before they expire; no query and no decryption per call.
When a token is due, ONE task per (user, upstream) reads the vault and refreshes; every concurrent caller
awaits that same task (a hundred calls with an expired token make one refresh request). A refresh token the
authorization server refuses (`invalid_grant`) marks the connection broken, and the caller gets
`AuthRequired` with a fresh connect link instead of an error.

Several processes may share the database (replicas, the CLI), and a token is refreshed once among them all.
A process that finds the token due takes the turn to refresh it (`Vault.lock_refresh`: a row inserted by
whoever comes first, the same on SQLite and PostgreSQL), reads the vault again (the previous holder may have
just stored new tokens), and only then refreshes; the others wait until the turn is given back (at most
REFRESH_LEASE_SECONDS, looking every WAIT_STEP_SECONDS) and use the winner's tokens instead of spending a
refresh token that rotation is about to retire. A holder that died is overtaken when its lease runs out. If a
refresh loses a race anyway (`invalid_grant`: the CLI), the vault is read again before the connection is
declared broken. Removed connections bump the `connections` revision; `sync()` then drops what changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from manifold.config.models import OAuthAuth
from manifold.outbound.oauth.client import OAuthFlows
from manifold.outbound.oauth.discovery import DiscoveryError
from manifold.outbound.oauth.errors import OAuthError, TokenError
from manifold.outbound.oauth.links import ConnectLinks
from manifold.outbound.oauth.vault import Connection, ConnectionStatus, Vault
from manifold.outbound.resolver import AuthRequired, CallContext, OutboundRefused
from manifold.principal import Principal
from manifold.security.crypto import DecryptError

log = logging.getLogger(__name__)

NOT_CONNECTED = "not connected"
EXPIRED = "connection expired"
# After a refresh failed for a reason other than a dead refresh token (the server is down), the old token
# is used while it is still valid, and refreshing is tried again after this long.
RETRY_SECONDS = 15.0
# How long a process holds the turn to refresh a connection (others wait at most this long before taking
# over), and how often a waiting process looks (a refresh is one or two requests to the authorization
# server, each at most 10 s).
REFRESH_LEASE_SECONDS = 30.0
WAIT_STEP_SECONDS = 0.05
CLAIM_ATTEMPTS = 4

Key = tuple[str, str]  # (principal id, upstream id)


@dataclass(frozen=True)
class _Cached:
    access_token: str
    refresh_at: float  # Unix time after which the next call goes to the slow path
    updated_at: float  # the vault row's updated_at, to notice changes made elsewhere


class OAuthBroker:
    def __init__(
        self,
        vault: Vault,
        links: ConnectLinks,
        flows: OAuthFlows,
        public_base_url: Callable[[], str],
        *,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[str, bool], None] | None = None,  # (upstream id, succeeded): metrics
    ) -> None:
        self.vault = vault
        self._on_refresh = on_refresh
        self.links = links
        self.flows = flows
        self._base_url = public_base_url
        self._clock = clock
        self._cache: dict[Key, _Cached] = {}
        self._inflight: dict[Key, asyncio.Task[str]] = {}
        flows.add_listener(self.forget)

    async def access_token(self, principal: Principal, upstream_id: str, config: OAuthAuth, ctx: CallContext) -> str:
        key = (principal.id, upstream_id)
        cached = self._cache.get(key)
        if cached is not None and cached.refresh_at > self._clock():
            return cached.access_token
        return await self._renew(key, config)

    def forget(self, user: str, upstream: str) -> None:
        """Drop the cached token (revoked, reconnected, or changed elsewhere)."""
        self._cache.pop((user, upstream), None)

    def expire(self, user: str, upstream: str) -> None:
        """The upstream refused the cached token (401): refresh it on the next call."""
        cached = self._cache.get((user, upstream))
        if cached is not None:
            self._cache[(user, upstream)] = _Cached(cached.access_token, 0.0, cached.updated_at)

    async def sync(self) -> None:
        """Drop cached tokens whose vault row changed or disappeared (call when the `connections` revision
        moves): one query, nothing decrypted. A connection removed elsewhere (the CLI, another replica) is
        announced like one revoked here (`OAuthFlows.changed`: that user's lists change)."""
        if not self._cache:
            return
        versions = await self.vault.versions()
        for key, cached in list(self._cache.items()):
            version = versions.get(key)
            if version != cached.updated_at:
                self._cache.pop(key, None)
                if version is None:
                    self.flows.changed(*key)

    async def _renew(self, key: Key, config: OAuthAuth) -> str:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_or_refresh(key, config))
            self._inflight[key] = task
            task.add_done_callback(lambda done, key=key: self._settled(key, done))
        # Shielded: a caller that gives up does not cancel the refresh the others are waiting for.
        try:
            return await asyncio.shield(task)
        except AuthRequired as exc:  # each caller gets its own exception (one instance would pile up tracebacks)
            raise AuthRequired(exc.upstream_id, exc.connect_url, reason=exc.reason) from None
        except OutboundRefused as exc:
            raise OutboundRefused(exc.upstream_id, exc.reason) from None

    def _settled(self, key: Key, task: asyncio.Task[str]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited any more is not logged as lost

    def _required(self, key: Key, reason: str) -> AuthRequired:
        user, upstream_id = key
        return AuthRequired(upstream_id, self.links.mint(user, upstream_id, self._base_url()), reason=reason)

    def _remember(self, connection: Connection, config: OAuthAuth) -> str:
        if connection.expires_at is None:
            refresh_at = float("inf")
        elif connection.refresh_token:
            refresh_at = connection.expires_at - config.refresh_margin_seconds
        else:  # nothing to refresh with: use it until it expires
            refresh_at = connection.expires_at
        self._cache[(connection.user, connection.upstream)] = _Cached(
            connection.access_token, refresh_at, connection.updated_at
        )
        return connection.access_token

    def _due(self, connection: Connection, config: OAuthAuth, now: float) -> bool:
        if connection.expires_at is None:
            return False
        margin = config.refresh_margin_seconds if connection.refresh_token else 0.0
        return connection.expires_at - margin <= now

    async def _load_or_refresh(self, key: Key, config: OAuthAuth) -> str:
        user, upstream_id = key
        for _ in range(CLAIM_ATTEMPTS):
            connection = await self._read(key)
            if not self._due(connection, config, self._clock()):
                return self._remember(connection, config)
            if not connection.refresh_token:
                self._cache.pop(key, None)
                raise self._required(key, EXPIRED)
            if await self.vault.lock_refresh(user, upstream_id, REFRESH_LEASE_SECONDS):
                try:
                    connection = await self._read(key)  # the previous holder may have refreshed it just now
                    now = self._clock()
                    if not self._due(connection, config, now):
                        return self._remember(connection, config)
                    if not connection.refresh_token:
                        self._cache.pop(key, None)
                        raise self._required(key, EXPIRED)
                    return await self._refresh(key, connection, config, now)
                finally:
                    await asyncio.shield(self.vault.unlock_refresh(user, upstream_id))
            await self._wait_for_other_refresh(key)  # another process is refreshing it: use what it stores
        raise OutboundRefused(upstream_id, "your connection could not be refreshed: another gateway kept refreshing it")

    async def _read(self, key: Key) -> Connection:
        """The stored connection, or AuthRequired / OutboundRefused saying why there is none to use."""
        user, upstream_id = key
        try:
            connection = await self.vault.get(user, upstream_id)
        except DecryptError as exc:
            raise OutboundRefused(upstream_id, f"your stored connection cannot be read ({exc})") from None
        if connection is None:
            self._cache.pop(key, None)
            raise self._required(key, NOT_CONNECTED)
        if connection.status is ConnectionStatus.BROKEN:
            self._cache.pop(key, None)
            raise self._required(key, EXPIRED)
        return connection

    async def _wait_for_other_refresh(self, key: Key) -> None:
        """Wait until the process refreshing this connection gives the turn back (or its lease runs out)."""
        deadline = time.monotonic() + REFRESH_LEASE_SECONDS
        while time.monotonic() < deadline and await self.vault.refresh_locked(*key):
            await asyncio.sleep(WAIT_STEP_SECONDS)

    async def _refresh(self, key: Key, connection: Connection, config: OAuthAuth, now: float) -> str:
        """Refresh, holding the turn."""
        user, upstream_id = key
        try:
            refreshed = await self._counted_refresh(upstream_id, connection, config)
        except TokenError as exc:
            if exc.error != "invalid_grant":
                return self._refresh_failed(key, connection, str(exc), now)
            # Another process (the CLI) may have refreshed (and rotated the refresh token) a moment ago.
            latest = await self.vault.get(user, upstream_id)
            if (
                latest is not None
                and latest.status is ConnectionStatus.OK
                and latest.refresh_token != connection.refresh_token
                and not self._due(latest, config, now)
            ):
                return self._remember(latest, config)
            await self.vault.mark_broken(user, upstream_id)
            self._cache.pop(key, None)
            log.warning("oauth: the connection of %s to upstream '%s' expired (invalid_grant)", user, upstream_id)
            raise self._required(key, EXPIRED) from None
        except (OAuthError, DiscoveryError) as exc:
            return self._refresh_failed(key, connection, str(exc), now)
        return self._remember(refreshed, config)

    async def _counted_refresh(self, upstream_id: str, connection: Connection, config: OAuthAuth) -> Connection:
        if self._on_refresh is None:
            return await self.flows.refresh(connection, config)
        try:
            refreshed = await self.flows.refresh(connection, config)
        except Exception:
            self._on_refresh(upstream_id, False)
            raise
        self._on_refresh(upstream_id, True)
        return refreshed

    def _refresh_failed(self, key: Key, connection: Connection, reason: str, now: float) -> str:
        """The server could not refresh now (down, misconfigured): keep using a still-valid token for a while."""
        log.warning("oauth: refreshing the connection of %s failed: %s", key[0], reason)
        if connection.expires_at is not None and connection.expires_at > now:
            self._cache[key] = _Cached(
                connection.access_token, min(now + RETRY_SECONDS, connection.expires_at), connection.updated_at
            )
            return connection.access_token
        self._cache.pop(key, None)
        raise OutboundRefused(key[1], f"your connection could not be refreshed: {reason}")

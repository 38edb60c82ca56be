"""Live upstream sessions, one per key, connected lazily and reconnected when they die.

The key is an `UpstreamKey` rather than a bare id so that per-credential sessions (one per upstream and
user identity) can be added without changing the pool's shape.

Upstreams can be added, replaced and removed while the gateway runs (the admin API, admin/catalog.py):
a replaced or removed upstream's sessions are closed, so the next call connects with what is configured now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never
from urllib.parse import parse_qsl, urlsplit

from manifold.config.models import AuthMode, ProtocolChoice, SessionSharing, Transport, UpstreamConfig
from manifold.protocol import LIST_CHANGED_NOTIFICATION, Era
from manifold.upstream.base import (
    JSON,
    ErrorKind,
    MessageTransport,
    NotificationHandler,
    RequestSink,
    UpstreamError,
    UpstreamSessionLost,
)
from manifold.upstream.credential import SHARED, Outbound
from manifold.upstream.health import UpstreamHealth
from manifold.upstream.http import StreamableHttpTransport
from manifold.upstream.openapi import OpenApiTransport
from manifold.upstream.session import REFUSED_INITIALIZE, JsonRpcSession
from manifold.upstream.sse import LegacySseTransport
from manifold.upstream.stdio import REDACTED, StdioTransport, stderr_of

if TYPE_CHECKING:
    from manifold.telemetry.tracing import Tracing, UpstreamSpan

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    upstream_id: str
    identity: str | None = None  # whose credential the session carries (None: the shared session)
    handshake: bool = False  # the upstream's 2025-11-25-era session (credential.py `in_handshake_era`)

    @classmethod
    def of(cls, upstream_id: str, outbound: Outbound) -> UpstreamKey:
        return cls(upstream_id, outbound.identity, outbound.handshake)


@dataclass
class _Slot:
    session: JsonRpcSession | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # single-flight connect
    health: UpstreamHealth = field(default_factory=UpstreamHealth)
    last_failure: UpstreamError | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # the credential headers the session was opened with
    last_used: float = 0.0
    # A stdio command still starting after a caller's connect_timeout: its session and handshake go on, so
    # the next caller finds it further along instead of killing it and starting from scratch.
    starting: tuple[JsonRpcSession, asyncio.Future[None], float] | None = None  # + when it started (monotonic)
    lost: bool = False  # a session ended (process gone, session expired) and none has connected since
    told_starting: bool = False  # a caller was told the stdio command `starting` is still starting


# Told of every notification that belongs to no request, with the session it came on (upstream, identity).
PoolNotificationHandler = Callable[[UpstreamKey, JSON], Awaitable[None] | None]

# How long a stdio command may take to complete its handshake, in the background of the calls that wait for it
# (each for its connect_timeout): `npx -y pkg` on a fresh machine fetches the package first.
STDIO_START_SECONDS = 120.0


class StillStarting(UpstreamError):
    """A stdio command is still starting: this call is refused, the start goes on (not a failure). `handshake`
    ends when the start does (catalog/lists.py holds its lists' refusal until then, instead of waiting each time)."""

    def __init__(self, upstream_id: str, reason: str, handshake: asyncio.Future[None]) -> None:
        super().__init__(upstream_id, reason)
        self.handshake = handshake


async def _until_started(
    key: UpstreamKey, starting: tuple[JsonRpcSession, asyncio.Future[None], float], config: UpstreamConfig
) -> None:
    """Wait at most connect_timeout for a starting stdio command's handshake (which goes on regardless):
    StillStarting when it is not done by then; its UpstreamError when it failed."""
    _, handshake, since = starting
    try:
        await asyncio.wait_for(asyncio.shield(handshake), config.connect_timeout)
    except TimeoutError:
        raise StillStarting(
            key.upstream_id,
            f"is still starting: its command has not completed the MCP handshake after "
            f"{time.monotonic() - since:.0f}s (it is given {STDIO_START_SECONDS:g}s; a call waits up to its "
            f"connect_timeout, {config.connect_timeout:g}s, for it, and lists go on without it meanwhile)",
            handshake,
        ) from None


def _owned(key: UpstreamKey, config: UpstreamConfig) -> bool:
    """Whether the session is one caller's own (its server's roots/list outside any call goes to that caller's
    client, session.py `use_roots_client`): a per-user credential's, a `sessions: per_user` one's, a handshake-era
    one's. Not a `forwarded` credential's under `sessions: shared`: it is keyed by the headers' values, which two
    callers may share (review: Bob's client was asked the roots of the session Alice used too)."""
    if key.identity is None:
        return False
    return key.handshake or config.sessions is SessionSharing.PER_USER or config.auth.mode is not AuthMode.FORWARDED


def _in_use(slot: _Slot) -> bool:
    """A session with a call in flight or a client's resource subscription on it: never the one evicted."""
    session = slot.session
    return session is not None and not session.closed and (session.in_flight() > 0 or session.holds_subscriptions())


async def _close_slots(slots: list[_Slot]) -> None:
    """Close the slots' sessions, and those of commands still starting."""
    sessions = [s.session for s in slots if s.session is not None]
    sessions += [s.starting[0] for s in slots if s.starting is not None]
    await asyncio.gather(*(session.aclose() for session in sessions), return_exceptions=True)


# Per-identity sessions kept per upstream; the least recently used one is closed beyond this. A stdio one is a
# process each (`sessions: per_user`), so fewer; and one unused for IDENTITY_IDLE_SECONDS (at least twice the
# upstream's call_timeout) is closed when the next is made (second review: they were never closed when idle).
MAX_IDENTITY_SESSIONS = 256
MAX_REFUSED_HANDSHAKES = 4 * MAX_IDENTITY_SESSIONS
MAX_STDIO_IDENTITY_SESSIONS = 32
IDENTITY_IDLE_SECONDS = 600.0
# An upstream failure quoted to callers and /healthz: cut after its credentials were blanked.
MAX_REASON_CHARS = 300
# Upstreams whose every session carries a caller's own credential (outbound/resolver.py never gives them the
# credential-less `SHARED`): no shared session is ever made for them.
CALLER_CREDENTIAL_ONLY = frozenset({AuthMode.OAUTH, AuthMode.PASSTHROUGH, AuthMode.EXCHANGE})


async def _close_when_idle(session: JsonRpcSession, *, limit_seconds: float = 120.0) -> None:
    deadline = time.monotonic() + limit_seconds
    while session.in_flight() and time.monotonic() < deadline and not session.closed:
        await asyncio.sleep(0.5)
    await session.aclose()


def make_transport(upstream_id: str, config: UpstreamConfig) -> MessageTransport:
    match config.transport:
        case Transport.HTTP:
            return StreamableHttpTransport(upstream_id, config)
        case Transport.STDIO:
            return StdioTransport(upstream_id, config)
        case Transport.SSE:
            return LegacySseTransport(upstream_id, config)
        case Transport.OPENAPI:
            return OpenApiTransport(upstream_id, config)
        case _:
            assert_never(config.transport)


class UpstreamPool:
    def __init__(
        self,
        configs: dict[str, UpstreamConfig],
        on_notification: PoolNotificationHandler | None = None,
        *,
        tracing: Tracing | None = None,  # telemetry/tracing.py: a span per upstream request, when tracing is on
    ) -> None:
        self._configs = dict(configs)
        self._tracing = tracing
        self._on_notification = on_notification
        # Told the upstream id when a session that had ended is replaced by a new one: a restarted upstream may
        # list other tools, prompts and resources, and says so to nobody (the composition root drops its lists).
        self.on_renewed: Callable[[str], None] | None = None
        # Told the upstream id the moment its configuration is replaced or removed (before its sessions are
        # closed): whether its lists are per caller may have changed, and views must not go on with what they
        # worked out from the old configuration while those close (the composition root: lists.reconfigured).
        self.on_reconfigured: Callable[[str], None] | None = None
        # `protocol: auto` upstreams that chose 2026-07-28, and those of them found to speak nothing older
        # (`speaks_both`: a 2026-07-28 server need not say it speaks 2025-11-25 too, FastMCP 4 does not, so
        # it is tried, once)
        self._modern_auto: set[str] = set()
        self._modern_only: set[str] = set()
        # Handshake-era sessions refused for one caller's credential only (a `forwarded` value the upstream
        # answered 400 to, say): that caller's clients fall back; everybody else's still get theirs (isolation
        # probe: one user's header turned them off for all).
        self._refused_handshake: set[UpstreamKey] = set()
        self._slots: dict[UpstreamKey, _Slot] = {}
        self._retiring: set[asyncio.Future[Any]] = set()  # background closes and probes
        self._closed = False

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> JsonRpcSession:
        return await self._session(UpstreamKey.of(upstream_id, outbound), outbound.headers, outbound.fallback)

    async def request(
        self,
        upstream_id: str,
        method: str,
        params: JSON | None = None,
        *,
        sink: RequestSink | None = None,
        timeout: float | None = None,
        outbound: Outbound = SHARED,
    ) -> JSON:
        """Send one request on the session for this credential, reconnecting once when the live session
        turned out to be dead (the request was then never delivered, so the retry cannot run it twice). With
        tracing on, inside an upstream span whose `traceparent` goes upstream in the HTTP header and `_meta`
        (in this one coroutine: a wrapper's extra frame and await cost more than the span)."""
        tracing = self._tracing
        span: UpstreamSpan | None = None
        trace_headers: dict[str, str] | None = None
        if tracing is not None:
            span, params, trace_headers = tracing.start_upstream(upstream_id, method, params)
        key = UpstreamKey.of(upstream_id, outbound)
        reply: JSON | None = None
        error: BaseException | None = None
        try:
            session = await self._session(key, outbound.headers, outbound.fallback)
            try:
                reply = await session.request(method, params, sink=sink, timeout=timeout, trace_headers=trace_headers)
            except UpstreamSessionLost:
                self._forget(key, session)
                session = await self._session(key, outbound.headers, outbound.fallback)
                reply = await session.request(method, params, sink=sink, timeout=timeout, trace_headers=trace_headers)
            if "error" in reply or _is_tool_error(reply):
                reply = self._without_credentials(upstream_id, outbound, reply)
            return reply
        except BaseException as exc:
            error = exc
            if isinstance(exc, UpstreamError):
                self._scrub(upstream_id, outbound, exc)
            raise
        finally:
            if span is not None and tracing is not None:
                tracing.end_upstream(span, reply, error)

    def _credentials_sent(self, upstream_id: str, outbound: Outbound) -> list[str]:
        """The credential values the gateway sends this upstream (its configured headers and URL, the resolved
        auth, and a header's token part), longest first."""
        config = self._configs.get(upstream_id)
        return _secrets_of(config, outbound.headers) if config is not None else _secrets_of(None, outbound.headers)

    def _without_credentials(self, upstream_id: str, outbound: Outbound, reply: JSON) -> JSON:
        """A failed reply (a JSON-RPC error, a tool result with `isError`) with the credentials the gateway sent
        the upstream blanked out wherever they appear in its strings: a server in debug mode may echo the
        request's headers, and a static credential is the gateway's, shared by every caller (found by a
        security probe). The HTTP-status paths already answer with fixed texts."""
        secrets = self._credentials_sent(upstream_id, outbound)
        return _blanked(reply, secrets) if secrets else reply

    def _scrub(self, upstream_id: str, outbound: Outbound, error: UpstreamError) -> None:
        """The same for an error whose text quotes the upstream."""
        _blank_error(error, self._credentials_sent(upstream_id, outbound))

    def sizes(self) -> dict[str, int]:
        """Live upstream sessions per upstream (the shared one and the per-caller ones), for metrics."""
        sizes = dict.fromkeys(self._configs, 0)
        for key, slot in self._slots.items():
            if slot.session is not None and not slot.session.closed:
                sizes[key.upstream_id] = sizes.get(key.upstream_id, 0) + 1
        return sizes

    def era(self, upstream_id: str, outbound: Outbound = SHARED) -> Era | None:
        """The era of the live session for this credential, or None when there is none yet (no await: the
        relay asks on every 2026-07-28 call)."""
        slot = self._slots.get(UpstreamKey.of(upstream_id, outbound))
        session = slot.session if slot is not None else None
        return session.era if session is not None and not session.closed else None

    def live(self, upstream_id: str, outbound: Outbound = SHARED) -> JsonRpcSession | None:
        """The live session for this credential, if there is one (none is started)."""
        slot = self._slots.get(UpstreamKey.of(upstream_id, outbound))
        session = slot.session if slot is not None else None
        return session if session is not None and not session.closed else None

    def config(self, upstream_id: str) -> UpstreamConfig | None:
        return self._configs.get(upstream_id)

    def speaks_both(self, upstream_id: str) -> bool:
        """A `protocol: auto` upstream that chose 2026-07-28 and may speak 2025-11-25 too: a client of that era is
        relayed through a session of its era (`in_handshake_era`), where the upstream does what it does only
        there (FastMCP 4's tools ask elicitation, sampling and roots only on such connections). One whose
        handshake-era session is refused is not tried again (its clients share the 2026-07-28 session)."""
        return upstream_id in self._modern_auto and upstream_id not in self._modern_only

    @property
    def upstream_ids(self) -> list[str]:
        return list(self._configs)

    async def put_upstream(self, upstream_id: str, config: UpstreamConfig) -> bool:
        """Add an upstream, or replace its configuration. A replaced upstream's live sessions are closed
        (calls in flight on them fail) so the next call connects with the new configuration.
        Returns whether anything changed."""
        if self._configs.get(upstream_id) == config:
            return False
        self._configs[upstream_id] = config
        if self.on_reconfigured is not None:
            self.on_reconfigured(upstream_id)
        self._modern_auto.discard(upstream_id)  # learned again from its next sessions
        self._forget_refusals(upstream_id)
        await self._close_sessions_of(upstream_id)
        return True

    async def remove_upstream(self, upstream_id: str) -> bool:
        """Forget an upstream and close its sessions (a stdio upstream's process ends). Returns whether it
        was configured."""
        if self._configs.pop(upstream_id, None) is None:
            return False
        if self.on_reconfigured is not None:
            self.on_reconfigured(upstream_id)
        self._modern_auto.discard(upstream_id)
        self._forget_refusals(upstream_id)
        await self._close_sessions_of(upstream_id)
        return True

    def health(self) -> dict[str, dict[str, object]]:
        report: dict[str, dict[str, object]] = {uid: UpstreamHealth().as_dict() for uid in self._configs}
        for key, slot in self._slots.items():
            if key.identity is None:
                session = slot.session
                if session is not None and session.closed and slot.health.state == "connected":
                    cause = session.close_reason
                    reason = cause.reason if cause else None
                    slot.health.disconnected(
                        f"upstream '{key.upstream_id}' {reason}" if reason else None,
                        stderr_of(cause),
                        served=session.answered > 0,
                    )
                report[key.upstream_id] = slot.health.as_dict()
        for upstream_id, entry in report.items():
            config = self._configs.get(upstream_id)
            entry["required"] = config.required if config is not None else False
        return report

    def down_required(self) -> list[str]:
        """The required upstreams whose shared session is down (what makes the gateway not ready)."""
        return [
            key.upstream_id
            for key, slot in self._slots.items()
            if key.identity is None
            and slot.health.down
            and (config := self._configs.get(key.upstream_id)) is not None
            and config.required
        ]

    async def reconnect_down(self, upstream_ids: list[str], *, wait: float) -> None:
        """Try these down upstreams' shared sessions again, unless one is backing off or already connecting,
        so readiness comes back without waiting for a client's call. Waits at most `wait` seconds; a connect
        still running then goes on (and is single-flight with any call's)."""
        probes: list[asyncio.Future[JsonRpcSession]] = []
        for upstream_id in upstream_ids:
            key = UpstreamKey(upstream_id)
            slot = self._slots.get(key)
            if slot is None or self._closed or slot.health.in_backoff() or slot.lock.locked():
                continue
            probe = asyncio.ensure_future(self._session(key, slot.headers))
            probe.add_done_callback(lambda f: f.cancelled() or f.exception())  # its failure is in the health
            self._retiring.add(probe)  # a reference until it is done
            probe.add_done_callback(self._retiring.discard)
            probes.append(probe)
        if probes:
            await asyncio.wait(probes, timeout=wait)

    async def aclose(self) -> None:
        self._closed = True
        slots, self._slots = list(self._slots.values()), {}
        await _close_slots(slots)

    # ------------------------------------------------------------------ internals

    async def _session(
        self, key: UpstreamKey, headers: Mapping[str, str] = SHARED.headers, fallback: str | None = None
    ) -> JsonRpcSession:
        slot = self._slots.get(key)
        if slot is not None and slot.session is not None and not slot.session.closed and slot.headers == headers:
            if key.identity is not None:
                slot.last_used = time.monotonic()
            return slot.session  # the hot path: no lock, no further call
        if key.handshake:
            return await self._handshake_era_session(key, headers, UpstreamKey(key.upstream_id, fallback))
        return await self._open(key, headers)

    async def _handshake_era_session(
        self, key: UpstreamKey, headers: Mapping[str, str], base: UpstreamKey
    ) -> JsonRpcSession:
        """The 2025-11-25 session a client of that era is relayed through (`speaks_both`), or, when the upstream
        will not have one, the session its 2026-07-28 clients use (`base`): a client is never failed for want of
        it (review). Refused as a protocol matter, it is not asked again until the upstream's own session is
        renewed: for every caller when the upstream read the `initialize` of a session carrying no caller's
        credential and said no, else for this caller only. Any other failure (backed off as usual) is served
        by `base` meanwhile."""
        if key.upstream_id in self._modern_only or key in self._refused_handshake:
            return await self._open(base, headers)
        try:
            return await self._open(key, headers, base.identity)
        except UpstreamError as exc:
            if self._closed:
                raise
            if exc.kind is ErrorKind.PROTOCOL:
                config = self._configs.get(key.upstream_id)
                upstream_wide = (
                    exc.reason.startswith(REFUSED_INITIALIZE)
                    and config is not None
                    and config.auth.mode in (AuthMode.NONE, AuthMode.STATIC)
                )
                if upstream_wide:
                    self._modern_only.add(key.upstream_id)
                    logger.info(
                        "upstream %s refused a 2025-11-25 session (%s): its clients of that era share its "
                        "2026-07-28 one",
                        key.upstream_id,
                        exc.reason[:200],
                    )
                else:
                    if len(self._refused_handshake) >= MAX_REFUSED_HANDSHAKES:
                        self._refused_handshake.clear()  # bounded: the oldest are simply tried again
                    self._refused_handshake.add(key)
                slot = self._slots.pop(key, None)
                if slot is not None:
                    await _close_slots([slot])
            return await self._open(base, headers)

    def _forget_refusals(self, upstream_id: str) -> None:
        """The upstream changed or restarted: it may speak 2025-11-25 now, for everyone."""
        self._modern_only.discard(upstream_id)
        self._refused_handshake = {k for k in self._refused_handshake if k.upstream_id != upstream_id}

    async def _open(
        self, key: UpstreamKey, headers: Mapping[str, str] = SHARED.headers, fallback: str | None = None
    ) -> JsonRpcSession:
        """The session of this key, made (or replaced, for a changed credential) under the slot's lock."""
        slot = self._slots.get(key)
        if slot is not None and slot.session is not None and not slot.session.closed:
            if slot.headers == headers:
                if key.identity is not None:
                    slot.last_used = time.monotonic()
                return slot.session  # the hot path: no lock
            # The credential changed (a refreshed token): this session carries the old one. New calls get a
            # new session; the old one is closed once the calls already on it have their answers.
            retired, slot.session = slot.session, None
            task = asyncio.ensure_future(_close_when_idle(retired))
            self._retiring.add(task)  # a reference, so the task is not collected before it ran
            task.add_done_callback(self._retiring.discard)
        if self._closed:
            raise UpstreamError(
                key.upstream_id, "is not available: the gateway is shutting down", kind=ErrorKind.CLOSED
            )
        config = self._configs.get(key.upstream_id)
        if config is None:
            raise UpstreamError(key.upstream_id, "is not configured", kind=ErrorKind.PROTOCOL)
        if key.identity is None and config.auth.mode in CALLER_CREDENTIAL_ONLY:
            # Reached only with each caller's own credential: a session without one would be refused, and as
            # the shared session its failure would mark the upstream down (/readyz 503) for everyone.
            raise UpstreamError(
                key.upstream_id,
                f"is reached with each caller's own credential (auth: {config.auth.mode.value}), not a shared one",
                kind=ErrorKind.PROTOCOL,
            )
        if slot is None:
            slot = self._slots.setdefault(key, _Slot())
            if key.identity is not None:
                slot.last_used = time.monotonic()
                await self._evict_beyond_limit(key.upstream_id, key)
        if slot.starting is not None:
            # A stdio command still starting: wait for it here, outside the lock, so that callers arriving
            # together each wait connect_timeout, not one after another's. Done, it is adopted under the lock.
            try:
                await _until_started(key, slot.starting, config)
            except StillStarting as exc:
                slot.told_starting = True
                raise StillStarting(key.upstream_id, exc.reason, exc.handshake) from None
            except UpstreamError:
                pass  # a failed start is recorded under the lock, below
        async with slot.lock:
            if slot.session is not None and not slot.session.closed:
                return slot.session  # another caller connected while we waited
            if slot.session is not None:  # dead: make sure its process/connections are gone first
                slot.lost = True  # the next session to connect is a renewal (`on_renewed`)
                dead, slot.session = slot.session, None
                cause = dead.close_reason
                reason = cause.reason if cause else None
                slot.health.disconnected(
                    f"upstream '{key.upstream_id}' {reason}" if reason else None,
                    stderr_of(cause),
                    served=dead.answered > 0,
                )
                if slot.health.state == "failed":  # it died right after its start: backed off like a failed one
                    slot.last_failure = UpstreamError(
                        key.upstream_id, reason or "ended right after it started", kind=ErrorKind.CLOSED
                    )
                await dead.aclose()
            # Back off from a failing upstream, unless the credential changed since (a refreshed token
            # deserves its own try).
            if slot.health.in_backoff() and slot.last_failure is not None and slot.headers == headers:
                raise UpstreamError(key.upstream_id, slot.last_failure.reason, kind=slot.last_failure.kind)
            slot.health.connecting()
            slot.headers = dict(headers)
            if headers:
                config = config.model_copy(update={"headers": {**config.headers, **headers}})
            if key.handshake:
                config = config.model_copy(update={"protocol": ProtocolChoice.HANDSHAKE})
            slow_start = config.transport is Transport.STDIO and config.connect_timeout < STDIO_START_SECONDS
            if slow_start and slot.starting is not None:
                session = slot.starting[0]  # started by an earlier call, still going
            else:
                session = JsonRpcSession(
                    key.upstream_id,
                    config,
                    make_transport(key.upstream_id, config),
                    self._notifier(key),
                    owned=_owned(key, config),
                )
            try:
                if slow_start:
                    await self._started_stdio(key, slot, session, config)
                else:
                    await session.connect()
            except StillStarting as exc:  # no failure: no backoff
                slot.told_starting = True
                raise StillStarting(key.upstream_id, exc.reason, exc.handshake) from None
            except UpstreamError as exc:
                # The upstream's own words ("refused initialize: ...") may echo what it was sent: blanked here,
                # before the failure is kept for the backoff, shown on /healthz and said to callers (review).
                _blank_error(exc, _secrets_of(config, config.headers))
                slot.last_failure = exc
                slot.health.failed(str(exc), stderr_of(session.close_reason))
                raise UpstreamError(key.upstream_id, exc.reason, kind=exc.kind) from None
            except Exception as exc:  # a bug or an unexpected library error: still a failed upstream
                url_problem = _url_problem(exc)
                if url_problem is not None:  # a URL the HTTP client cannot use: one line, not a traceback
                    logger.error(
                        "upstream %s: connect failed: its URL is not usable (%s)", key.upstream_id, url_problem
                    )
                else:
                    logger.exception("upstream %s: connect failed", key.upstream_id)
                error = UpstreamError(key.upstream_id, f"could not be connected ({type(exc).__name__})")
                slot.last_failure = error
                slot.health.failed(str(error))
                raise error from None
            if self._slots.get(key) is not slot:
                # The upstream was replaced or removed while we connected: this session belongs to the old
                # configuration. Start over, which connects anew or says it is no longer configured.
                await session.aclose()
                return await self._session(key, headers, fallback)
            slot.session = session
            slot.headers = dict(headers)
            slot.last_failure = None
            slot.health.connected(session.era, session.protocol_version)
            if (
                config.protocol is ProtocolChoice.AUTO
                and session.era is Era.MODERN
                and config.transport is not Transport.STDIO
            ):
                # Not stdio: a second process would be a second server, with state of its own (what a client of
                # one era did, one of the other would not see: a tool changed in one, review).
                self._modern_auto.add(key.upstream_id)
            if slot.lost:
                slot.lost = False
                if key.identity is None:
                    self._forget_refusals(key.upstream_id)  # restarted: it may speak 2025-11-25 now
                if self.on_renewed is not None:
                    self.on_renewed(key.upstream_id)
            return session

    async def _started_stdio(
        self, key: UpstreamKey, slot: _Slot, session: JsonRpcSession, config: UpstreamConfig
    ) -> None:
        """Returns once a stdio upstream's command has completed the handshake. A command may take far
        longer to start than a call should wait (`npx -y pkg` fetching its package on a fresh machine): a
        caller waits connect_timeout and is told it is still starting, while the command goes on for up to
        STDIO_START_SECONDS. Killing it at connect_timeout made every call start it again from nothing."""
        if slot.starting is None:
            handshake = asyncio.ensure_future(session.connect(STDIO_START_SECONDS))
            handshake.add_done_callback(lambda done: done.cancelled() or done.exception())  # always retrieved
            handshake.add_done_callback(lambda done: self._announce_start(key, slot, session, done))
            slot.starting = (session, handshake, time.monotonic())
        starting = slot.starting
        handshake = starting[1]
        try:
            await _until_started(key, starting, config)
        except BaseException:
            # Forgotten only once it has failed: a handshake that succeeded in the same moment this caller
            # gave up (its timeout, or its client gone) is adopted by the next caller, never left running.
            if handshake.done() and (handshake.cancelled() or handshake.exception() is not None):
                slot.starting = None
            raise
        slot.starting = None  # adopted: the caller makes it the slot's session

    def _announce_start(
        self, key: UpstreamKey, slot: _Slot, session: JsonRpcSession, handshake: asyncio.Future[None]
    ) -> None:
        """A stdio command that callers were told is still starting has completed its handshake: its lists are
        told changed (tools, prompts, resources, as it has them), as if it had said so itself, so that the lists
        fetched without it (catalog/lists.py) are fetched again and clients listening hear `list_changed`."""
        told, slot.told_starting = slot.told_starting, False
        if not told or handshake.cancelled() or handshake.exception() is not None:
            return
        handler = self._on_notification
        if handler is None or self._closed or self._slots.get(key) is not slot:
            return
        capabilities = session.capabilities or {}
        for kind in ("tools", "prompts", "resources"):
            if kind in capabilities:
                outcome = handler(key, {"jsonrpc": "2.0", "method": LIST_CHANGED_NOTIFICATION[kind]})
                if outcome is not None:
                    task = asyncio.ensure_future(outcome)
                    self._retiring.add(task)
                    task.add_done_callback(self._retiring.discard)

    def _notifier(self, key: UpstreamKey) -> NotificationHandler | None:
        """The session's notification callback: the pool's, told which session (identity) it came on."""
        handler = self._on_notification
        if handler is None:
            return None
        return lambda _upstream_id, message: handler(key, message)

    async def _evict_beyond_limit(self, upstream_id: str, opening: UpstreamKey) -> None:
        """Close this upstream's per-identity sessions unused for long, and the least recently used beyond the
        limit, never `opening` (the one being made)."""
        config = self._configs.get(upstream_id)
        stdio = config is not None and config.transport is Transport.STDIO
        limit = MAX_STDIO_IDENTITY_SESSIONS if stdio else MAX_IDENTITY_SESSIONS
        idle_after = (
            max(IDENTITY_IDLE_SECONDS, 2 * config.call_timeout) if config is not None else IDENTITY_IDLE_SECONDS
        )
        mine = [(s, k) for k, s in self._slots.items() if k.upstream_id == upstream_id and k.identity]
        # A session with a call in flight (or a subscription) is never the one closed: that call would fail for a
        # reason of someone else's making (isolation probe: one user churning `forwarded` header values killed
        # another's call). Over the limit with every session in use, the limit waits for them to end.
        evictable = sorted(
            ((s.last_used, k) for s, k in mine if k != opening and not _in_use(s)),
            key=lambda pair: pair[0],  # oldest first (keys themselves do not compare)
        )
        now = time.monotonic()
        idle = [key for used, key in evictable if now - used > idle_after]
        excess = max(0, len(mine) - len(idle) - limit)
        beyond = [key for _, key in evictable[len(idle) : len(idle) + excess]]
        if idle or beyond:
            await _close_slots([self._slots.pop(key) for key in (*idle, *beyond)])

    async def _close_sessions_of(self, upstream_id: str) -> None:
        keys = [key for key in self._slots if key.upstream_id == upstream_id]
        await _close_slots([self._slots.pop(key) for key in keys])

    def _forget(self, key: UpstreamKey, session: JsonRpcSession) -> None:
        """Mark a session dead so the next `_session` replaces it (and closes it under the slot lock)."""
        if not session.closed:
            session._mark_closed(UpstreamSessionLost(key.upstream_id, "session was lost"))


def _url_problem(exc: BaseException) -> str | None:
    """What was wrong with a URL, when `exc` is a ValueError raised while parsing one (yarl, urllib.parse):
    its words, unless they quote part of the URL (which may hold a password); None for any other error."""
    if not isinstance(exc, ValueError):
        return None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("yarl") or module == "urllib.parse":
            words = str(exc)
            return words if words and "'" not in words and len(words) <= 200 else type(exc).__name__
        tb = tb.tb_next
    return None


def _is_tool_error(reply: JSON) -> bool:
    result = reply.get("result")
    return type(result) is dict and result.get("isError") is True


def _blanked(value: Any, secrets: list[str]) -> Any:
    """`value` (any JSON) with each secret replaced by REDACTED inside its strings (keys included)."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_blanked(k, secrets): _blanked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_blanked(v, secrets) for v in value]
    return value


def _secrets_of(config: UpstreamConfig | None, headers: Mapping[str, str]) -> list[str]:
    """What the gateway sends an upstream that must not come back to a caller: header values (and a header's
    token part), the upstream URL's user, password and query values; at least 8 characters, longest first."""
    values = [*headers.values(), *(config.headers.values() if config is not None else ())]
    if config is not None and config.url:
        parts = urlsplit(config.url)
        values += [v for v in (parts.username, parts.password) if v]
        values += [v for _, v in parse_qsl(parts.query)]
    found = {part for value in values for part in (value, value.partition(" ")[2]) if len(part) >= 8}
    return sorted(found, key=len, reverse=True)


def _blank_error(error: UpstreamError, secrets: list[str]) -> None:
    """`error`'s reason with the secrets blanked (in place: it may be kept and raised again), cut to a readable
    length afterwards (so no secret is cut in two first)."""
    reason = _blanked(error.reason, secrets) if secrets else error.reason
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "…"
    if reason != error.reason:
        error.reason = reason
        error.args = (f"upstream '{error.upstream_id}' {reason}",)

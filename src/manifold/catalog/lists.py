"""Per-upstream list cache: tools, prompts, resources and resource templates as the upstream listed them.

One entry per (upstream, kind, list identity), shared by every virtual server that includes the upstream. The
list identity is None (one list for every caller) unless the upstream's lists are per caller (`lists:
per_caller`, the default for the auth modes that give each caller a credential of their own:
config/models.py `per_caller_lists`): then it is the identity of the caller's credential (`own_era(outbound)
.identity`), so each caller is shown what the upstream lists for them, never another caller's list. An entry is
refreshed when the upstream says `list_changed` (every entry of that upstream and kind), when its TTL runs
out, or on demand; concurrent readers of a stale entry share one fetch. Each entry carries a version number,
unique across entries, so virtual-server views know when to rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from manifold.outbound.resolver import AuthRequired, OutboundRefused, oauth_identity
from manifold.upstream.base import ErrorKind, RequestSink, UpstreamError, UpstreamSession
from manifold.upstream.credential import SHARED, Outbound, own_era
from manifold.upstream.pool import StillStarting

JSON = dict[str, Any]

# kind -> (list method, result key)
KINDS: dict[str, tuple[str, str]] = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "resource_templates": ("resources/templates/list", "resourceTemplates"),
}
# Upstream capability that must be present for a kind to be listed at all.
CAPABILITY = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resource_templates": "resources"}
MAX_PAGES = 100
# An upstream that does not answer a list must not make every list of every virtual server it is in wait its
# call_timeout (resilience review: 60 s per tools/list, each time). A list with an earlier one to fall back on
# waits at most REFRESH_WAIT for the refresh (which goes on) and serves the earlier one; a fetch that timed
# out is not tried again for TIMED_OUT_HOLD, meanwhile the earlier list (or the failure) is served at once.
REFRESH_WAIT = 2.0
TIMED_OUT_HOLD = 30.0
# A member whose stdio command is still starting (upstream/pool.py `StillStarting`: its first fetch waited the
# upstream's connect_timeout) is not waited for again either, by any list of it, until that start ends (it may
# take up to STDIO_START_SECONDS): the earlier list, or the refusal, is served at once meanwhile. Not held for
# TIMED_OUT_HOLD instead: a command that came up meanwhile would be left out for up to 30 s. Once it is up, the
# pool says its lists changed (`_announce_start`), so clients list again and get its tools.
# Per-caller lists (an upstream whose list depends on who asks) cost memory per caller: an upstream keeps at most
# CALLER_LISTS of them (its least recently read dropped first), and one nobody read for CALLER_LIST_IDLE is
# dropped (as the pool's per-caller sessions: upstream/pool.py). A caller whose list was dropped has it fetched
# again when they next list.
CALLER_LISTS = 1024  # per upstream, over its kinds: 256 callers' tools, prompts, resources and templates
CALLER_LIST_IDLE = 600.0


class Requester(Protocol):
    """What the list cache needs of the pool (upstream/pool.py)."""

    async def request(
        self,
        upstream_id: str,
        method: str,
        params: JSON | None = None,
        *,
        sink: RequestSink | None = None,
        timeout: float | None = None,
        outbound: Outbound = SHARED,
    ) -> JSON: ...

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> UpstreamSession: ...


class ToolReview(Protocol):
    """Tool pinning (catalog/pinning.py `ToolPins`): what of a fetched tool list is served."""

    async def review(self, upstream_id: str, tools: list[JSON], instructions: str | None = None) -> list[JSON]: ...


@dataclass
class Entry:
    items: list[JSON] = field(default_factory=list)
    version: int = 0
    fetched_at: float = -1.0
    stale: bool = True
    generation: int = 0  # bumped by every invalidation
    listed_generation: int = 0  # the generation `items` were fetched in (the fetch began at it)
    fetching: asyncio.Future[None] | None = None
    fetching_for: str | None = None  # the session identity the fetch in flight uses (None: the shared one)
    timed_out: UpstreamError | None = None  # the last fetch's timeout, held until `hold_until` (monotonic)
    hold_until: float = 0.0
    used_at: float = 0.0  # monotonic: last read (per-caller entries are dropped when unused for long)


class ListError(Exception):
    def __init__(self, upstream_id: str, reason: str) -> None:
        super().__init__(reason)
        self.upstream_id = upstream_id
        self.reason = reason


class UpstreamLists:
    def __init__(
        self,
        pool: Requester,
        ttl_seconds: float,
        pins: ToolReview | None = None,
        per_caller: Callable[[str], bool] | None = None,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_seconds
        self._pins = pins  # None: tools are served as listed (tests of the cache alone)
        # Whether an upstream's lists are per caller (config/models.py `per_caller_lists`); None: none is
        # (tests of the cache alone, the CLI's lists: they list with no caller's credential).
        self._per_caller = per_caller
        self.revision = 0  # bumped when an upstream was reconfigured: views work out their per-caller members again
        self._entries: dict[tuple[str, str, str | None], Entry] = {}
        # upstream -> the keys of its entries: a list_changed (which an upstream may send thousands of at once)
        # walks its own entries, not every upstream's callers' (50 per-caller upstreams at the bound: 51,200)
        self._keys: dict[str, set[tuple[str, str, str | None]]] = {}
        # upstream -> its per-caller entries' keys, least recently read first (CALLER_LISTS, CALLER_LIST_IDLE)
        self._callers: dict[str, OrderedDict[tuple[str, str, str | None], None]] = {}
        self._versions = itertools.count(1)  # unique across entries: a view never mistakes one for another
        # (upstream, kind) of the lists whose change clients were told of, and nobody has listed since: another
        # adds nothing, since every client told lists afresh (real-clients probe: one change heard on two upstream
        # streams reached each client twice, and each listed twice)
        self._announced: set[tuple[str, str]] = set()
        # (upstream, session identity) -> the refusal of a start still going on: every kind of list is held by it
        self._starting: dict[tuple[str, str | None], StillStarting] = {}

    def per_caller(self, upstream_id: str) -> bool:
        """Whether this upstream's lists are kept per caller (their credential's identity) or shared."""
        return self._per_caller is not None and self._per_caller(upstream_id)

    def identity(self, upstream_id: str, outbound: Outbound) -> str | None:
        """Whose list of the upstream a caller with this credential is shown: None (the one shared list) unless
        its lists are per caller, then the identity of the credential's own-era session (the session lists are
        fetched on). Two callers with the same identity (a `forwarded` credential's values) share a list."""
        return own_era(outbound).identity if self.per_caller(upstream_id) else None

    def entry(self, upstream_id: str, kind: str, identity: str | None = None) -> Entry:
        key = (upstream_id, kind, identity)
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = Entry()
            self._keys.setdefault(upstream_id, set()).add(key)
            if identity is not None:
                self._drop_unused(upstream_id)
        if identity is not None:
            e.used_at = time.monotonic()
            callers = self._callers.setdefault(upstream_id, OrderedDict())
            callers[key] = None
            callers.move_to_end(key)
        return e

    def _drop_unused(self, upstream_id: str) -> None:
        """Per-caller entries of the upstream beyond CALLER_LISTS (least recently read first), and those unread
        for CALLER_LIST_IDLE, are dropped (a fetch in flight for one goes on, for those who wait for it)."""
        callers = self._callers.get(upstream_id)
        if not callers:
            return
        idle_since = time.monotonic() - CALLER_LIST_IDLE
        while callers:
            key = next(iter(callers))
            e = self._entries.get(key)
            if e is not None and len(callers) < CALLER_LISTS and e.used_at > idle_since:
                break
            del callers[key]
            self._drop(key)

    def _drop(self, key: tuple[str, str, str | None]) -> None:
        if self._entries.pop(key, None) is not None:
            keys = self._keys[key[0]]
            keys.discard(key)
            if not keys:
                del self._keys[key[0]]

    def invalidate(self, upstream_id: str, kind: str | None = None) -> None:
        """The upstream's lists of `kind` (all kinds: None) changed: every caller's, since a `list_changed`
        heard on one caller's session may be a change of everybody's (a new version of the server)."""
        for key in self._keys.get(upstream_id, ()):
            if kind is None or key[1] == kind:
                e = self._entries[key]
                e.stale = True
                e.generation += 1

    def connection_changed(self, user: str, upstream_id: str) -> None:
        """The user connected, reconnected or revoked their account of an `oauth` upstream (outbound/oauth
        `add_listener`): their lists of it are stale. Their list identity stays `oauth:<user>` whichever account
        they connect, so a list fetched with the account they had was served for the one they connected instead
        (its tools shown and resolved, the new account's missing) until the TTL ran out, or for good with none."""
        identity = oauth_identity(user)
        own = identity + "|caller:"  # `sessions: per_user` (relay/handlers.py Gateway.outbound)
        for key in self._keys.get(upstream_id, ()):
            who = key[2]
            if who is not None and (who == identity or who.startswith(own)):
                e = self._entries[key]
                e.stale = True
                e.generation += 1

    def reconfigured(self, upstream_id: str) -> None:
        """The upstream's configuration changed, or it was removed: its lists are stale, and those of the other
        sharing (per caller, shared) than it has now are dropped (not to be read again, they would stay)."""
        self.invalidate(upstream_id)
        self.revision += 1
        per_caller = self.per_caller(upstream_id)
        for key in [k for k in self._keys.get(upstream_id, ()) if (k[2] is not None) != per_caller]:
            self._drop(key)
        if not per_caller:
            self._callers.pop(upstream_id, None)

    def is_fresh(self, e: Entry) -> bool:
        return not e.stale and (self._ttl == 0 or time.monotonic() - e.fetched_at < self._ttl)

    async def get(
        self,
        upstream_id: str,
        kind: str,
        *,
        allow_stale: bool = False,
        outbound: Outbound = SHARED,
        patient: bool = False,
    ) -> Entry:
        """The entry, fetched if stale. With allow_stale, any earlier successful fetch will do
        (used on the tools/call path, which must not wait on a list refresh).

        `outbound` is the caller's credential for upstreams that want one: the list is fetched with it. An
        upstream with per-caller lists (`identity`) has one entry per credential identity, fetched with that
        caller's credential and shown to them alone; any other's list is shared with every caller (grants decide
        what each caller sees). `patient`: wait for the refresh, however long it takes (a call naming a tool
        the earlier list lacks: it may be the new one the refresh brings)."""
        e = self.entry(upstream_id, kind, self.identity(upstream_id, outbound))
        # Someone lists (or reads) it again: a change from now on is news, even if what they get is the earlier
        # list or a fetch that began before the last change (review: those left clients on a stale list).
        self._announced.discard((upstream_id, kind))
        wanted = e.generation  # the last change this caller may have heard of
        earlier = e.fetched_at >= 0  # a list to fall back on
        if self.is_fresh(e) or (allow_stale and earlier):
            return e
        whose = (upstream_id, own_era(outbound).identity)
        starting = self._starting.get(whose)
        if starting is not None:
            if not starting.handshake.done():
                if earlier:
                    return e
                raise UpstreamError(starting.upstream_id, starting.reason, kind=starting.kind)
            del self._starting[whose]  # started (or failed to): fetched, and waited for, as any list
        timed_out = e.timed_out
        if timed_out is not None:
            held = time.monotonic() < e.hold_until
            if not held and e.fetching is None:
                self._start(upstream_id, kind, e, outbound)  # tried again, in the background
            if earlier and held:
                return e
            if not earlier:
                # Its last fetch timed out and nothing earlier stands in: said at once, not waited for again
                # while it is tried (a copy each time: one raised object would keep every raiser's frames).
                raise UpstreamError(timed_out.upstream_id, timed_out.reason, kind=timed_out.kind)
        if e.fetching is None:
            self._start(upstream_id, kind, e, outbound)
        fut, fut_for = e.fetching, e.fetching_for
        assert fut is not None
        if earlier and not patient:
            await asyncio.wait((fut,), timeout=REFRESH_WAIT)
            if not fut.done() or _timed_out(fut):
                return e  # the earlier list, while this refresh goes on (or after it timed out)
        try:
            await asyncio.shield(fut)  # any other failure is said as before: the member is left out, with why
        except (UpstreamError, ListError, AuthRequired, OutboundRefused):
            identity = own_era(outbound).identity
            if fut_for == identity:
                raise
            # The fetch was made with another caller's credential, and failed: its words are that caller's
            # (their account, their tenant; isolation probe). This caller's own credential is tried, and what
            # it meets is said.
            if e.fetching is None or e.fetching is fut:
                self._start(upstream_id, kind, e, outbound)
            again, again_for = e.fetching, e.fetching_for
            assert again is not None
            try:
                await asyncio.shield(again)
            except (UpstreamError, ListError, AuthRequired, OutboundRefused):
                if again_for == identity:
                    raise
                raise ListError(upstream_id, "could not be listed just now; try again") from None
        if e.listed_generation < wanted:
            # The fetch this caller joined began before the change it came for (the list_changed it heard was
            # announced while that fetch was out): what it brought is the list from before, and that change will
            # not be announced again. Once more, from after it; the list from before stands in if that fails or,
            # for an impatient caller, takes long.
            if e.fetching is None:
                self._start(upstream_id, kind, e, outbound)
            after = e.fetching
            assert after is not None
            if patient:
                with contextlib.suppress(UpstreamError, ListError, AuthRequired, OutboundRefused):
                    await asyncio.shield(after)
            else:
                await asyncio.wait((after,), timeout=REFRESH_WAIT)
        return e

    def announce(self, upstream_id: str, kind: str) -> bool:
        """Whether clients should hear that this list changed: not again until someone has listed it since they
        last did (what they list then is fetched after this change too). Per (upstream, kind), whoever's lists:
        every client of a server including the upstream is told, and any caller listing since makes the next
        change news again (their list is fetched after this change; others are told once more, harmlessly)."""
        key = (upstream_id, kind)
        if key in self._announced:
            return False
        self._announced.add(key)
        return True

    def _start(self, upstream_id: str, kind: str, e: Entry, outbound: Outbound) -> None:
        e.fetching = asyncio.ensure_future(self._fetch(upstream_id, kind, e, outbound))
        e.fetching_for = own_era(outbound).identity  # the session it really uses
        e.fetching.add_done_callback(partial(_fetched, e))
        e.fetching.add_done_callback(partial(self._still_starting, (upstream_id, e.fetching_for)))

    def _still_starting(self, whose: tuple[str, str | None], fut: asyncio.Future[None]) -> None:
        """A fetch refused because the member's stdio command is still starting: its lists are held until the
        start ends (a copy of the refusal: the raised one keeps its raisers' frames)."""
        if not fut.cancelled() and isinstance(exc := fut.exception(), StillStarting):
            # Bounded by the starts going on: those that ended are dropped (a caller gone for good never
            # comes back to drop theirs).
            self._starting = {k: v for k, v in self._starting.items() if not v.handshake.done()}
            self._starting[whose] = StillStarting(exc.upstream_id, exc.reason, exc.handshake)

    async def _fetch(self, upstream_id: str, kind: str, e: Entry, outbound: Outbound) -> None:
        # Through the upstream's own-era session, not a 2025-11-25 one made for clients of that era: a 2026-07-28
        # session learns which tools want Mcp-Param headers from the lists it fetches itself (review).
        outbound = own_era(outbound)
        method, key = KINDS[kind]
        generation = e.generation
        session = await self._pool.session(upstream_id, outbound)
        if CAPABILITY[kind] not in (session.capabilities or {}):
            items: list[JSON] = []
        else:
            items = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                params = {"cursor": cursor} if cursor else None
                reply = await self._pool.request(upstream_id, method, params, outbound=outbound)
                if "error" in reply:
                    err = reply["error"]
                    raise ListError(upstream_id, f"{method} failed: {err.get('message', 'error')}")
                result = reply.get("result") or {}
                items.extend(x for x in result.get(key) or [] if isinstance(x, dict))
                cursor = result.get("nextCursor")
                if not cursor:
                    break
        if kind == "tools" and self._pins is not None:
            # Changed definitions held out (or flagged) here, once per fetch: the views and tools/call see
            # only what this returns, so a held tool is neither listed nor callable. The upstream's instructions
            # are reviewed with them (passed on to clients only as approved: Gateway.instructions).
            try:
                items = await self._pins.review(upstream_id, items, session.instructions)
            except Exception as exc:
                # The gateway's own database, not the upstream (resilience review: the member was said to
                # have failed with a bare "OperationalError" while the upstream was fine).
                raise ListError(
                    upstream_id,
                    f"its tools could not be checked against their pins: the gateway's database failed "
                    f"({type(exc).__name__})",
                ) from exc
        e.items = items
        e.listed_generation = generation
        e.version = next(self._versions)
        e.fetched_at = time.monotonic()
        # A list_changed that arrived while we were fetching leaves the entry stale.
        e.stale = e.generation != generation


def _timed_out(fut: asyncio.Future[None]) -> bool:
    """A fetch that timed out or found the member still starting: the earlier list stands in for it."""
    if fut.cancelled():
        return False
    exc = fut.exception()
    return isinstance(exc, UpstreamError) and (exc.kind is ErrorKind.TIMEOUT or isinstance(exc, StillStarting))


def _fetched(e: Entry, fut: asyncio.Future[None]) -> None:
    """A fetch ended: it is no longer in flight; a timeout is held (TIMED_OUT_HOLD), any other outcome ends
    the hold (review: a later fast failure was hidden behind an old timeout)."""
    if e.fetching is fut:
        e.fetching = None
    if fut.cancelled():
        return
    exc = fut.exception()
    if isinstance(exc, UpstreamError) and exc.kind is ErrorKind.TIMEOUT:
        e.timed_out, e.hold_until = exc, time.monotonic() + TIMED_OUT_HOLD
    else:
        e.timed_out = None


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, (UpstreamError, ListError, AuthRequired, OutboundRefused)):
        return exc.reason
    return type(exc).__name__

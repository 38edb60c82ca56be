"""A virtual server's merged catalog: which tools, prompts and resources it shows, under which names,
and how an exposed name maps back to (member, upstream, original name).

Views are rebuilt only when a member's upstream list changed (version numbers from `UpstreamLists`), so a
warm `tools/list` is a cache hit, and resolving a `tools/call` name is a
dict lookup. A member whose upstream lists per caller (catalog/lists.py) makes the built list the caller's: one is
kept per combination of its members' list identities (`ListKey`), at most MAX_BUILT of them (least recently
used dropped first), and a name resolves only against the caller's own.

A member the caller has not connected yet (an `oauth` upstream: its list needs the caller's own token) is
shown as one synthetic tool, `{member}{sep}connect_account`, whose description says how to connect; a call
to it answers with the caller's connect link (relay/auth_required.py). See docs/outbound.md.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from manifold.catalog.lists import UpstreamLists, describe_failure
from manifold.catalog.search import ToolIndex
from manifold.config.models import TOOL_SEARCH_NAMES, MemberConfig, VirtualServerConfig
from manifold.naming import expose_name, shorten, unwrap_uri, wrap_uri
from manifold.outbound.resolver import AuthRequired
from manifold.upstream.credential import SHARED, Outbound, own_era

# The caller's outbound credential for one member (outbound/resolver.py); may raise AuthRequired.
Credential = Callable[[MemberConfig], Awaitable[Outbound]]

log = logging.getLogger(__name__)
JSON = dict[str, Any]

# The synthetic tool of a member the caller has not connected: `{member}{sep}connect_account`.
CONNECT_TOOL = "connect_account"


class _NoCredential:
    """In a `ListKey`: the caller has no credential for the member (its list is theirs to miss, not shared)."""

    def __repr__(self) -> str:
        return "NO_CREDENTIAL"


NO_CREDENTIAL = _NoCredential()
# Whose lists a built list is made of: for each member whose upstream lists per caller, in member order, the
# identity of the caller's list (lists.py `UpstreamLists.identity`), or NO_CREDENTIAL. Empty for a view whose
# members all list the same for everyone: one built list per kind, as before.
ListKey = tuple[str | None | _NoCredential, ...]
MAX_BUILT = 256  # built lists kept per view (all kinds): the callers' of a view with per-caller members
MAX_INDEXES = 32  # search indexes kept per view (tool_search): those of the lists searched last


@dataclass(frozen=True, slots=True)
class Target:
    member_id: str
    upstream_id: str
    name: str  # the upstream's own name (or URI)


@dataclass
class Built:
    """One built list: the exposed items and the reverse map."""

    items: list[JSON]
    targets: dict[str, Target]
    item_targets: list[Target]  # item_targets[i] is where items[i] comes from (for per-caller filtering)
    versions: tuple[int, ...]
    failures: dict[str, str] = field(default_factory=dict)  # member id -> reason
    errors: dict[str, BaseException] = field(default_factory=dict)  # member id -> why its list is missing
    collisions: list[str] = field(default_factory=list)
    collided: dict[str, list[Target]] = field(default_factory=dict)  # name left out -> every source that made it
    # tools only: (member id, synthetic tool) for each member the caller must connect first (AuthRequired).
    # Not in `items`/`targets`: a grant on the upstream decides whether it is shown (relay/handlers.py), and
    # calling it fails to resolve, so the call answers with the member's AuthRequired (its connect link).
    connect_tools: list[tuple[str, JSON]] = field(default_factory=list)
    connect_names: dict[str, str] = field(default_factory=dict)  # synthetic tool name -> member id
    index: ToolIndex | None = None  # tools, `tool_search` on: made by the first search (VirtualServerView.index)
    # What the relay works out of this list once, on first use, by name (relay/inbound.py `ParamHeaders`, relay/
    # tasks.py `support`): kept with the list, so callers of one view with lists of their own (per-caller members)
    # do not rebuild it on every call, as a per-view cache of the last list did when they alternated.
    derived: dict[str, Any] = field(default_factory=dict)


def _selected(name: str, member: MemberConfig) -> bool:
    if not _matcher(tuple(member.tools))(name):
        return False
    return not _matcher(tuple(member.hide))(name)


@functools.lru_cache(maxsize=1024)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """`any(fnmatch.fnmatchcase(name, p) for p in patterns)`, made once per list of patterns: exact names
    (no `*`, `?` or `[`, which fnmatch matches only by equality) in a set, the globs as one regex. A server
    that picks 10 tools of each of 50 upstreams builds its list in a few ms instead of 60."""
    exact = frozenset(p for p in patterns if not _GLOB.search(p))
    globs = [p for p in patterns if _GLOB.search(p)]
    if not globs:
        return exact.__contains__
    combined = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs))
    return lambda name: name in exact or combined.match(name) is not None


_GLOB = re.compile(r"[*?\[]")


class VirtualServerView:
    def __init__(self, server_id: str, config: VirtualServerConfig, lists: UpstreamLists, separator: str) -> None:
        self.id = server_id
        self.config = config
        self.members = list(config.members)
        self.by_member = {m.member_id: m for m in self.members}
        self.upstream_ids = {m.upstream for m in self.members}
        self.sep = config.separator or separator
        self.namespace = config.namespace
        self.search = config.tool_search  # None: off (docs/tool-search.md)
        self._lists = lists
        self._built: OrderedDict[tuple[str, ListKey], Built] = OrderedDict()  # least recently used first
        self._last: dict[str, Built] = {}  # kind -> the list built or served last, whoever's
        self._per_caller_members: dict[str, tuple[int, list[MemberConfig]]] = {}  # kind -> (lists.revision, ...)
        # (kind, member id) -> (the list a shared member's upstream sent, its items as exposed): `_exposed_items`
        self._exposed: dict[tuple[str, str], tuple[list[JSON], list[tuple[str, JSON, str, Target]]]] = {}
        self._lock = asyncio.Lock()
        self._indexing = asyncio.Lock()  # one search index made at a time (tool_search)
        self._indexed: OrderedDict[int, Built] = OrderedDict()  # the lists with a search index, last searched last
        self.last_failures: dict[str, str] = {}
        self.collisions: dict[str, list[str]] = {}
        self._told: dict[str, dict[str, str]] = {}  # kind -> member -> the failure last logged
        self._needs_connect: set[str] = set()  # members some caller was shown a connect tool for

    # ---- building -------------------------------------------------------------------------------

    def _listed(self, kind: str) -> list[MemberConfig]:
        """The members whose lists of `kind` this view shows."""
        return [m for m in self.members if kind == "tools" or (m.prompts if kind == "prompts" else m.resources)]

    def _per_caller_ids(self, kind: str) -> set[str]:
        return {m.member_id for m in self._per_caller(kind)}

    def _per_caller(self, kind: str) -> list[MemberConfig]:
        """The members of `kind` whose upstream lists per caller (worked out again after a configuration change)."""
        known = self._per_caller_members.get(kind)
        if known is None or known[0] != self._lists.revision:
            members = [m for m in self._listed(kind) if self._lists.per_caller(m.upstream)]
            known = self._per_caller_members[kind] = (self._lists.revision, members)
        return known[1]

    async def key(self, kind: str, credential: Credential | None) -> ListKey:
        """Whose lists of `kind` this caller is shown (`ListKey`): nothing to work out (and no credential
        resolved) for a view whose members all list the same for everyone."""
        members = self._per_caller(kind)
        if not members or credential is None:
            return (None,) * len(members)
        return tuple(await _identities(self._lists, members, credential))

    async def _entries(
        self, kind: str, *, allow_stale: bool, credential: Credential | None, patient: bool = False
    ) -> tuple[list[tuple[MemberConfig, list[JSON]]], dict[str, BaseException], tuple[int, ...], set[str], ListKey]:
        """The members' lists, their failures, the lists' versions, the members listed with the caller's
        own session (their failures are the caller's, not the server's), and whose lists they are (`key`)."""
        members = self._listed(kind)
        personal: set[str] = set()
        per_caller = self._per_caller(kind)
        whose: dict[str, str | None | _NoCredential] = {m.member_id: NO_CREDENTIAL for m in per_caller}

        async def one(m: MemberConfig) -> Any:
            outbound = await credential(m) if credential is not None else SHARED
            if own_era(outbound).identity is not None:  # lists go through the own-era session (lists.py)
                personal.add(m.member_id)
            if m.member_id in whose:
                whose[m.member_id] = self._lists.identity(m.upstream, outbound)
            return await self._lists.get(m.upstream, kind, allow_stale=allow_stale, outbound=outbound, patient=patient)

        results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
        ok: list[tuple[MemberConfig, list[JSON]]] = []
        errors: dict[str, BaseException] = {}
        versions: list[int] = []
        for m, r in zip(members, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                errors[m.member_id] = r
                versions.append(-1)
                continue
            ok.append((m, r.items))
            versions.append(r.version)
        key: ListKey = tuple(None if credential is None else whose[m.member_id] for m in per_caller)
        return ok, errors, tuple(versions), personal, key

    async def get(
        self, kind: str, *, allow_stale: bool = False, credential: Credential | None = None, patient: bool = False
    ) -> Built:
        """The built list. `credential` gives the caller's outbound credential per member, for upstreams
        whose lists can only be fetched with one (a member whose credential is missing is left out, with
        the reason kept so a call to one of its names can say what to do). The list is the caller's own
        where a member's upstream lists per caller."""
        entries, errors, versions, personal, key = await self._entries(
            kind, allow_stale=allow_stale, credential=credential, patient=patient
        )
        failures = {member_id: describe_failure(e) for member_id, e in errors.items()}
        built = self._built.get((kind, key))
        if built is not None and built.versions == versions and not failures and not built.failures:
            self._built.move_to_end((kind, key))
            self._last[kind] = built
            return built
        built = self._build(kind, entries, versions)
        built.failures = failures
        built.errors = errors
        if kind == "tools":
            self._add_connect_tools(built)
        told = self._told.get(kind, {})
        for member_id, reason in failures.items():
            if told.get(member_id) == reason:
                continue  # said already; said again when the reason changes, or after it recovered
            # A user who has not connected an OAuth upstream yet is routine, not an operator's problem.
            level = logging.DEBUG if isinstance(errors[member_id], AuthRequired) else logging.WARNING
            log.log(level, "virtual server '%s': member '%s' left out of %s: %s", self.id, member_id, kind, reason)
        self._told[kind] = failures
        # /healthz shows these to anyone: one caller's own failure (their account suspended, their token
        # refused) is theirs to see, not everyone's (isolation probe: a user's account and workspace were shown).
        self.last_failures = {m: reason for m, reason in failures.items() if m not in personal}
        self.collisions[kind] = built.collisions
        self._built[(kind, key)] = built
        self._built.move_to_end((kind, key))
        while len(self._built) > MAX_BUILT:
            self._built.popitem(last=False)
        self._last[kind] = built
        return built

    def preview(self, kind: str, entries: list[tuple[MemberConfig, list[JSON]]]) -> Built:
        """The list this view would serve if its members' upstreams listed `entries`, built by the same code
        as `get` but neither kept nor logged: the console's live preview (console/preview.py)."""
        return self._build(kind, entries, (), quiet=True)

    def _build(
        self, kind: str, entries: list[tuple[MemberConfig, list[JSON]]], versions: tuple[int, ...], quiet: bool = False
    ) -> Built:
        items: list[JSON] = []
        item_targets: list[Target] = []
        targets: dict[str, Target] = {}
        sources: dict[str, str] = {}
        collided: dict[str, list[Target]] = {}
        collisions: list[str] = []
        shared = None if quiet else {m.member_id for m in self._listed(kind)} - self._per_caller_ids(kind)
        for member, upstream_items in entries:
            reuse = shared is not None and member.member_id in shared
            for key, new_item, original, target in self._exposed_items(kind, member, upstream_items, reuse=reuse):
                if kind == "tools" and self.search is not None and key in TOOL_SEARCH_NAMES:
                    msg = (
                        f"tools '{key}' from member '{member.member_id}' (name '{original}') collides with the "
                        "tool search's own tool of that name (tool_search is on); it is left out"
                    )
                    collisions.append(msg)
                    if not quiet:
                        log.error("virtual server '%s': %s", self.id, msg)
                    continue
                source = (
                    f"member '{member.member_id}' ({'uri' if kind.startswith('resource') else 'name'} '{original}')"
                )
                if key in targets:
                    msg = f"{kind} '{key}' from {source} collides with {sources[key]}; both are left out"
                    collisions.append(msg)
                    if not quiet:
                        log.error("virtual server '%s': %s", self.id, msg)
                    collided.setdefault(key, [targets[key]]).append(target)
                    continue
                targets[key] = target
                sources[key] = source
                items.append(new_item)
                item_targets.append(target)
        if collided:
            key_field = {"tools": "name", "prompts": "name", "resources": "uri", "resource_templates": "uriTemplate"}[
                kind
            ]
            kept = [(i, t) for i, t in zip(items, item_targets, strict=True) if i.get(key_field) not in collided]
            items = [i for i, _ in kept]
            item_targets = [t for _, t in kept]
            for key in collided:
                targets.pop(key, None)
        return Built(
            items=items,
            targets=targets,
            item_targets=item_targets,
            versions=versions,
            collisions=collisions,
            collided=collided,
        )

    def _exposed_items(
        self, kind: str, member: MemberConfig, upstream_items: list[JSON], *, reuse: bool
    ) -> list[tuple[str, JSON, str, Target]]:
        """The member's items as this view exposes them: (exposed name, exposed item, original, target). With
        `reuse` (a member whose list is everyone's), made once per list the upstream sent and shared by every
        list built from it: a view with a per-caller member builds a list per caller (up to MAX_BUILT), and each
        held its own copy of the shared members' items (5,000 tools: ~1 GB over 256 callers, with their search
        indexes). Exposed items are never changed once built (they are already shared by a list's callers)."""
        if reuse:
            cached = self._exposed.get((kind, member.member_id))
            if cached is not None and cached[0] is upstream_items:  # held here: its id is not reused meanwhile
                return cached[1]
        out: list[tuple[str, JSON, str, Target]] = []
        for item in upstream_items:
            exposed = self._expose(kind, member, item)
            if exposed is not None:
                key, new_item, original = exposed
                out.append((key, new_item, original, Target(member.member_id, member.upstream, original)))
        if reuse:
            self._exposed[(kind, member.member_id)] = (upstream_items, out)
        return out

    def connect_tool_name(self, member_id: str, taken: dict[str, Target] | None = None) -> str:
        """The synthetic tool's name for a member: `{member}{sep}connect_account` (namespaced or not, so the
        member is named). Only shown while the member's own tools are not, so only that member's tool of the
        same name could produce it; should another member's tool have it anyway, the hashed form is used
        (naming.shorten of an invalid candidate: deterministic, never a valid plain name)."""
        name = expose_name(member_id, CONNECT_TOOL, sep=self.sep, namespace=True)
        if taken is not None and name in taken:
            name = shorten(name + ".")
        return name

    def connect_tool_member(self, exposed: str) -> str | None:
        """The member a connect tool of this name belongs to (one some caller was shown), whether or not it is
        listed now: a caller who connected since listing (or a 2026-07-28 client retrying the call after
        connecting) may call it still, and is told that it is connected."""
        for member_id in self._needs_connect:
            if exposed == self.connect_tool_name(member_id):
                return member_id
        return None

    def _add_connect_tools(self, built: Built) -> None:
        for member in self.members:
            error = built.errors.get(member.member_id)
            if not isinstance(error, AuthRequired):
                continue
            self._needs_connect.add(member.member_id)  # bounded: members of this view
            name = self.connect_tool_name(member.member_id, built.targets)
            built.connect_names[name] = member.member_id
            built.connect_tools.append((member.member_id, connect_tool(name, member.upstream)))

    def _expose(self, kind: str, member: MemberConfig, item: JSON) -> tuple[str, JSON, str] | None:
        if kind in ("tools", "prompts"):
            name = item.get("name")
            if not isinstance(name, str):
                return None
            if kind == "tools" and not _selected(name, member):
                return None
            new_name = expose_name(
                member.member_id,
                name,
                sep=self.sep,
                namespace=self.namespace,
                alias=member.aliases.get(name) if kind == "tools" else None,
            )
            new_item = dict(item)
            new_item["name"] = new_name
            if kind == "tools" and name in member.descriptions:
                new_item["description"] = member.descriptions[name]
            return new_name, new_item, name
        key_field = "uri" if kind == "resources" else "uriTemplate"
        uri = item.get(key_field)
        if not isinstance(uri, str):
            return None
        new_uri = wrap_uri(member.member_id, uri) if self.namespace else uri
        new_item = dict(item)
        new_item[key_field] = new_uri
        return new_uri, new_item, uri

    # ---- resolving ------------------------------------------------------------------------------

    async def resolve(self, kind: str, exposed: str, credential: Credential | None = None) -> Target | None:
        """Exposed tool/prompt name -> target. Uses the caller's last built list; refreshes once on a miss."""
        return (await self.lookup(kind, exposed, credential))[0]

    async def lookup(
        self, kind: str, exposed: str, credential: Credential | None = None
    ) -> tuple[Target | None, Built | None]:
        """`resolve`, and the caller's built list it looked in (for `failed_member_for`, `failure_error`): only
        the caller's own list resolves their names (per-caller lists: another caller's tools are not theirs)."""
        if not self._per_caller(kind):
            key: ListKey = ()  # everyone's list: one dict lookup, nothing to work out
        else:
            if credential is not None:
                credential = once_per_member(credential)  # `key` and then the list: one credential each
            key = await self.key(kind, credential)
        built = self._built.get((kind, key))
        if built is not None:
            t = built.targets.get(exposed)
            if t is not None:
                return t, built
        # A name the last list lacks may be what the refresh brings (a list_changed just said so): waited for
        # in full, not served from the earlier list after REFRESH_WAIT (review).
        built = await self.get(kind, allow_stale=built is None, credential=credential, patient=True)
        t = built.targets.get(exposed)
        if t is None and built.versions and not built.failures:
            return None, built
        return t, built

    async def index(self, built: Built) -> ToolIndex:
        """The search index of a built tool list: made on its first search (in a thread: a large catalog's
        takes a few hundred ms), kept until the list is rebuilt."""
        index = built.index
        if index is None:
            async with self._indexing:
                index = built.index
                if index is None:
                    index = built.index = await asyncio.to_thread(ToolIndex, built.items)
        # Kept for the MAX_INDEXES lists searched last: with a per-caller member each caller's list has its own
        # index (a few MB for thousands of tools), and up to MAX_BUILT lists are kept.
        self._indexed[id(built)] = built
        self._indexed.move_to_end(id(built))
        while len(self._indexed) > MAX_INDEXES:
            self._indexed.popitem(last=False)[1].index = None
        return index

    async def current(self, kind: str, credential: Credential | None = None) -> Built | None:
        """The caller's last built list, without waiting on a rebuild (None before one was built for them): what
        a check before the call (Mcp-Param headers, task support) reads, so it is the list the call resolves in."""
        if not self._per_caller(kind):
            return self._built.get((kind, ()))  # everyone's list: no credential worked out
        return self._built.get((kind, await self.key(kind, credential)))

    def last_built(self, kind: str) -> Built | None:
        """The list built (or served) last, without waiting on a rebuild (None before the first): with members
        listing per caller, whoever's it was."""
        return self._last.get(kind)

    def failure_error(self, kind: str, member_id: str, built: Built | None = None) -> BaseException | None:
        """Why the member is missing from `built` (the caller's: `lookup`; default: the last built list)."""
        built = built if built is not None else self._last.get(kind)
        return built.errors.get(member_id) if built is not None else None

    def failed_member_for(self, kind: str, exposed: str, built: Built | None = None) -> tuple[str, str] | None:
        """When a name did not resolve: the member it most likely belongs to, if that member's list
        could not be fetched, and why. Lets a call to a down member say so instead of "unknown tool".
        `built`: the caller's list (`lookup`); default: the last built list."""
        built = built if built is not None else self._last.get(kind)
        if built is None or not built.failures:
            return None
        connect_member = built.connect_names.get(exposed)
        if connect_member is not None and connect_member in built.failures:
            return connect_member, built.failures[connect_member]
        if self.namespace:
            for member_id, reason in built.failures.items():
                if exposed.startswith(member_id + self.sep):
                    return member_id, reason
            return None
        if len(built.failures) == 1:
            return next(iter(built.failures.items()))
        return None

    async def resolve_uri_for(self, uri: str, credential: Credential | None) -> Target | None:
        """`resolve_uri` for one caller. Without namespacing a URI belongs to whichever member listed it: in the
        caller's own lists where a member lists per caller (the last list built may be another caller's, with
        other URIs or the same URI from another member); built for them first if they have none yet. A list that
        left a member out is built for this caller (whose failure it was may be another caller's: a shared list
        of an `oauth` upstream is missing from the lists of a caller who has not connected it)."""
        if self.namespace or credential is None:
            return self.resolve_uri(uri)
        if not self.members_list_per_caller(*_RESOURCE_KINDS):
            found = self.resolve_uri(uri)
            last = (self._last.get(kind) for kind in _RESOURCE_KINDS)
            if found is not None or not any(b.failures for b in last if b is not None):
                return found  # everyone's lists, complete: as before
        own: list[Built] = []
        for kind in _RESOURCE_KINDS:
            built = await self.current(kind, credential)
            if built is None or built.failures:
                try:
                    built = await self.get(kind, allow_stale=True, credential=credential)
                except Exception:  # noqa: BLE001 — no list to look in: as if the URI were in none
                    continue
            own.append(built)
        return self.resolve_uri(uri, own)

    def members_list_per_caller(self, *kinds: str) -> bool:
        """Whether any member's upstream lists these kinds per caller (`lists: per_caller`)."""
        return any(self._per_caller(kind) for kind in kinds)

    def resolve_uri(self, uri: str, lists: list[Built] | None = None) -> Target | None:
        """Exposed resource URI -> target. Reversible, so it needs no list when namespaced. Without namespacing:
        looked up in `lists` (the caller's own, `resolve_uri_for`), by default the lists built last."""
        if not self.namespace:
            # Without namespacing, a URI belongs to whichever member listed it; with one member, to it.
            if lists is None:
                lists = [b for b in (self._last.get(kind) for kind in _RESOURCE_KINDS) if b is not None]
            for built in lists:
                if uri in built.targets:
                    return built.targets[uri]
            if len(self.members) == 1:
                m = self.members[0]
                return Target(m.member_id, m.upstream, uri) if m.resources else None
            return None
        parsed = unwrap_uri(uri)
        if parsed is None:
            return None
        member_id, original = parsed
        m = self.by_member.get(member_id)
        if m is None or not m.resources:
            return None
        return Target(m.member_id, m.upstream, original)

    def expose_uri(self, member_id: str, uri: str) -> str:
        return wrap_uri(member_id, uri) if self.namespace else uri

    def expose_links(self, member_id: str, content: Any) -> Any:
        """Content (a list of items, or one item) with the URIs of its resource links and embedded resources as
        this server shows them (`expose_uri`), so that a client can read what a tool or a prompt points to
        (found with server-everything: `demo://` links failed with -32002 where lists said `demo+ev://`)."""
        if isinstance(content, list):
            return [self.expose_links(member_id, item) for item in content]
        if not isinstance(content, dict):
            return content
        kind = content.get("type")
        if kind == "resource_link" and isinstance(content.get("uri"), str):
            return {**content, "uri": self.expose_uri(member_id, content["uri"])}
        resource = content.get("resource")
        if kind == "resource" and isinstance(resource, dict) and isinstance(resource.get("uri"), str):
            return {**content, "resource": {**resource, "uri": self.expose_uri(member_id, resource["uri"])}}
        return content

    def members_for_upstream(self, upstream_id: str) -> list[str]:
        return [m.member_id for m in self.members if m.upstream == upstream_id]


_RESOURCE_KINDS = ("resources", "resource_templates")


def once_per_member(credential: Credential) -> Credential:
    """`credential`, resolved at most once per member: one request works out whose lists it is shown (`key`), then
    lists them, then may call; a credential that fails (a token exchange refused) is not asked for again each
    time (no retry storm: one exchange request per call)."""
    done: dict[str, Outbound | Exception] = {}

    async def credential_once(member: MemberConfig) -> Outbound:
        if member.member_id not in done:
            try:
                done[member.member_id] = await credential(member)
            except Exception as exc:
                done[member.member_id] = exc
                raise
        got = done[member.member_id]
        if isinstance(got, Exception):
            raise got
        return got

    return credential_once


async def _identities(
    lists: UpstreamLists, members: list[MemberConfig], credential: Credential
) -> list[str | None | _NoCredential]:
    async def one(m: MemberConfig) -> str | None | _NoCredential:
        try:
            return lists.identity(m.upstream, await credential(m))
        except Exception:  # noqa: BLE001 — the member is left out of the list, which says why
            return NO_CREDENTIAL

    return list(await asyncio.gather(*(one(m) for m in members)))


def connect_tool(name: str, upstream_id: str) -> JSON:
    """The synthetic tool that leads a caller to the connect link of an upstream they have not connected."""
    return {
        "name": name,
        "title": f"Connect your {upstream_id} account",
        "description": (
            f"{upstream_id} is not connected for you yet. Call this tool to get a link that connects your "
            "account; after you connect, its tools appear here."
        ),
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    }


def connected_text(upstream_id: str) -> str:
    """The answer of a connect tool called by someone who is connected (their tools are listed instead)."""
    return f"Your {upstream_id} account is connected: its tools are in the tool list now (list the tools again)."
